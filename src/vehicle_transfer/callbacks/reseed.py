"""Reseed every random generator at each training epoch start, from (seed, epoch).

Shuffling, augmentation and dropout of epoch e then depend only on the seed and e, never on what
ran before, so a run resumed from a checkpoint continues exactly as an uninterrupted one would.
(The iterator of the training DataLoader, and so its shuffle order, is created after this hook.)
"""

from __future__ import annotations

import random

import lightning as L
import numpy as np
import torch


class ReseedEachEpoch(L.Callback):
    def __init__(self, seed: int | None):
        self.seed = seed

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.seed is None:
            return
        epoch_seed = (self.seed * 1_000_003 + trainer.current_epoch) % 2**32
        random.seed(epoch_seed)
        np.random.seed(epoch_seed)
        torch.manual_seed(epoch_seed)
