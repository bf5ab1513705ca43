"""Fit a classifier, then test its best checkpoint on the labelled hold-out.

python -m vehicle_transfer.train [model=...] [finetune=...] [experiment=...] [key=value ...]
"""

from __future__ import annotations

import copy
import json
import logging
import signal
import statistics
import time
import warnings
from pathlib import Path

import hydra
import numpy as np
import torch
from hydra.utils import instantiate
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf, open_dict

from vehicle_transfer import CONFIG_DIR
from vehicle_transfer.audit import duplicate_summary
from vehicle_transfer.cpu_memory import keep_freed_memory
from vehicle_transfer.files import write_atomically
from vehicle_transfer.runs import (
    METRICS_FILE,
    build_trainer,
    pool_fold_predictions,
    save_test_predictions,
    scalar_metrics,
    seed_run,
    write_metrics,
)

log = logging.getLogger(__name__)
# Frozen BatchNorm layers are in eval mode on purpose (see ImageClassifier.train).
warnings.filterwarnings("ignore", message=".*module\\(s\\) in eval mode at the start of training")


def train(cfg: DictConfig) -> dict:
    """Train per `cfg` (every fold of data.folds, when set); returns the metrics also written to <output_dir>/metrics.json."""
    if cfg.data.get("folds") and cfg.data.get("fold") is None:
        return cross_validate(cfg)
    return fit(cfg)


def fit(cfg: DictConfig) -> dict:
    start = time.perf_counter()
    output_dir = Path(cfg.paths.output_dir)
    ckpt_path = resume_checkpoint(cfg, output_dir)
    write_atomically(output_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    seed_run(cfg)
    datamodule = instantiate(cfg.data)
    # The brief audit: copies shared with validation would inflate its scores (the split keeps them together).
    duplicates = duplicate_summary(datamodule.table.labels, datamodule.content_hashes(datamodule.table))
    model = instantiate(cfg.model)
    trainer = build_trainer(cfg, first_callbacks=[instantiate(cfg.finetune.callback)])
    datamodule.save_split(output_dir)

    trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    metrics = scalar_metrics(trainer.callback_metrics)
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    if cfg.get("test"):
        trainer.test(model, datamodule=datamodule, ckpt_path=best or None)
        metrics |= scalar_metrics(trainer.callback_metrics)
        metrics["test/confusion_matrix"] = model.confusion_matrices.get("test")
        save_test_predictions(output_dir, cfg.data, datamodule.test_table, model.test_probabilities)
    metrics |= {f"data/duplicate_{k}": v for k, v in duplicates.items()}
    metrics["data/skipped_images"] = len(datamodule.skipped_images)
    metrics |= {
        "best_ckpt": best,
        "epochs": trainer.current_epoch,
        "device": device_name(trainer),
        "wall_time_s": round(time.perf_counter() - start, 1),
    }
    write_metrics(output_dir, metrics)
    return metrics


def cross_validate(cfg: DictConfig) -> dict:
    """Fit every fold of data.folds in <output_dir>/fold_<i>; metrics: the mean over folds, `<name>_std`
    their standard deviation, and `folds` each fold's value. A resumed run skips finished folds."""
    start = time.perf_counter()
    output_dir = Path(cfg.paths.output_dir)
    if cfg.get("resume"):
        require_same_config(output_dir / "config.yaml", cfg)
    write_atomically(output_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    results = []
    for fold in range(cfg.data.folds):
        fold_dir = output_dir / f"fold_{fold}"
        if cfg.get("resume") and (fold_dir / METRICS_FILE).is_file():
            results.append(json.loads((fold_dir / METRICS_FILE).read_text()))
            continue
        fold_cfg = copy.deepcopy(cfg)
        with open_dict(fold_cfg):
            fold_cfg.data.fold = fold
            fold_cfg.paths.output_dir = str(fold_dir)
            if not (fold_dir / "checkpoints" / "last.ckpt").is_file():
                fold_cfg.resume = None  # this fold had not finished an epoch: start it
        log.info("fold %d of %d: %s", fold + 1, cfg.data.folds, fold_dir)
        results.append(fit(fold_cfg))
    pool_fold_predictions(output_dir, cfg.data.folds)
    numbers = [k for k, v in results[0].items() if isinstance(v, (int, float)) and all(k in r for r in results)]
    metrics = {k: statistics.fmean(r[k] for r in results) for k in numbers}
    metrics |= {f"{k}_std": statistics.stdev(r[k] for r in results) for k in numbers}
    matrices = [r["test/confusion_matrix"] for r in results if r.get("test/confusion_matrix")]
    if matrices:  # pooled over folds: every image counted once
        metrics["test/confusion_matrix"] = np.sum(matrices, axis=0).tolist()
    metrics |= {
        "folds": {k: [r[k] for r in results] for k in numbers},
        "fold_ckpts": [r["best_ckpt"] for r in results],
        "device": results[0]["device"],
        "wall_time_s": round(time.perf_counter() - start, 1),
    }
    write_metrics(output_dir, metrics)
    return metrics


def device_name(trainer) -> str:
    device = trainer.strategy.root_device
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{device.type} ({torch.get_num_threads()} threads)"


def require_same_config(saved_path: Path, cfg: DictConfig) -> None:
    """A resumed run must continue with the configuration it started with."""
    saved = _flatten(OmegaConf.to_container(OmegaConf.load(saved_path)))
    current = _flatten(OmegaConf.to_container(cfg, resolve=True))
    differ = sorted(
        k for k in saved.keys() | current.keys() if k not in ("resume", "ckpt_path") and saved.get(k) != current.get(k)
    )
    if differ:
        details = ", ".join(f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in differ[:8])
        raise ValueError(
            f"resume: the configuration differs from the run's {saved_path} ({details}). "
            "Repeat the original run's overrides (see its .hydra/overrides.yaml) when resuming."
        )


def _flatten(node, prefix: str = "") -> dict:
    if isinstance(node, dict) and node:
        return {k: v for key, value in node.items() for k, v in _flatten(value, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): node}


def resume_checkpoint(cfg: DictConfig, output_dir: Path) -> str | None:
    """ckpt_path, or with `resume` the run dir's last.ckpt (the run dir is then the resumed one)."""
    if not cfg.get("resume"):
        return cfg.get("ckpt_path")
    last = output_dir / "checkpoints" / "last.ckpt"
    if not last.is_file():
        raise FileNotFoundError(f"resume={cfg.resume}: {last} does not exist (no epoch of that run finished).")
    require_same_config(output_dir / "config.yaml", cfg)
    return str(last)


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def main(cfg: DictConfig) -> float | None:
    if cfg.get("keep_freed_memory"):
        keep_freed_memory()
    try:
        metrics = train(cfg)
    except SIGTERMException:  # Lightning stops at the next batch, as a SystemExit with status 0: say so, fail
        log.error(
            "terminated (SIGTERM); continue with: python -m vehicle_transfer.train <same overrides> resume=%s",
            cfg.paths.output_dir,
        )
        raise SystemExit(128 + signal.SIGTERM) from None
    return metrics.get(cfg.get("optimized_metric"))  # what a Hydra sweeper optimises


if __name__ == "__main__":
    main()
