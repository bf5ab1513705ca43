"""The metric a sweeper optimises (`optimized_metric`): which names a run logs, which way is better, and the value
a job hands to the sweeper."""

from __future__ import annotations

import math

from omegaconf import DictConfig

from image_transfer.errors import ConfigError
from image_transfer.models.metric_names import MULTI_LABEL, SINGLE_LABEL, VAL_ACC_BEST
from image_transfer.runs.failures import in_multirun


def logged_metrics(multi_label: bool) -> frozenset[str]:
    """What ImageClassifier logs per stage (models/metrics.py, and its loss), plus the best validation accuracy so
    far; test/* only when the run tests (test=true), no ece in training. Checked against real runs by
    tests/test_optuna_search.py and tests/test_multilabel.py."""
    names = ("loss", *(MULTI_LABEL if multi_label else SINGLE_LABEL))
    logged = [f"{stage}/{name}" for stage in ("train", "val", "test") for name in names]
    return frozenset(logged + [VAL_ACC_BEST]) - {"train/ece"}


LOGGED_METRICS = logged_metrics(False) | logged_metrics(True)


def check_objective(cfg: DictConfig) -> None:
    """Before anything trains: `optimized_metric` must be a metric this run logs (or null)."""
    metric = cfg.get("optimized_metric")
    if metric is None:
        return
    if metric not in LOGGED_METRICS:
        raise ConfigError(
            f"optimized_metric={metric} is not a metric this project logs: use one of "
            f"{', '.join(sorted(LOGGED_METRICS))} (or optimized_metric=null)."
        )
    if metric.startswith("test/") and not cfg.get("test"):
        raise ConfigError(f"optimized_metric={metric} is only logged when the run tests: set test=true.")


def objective_value(cfg: DictConfig, metrics: dict) -> float | None:
    """The value a Hydra sweeper receives. In a multirun a job without a finite value fails (its sweep records
    why) instead of handing the sweeper a silent None; a single run returns what it has."""
    metric = cfg.get("optimized_metric")
    value = metrics.get(metric) if metric else None
    if metric and in_multirun() and (value is None or not math.isfinite(value)):
        # outputs.scalar_metrics drops NaN: a missing value is a NaN, or a stage that never ran.
        raise RuntimeError(
            f"optimized_metric={metric}: the run logged no finite value ({value if value is not None else 'NaN'}: "
            "did the loss diverge? Or no validation ran: with data.val_fraction=0 set optimized_metric=null)."
        )
    return value
