"""Reseed every global random generator at each training epoch start, from (seed, epoch).

Dropout (and any other draw from the global generators) in epoch e then depends only on the seed
and e, never on what ran before, so a run resumed from a checkpoint continues exactly as an
uninterrupted one would. Shuffling and augmentation do not rely on this: SeededEpochSampler
derives them from (seed, epoch) itself, since the first iterator of a fit exists before this hook.
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
