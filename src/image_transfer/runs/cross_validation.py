"""K-fold cross-validation: one fit per fold in <run dir>/fold_<i>, the mean and spread over folds, and the
out-of-fold predictions (every labelled image predicted once, by the model that never trained on it). Each fold's
temperature is fitted on its own held-out fold; a decision threshold to be picked (decision.pick) is picked once, on
all the out-of-fold predictions, and written into every fold's best.ckpt (so an ensemble of them applies it too)."""

from __future__ import annotations

import copy
import csv
import logging
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from image_transfer.errors import ConfigError
from image_transfer.files import write_atomically, write_csv, write_json
from image_transfer.models.calibration import calibration_scores
from image_transfer.models.decision import decide, precision_recall
from image_transfer.runs.calibrate import decision_rule, store_decision
from image_transfer.runs.environment import ENVIRONMENT_FILE, environment
from image_transfer.runs.fitting import fit, refuse_meaningless
from image_transfer.runs.outputs import TEST_PREDICTIONS_FILE, write_metrics
from image_transfer.runs.ranks import is_rank_zero
from image_transfer.runs.resume import CONFIG_FILE, LAST_CHECKPOINT, completed, require_same_config
from image_transfer.runs.trackers import build_loggers, finish_run, start_trackers

log = logging.getLogger(__name__)

OUT_OF_FOLD_FILE = "oof_predictions.csv"


def cross_validate(cfg: DictConfig) -> dict:
    """Fit every fold of data.folds; metrics: the mean over folds, `<name>_std` their standard deviation, and
    `folds` each fold's value. A resumed run skips finished folds. Every fold is checked before any trains."""
    start = time.perf_counter()
    output_dir = Path(cfg.paths.output_dir)
    if cfg.get("resume"):
        require_same_config(output_dir / CONFIG_FILE, cfg)
    refuse_meaningless(cfg)
    datamodule = instantiate(cfg.data, fold=0)
    datamodule.check_folds()
    pick = (cfg.get("decision") or {}).get("pick")
    if pick and datamodule.has_own_test_set:
        raise ConfigError(
            f"decision.pick={pick} with data.folds picks on the out-of-fold predictions, which the folds make by "
            "testing on their held-out fold: drop data.test_csv (evaluate the fold models on it afterwards)."
        )
    loggers = build_loggers(cfg)  # the folds' tracked runs are children of these
    if is_rank_zero():
        write_atomically(output_dir / CONFIG_FILE, OmegaConf.to_yaml(cfg, resolve=True))
        write_json(output_dir / ENVIRONMENT_FILE, environment())
    tracked = start_trackers(loggers) if is_rank_zero() else {}
    try:
        results = fit_folds(cfg, loggers)
    except BaseException:
        for logger in loggers:
            logger.finalize("failed")
        raise
    if not is_rank_zero():
        return {}  # under DDP rank 0 summarises
    pool_fold_predictions(output_dir, cfg.data.folds)
    metrics = summarise_folds(results) | tracked
    if pick:
        metrics |= pick_on_out_of_fold(cfg, datamodule, output_dir / OUT_OF_FOLD_FILE, metrics["fold_ckpts"])
    metrics["wall_time_s"] = round(time.perf_counter() - start, 1)
    write_metrics(output_dir, metrics)
    finish_run(loggers, cfg, metrics, step=0, fold="mean", own=True)
    return metrics


def fit_folds(cfg: DictConfig, loggers: list) -> list[dict]:
    """Each fold's metrics (a resumed run's finished folds as they were); `loggers`, the parents of theirs."""
    output_dir, pick = Path(cfg.paths.output_dir), (cfg.get("decision") or {}).get("pick")
    results = []
    for fold in range(cfg.data.folds):
        fold_dir = output_dir / f"fold_{fold}"
        finished = completed(fold_dir) if cfg.get("resume") else None
        if finished is not None:
            results.append(finished)
            continue
        fold_cfg = copy.deepcopy(cfg)
        restart = bool(cfg.get("resume")) and not (fold_dir / LAST_CHECKPOINT).is_file()
        with open_dict(fold_cfg):
            fold_cfg.data.fold = fold
            fold_cfg.paths.output_dir = str(fold_dir)
            if restart:
                fold_cfg.resume = None  # this fold had not finished an epoch: start it again
            if pick:
                fold_cfg.decision.pick = None  # picked below, on every fold's held-out images together
        log.info("fold %d of %d: %s", fold + 1, cfg.data.folds, fold_dir)
        results.append(fit(fold_cfg, restart=restart, parent=loggers))
    return results


