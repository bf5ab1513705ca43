"""Imbalanced classes: class weights from the training images' counts, and a warning where a class is rare enough
that accuracy hides how the model does on it."""

from __future__ import annotations

import logging
from collections import Counter

from omegaconf import DictConfig

from image_transfer.errors import ConfigError

log = logging.getLogger(__name__)

RARE = 0.10  # a class under this share of the training images gets the warning


def class_weights(cfg: DictConfig, classes: list[tuple[int, ...]], num_classes: int, multi_label: bool) -> dict:
    """model.class_weights=auto as numbers for instantiate, from each training image's classes: as scikit-learn's
    "balanced" (images / (classes x the class's count)); multi-label, each class's negatives per positive (its
    positives then weigh as much as its negatives). {} when the config gives numbers or none."""
    given = cfg.model.get("class_weights")
    if given is None or not isinstance(given, str):
        return {}
    if given != "auto":
        raise ConfigError(f"model.class_weights={given}: use auto, a list of {num_classes} numbers, or null.")
    count, images = Counter(c for image in classes for c in image), len(classes)
    if multi_label:
        weights = [(images - count[c]) / max(count[c], 1) for c in range(num_classes)]
    else:
        weights = [images / (num_classes * count[c]) for c in range(num_classes)]
    log.info("class weights (auto, from the training counts): %s", ", ".join(f"{w:.3g}" for w in weights))
    return {"class_weights": weights}


def warn_if_imbalanced(classes: list[tuple[int, ...]], class_names: list[str]) -> None:
    """`classes`: each training image's classes (one, or a multi-label set)."""
    count, images = Counter(c for image in classes for c in image), len(classes)
    rare = {name: count[i] / images for i, name in enumerate(class_names) if count[i] / images < RARE}
    if rare:
        shares = ", ".join(f"{name} {share:.1%}" for name, share in rare.items())
        log.warning(
            "imbalanced classes: %s of the %d training images. Accuracy can look good while such a class is missed; "
            "see val/balanced_acc and val/recall_<class> (multi-label: val/f1_<class>). Options: "
            "data.sampler=balanced, model.class_weights=auto, model.loss=focal; "
            "callbacks.model_checkpoint.monitor=val/balanced_acc (or val/f1) to keep the best checkpoint by it "
            "(its mode follows the metric).",
            shares,
            images,
        )
