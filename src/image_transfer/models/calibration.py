"""Temperature scaling (Guo et al., 2017): the logits of every view divided by a temperature fitted to minimise the
negative log-likelihood of held-out images, so that a predicted 0.9 is right about 90 % of the time. It changes no
argmax (one temperature) and so no accuracy. One temperature per class (vector scaling without bias) can help when
classes are over- and under-confident in different ways; it may move an argmax. Multi-label models (a sigmoid per
class) are calibrated the same way, on the binary cross-entropy of every class's probability."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torchmetrics.functional.classification import binary_calibration_error, multiclass_calibration_error

BINS = 15  # the bins of the reported expected calibration error (top label, L1), as in Guo et al.
METHODS = ("temperature", "class_temperature", "none")
# Bounds of a fitted temperature: a model whose outputs carry no information has its NLL optimum at an infinite
# temperature (uniform probabilities); bounded, the fit ends there instead of drifting.
LOG_BOUND = math.log(100.0)


def calibrated_log_probs(view_logits: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
    """Class log-probabilities (N, C) of logits (N, views, C): per view softmax(logits / temperature), then the mean
    probability of the views (flip TTA). A temperature of 1 divides exactly, leaving uncalibrated models' numbers
    bit for bit as they were."""
    log_probs = (view_logits / temperature).log_softmax(dim=-1).unbind(1)
    return log_probs[0] if len(log_probs) == 1 else torch.logaddexp(*log_probs) - math.log(2)


def calibrated_probs(view_logits: torch.Tensor, temperature: torch.Tensor, multi_label: bool = False) -> torch.Tensor:
    """Class probabilities (N, C): softmax as calibrated_log_probs, or (multi-label) each class's sigmoid, the mean of
    the views'."""
    if multi_label:
        return (view_logits / temperature).sigmoid().mean(dim=1)
    return calibrated_log_probs(view_logits, temperature).exp()


def loss_of(probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The NLL of class labels (N,) under probabilities (N, C); the binary cross-entropy of multi-hot targets (N, C)."""
    if targets.ndim == 2:
        return F.binary_cross_entropy(probs.clamp(1e-7, 1 - 1e-7), targets.float())
    return F.nll_loss(probs.clamp(min=1e-30).log(), targets)


def fit_temperature(view_logits: torch.Tensor, labels: torch.Tensor, per_class: bool = False) -> torch.Tensor:
    """The temperature (one per class, all equal unless `per_class`) that minimises the NLL of `labels` (class
    indices (N,)), or the binary cross-entropy of multi-hot targets (N, C)."""
    classes = view_logits.shape[-1]
    view_logits, labels, multi_label = view_logits.detach().float().cpu(), labels.cpu(), labels.ndim == 2
    log_t = torch.zeros(classes if per_class else 1, requires_grad=True)  # log: the temperature stays positive
    optimizer = torch.optim.LBFGS([log_t], lr=0.5, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        temperature = log_t.clamp(-LOG_BOUND, LOG_BOUND).exp()
        if multi_label:
            loss = loss_of(calibrated_probs(view_logits, temperature, multi_label=True), labels)
        else:  # in log space: exact where probabilities underflow
            loss = F.nll_loss(calibrated_log_probs(view_logits, temperature), labels)
        loss.backward()
        return loss

    optimizer.step(closure)
    return log_t.detach().clamp(-LOG_BOUND, LOG_BOUND).exp().expand(classes).clone()


def calibration_scores(probs: torch.Tensor, labels: torch.Tensor, bins: int = BINS) -> dict[str, float]:
    """Expected calibration error (`bins` equal-width bins, L1: of the top label; multi-label, of every class's
    probability) and negative log-likelihood (multi-label: binary cross-entropy)."""
    if labels.ndim == 2:
        ece = binary_calibration_error(probs.flatten(), labels.flatten().long(), n_bins=bins, norm="l1")
    else:
        ece = multiclass_calibration_error(probs, labels, num_classes=probs.shape[1], n_bins=bins, norm="l1")
    return {"ece": float(ece), "nll": float(loss_of(probs, labels))}
