"""Building Lightning objects from a composed config, and what a run leaves in its run dir."""

from __future__ import annotations

import glob
import logging
import math
from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from vehicle_transfer.checkpoint_io import AtomicCheckpointIO
from vehicle_transfer.models.classifier import ImageClassifier
from vehicle_transfer.paths import from_project_root, write_json

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"


def seed_run(cfg: DictConfig) -> None:
    if cfg.get("seed") is not None:  # 0 is a seed too
        L.seed_everything(cfg.seed, workers=True)


def build_trainer(cfg: DictConfig, first_callbacks: list[L.Callback] = ()) -> L.Trainer:
    """`first_callbacks` run before the configured ones (the finetune schedule: others then see its state)."""
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c is not None]
    return instantiate(
        cfg.trainer, callbacks=list(first_callbacks) + callbacks, logger=loggers or False, plugins=[AtomicCheckpointIO()]
    )


def scalar_metrics(metrics: dict) -> dict:
    """Logged metrics as plain floats (NaN dropped), keyed by their logged names."""
    values = {k: float(v) for k, v in metrics.items() if (torch.is_tensor(v) and v.numel() == 1) or isinstance(v, (int, float))}
    return {k: v for k, v in values.items() if not math.isnan(v)}


def write_metrics(output_dir: Path, metrics: dict) -> Path:
    path = Path(output_dir) / METRICS_FILE
    write_json(path, metrics)
    log.info("metrics written to %s", path)
    return path


def load_classifier(path: str, cfg: DictConfig) -> ImageClassifier:
    """The classifier saved in `path`, for cfg.data's classes; cfg.tta_flip (when not null) replaces its setting."""
    ckpt = from_project_root(path)
    if not ckpt.is_file():
        raise FileNotFoundError(f"ckpt_path={path}: no such checkpoint file.")
    # The architecture comes from the checkpoint's hyperparameters; weights from its state dict, so nothing is downloaded.
    model = ImageClassifier.load_from_checkpoint(ckpt, map_location="cpu", pretrained=False, weights_path=None)
    if model.hparams.num_classes != len(cfg.data.class_names):
        raise ValueError(
            f"{ckpt} predicts {model.hparams.num_classes} classes but data.class_names lists {len(cfg.data.class_names)}."
        )
    if cfg.get("tta_flip") is not None:
        model.hparams.tta_flip = bool(cfg.tta_flip)
    return model


def checkpoint_paths(spec) -> list[str]:
    """ckpt_path as a list of files: one path, a list of paths, or a glob pattern (fold_*/checkpoints/best.ckpt)."""
    specs = [spec] if isinstance(spec, str) else list(spec)
    paths = []
    for item in specs:
        if glob.has_magic(str(item)):
            matches = sorted(glob.glob(str(from_project_root(item))))
            if not matches:
                raise FileNotFoundError(f"ckpt_path={item}: the pattern matches no file.")
            paths += matches
        else:
            paths.append(str(item))
    return paths


def load_checkpoint(cfg: DictConfig):
    """The classifier in cfg.ckpt_path, and a datamodule configured for its input size and classes."""
    model = load_classifier(cfg.ckpt_path, cfg)
    datamodule = instantiate(cfg.data, image_size=model.hparams.image_size)
    return model, datamodule
