"""Building Lightning objects from a composed config, and what a run leaves in its run dir."""

from __future__ import annotations

import csv
import glob
import logging
import math
from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from vehicle_transfer.checkpoint_io import AtomicCheckpointIO
from vehicle_transfer.data.table import ImageTable
from vehicle_transfer.files import write_csv, write_json
from vehicle_transfer.models.classifier import ImageClassifier
from vehicle_transfer.paths import from_project_root
from vehicle_transfer.prediction_files import write_predictions

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
TEST_PREDICTIONS_FILE = "test_predictions.csv"  # what the test metrics were computed from, image by image
OUT_OF_FOLD_FILE = "oof_predictions.csv"  # cross-validation: every fold's test predictions, one file


def seed_run(cfg: DictConfig) -> None:
    if cfg.get("seed") is not None:  # 0 is a seed too
        L.seed_everything(cfg.seed, workers=True)


def build_trainer(cfg: DictConfig, first_callbacks: list[L.Callback] = ()) -> L.Trainer:
    """`first_callbacks` run before the configured ones (the finetune schedule: others then see its state)."""
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c is not None]
    return instantiate(
        cfg.trainer,
        callbacks=list(first_callbacks) + callbacks,
        logger=loggers or False,
        plugins=[AtomicCheckpointIO()],
    )


def scalar_metrics(metrics: dict) -> dict:
    """Logged metrics as plain floats (NaN dropped), keyed by their logged names."""
    values = {
        k: float(v)
        for k, v in metrics.items()
        if (torch.is_tensor(v) and v.numel() == 1) or isinstance(v, (int, float))
    }
    return {k: v for k, v in values.items() if not math.isnan(v)}


def write_metrics(output_dir: Path, metrics: dict) -> Path:
    path = Path(output_dir) / METRICS_FILE
    write_json(path, metrics)
    log.info("metrics written to %s", path)
    return path


def save_test_predictions(
    output_dir: Path, data_cfg: DictConfig, table: ImageTable, batches: list[torch.Tensor]
) -> None:
    """The tested images' predictions, probabilities and labels; not written when only some images were
    tested (fast_dev_run, limit_test_batches), so the file always covers the whole test set."""
    tested = sum(len(b) for b in batches)
    if tested != len(table):
        log.warning("%d of %d test images were tested: %s not written", tested, len(table), TEST_PREDICTIONS_FILE)
        return
    write_predictions(
        Path(output_dir) / TEST_PREDICTIONS_FILE,
        table.names,
        torch.cat(batches).numpy(),
        data_cfg.name_column,
        data_cfg.label_column,
        list(data_cfg.class_names),
        true_labels=table.labels,
    )


def pool_fold_predictions(output_dir: Path, folds: int) -> None:
    """Every fold's test predictions (its validation images) in one file with a `fold` column: the
    out-of-fold predictions, each labelled image predicted once by a model that never trained on it."""
    files = [Path(output_dir) / f"fold_{fold}" / TEST_PREDICTIONS_FILE for fold in range(folds)]
    if not all(f.is_file() for f in files):
        log.warning("not every fold wrote %s: %s not written", TEST_PREDICTIONS_FILE, OUT_OF_FOLD_FILE)
        return
    rows = []
    for fold, path in enumerate(files):
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader) + ["fold"]
            rows += [row + [fold] for row in reader]
    write_csv(Path(output_dir) / OUT_OF_FOLD_FILE, header, rows)


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
