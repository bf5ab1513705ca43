"""One screen at the end of a training run: where it is, what it reached, how to look at it, how to go on.

A panel on a terminal, plain `label: value` lines otherwise (CI, log files), so it reads the same in both.
"""

from __future__ import annotations

import json
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig
from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from image_transfer.runs.lr_find import LR_FIND_JSON, LR_FIND_PNG

# The metrics shown: the hold-out test of the best checkpoint, the last validation, the best validation accuracy.
SHOWN_PREFIXES = ("test/", "val/")
SHOWN_KEYS = ("train/images_per_s", "epochs", "wall_time_s")


def summary_rows(cfg: DictConfig, metrics: dict | None, note: str | None = None) -> list[tuple[str, str]]:
    """(label, value) rows. `metrics` as train returns them (None when the run was stopped or failed); for
    cross-validation they are the means over folds, with `<name>_std` the spread. `note` says how to go on."""
    run_dir = Path(cfg.paths.output_dir)
    rows = [("run dir", str(run_dir))]
    metrics = metrics or {}
    if metrics.get("fold_ckpts"):
        rows += [(f"best checkpoint, fold {i}", path) for i, path in enumerate(metrics["fold_ckpts"])]
    elif metrics.get("best_ckpt"):
        rows.append(("best checkpoint", metrics["best_ckpt"]))
    rows += [(name, value) for name, value in _shown(metrics)]
    rows += _decision_rows(metrics)
    rows += _lr_find_rows(cfg, run_dir)
    if _tensorboard(cfg):
        rows.append(("tensorboard", f"tensorboard --logdir {run_dir}"))
    rows += _tracker_rows(metrics)
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        rows.append(("sweep summary", str(Path(HydraConfig.get().sweep.dir) / "summary.md")))
    if note:
        rows.append(("next", note))
    return rows


@rank_zero_only  # under DDP, once
def print_summary(cfg: DictConfig, metrics: dict | None, note: str | None = None, console: Console | None = None):
    console = console or Console()
    rows = summary_rows(cfg, metrics, note)
    if not console.is_terminal:
        console.print("\n".join(f"{label}: {value}" for label, value in rows), soft_wrap=True, highlight=False)
        return
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for label, value in rows:
        table.add_row(label, value)
    console.print(Panel(table, title=f"{cfg.get('task_name', 'train')} summary", expand=False))


def _shown(metrics: dict) -> list[tuple[str, str]]:
    shown = []
    for name in sorted(metrics):
        value = metrics[name]
        if name.endswith("_std") or not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        if name.startswith(SHOWN_PREFIXES) or name in SHOWN_KEYS:
            spread = metrics.get(f"{name}_std")
            shown.append((name, f"{value:.4g}" + (f" ± {spread:.2g}" if spread is not None else "")))
    return shown


def _decision_rows(metrics: dict) -> list[tuple[str, str]]:
    """The calibration and the decision rule, in words."""
    rows = []
    if "calibration/ece_after" in metrics:
        t = metrics["calibration/temperature"]
        temperature = f"{t:.3g}" if isinstance(t, float) else ", ".join(f"{v:.3g}" for v in t)
        rows.append(
            (
                "calibration",
                f"temperature {temperature}: ECE {metrics['calibration/ece_before']:.4f} -> "
                f"{metrics['calibration/ece_after']:.4f}, NLL {metrics['calibration/nll_before']:.4f} -> "
                f"{metrics['calibration/nll_after']:.4f} ({metrics['calibration/images']:.0f} validation images)",
            )
        )
    if "decision/threshold" in metrics:
        m = metrics
        rule = f"{m['decision/positive_class']} when p >= {m['decision/threshold']:.4g} ({m['decision/rule']})"
        shown = [
            f"{name} precision {m[f'decision/{w}_precision']:.3f} recall {m[f'decision/{w}_recall']:.3f}"
            for w, name in (("oof", "out-of-fold"), ("val", "validation"), ("test", "test"))
            if f"decision/{w}_recall" in m
        ]
        rows.append(("decision", ": ".join([rule, ", ".join(shown)]) if shown else rule))
    elif "decision/thresholds" in metrics:
        thresholds = ", ".join(f"{t:.3g}" for t in metrics["decision/thresholds"])
        rows.append(("decision", f"per-class thresholds {thresholds} ({metrics['decision/rule']})"))
    return rows


def _lr_find_rows(cfg: DictConfig, run_dir: Path) -> list[tuple[str, str]]:
    path = run_dir / LR_FIND_JSON
    if not cfg.get("lr_find") or not path.is_file():
        return []
    found = json.loads(path.read_text(encoding="utf-8"))
    rows = [("lr_find", f"suggests {found['suggestion']:.3g} (plot: {run_dir / LR_FIND_PNG})")]
    if cfg.lr_finder.then == "stop":
        rows.append(("train with", found["command"]))
    return rows


def _tracker_rows(metrics: dict) -> list[tuple[str, str]]:
    rows = []
    if uri := metrics.get("mlflow/tracking_uri"):
        local = f" (mlflow ui --backend-store-uri {uri})" if not uri.startswith(("http:", "https:")) else ""
        rows.append(("mlflow", f"run {metrics['mlflow/run_id']} in {uri}{local}"))
    if folder := metrics.get("wandb/run_dir"):
        rows.append(("wandb", f"offline run: wandb sync {folder}" if "offline-run" in folder else folder))
    return rows


def _tensorboard(cfg: DictConfig) -> bool:
    loggers = (cfg.get("logger") or {}).values()
    return any(c is not None and "TensorBoardLogger" in str(c.get("_target_", "")) for c in loggers)
