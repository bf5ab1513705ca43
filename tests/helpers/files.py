"""Reading what the runs write."""

from __future__ import annotations

import csv
from pathlib import Path


def read_csv(path: Path | str) -> list[dict[str, str]]:
    """The rows of a csv with a header, as dicts."""
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))
