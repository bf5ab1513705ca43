"""Continuing a run in place (resume=RUN_DIR): which checkpoint, whether the config matches, whether it is done."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from image_transfer.errors import UserError
from image_transfer.runs.checkpoints import require_checkpoint
from image_transfer.runs.outputs import METRICS_FILE

log = logging.getLogger(__name__)

LAST_CHECKPOINT = Path("checkpoints") / "last.ckpt"
CONFIG_FILE = "config.yaml"  # the resolved config a run started with


def completed(run_dir: Path) -> dict | None:
    """The metrics of a finished run (metrics.json is written last), or None."""
    path = Path(run_dir) / METRICS_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def resumable(run_dir: Path) -> bool:
    """Whether some epoch of the run (or of one of its folds) finished, so resume= has something to continue."""
    run_dir = Path(run_dir)
    return (run_dir / LAST_CHECKPOINT).is_file() or any(
        (fold / LAST_CHECKPOINT).is_file() or (fold / METRICS_FILE).is_file() for fold in run_dir.glob("fold_*")
    )


def resume_command(run_dir: Path) -> str:
    return f"python -m image_transfer.train <same overrides> resume={run_dir}"


def resume_hint(run_dir: Path) -> str:
    if resumable(run_dir):
        return f"Continue it with: {resume_command(run_dir)}"
    return "No epoch finished, so there is nothing to resume: run it again (without resume=)."


def resumed_if_requeued(cfg: DictConfig) -> DictConfig:
    """A SLURM job started again after preemption or its time limit (SLURM_RESTART_COUNT; submitit requeues it with
    the same arguments) continues the run in its dir, as resume=<its dir> would; the first attempt is left as is
    when no epoch of it finished."""
    output_dir = Path(cfg.paths.output_dir)
    if cfg.get("resume") or not requeued() or not resumable(output_dir):
        return cfg
    log.info("requeued SLURM job (restart %s): continuing %s", os.environ["SLURM_RESTART_COUNT"], output_dir)
    cfg = cfg.copy()
    with open_dict(cfg):
        cfg.resume = str(output_dir)
    return cfg


def requeued() -> bool:
    return int(os.environ.get("SLURM_RESTART_COUNT", "0")) > 0


def resume_checkpoint(cfg: DictConfig, output_dir: Path, restart: bool = False) -> str | None:
    """ckpt_path, or with `resume` the run dir's last.ckpt. A fresh run refuses a dir that holds another run,
    unless `restart`: an attempt that never finished an epoch (cross-validation restarts such a fold; so does a
    requeued SLURM job)."""
    if not cfg.get("resume"):
        taken = (output_dir / CONFIG_FILE).is_file() or (output_dir / "checkpoints").is_dir()
        if taken and not restart and not requeued():  # a requeued job whose first attempt finished no epoch restarts
            raise UserError(
                f"{output_dir} already holds a run: continue it with resume={output_dir}, or choose another "
                "hydra.run.dir (by default every run gets a new one)."
            )
        return str(require_checkpoint(cfg.ckpt_path)) if cfg.get("ckpt_path") else None
    last = output_dir / LAST_CHECKPOINT
    if not last.is_file():
        raise UserError(
            f"resume={cfg.resume}: {last} does not exist, so no epoch of that run finished and there is nothing to "
            "resume. Start the run again without resume=."
        )
    require_same_config(output_dir / CONFIG_FILE, cfg)
    return str(last)


def require_same_config(saved_path: Path, cfg: DictConfig) -> None:
    """A resumed run must continue with the configuration it started with."""
    if not saved_path.is_file():
        raise UserError(f"resume={cfg.resume}: {saved_path} does not exist; is this a run dir of train?")
    saved = _flatten(OmegaConf.to_container(OmegaConf.load(saved_path)))
    current = _flatten(OmegaConf.to_container(cfg, resolve=True))
    # A run dir that was moved or copied resumes where it now is: paths inside it are compared relative to it.
    moved_from, moved_to = saved.get("paths.output_dir"), current.get("paths.output_dir")
    if isinstance(moved_from, str) and isinstance(moved_to, str):
        saved = {k: v.replace(moved_from, moved_to) if isinstance(v, str) else v for k, v in saved.items()}
    differ = sorted(
        k for k in saved.keys() | current.keys() if k not in ("resume", "ckpt_path") and saved.get(k) != current.get(k)
    )
    if differ:
        details = ", ".join(f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in differ[:8])
        raise UserError(
            f"resume: the configuration differs from the run's {saved_path} ({details}). "
            "Repeat the original run's overrides (see its .hydra/overrides.yaml) when resuming."
        )


def _flatten(node, prefix: str = "") -> dict:
    if isinstance(node, dict) and node:
        return {k: v for key, value in node.items() for k, v in _flatten(value, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): node}
