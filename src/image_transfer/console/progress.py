"""Progress of train, eval and predict (callbacks.progress_bar in each): Lightning's rich bar on a terminal, plain log
lines elsewhere (CI, a log file, a SLURM job), where a bar redrawn many times a second would fill the log with control
characters and half-drawn lines."""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Mapping

import lightning as L
import torch
from lightning.pytorch.callbacks import ProgressBar, RichProgressBar

from image_transfer.callbacks.throughput import current_images_per_s
from image_transfer.errors import ConfigError

log = logging.getLogger(__name__)

MODES = ("auto", "rich", "plain")


def progress_bar(mode: str = "auto", every_s: float = 30.0) -> ProgressBar:
    """auto: the rich bar when stdout is a terminal, plain lines otherwise; plain lines come every `every_s` seconds
    and at each epoch's end."""
    if mode not in MODES:
        raise ConfigError(
            f"callbacks.progress_bar.mode={mode!r}: choose auto (a bar on a terminal, plain lines otherwise), "
            "rich or plain."
        )
    if not every_s > 0:
        raise ConfigError(f"callbacks.progress_bar.every_s={every_s}: the seconds between lines must be more than 0.")
    if mode == "rich" or (mode == "auto" and sys.stdout.isatty()):
        return ThroughputRichProgressBar()
    return PlainProgressBar(every_s)


def with_throughput(metrics: dict, trainer: L.Trainer) -> dict:
    rate = current_images_per_s(trainer)
    return metrics if rate is None else {**metrics, "img/s": rate}


class ThroughputRichProgressBar(RichProgressBar):
    """Lightning's rich bar, with this epoch's training images per second beside the logged metrics."""

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict:
        return with_throughput(super().get_metrics(trainer, pl_module), trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        sync_epoch_metrics(trainer)
        super().on_train_epoch_end(trainer, pl_module)


def sync_epoch_metrics(trainer: L.Trainer) -> None:
    """Under DDP, reading the epoch's metrics reduces them across ranks (sync_dist): a collective every rank must
    join. The bar reads them on rank 0 only, before the module's own epoch-end syncs, so every rank reads them here
    first (later reads are cached), or rank 0 would wait forever."""
    if trainer.world_size > 1:
        _ = trainer.progress_bar_metrics


class PlainProgressBar(ProgressBar):
    """One log line every `every_s` seconds (epoch, batch i/n, this epoch's mean loss so far, images/s) and one at
    each training epoch's end with the metrics of the progress bar (train/loss, val/*) and images/s."""

    def __init__(self, every_s: float = 30.0):
        super().__init__()
        self.every_s = every_s
        self._enabled = True
        self._last_line = self._epoch_start = 0.0
        self._loss_sum, self._batches = torch.zeros(()), 0

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def _epoch(self, trainer: L.Trainer) -> str:
        # Counted from 0 as Lightning, the finetune schedule (unfreeze_at_epochs) and its log lines count.
        last = f"/{trainer.max_epochs - 1}" if trainer.max_epochs and trainer.max_epochs > 0 else ""
        return f"epoch {trainer.current_epoch}{last}"

    def _due(self) -> bool:
        now = time.monotonic()
        if not self._enabled or now - self._last_line < self.every_s:
            return False
        self._last_line = now
        return True

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_start = self._last_line = time.monotonic()
        self._loss_sum, self._batches = torch.zeros(()), 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if loss is not None:  # summed on its device: no synchronisation per batch on a GPU
            self._loss_sum = self._loss_sum.to(loss.device) + loss.detach().float()
            self._batches += 1
        if self._due():
            parts = [f"{self._epoch(trainer)} batch {batch_idx + 1}/{_count(self.total_train_batches)}"]
            if self._batches:
                parts.append(f"loss {float(self._loss_sum) / self._batches:.4f}")
            log.info(_line(parts, with_throughput({}, trainer)))

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self.has_dataloader_changed(dataloader_idx)  # tells the base class which loader's total to give
        if not trainer.sanity_checking and self._due():
            log.info(f"validation batch {batch_idx + 1}/{_count(self.total_val_batches_current_dataloader)}")

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self.has_dataloader_changed(dataloader_idx)
        if self._due():
            log.info(f"test batch {batch_idx + 1}/{_count(self.total_test_batches_current_dataloader)}")

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self.has_dataloader_changed(dataloader_idx)
        if self._due():
            log.info(f"predict batch {batch_idx + 1}/{_count(self.total_predict_batches_current_dataloader)}")

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Validation has run by now (Lightning >= 2.0), so val/* are this epoch's.
        sync_epoch_metrics(trainer)
        if self._enabled:
            seconds = time.monotonic() - self._epoch_start
            metrics = with_throughput(self.get_metrics(trainer, pl_module), trainer)
            log.info(_line([f"{self._epoch(trainer)} done in {seconds:.0f} s"], metrics))


def _count(total: int | float) -> str:
    return "?" if isinstance(total, float) and math.isinf(total) else str(int(total))


def _line(parts: list[str], metrics: dict) -> str:
    values = [f"{k} {float(v):.4g}" for k, v in metrics.items() if isinstance(v, (int, float, torch.Tensor))]
    return ", ".join(parts + values)
