"""Reading what the runs write."""

from __future__ import annotations

import csv
import json
from pathlib import Path

# What differs between two runs that trained identically: measured durations, and where the best checkpoint lies.
TIMINGS = {
    "wall_time_s",
    "train/images_per_s",
    "train/last_epoch_images_per_s",
    "train/data_wait_share",
    "best_ckpt",
}


def read_csv(path: Path | str) -> list[dict[str, str]]:
    """The rows of a csv with a header, as dicts."""
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def write_csv(path: Path | str, rows: list[dict[str, str]]) -> None:
    """Rows (dicts with the same keys) as a csv with a header."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def without_timings(metrics: dict) -> dict:
    """Metrics without TIMINGS: equal for runs that trained the same."""
    return {k: v for k, v in metrics.items() if k not in TIMINGS}


def metrics_without_timings(run_dir: Path) -> dict:
    return without_timings(json.loads((Path(run_dir) / "metrics.json").read_text()))
