"""Prediction csv files: submissions for unlabelled images, and the predictions behind a run's test metrics."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vehicle_transfer.files import write_csv


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
