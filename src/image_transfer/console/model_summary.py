"""Lightning's model summary, printed once the finetune schedule has frozen what the first epoch freezes.

Lightning prints it at fit start, before FinetuneSchedule applies the epoch's state at train start, so its
"trainable" count was every parameter while the schedule's own line said only the head's were. Printed at train
start instead (after the schedule, which runs first), the two agree. The Trainer's default summary is switched off
(trainer.enable_model_summary=false) so only this one prints.
"""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import ModelSummary


class ScheduledModelSummary(ModelSummary):
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pass  # too early: nothing is frozen yet

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_fit_start(trainer, pl_module)
