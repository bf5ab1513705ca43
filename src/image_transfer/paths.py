"""Input paths resolve from the project root (or are absolute), never from the current directory."""

from __future__ import annotations

import os
from pathlib import Path

# The repository root (configs/, data/, logs/ live there); configs refer to it as ${project_root:}.
PROJECT_ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = PROJECT_ROOT / "configs"


def from_project_root(path: str | os.PathLike) -> Path:
    path = Path(path).expanduser()
    return path if path.is_absolute() else PROJECT_ROOT / path


def first_existing(*paths: str) -> str:
    """The first of `paths` that exists, else the first (whose absence the data module then reports)."""
    return os.path.normpath(next((p for p in paths if from_project_root(p).exists()), paths[0]))
