"""Input paths resolve from the project root (or are absolute), never from the current directory."""

from __future__ import annotations

import os
from pathlib import Path

from vehicle_transfer import PROJECT_ROOT


def from_project_root(path: str | os.PathLike) -> Path:
    path = Path(path).expanduser()
    return path if path.is_absolute() else PROJECT_ROOT / path
