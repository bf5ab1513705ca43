"""The learning-rate range test (lr_find=true): Lightning's finder on the phase that trains first, before the run.

Lightning's finder runs at fit start and swaps out every callback while it searches, so a finetune callback never
gets to freeze anything (why LR finder and BackboneFinetuning failed together upstream). Here the first epoch's
state is applied to the model directly (FinetuneSchedule.apply: the head alone for freeze_unfreeze, gradual and
frozen; everything for full and the baseline CNN) and the finder runs on a throw-away model and Trainer, in a
scratch dir, without checkpoints, loggers or validation, on training batches only. The run then starts from scratch
as `model.optimizer.lr=<suggestion>` would (same seed, same initial weights), so its config.yaml records the LR it
used and a resume reuses it instead of searching again.
"""

from __future__ import annotations

import io
import logging
import tempfile
import warnings
from pathlib import Path

import numpy as np
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.tuner import Tuner
from matplotlib.figure import Figure
from omegaconf import DictConfig, OmegaConf, open_dict

from image_transfer.callbacks.finetune_config import finetune
from image_transfer.errors import ConfigError, UserError
from image_transfer.files import write_atomically, write_json
from image_transfer.runs.build import build_model, seed_run
from image_transfer.runs.fitting import refuse_meaningless
from image_transfer.runs.ranks import is_rank_zero
from image_transfer.runs.resume import CONFIG_FILE, resume_checkpoint
from image_transfer.runs.trackers import build_loggers

log = logging.getLogger(__name__)

LR_FIND_PNG = "lr_find.png"
LR_FIND_JSON = "lr_find.json"
# Lightning's suggestion skips the first 10 and the last point of the curve and needs 2 more.
MIN_STEPS = 20


def with_found_lr(cfg: DictConfig) -> DictConfig | None:
    """`cfg` with model.optimizer.lr the finder's suggestion (lr_find=true), or a resumed run's own; unchanged without
    lr_find; None when lr_finder.then=stop (the suggestion is the result)."""
    if not cfg.get("lr_find"):
        return cfg
    check_settings(cfg)
    if cfg.get("resume"):
        lr = _resumed_lr(Path(cfg.paths.output_dir))
        if lr is None:
            return cfg  # not a run dir of train: resume's own check says so
    else:
        lr = find_lr(cfg)["suggestion"]
        if cfg.lr_finder.then == "stop":
            return None
    found = cfg.copy()
    with open_dict(found):
        found.model.optimizer.lr = lr
    return found


def check_settings(cfg: DictConfig) -> None:
    finder = cfg.lr_finder
    if finder.then not in ("train", "stop"):
        raise ConfigError(
            f"lr_finder.then={finder.then!r}: choose train (train with the suggestion) or stop (print it and exit)."
        )
    if not 0 < finder.min_lr < finder.max_lr:
        raise ConfigError(
            f"lr_finder.min_lr={finder.min_lr}, lr_finder.max_lr={finder.max_lr}: the range needs "
            "0 < min_lr < max_lr (e.g. lr_finder.min_lr=1e-6 lr_finder.max_lr=1)."
        )
    if finder.num_training < MIN_STEPS:
        raise ConfigError(
            f"lr_finder.num_training={finder.num_training}: too few steps for a suggestion (the first 10 are "
            f"skipped); use {MIN_STEPS} or more (100 by default)."
        )
    if cfg.get("ckpt_path"):
        raise ConfigError(
            "lr_find=true with ckpt_path: the checkpoint's optimizer state brings its own learning rate, so the "
            "finder's would be ignored. Drop one of them."
        )


