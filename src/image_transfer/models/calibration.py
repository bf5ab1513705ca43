"""Temperature scaling (Guo et al., 2017): the logits of every view divided by a temperature fitted to minimise the
negative log-likelihood of held-out images, so that a predicted 0.9 is right about 90 % of the time. It changes no
argmax (one temperature) and so no accuracy. One temperature per class (vector scaling without bias) can help when
classes are over- and under-confident in different ways; it may move an argmax."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torchmetrics.functional.classification import multiclass_calibration_error

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


def fit_temperature(view_logits: torch.Tensor, labels: torch.Tensor, per_class: bool = False) -> torch.Tensor:
    """The temperature (one per class, all equal unless `per_class`) that minimises the NLL of `labels`."""
    classes = view_logits.shape[-1]
    view_logits, labels = view_logits.detach().float().cpu(), labels.cpu()
    log_t = torch.zeros(classes if per_class else 1, requires_grad=True)  # log: the temperature stays positive
    optimizer = torch.optim.LBFGS([log_t], lr=0.5, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.nll_loss(calibrated_log_probs(view_logits, log_t.clamp(-LOG_BOUND, LOG_BOUND).exp()), labels)
        loss.backward()
        return loss

    optimizer.step(closure)
    return log_t.detach().clamp(-LOG_BOUND, LOG_BOUND).exp().expand(classes).clone()


def calibration_scores(log_probs: torch.Tensor, labels: torch.Tensor, bins: int = BINS) -> dict[str, float]:
    """Expected calibration error (top label, `bins` equal-width bins, L1) and negative log-likelihood."""
    probs = log_probs.exp()
    ece = multiclass_calibration_error(probs, labels, num_classes=probs.shape[1], n_bins=bins, norm="l1")
    return {"ece": float(ece), "nll": float(F.nll_loss(log_probs, labels))}
