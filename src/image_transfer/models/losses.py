"""The training loss: cross-entropy, or the focal loss (Lin et al., 2017) that down-weights images the model already
gets right, so rare or hard classes weigh more; both with optional class weights and label smoothing, on hard labels
or MixUp/CutMix's soft targets."""

from __future__ import annotations

import torch
import torch.nn.functional as F

LOSSES = ("cross_entropy", "focal")


def classification_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    loss: str = "cross_entropy",
    weight: torch.Tensor | None = None,
    label_smoothing: float = 0.0,
    gamma: float = 2.0,
) -> torch.Tensor:
    if loss == "cross_entropy":
        return F.cross_entropy(logits, targets, weight=weight, label_smoothing=label_smoothing)
    classes = logits.shape[1]
    soft = F.one_hot(targets, classes).float() if targets.ndim == 1 else targets.float()
    soft = soft * (1 - label_smoothing) + label_smoothing / classes
    log_p = logits.float().log_softmax(dim=1)
    per_class = -soft * (1 - log_p.exp()) ** gamma * log_p  # gamma=0: cross-entropy
    if weight is not None:
        per_class = per_class * weight
    return per_class.sum(dim=1).mean()
