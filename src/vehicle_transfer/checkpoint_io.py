"""Checkpoints written atomically: a killed run never leaves a truncated file that looks complete.

Lightning's own save goes through an fsspec transaction that, for local files, stages in the
system temp dir and moves the file over (a copy when /tmp is another file system). Here the
file is written next to its target, flushed to disk, then renamed over it in one step.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.partial")
        try:
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
