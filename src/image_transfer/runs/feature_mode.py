"""Whether a run's head trains on cached backbone features (data.feature_cache) instead of images."""

from __future__ import annotations

import logging

from omegaconf import DictConfig

from image_transfer.callbacks.finetune_config import finetune
from image_transfer.errors import ConfigError

log = logging.getLogger(__name__)


def feature_views(cfg: DictConfig) -> int:
    """0: batches of images; 1 or 2: the views of each image (the image, and its mirror for data.augment=flip or flip
    TTA) whose cached features the head trains and is evaluated on.

    data.feature_cache=auto caches them whenever that is the same run as with images: the backbone never trains,
    augmentation is none or flip (fixed views), no MixUp/CutMix, and every batch runs; true insists (refused, with
    why, otherwise); false never.
    """
    option = cfg.data.get("feature_cache", "auto")
    if option not in ("auto", True, False):
        raise ConfigError(f"data.feature_cache={option!r}: use auto, true or false.")
    unfreeze = list(finetune(cfg).unfreeze_at_epochs)
    model, trainer = cfg.model, cfg.trainer
    obstacles = [
        (unfreeze, f"the backbone trains from epoch {min(unfreeze or [0])} (finetune.unfreeze_at_epochs={unfreeze})"),
        (
            cfg.data.augment not in ("none", "flip"),
            f"data.augment={cfg.data.augment} makes new images every epoch (none or flip give fixed views)",
        ),
        (model.get("mixup_alpha") or model.get("cutmix_alpha"), "MixUp/CutMix mix images (model.mixup_alpha=0, ...)"),
        (
            trainer.get("fast_dev_run")
            or trainer.get("overfit_batches")
            or trainer.get("limit_train_batches", 1.0) not in (1.0, None),
            "only some batches run (fast_dev_run, overfit_batches, limit_train_batches): caching all costs more",
        ),
    ]
    reasons = [reason for present, reason in obstacles if present]
    if option is False or (reasons and option == "auto"):
        if not unfreeze and option == "auto":  # a frozen backbone: say why its features are run every epoch
            log.info("backbone features are computed every epoch: %s", "; ".join(reasons))
        return 0
    if reasons:
        raise ConfigError(f"data.feature_cache=true, but {'; '.join(reasons)}. Use data.feature_cache=auto or false.")
    views = 2 if cfg.data.augment == "flip" or model.get("tta_flip") else 1
    log.info(
        "the backbone never trains: its features (%d view(s) per image) are computed once and the head trains on them "
        "(data.feature_cache=false: the backbone runs every epoch)",
        views,
    )
    return views
