"""The epochs and optimizer steps a fit trained, read where fit was called.

Under DDP with start_method=spawn every rank trains in a process of its own: Lightning brings back to the calling
process the weights, the best checkpoint's path and trainer.callback_metrics, but not the loops' counters
(trainer.current_epoch and global_step stay 0 there). So the counts travel in callback_metrics, set as the fit ends
(on_fit_end: it also runs when a resumed run had nothing left to train, unlike on_train_end).
"""

from __future__ import annotations

import lightning as L
import torch

EPOCHS, STEPS = "trained/epochs", "trained/steps"


class TrainedProgress(L.Callback):
    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        trainer.callback_metrics[EPOCHS] = torch.tensor(trainer.current_epoch)
        trainer.callback_metrics[STEPS] = torch.tensor(trainer.global_step)


def trained_progress(trainer: L.Trainer) -> tuple[int, int]:
    """The epochs and steps of the fit just ended (taken out of callback_metrics: they are counts, not metrics)."""
    return int(trainer.callback_metrics.pop(EPOCHS)), int(trainer.callback_metrics.pop(STEPS))
