"""Lightning's weight EMA, with checkpoints loaded for testing keeping their averaged weights.

EMAWeightAveraging writes the averaged weights as a checkpoint's state_dict (so eval, predict and
ensembles use them) and the raw weights beside them, to resume from. Its on_load_checkpoint puts the
raw weights back into the module at every load once a fit has run, which would make train's test of
best.ckpt score the raw weights: outside fitting, we keep the averaged ones.
"""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import EMAWeightAveraging
from lightning.pytorch.trainer.states import TrainerFn


class WeightEMA(EMAWeightAveraging):
    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        if trainer.state.fn == TrainerFn.FITTING:
            super().on_load_checkpoint(trainer, pl_module, checkpoint)
