"""Pruning for an Optuna search (configs/hparams_search/*): after every validation epoch the job reports its
optimized metric to its trial, through the study's storage, and stops with optuna.TrialPruned when the study's
pruner says the trial cannot catch up. The sweeper then records the trial as pruned, not failed."""

from __future__ import annotations

import math

import lightning as L
import optuna

from image_transfer.errors import ConfigError
from image_transfer.sweeps.storage import current_trial


class OptunaPruning(L.Callback):
    def __init__(self, monitor: str):
        self.monitor = monitor
        self.trial: optuna.trial.Trial | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit" and self.trial is None:
            self.trial = current_trial()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.trial is None:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            raise ConfigError(f"callbacks.optuna_pruning.monitor={self.monitor}: the run did not log it this epoch")
        value, epoch = float(value), trainer.current_epoch
        if not math.isfinite(value):
            return  # the trial fails at its end (sweeps/objective.py); a pruner cannot rank a NaN
        self.trial.report(value, epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {epoch}: {self.monitor}={value:.4f}")
