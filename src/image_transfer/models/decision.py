"""The decision rule of a two-class model: predict the positive class when its (calibrated) probability reaches a
threshold, given or picked on held-out predictions for a target (a least recall or precision, the best F1, the least
cost). Kept in the checkpoint's hyper-parameters as a plain dict, and in an exported ONNX file's metadata:

    {"positive": 1, "positive_class": "emergency", "threshold": 0.21, "rule": "recall>=0.98"}

Without one (or with more classes), a model predicts the most probable class. A multi-label model predicts every
class whose probability reaches that class's threshold: {"thresholds": [0.4, 0.62, ...], "rule": "f1"} (0.5 each
without one), picked class by class in the same ways."""

from __future__ import annotations

import logging
import math

import torch
from torchmetrics.functional.classification import binary_roc

from image_transfer.errors import ConfigError

log = logging.getLogger(__name__)

PICKS = ("recall", "precision", "f1", "cost")


def positive_index(positive: str | None, class_names: list[str]) -> int:
    """decision.positive as a class index; null: the second class (as scikit-learn's pos_label=1)."""
    if positive is None:
        return 1
    if str(positive) not in class_names:
        raise ConfigError(f"decision.positive={positive}: not one of the classes {class_names}; name one of them.")
    return class_names.index(str(positive))


def check_settings(settings, class_names: list[str], multi_label: bool = False) -> None:
    """Refuse, before training, a decision config that cannot be applied."""
    threshold, pick = settings.get("threshold"), settings.get("pick")
    if threshold is None and pick is None:
        return
    if len(class_names) != 2 and not multi_label:
        raise ConfigError(
            f"decision.threshold/decision.pick apply to two classes; these data have {len(class_names)} "
            f"({class_names}): drop them (the most probable class is predicted)."
        )
    if not multi_label:
        positive_index(settings.get("positive"), class_names)
    if threshold is not None and pick is not None:
        raise ConfigError("decision.threshold and decision.pick are both set: give a threshold or a way to pick one.")
    if threshold is not None:
        probability(threshold, "decision.threshold")
    if pick is not None and pick not in PICKS:
        raise ConfigError(f"decision.pick={pick}: use one of {', '.join(PICKS)}.")
    if pick in ("recall", "precision") and not probability(settings.get("at_least"), "decision.at_least") > 0:
        raise ConfigError(f"decision.at_least={settings.get('at_least')}: use a fraction above 0.")
    if pick == "cost" and not number(settings.get("cost_ratio")) > 0:
        raise ConfigError(f"decision.cost_ratio={settings.get('cost_ratio')}: use a positive number.")


def number(value) -> float:
    """A setting as a number; NaN (which fails every range check) when it is none."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def probability(value, option: str) -> float:
    """`value` as a probability, or one message naming the option."""
    if not 0.0 <= number(value) <= 1.0:
        raise ConfigError(f"{option}={value}: use a probability between 0 and 1.")
    return number(value)


def with_threshold(decision: dict | None, threshold, class_names: list[str], multi_label: bool = False) -> dict | None:
    """A model's rule with `threshold=P` (eval, predict, export) in place of its own threshold(s); null keeps it."""
    if threshold is None:
        return decision
    threshold = probability(threshold, "threshold")
    if multi_label:
        return {"thresholds": [threshold] * len(class_names), "rule": "given"}
    if len(class_names) != 2:
        raise ConfigError(
            f"threshold={threshold} applies to two-class and multi-label models; this one predicts the most probable "
            f"of {len(class_names)} classes: drop it."
        )
    positive = int(decision["positive"]) if decision else 1
    return {"positive": positive, "positive_class": class_names[positive], "threshold": threshold, "rule": "given"}


def decide(probs: torch.Tensor, decision: dict | None, multi_label: bool = False) -> torch.Tensor:
    """Predicted class indices (N,) of class probabilities (N, C) under `decision` (None: the most probable); for a
    multi-label model, which classes each image has (N, C), bool."""
    if multi_label:
        thresholds = (decision or {}).get("thresholds") or [0.5] * probs.shape[1]
        return probs >= torch.tensor(thresholds, dtype=probs.dtype, device=probs.device)
    if not decision or decision.get("threshold") is None:
        return probs.argmax(dim=1)
    positive = int(decision["positive"])
    return torch.where(probs[:, positive] >= float(decision["threshold"]), positive, 1 - positive)


def precision_recall(predicted: torch.Tensor, labels: torch.Tensor, positive: int) -> dict[str, float]:
    """Precision and recall of the positive class."""
    tp = int(((predicted == positive) & (labels == positive)).sum())
    fp, fn = (
        int(((predicted == positive) & (labels != positive)).sum()),
        int(((predicted != positive) & (labels == positive)).sum()),
    )
    return {"precision": tp / (tp + fp) if tp + fp else 1.0, "recall": tp / (tp + fn) if tp + fn else 1.0}


def pick_threshold(scores: torch.Tensor, is_positive: torch.Tensor, settings) -> tuple[float, str]:
    """(threshold, rule) for the positive-class probabilities `scores` of images whose truth is `is_positive`.
    Candidates are the scores themselves (predict positive when score >= threshold), scanned with torchmetrics'
    ROC; the threshold returned lies halfway between the chosen score and the next lower one. recall (precision):
    among thresholds reaching decision.at_least, the one with the best precision (recall), the highest on ties; f1:
    the best F1; cost: the fewest false alarms + cost_ratio x misses."""
    pick = settings.pick
    fpr, tpr, thresholds = binary_roc(scores.float(), is_positive.long())
    positives, negatives = int(is_positive.sum()), int((~is_positive.bool()).sum())
    tp, fp = tpr * positives, fpr * negatives
    fn = positives - tp
    precision = torch.where(tp + fp > 0, tp / (tp + fp).clamp(min=1e-12), torch.ones_like(tp))
    if pick in ("recall", "precision"):
        at_least = float(settings.at_least)
        reached, other = (tpr, precision) if pick == "recall" else (precision, tpr)
        ok = reached >= at_least - 1e-9
        rule = f"{pick}>={at_least:g}"
        if not ok.any():
            log.warning("decision.pick=%s: no threshold reaches %s on these images; the closest is used", pick, rule)
            ok = reached == reached.max()
        chosen = torch.where(ok, other, torch.full_like(other, -1.0)).argmax()  # first of ties: the highest threshold
    elif pick == "f1":
        chosen, rule = (2 * tp / (2 * tp + fp + fn).clamp(min=1e-12)).argmax(), "best f1"
    else:
        ratio = float(settings.cost_ratio)
        chosen, rule = (fp + ratio * fn).argmin(), f"least cost (a miss costs {ratio:g} false alarms)"
    # Halfway to the next lower score: the same decisions on these images, and no image of them sits on the threshold.
    lower = thresholds[chosen + 1] if chosen + 1 < len(thresholds) else torch.zeros(())
    return float((thresholds[chosen].clamp(max=1.0) + lower) / 2), rule