def summarise_folds(results: list[dict]) -> dict:
    numbers = [k for k, v in results[0].items() if isinstance(v, (int, float)) and all(k in r for r in results)]
    metrics = {k: statistics.fmean(r[k] for r in results) for k in numbers}
    metrics |= {f"{k}_std": statistics.stdev(r[k] for r in results) for k in numbers}
    matrices = [r["test/confusion_matrix"] for r in results if r.get("test/confusion_matrix")]
    if matrices:  # pooled over folds: every image counted once
        metrics["test/confusion_matrix"] = np.sum(matrices, axis=0).tolist()
    return metrics | {
        "folds": {k: [r[k] for r in results] for k in numbers},
        "fold_ckpts": [r["best_ckpt"] for r in results],
        "device": results[0]["device"],
    }


def pool_fold_predictions(output_dir: Path, folds: int) -> None:
    """Every fold's test predictions (its validation images) in one file with a `fold` column."""
    files = [Path(output_dir) / f"fold_{fold}" / TEST_PREDICTIONS_FILE for fold in range(folds)]
    if not all(f.is_file() for f in files):
        log.warning("not every fold wrote %s: %s not written", TEST_PREDICTIONS_FILE, OUT_OF_FOLD_FILE)
        return
    rows = []
    for fold, path in enumerate(files):
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader) + ["fold"]
            rows += [row + [fold] for row in reader]
    write_csv(Path(output_dir) / OUT_OF_FOLD_FILE, header, rows)


def pick_on_out_of_fold(cfg: DictConfig, datamodule, path: Path, checkpoints: list[str]) -> dict:
    """The decision rule picked on the pooled out-of-fold predictions (calibrated, each by its fold's temperature),
    written into every fold's best.ckpt and applied to the file's predicted labels; with its out-of-fold precision
    and recall (two classes)."""
    class_names, multi_label = datamodule.class_names, datamodule.multi_label
    label_column, delimiter = datamodule.label_column, datamodule.label_delimiter
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    probs = torch.tensor([[float(row[f"prob_{c}"]) for c in class_names] for row in rows])
    truth = [row[f"true_{label_column}"] for row in rows]
    if multi_label:
        labels = torch.tensor([[c in value.split(delimiter) for c in class_names] for value in truth]).float()
    else:
        labels = torch.tensor([class_names.index(value) for value in truth])
    decision = decision_rule(cfg.decision, probs, labels, class_names, multi_label)
    for checkpoint in checkpoints:
        store_decision(checkpoint, decision)
    predicted = decide(probs, decision, multi_label)
    for row, p in zip(rows, predicted):
        row[label_column] = delimiter.join(c for c, on in zip(class_names, p) if on) if multi_label else class_names[p]
    write_csv(path, list(rows[0]), [list(row.values()) for row in rows])
    metrics = {f"decision/{k}": v for k, v in decision.items() if k != "positive"} | {"decision/picked_on": str(path)}
    if not multi_label:
        shown = precision_recall(predicted, labels, decision["positive"])
        metrics |= {f"decision/oof_{k}": v for k, v in shown.items()}
        log.info(
            "decision, picked on %d out-of-fold predictions: %s when its probability >= %.4f (%s): precision %.3f, "
            "recall %.3f; written into every fold's best.ckpt",
            len(rows),
            decision["positive_class"],
            decision["threshold"],
            decision["rule"],
            shown["precision"],
            shown["recall"],
        )
    return metrics | {f"calibration/oof_{k}": v for k, v in calibration_scores(probs, labels).items()}
