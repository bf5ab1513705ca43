"""Seeding and the Trainer, built from a composed config."""

from __future__ import annotations

import logging
import os

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.plugins.environments import SLURMEnvironment
from omegaconf import DictConfig

from image_transfer.callbacks.sigterm import StopTogetherOnSigterm
from image_transfer.runs.checkpoints import AtomicCheckpointIO
from image_transfer.runs.imbalance import class_weights
from image_transfer.runs.trackers import build_loggers

log = logging.getLogger(__name__)


def seed_run(cfg: DictConfig) -> None:
    if cfg.get("seed") is not None:  # 0 is a seed too
        L.seed_everything(cfg.seed, workers=True)


def build_model(cfg: DictConfig, datamodule):
    """The configured model for the datamodule's data: single- or multi-label, class weights from its training
    images where model.class_weights=auto."""
    multi_label, classes = datamodule.multi_label, datamodule.train_table.classes()
    weights = class_weights(cfg, classes, len(datamodule.class_names), multi_label)
    return instantiate(cfg.model, multi_label=multi_label, **weights)


def build_trainer(
    cfg: DictConfig, first_callbacks: list[L.Callback] = (), loggers: list | None = None, **overrides
) -> L.Trainer:
    """`first_callbacks` run before the configured ones (the finetune schedule: others then see its state);
    `loggers` replace the configured ones; `overrides` replace trainer options of the config."""
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    callbacks.append(StopTogetherOnSigterm())
    plugins = [AtomicCheckpointIO()]
    if os.environ.get("SUBMITIT_EXECUTOR") == "slurm" and SLURMEnvironment.detect():
        # submitit requeues a preempted or timed-out job (hydra/launcher=slurm); Lightning must not requeue it too.
        plugins.append(SLURMEnvironment(auto_requeue=False))
    return instantiate(
        cfg.trainer,
        callbacks=list(first_callbacks) + callbacks,
        logger=(build_loggers(cfg) if loggers is None else loggers) or False,
        plugins=plugins,
        **overrides,
    )


def build_tester(cfg: DictConfig, loggers: list | None = None) -> L.Trainer:
    """A trainer on one device of the configured accelerator, for testing and predicting: every image once, in order
    (a DDP test would shard the images and repeat some to even the shares); one device is enough for either.
    `loggers`: the fitting trainer's, so a test after DDP logs into the same tracked run."""
    devices, nodes = cfg.trainer.get("devices", 1), cfg.trainer.get("num_nodes", 1)
    if (isinstance(devices, int) and devices > 1) or nodes > 1:
        log.info(
            "testing and predicting on one device (trainer.devices=%s, num_nodes=%s apply to fitting)", devices, nodes
        )
    return build_trainer(cfg, loggers=loggers, devices=1, num_nodes=1, strategy="auto")
