"""Training images per second: time spent in training batches and loading them, not in validation.

The one source of the figure: metrics.json gets the whole fit's (train/images_per_s) and the last epoch's
(train/last_epoch_images_per_s: after warm-up, autotuning and compilation), the console's progress bars show the
current epoch's (`current_images_per_s`), which moves when the backbone unfreezes. Also in metrics.json:
train/data_wait_share, the share of that time between one batch's end and the next one's start (fetching,
transferring and device augmentation: the input pipeline), and on a GPU train/peak_gpu_memory_mb.

A GPU runs behind the Python that queues its work, so only `synchronize=true` (scripts/benchmark.py) makes the
wait share exact; it costs that overlap, so it is off in training.
"""

from __future__ import annotations

import time

import lightning as L
import torch


class TrainThroughput(L.Callback):
    def __init__(self, synchronize: bool = False):
        self.synchronize = synchronize
        self.images, self.seconds, self.waiting, self._last = 0, 0.0, 0.0, 0.0
        self.epoch_images, self.epoch_seconds = 0, 0.0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last = time.perf_counter()
        self.epoch_images, self.epoch_seconds = 0, 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.waiting += time.perf_counter() - self._last

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.synchronize and pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        now = time.perf_counter()
        images, seconds = len(batch.indices), now - self._last
        self.images += images
        self.seconds += seconds
        self.epoch_images += images
        self.epoch_seconds += seconds
        self._last = now

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.seconds > 0:
            pl_module.log("train/images_per_s", self.images / self.seconds)
            pl_module.log("train/data_wait_share", self.waiting / self.seconds)
        if self.epoch_seconds > 0:
            pl_module.log("train/last_epoch_images_per_s", self.epoch_images / self.epoch_seconds)
        if pl_module.device.type == "cuda":
            pl_module.log("train/peak_gpu_memory_mb", torch.cuda.max_memory_allocated(pl_module.device) / 2**20)

    @property
    def epoch_images_per_s(self) -> float | None:
        return self.epoch_images / self.epoch_seconds if self.epoch_seconds > 0 else None


def current_images_per_s(trainer: L.Trainer) -> float | None:
    """This epoch's training images per second so far, from the trainer's TrainThroughput (None without one)."""
    meter = next((c for c in trainer.callbacks if isinstance(c, TrainThroughput)), None)
    return meter.epoch_images_per_s if meter is not None else None
