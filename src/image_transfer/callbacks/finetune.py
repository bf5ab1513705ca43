"""Freeze/unfreeze fine-tuning as a Lightning callback.

One rule covers every strategy: the head always trains, and backbone stages become trainable from
the top, one chunk at each epoch of `unfreeze_at_epochs`:
  frozen          []        the backbone never trains (feature extraction)
  full            [0]       everything trains from the start
  freeze_unfreeze [N]       head alone for N epochs, then everything (fastai's fine_tune)
  gradual         [a, b, c] the top third at a, two thirds at b, everything at c
What is trainable is a pure function of the epoch, re-applied at every epoch start through the module's own
set_trainable, so resuming from any checkpoint re-creates exactly the right state; parameter groups never change
(the module puts every parameter in the optimizer from the start), so optimizer state and schedulers survive.
"""

from __future__ import annotations

import logging

import lightning as L
import numpy as np
from lightning.pytorch.utilities import rank_zero_only
from torch import nn

log = logging.getLogger(__name__)


def backbone_stages(backbone: nn.Module) -> list[nn.Module]:
    """The backbone's parameterised top-level children, bottom to top; containers of blocks
    (timm's `blocks`, torchvision's `features`) are opened one level so each block is a stage."""
    stages = []
    for child in backbone.children():
        inner = [c for c in child.children() if any(True for _ in c.parameters())]
        if isinstance(child, (nn.Sequential, nn.ModuleList)) and len(inner) > 1:
            stages.extend(inner)
        elif any(True for _ in child.parameters()):
            stages.append(child)
    return stages


class FinetuneSchedule(L.Callback):
    def __init__(self, unfreeze_at_epochs: list[int] | tuple[int, ...] = (), train_bn_stats: bool = True):
        """train_bn_stats=False keeps every backbone BatchNorm in inference mode even once unfrozen
        (its affine weights still train): steadier fine-tuning on small data sets and batches."""
        self.unfreeze_at_epochs = sorted(unfreeze_at_epochs)
        self.train_bn_stats = train_bn_stats
        self._counts: tuple[int, int] | None = None

    def trainable_stages(self, stages: list[nn.Module], epoch: int) -> list[nn.Module]:
        if not self.unfreeze_at_epochs:
            return []
        chunks = np.array_split(np.arange(len(stages))[::-1], len(self.unfreeze_at_epochs))
        reached = sum(epoch >= e for e in self.unfreeze_at_epochs)
        return [stages[i] for chunk in chunks[:reached] for i in chunk]

    def apply(self, pl_module: L.LightningModule, epoch: int) -> None:
        """Make the module trainable as at `epoch`, through its own set_trainable (which also sets BatchNorm modes)."""
        stages = self.trainable_stages(backbone_stages(pl_module.backbone), epoch)
        pl_module.set_trainable(stages, bn_stats_frozen=not self.train_bn_stats)
        self._log_counts(pl_module, epoch)

    def _log_counts(self, pl_module: L.LightningModule, epoch: int) -> None:
        trainable = sum(p.numel() for p in pl_module.parameters() if p.requires_grad)
        frozen = sum(p.numel() for p in pl_module.parameters() if not p.requires_grad)
        if (trainable, frozen) != self._counts:
            if rank_zero_only.rank == 0:  # under DDP, once
                log.info("epoch %d: %d trainable, %d frozen parameters", epoch, trainable, frozen)
            if pl_module.logger is not None:
                pl_module.logger.log_metrics(
                    {"finetune/trainable_params": trainable, "finetune/frozen_params": frozen},
                    step=pl_module.global_step,
                )
            self._counts = (trainable, frozen)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Not on_fit_start: when resuming, the epoch counter is restored only after that hook.
        self.apply(pl_module, trainer.current_epoch)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.apply(pl_module, trainer.current_epoch)
