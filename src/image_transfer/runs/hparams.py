"""A run's settings beside its final metrics, for every logger: TensorBoard's HPARAMS session (every job of a sweep,
a search or a cross-validation is one row of its table: `tensorboard --logdir <sweep dir>`), and the params and
final values of the other trackers (runs/trackers.py).

Lightning would log the module's constructor arguments at the start with no metrics (or a placeholder hp_metric);
the module and datamodule opt out of that (`save_hyperparameters(logger=False)`) and the session is written here,
once the final metrics exist.
"""

from __future__ import annotations

import math

from lightning.pytorch.loggers import Logger, TensorBoardLogger
from omegaconf import DictConfig

from image_transfer.callbacks.finetune_config import finetune
from image_transfer.models.metric_names import SESSION_METRICS


def run_hparams(cfg: DictConfig) -> dict[str, float | int | str | bool]:
    """The settings that decide a result, as scalar values TensorBoard can sort and filter by."""
    model, data, schedule = cfg.model, cfg.data, finetune(cfg)
    optimizer = model.get("optimizer") or {}
    ema = (cfg.get("callbacks") or {}).get("ema")
    fold = data.get("fold")
    return {
        "backbone": str(model.backbone),
        "finetune": schedule.strategy,
        "unfreeze_at_epochs": ",".join(map(str, schedule.unfreeze_at_epochs)) or "never",
        "lr": float(optimizer.get("lr", math.nan)),
        "backbone_lr_factor": float(model.get("backbone_lr_factor", 1.0)),
        "weight_decay": float(optimizer.get("weight_decay", math.nan)),
        "batch_size": int(data.batch_size),
        "image_size": int(model.image_size),
        "augment": str(data.augment),
        "label_smoothing": float(model.get("label_smoothing", 0.0)),
        "mixup_alpha": float(model.get("mixup_alpha", 0.0)),
        "cutmix_alpha": float(model.get("cutmix_alpha", 0.0)),
        "loss": str(model.get("loss", "cross_entropy")),
        "class_weights": str(model.get("class_weights")),
        "sampler": str(data.get("sampler", "random")),
        "ema_decay": float(ema.decay) if ema is not None else 0.0,
        "tta_flip": bool(model.get("tta_flip", False)),
        "max_epochs": int(cfg.trainer.get("max_epochs") or 0),
        "seed": "none" if cfg.get("seed") is None else int(cfg.seed),
        "fold": "none" if fold is None else str(fold),
    }


def record_session(loggers: list[Logger], cfg: DictConfig, metrics: dict, step: int, fold: str | None = None) -> None:
    """The run's settings and final metrics to every logger, at `step` (the run's last: earlier points stay in
    order). TensorBoard gets its HPARAMS session (the SESSION_METRICS); other trackers (MLflow, W&B, CSV) the settings
    as their params and every number of metrics.json as its final value. `fold` overrides the fold hparam (a
    cross-validation's mean session says "mean")."""
    params = run_hparams(cfg) | ({"fold": fold} if fold is not None else {})
    numbers = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            session = {k: numbers[k] for k in SESSION_METRICS if k in numbers}
            # run_name="." puts the session in the logger's own run dir, beside the curves it summarises.
            logger.experiment.add_hparams(params, session, run_name=".", global_step=step)
        else:
            logger.log_hyperparams(params)
            logger.log_metrics(numbers, step=step)
