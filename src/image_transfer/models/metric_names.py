"""The metrics' names and which way is better: the one place every consumer (the metric collections, a sweep's
objective, the checkpoint callback's mode, TensorBoard's HPARAMS session, the scripts' tables) reads them from.
Dependency-free, so that scripts and sweeps know the names without importing torchmetrics (models/metrics.py builds
the metrics themselves)."""

from __future__ import annotations

# The headline metrics of each stage by name (`<stage>/<name>`; every class's own, recall_<class> / f1_<class>,
# besides): what a sweep may optimise (sweeps/objective.py) and the progress bar shows.
SINGLE_LABEL = ("acc", "f1", "balanced_acc", "auroc", "ece")
MULTI_LABEL = ("acc", "exact_match", "f1", "map", "auroc", "ece")
# Where lower is better; every other logged metric (accuracy, F1, AUROC, `epoch`) is maximised.
LOWER_IS_BETTER = ("loss", "ece")

VAL_ACC = "val/acc"  # what the result tables report (README, scripts/reproduce.py, scripts/benchmark.py)
VAL_ACC_BEST = "val/acc_best"  # the best validation accuracy so far (ImageClassifier), a run's default objective
# The metrics of a TensorBoard HPARAMS session (runs/hparams.py); test/acc only where the run was tested.
SESSION_METRICS = (VAL_ACC_BEST, VAL_ACC, "val/loss", "test/acc")


def lower_is_better(metric: str) -> bool:
    """`metric`: a logged name, `<stage>/<name>` (or a bare name)."""
    return metric.rsplit("/", 1)[-1] in LOWER_IS_BETTER


def mode(metric: str) -> str:
    """Lightning's word for the better way (ModelCheckpoint's mode): min or max. Configs ask it through the
    ${metric_mode:<metric>} resolver."""
    return "min" if lower_is_better(metric) else "max"


def direction(metric: str) -> str:
    """Optuna's word for the better way: minimize or maximize."""
    return "minimize" if lower_is_better(metric) else "maximize"
