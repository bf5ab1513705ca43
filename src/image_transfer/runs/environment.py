"""The software stack and code a run used, so a result can be traced to what made it (environment.json)."""

from __future__ import annotations

import platform
import subprocess
import sys
from importlib import metadata

from image_transfer.paths import PROJECT_ROOT

ENVIRONMENT_FILE = "environment.json"
PACKAGES = ("torch", "torchvision", "lightning", "timm", "torchmetrics", "hydra-core", "numpy", "pillow")


def git_commit() -> dict:
    """The project's commit and whether the work tree differs from it (None outside a git checkout)."""

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def environment() -> dict:
    import torch  # here, not at the top: git_commit's readers (scripts/reproduce.py) start without torch

    cuda = torch.cuda.is_available()
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": {name: _version(name) for name in PACKAGES},
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else [],
        "cpu": {"machine": platform.machine(), "cores": torch.get_num_threads()},
        "git": git_commit(),
    }
