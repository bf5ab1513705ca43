"""What a run leaves in its run dir: metrics.json and the prediction csv files."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import torch

from image_transfer.errors import UserError
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
    true_labels: list[int] | list[tuple[int, ...]] | None = None,
    label_format: str = "name",
    predicted: np.ndarray | None = None,
    delimiter: str = "|",
) -> Path:
    """`name_column, label_column` (the predicted class's name; its index with label_format=index, as the hackathon's
    submission format asks); with `probabilities`, a `prob_<class>` column per class; with `true_labels`,
    `true_<label_column>` (the labelled class, written the same way). `predicted`: the classes the model's decision
    rule predicts (N,), else the most probable.

    Multi-label: `predicted`, a boolean (N, C) matrix of each image's predicted classes, makes the label column the
    predicted classes joined by `delimiter` (none: empty), and `true_labels` each image's labelled classes
    (ImageTable.label_sets), written the same way."""
    if len(names) != len(probs):
        raise ValueError(f"{path}: {len(names)} image names but {len(probs)} predictions")
    multi_label = predicted is not None and np.ndim(predicted) == 2
    if multi_label and np.shape(predicted) != np.shape(probs):
        raise ValueError(f"{path}: predicted classes {np.shape(predicted)} but probabilities {np.shape(probs)}")
    if label_format not in ("name", "index"):
        raise UserError(f"label_format={label_format!r}: use name (the class name) or index (its position).")

    def label(index: int):
        return class_names[index] if label_format == "name" else index

    def labels(indices) -> str:
        return delimiter.join(str(label(int(i))) for i in indices)

    header = [name_column, label_column]
    header += [f"prob_{c}" for c in class_names] if probabilities else []
    header += [f"true_{label_column}"] if true_labels is not None else []
    predicted = probs.argmax(axis=1) if predicted is None else predicted
    rows = []
    for i, (name, p) in enumerate(zip(names, probs)):
        row = [name, labels(np.flatnonzero(predicted[i])) if multi_label else label(int(predicted[i]))]
        row += [f"{q:.6f}" for q in p] if probabilities else []
        if true_labels is not None:
            row.append(labels(true_labels[i]) if multi_label else label(true_labels[i]))
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


def save_test_predictions(output_dir: Path, datamodule, model) -> None:
    """The tested images' predictions (by the model's decision rule), probabilities and labels; not written when
    only some images were tested (fast_dev_run, limit_test_batches), so the file always covers the whole test set."""
    table, batches = datamodule.test_table, model.test_probabilities
    tested = sum(len(b) for b in batches)
    if tested != len(table):
        log.warning("%d of %d test images were tested: %s not written", tested, len(table), TEST_PREDICTIONS_FILE)
        return
    probs = torch.cat(batches)
    write_predictions(
        Path(output_dir) / TEST_PREDICTIONS_FILE,
        table.names,
        probs.numpy(),
        datamodule.name_column,
        datamodule.label_column,
        datamodule.class_names,
        true_labels=table.label_sets if datamodule.multi_label else table.labels,
        predicted=model.decide(probs).numpy(),
        delimiter=datamodule.label_delimiter,
    )
