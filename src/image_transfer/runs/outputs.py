"""What a run leaves in its run dir: metrics.json and the prediction csv files."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from image_transfer.data.table import ImageTable
from image_transfer.files import write_csv, write_json

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
TEST_PREDICTIONS_FILE = "test_predictions.csv"  # what the test metrics were computed from, image by image


def write_predictions(
    path: Path,
    names: list[str],
    probs: np.ndarray,
    name_column: str,
    label_column: str,
    class_names: list[str],
    probabilities: bool = True,
    true_labels: list[int] | None = None,
) -> Path:
    """`name_column, label_column` (the predicted class index: the hackathon's submission format); with
    `probabilities`, the predicted class's `probability` and a `prob_<class>` column per class; with
    `true_labels`, `true_<label_column>` (the labelled class)."""
    if len(names) != len(probs):
        raise ValueError(f"{path}: {len(names)} image names but {len(probs)} predictions")
    header = [name_column, label_column]
    header += ["probability"] + [f"prob_{c}" for c in class_names] if probabilities else []
    header += [f"true_{label_column}"] if true_labels is not None else []
    rows = []
    for i, (name, p) in enumerate(zip(names, probs)):
        row = [name, int(p.argmax())]
        row += [f"{p.max():.6f}"] + [f"{q:.6f}" for q in p] if probabilities else []
        row += [true_labels[i]] if true_labels is not None else []
        rows.append(row)
    write_csv(Path(path), header, rows)
    return Path(path)


def scalar_metrics(metrics: dict) -> dict:
    """Logged metrics as plain floats (NaN dropped), keyed by their logged names. Not the LR monitor's `lr-*`: a
    curve (TensorBoard has it), whose last logged point depends on the logging cadence, so a resumed run's would
    differ from an uninterrupted one's."""
    values = {
        k: float(v)
        for k, v in metrics.items()
        if ((torch.is_tensor(v) and v.numel() == 1) or isinstance(v, (int, float))) and not k.startswith("lr-")
    }
    return {k: v for k, v in values.items() if not math.isnan(v)}


def write_metrics(output_dir: Path, metrics: dict) -> Path:
    path = write_json(Path(output_dir) / METRICS_FILE, metrics)
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
