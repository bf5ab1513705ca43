"""The training loss: cross-entropy, or the focal loss (Lin et al., 2017) that down-weights images the model already
gets right, so rare or hard classes weigh more; both with optional class weights and label smoothing, on hard labels
or MixUp/CutMix's soft targets; for multi-label targets (N, C) the binary forms, one yes/no per class, the class
weights weighing each class's positives (BCE's pos_weight)."""

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
    multi_label: bool = False,
) -> torch.Tensor:
    if multi_label:
        return binary_loss(logits, targets, loss, weight, label_smoothing, gamma)
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


def binary_loss(logits, targets, loss: str, pos_weight, label_smoothing: float, gamma: float) -> torch.Tensor:
    """Per class: binary cross-entropy, or its focal form (as torchvision's sigmoid_focal_loss, with pos_weight)."""
    targets = targets.float() * (1 - label_smoothing) + label_smoothing / 2
    bce = F.binary_cross_entropy_with_logits(logits.float(), targets, pos_weight=pos_weight, reduction="none")
    if loss == "cross_entropy":
        return bce.mean()
    p = logits.float().sigmoid()
    p_right = p * targets + (1 - p) * (1 - targets)
    return (bce * (1 - p_right) ** gamma).mean()
