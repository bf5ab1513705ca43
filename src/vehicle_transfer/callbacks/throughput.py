"""Training images per second over a fit: time spent in training batches and loading them, not in validation."""

from __future__ import annotations

import time

import lightning as L


class TrainThroughput(L.Callback):
    def __init__(self):
        self.images, self.seconds, self._last = 0, 0.0, 0.0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        now = time.perf_counter()
        self.images += len(batch[1])
        self.seconds += now - self._last
        self._last = now

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.seconds > 0:
            pl_module.log("train/images_per_s", self.images / self.seconds)