def find_lr(cfg: DictConfig) -> dict:
    """Run the finder for the first phase of `cfg`'s run (on fold 0 under data.folds); write lr_find.png, lr_find.json
    and, with a TensorBoard logger, the figure to TensorBoard. Returns what lr_find.json holds."""
    output_dir = Path(cfg.paths.output_dir)
    resume_checkpoint(cfg, output_dir)  # refuses a dir that holds another run before writing into it
    refuse_meaningless(cfg)
    finder_cfg = cfg.lr_finder
    seed_run(cfg)
    folds = cfg.data.get("folds") and cfg.data.get("fold") is None
    datamodule = instantiate(cfg.data, **({"fold": 0} if folds else {}))
    datamodule.check_split()
    datamodule.setup("fit")
    model = build_model(cfg, datamodule)
    finetune(cfg).schedule().apply(model, epoch=0)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log.info(
        "lr_find: %d steps from %g to %g, %d trainable parameters",
        finder_cfg.num_training,
        finder_cfg.min_lr,
        finder_cfg.max_lr,
        trainable,
    )
    with tempfile.TemporaryDirectory(prefix="lr_find_") as scratch:  # Lightning saves and restores a checkpoint
        trainer = instantiate(
            cfg.trainer,
            default_root_dir=scratch,
            logger=False,
            callbacks=[],
            enable_checkpointing=False,
            enable_model_summary=False,
            enable_progress_bar=False,
            fast_dev_run=False,
            max_epochs=None,  # the finder's step count ends it, however few batches an epoch has
            max_steps=finder_cfg.num_training,
            num_sanity_val_steps=0,
        )
        with warnings.catch_warnings():  # validation is left out on purpose: the finder needs training loss only
            warnings.filterwarnings("ignore", message=".*`validation_step` but have no `val_dataloader`")
            result = Tuner(trainer).lr_find(
                model,
                train_dataloaders=datamodule.train_dataloader(),
                min_lr=finder_cfg.min_lr,
                max_lr=finder_cfg.max_lr,
                num_training=finder_cfg.num_training,
                early_stop_threshold=finder_cfg.early_stop_threshold,
                update_attr=False,
            )
    lrs, losses = result.results["lr"], result.results["loss"]
    suggestion = steepest_descent(lrs, losses)
    if suggestion is None:
        raise UserError(
            f"lr_find: the loss never fell over {len(losses)} step(s) from {finder_cfg.min_lr} to "
            f"{finder_cfg.max_lr}: widen the range (lr_finder.min_lr, lr_finder.max_lr) or raise "
            "lr_finder.num_training or lr_finder.early_stop_threshold, and look at lr_find.png."
        )
    found = {
        "suggestion": suggestion,
        "override": f"model.optimizer.lr={suggestion:.3g}",
        "command": train_command(f"model.optimizer.lr={suggestion:.3g}"),
        "min_lr": finder_cfg.min_lr,
        "max_lr": finder_cfg.max_lr,
        "num_training": finder_cfg.num_training,
        "steps": len(losses),
        "trainable_params": trainable,
        "fold": 0 if folds else cfg.data.get("fold"),
        "lr": lrs,
        "loss": losses,
    }
    if is_rank_zero():  # under DDP every rank holds rank 0's curve (Lightning broadcasts it): written once
        _save_plot(cfg, result, suggestion, output_dir)
        write_json(output_dir / LR_FIND_JSON, found)
    log.info("lr_find: suggests %s (%s)", found["override"], output_dir / LR_FIND_PNG)
    return found


def steepest_descent(lrs: list[float], losses: list[float], skip: int = 10) -> float | None:
    """The LR where the loss falls fastest against log LR (fastai's "steep"), between the curve's highest point
    before its minimum and that minimum. Not Lightning's suggestion(): it differentiates against the LR itself,
    which favours the smallest LRs (on the real data it picked 3.6e-5, on a flat stretch before the loss fell).
    The first `skip` points are left out, as Lightning does: its smoothing still pulls them down (Lightning #14167)."""
    lr, loss = np.asarray(lrs[skip:], dtype=float), np.asarray(losses[skip:], dtype=float)
    lr, loss = lr[np.isfinite(loss)], loss[np.isfinite(loss)]
    if len(loss) < 3:
        return None
    low = int(np.argmin(loss))
    high = int(np.argmax(loss[: low + 1]))
    if low - high < 2:
        return None
    slope = np.gradient(loss[high : low + 1], np.log(lr[high : low + 1]))
    return float(lr[high + int(np.argmin(slope))])


def train_command(override: str) -> str:
    """This run's command line with `override` instead of the finder's options."""
    given = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else ["<same overrides>"]
    kept = [o for o in given if not o.lstrip("~+").startswith(("lr_find", "lr_finder."))]
    return " ".join(["python -m image_transfer.train", *kept, override])


def _save_plot(cfg: DictConfig, result, suggestion: float, output_dir: Path) -> None:
    figure = Figure()  # not pyplot's: no window, no global figure to close
    axes = figure.subplots()
    result.plot(ax=axes)
    axes.axvline(suggestion, color="red", linestyle="--", label=f"suggestion {suggestion:.3g}")
    axes.legend()
    axes.set_title("lr_find: smoothed loss of the first phase's training batches")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    write_atomically(output_dir / LR_FIND_PNG, buffer.getvalue())
    for logger in build_loggers(cfg):
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_figure("lr_find", figure, global_step=0, close=False)
            logger.finalize("success")


def _resumed_lr(run_dir: Path) -> float | None:
    """The learning rate a run's config.yaml recorded (the finder's, when it ran with then=train)."""
    path = run_dir / CONFIG_FILE
    return OmegaConf.load(path).model.optimizer.lr if path.is_file() else None
