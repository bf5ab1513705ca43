"""One training run on one split: fit, test the best checkpoint on the labelled hold-out, write the outputs."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from image_transfer.callbacks.finetune_config import finetune
from image_transfer.callbacks.trained_progress import TrainedProgress, trained_progress
from image_transfer.data.audit import duplicate_summary
from image_transfer.errors import ConfigError
from image_transfer.files import write_atomically, write_json
from image_transfer.models.metric_names import mode
from image_transfer.runs.build import build_model, build_tester, build_trainer, seed_run
from image_transfer.runs.calibrate import calibrate, check_calibration, tested_decision
from image_transfer.runs.class_names import write_class_names
from image_transfer.runs.environment import ENVIRONMENT_FILE, environment
from image_transfer.runs.feature_mode import feature_views
from image_transfer.runs.imbalance import warn_if_imbalanced
from image_transfer.runs.outputs import save_test_predictions, scalar_metrics, write_metrics
from image_transfer.runs.ranks import is_rank_zero, leave_process_group
from image_transfer.runs.resume import CONFIG_FILE, resume_checkpoint
from image_transfer.runs.trackers import build_loggers, finish_run, start_trackers

log = logging.getLogger(__name__)


def refuse_meaningless(cfg: DictConfig) -> None:
    """Settings under which a run cannot mean anything stop here, before any data is read."""
    trainer = cfg.trainer
    if not trainer.get("fast_dev_run") and not trainer.get("max_steps", -1) > 0:
        epochs = trainer.get("max_epochs")
        if epochs is None or epochs < 1:
            raise ConfigError(
                f"trainer.max_epochs={epochs} trains nothing: set trainer.max_epochs=1 or more "
                "(debug=fast_dev_run runs one batch of each stage to check the wiring)."
            )
    unfreeze = finetune(cfg).unfreeze_at_epochs
    late = [e for e in unfreeze if trainer.get("max_epochs") and e >= trainer.max_epochs]
    if late and not trainer.get("fast_dev_run"):
        log.warning(
            "finetune.unfreeze_at_epochs=%s: epoch(s) %s come at or after trainer.max_epochs=%s, so those backbone "
            "stages never train",
            list(unfreeze),
            late,
            trainer.max_epochs,
        )


def without_validation(cfg: DictConfig) -> DictConfig:
    """data.val_fraction=0 trains on every image: no val/* metrics, best.ckpt is the last epoch's (as in the best
    recipe), and a test only on data.test_csv."""
    cfg = cfg.copy()
    with open_dict(cfg):
        for callback in (cfg.get("callbacks") or {}).values():
            if callback is not None and str(callback.get("monitor", "")).startswith("val/"):
                callback.monitor, callback.mode = "epoch", mode("epoch")
        cfg.test = bool(cfg.get("test") and cfg.data.get("test_csv"))
        cfg.optimized_metric = None
    return cfg


def fit(cfg: DictConfig, restart: bool = False, parent: list = ()) -> dict:
    """Train on one split; `restart` reuses a dir whose earlier attempt never finished an epoch; `parent`: the
    loggers of the cross-validation this is a fold of (its tracked runs are the parents of this one's)."""
    start = time.perf_counter()
    output_dir = Path(cfg.paths.output_dir)
    rank_zero = is_rank_zero()
    # Under DDP Lightning re-runs the command in the other ranks, in the dir rank 0 has made (its hydra.run.dir).
    ckpt_path = resume_checkpoint(cfg, output_dir, restart or not rank_zero)
    refuse_meaningless(cfg)
    resolved = OmegaConf.to_yaml(cfg, resolve=True)  # the run's config, as resume compares it
    seed_run(cfg)
    datamodule = instantiate(cfg.data)
    datamodule.check_split()  # every class on both sides, before anything trains
    if not datamodule.validates:
        log.info("data.val_fraction=0: training on all %d images, without validation", len(datamodule.table))
        cfg = without_validation(cfg)
    multi_label, class_names = datamodule.multi_label, datamodule.class_names
    check_calibration(cfg, class_names, datamodule.validates, multi_label)
    training_classes = datamodule.train_table.classes()
    warn_if_imbalanced(training_classes, class_names)
    # The brief audit: copies shared with validation would inflate its scores (the split keeps them together).
    duplicates = duplicate_summary(datamodule.table.classes(), datamodule.content_hashes(datamodule.table))
    model = build_model(cfg, datamodule)
    datamodule.serve_features(feature_views(cfg), model)
    trainer = build_trainer(
        cfg,
        first_callbacks=[finetune(cfg).schedule(), TrainedProgress()],
        loggers=build_loggers(cfg, parent),
        **({} if datamodule.validates else {"limit_val_batches": 0, "num_sanity_val_steps": 0}),
    )
    if rank_zero:  # written once nothing was refused: a refused run leaves no dir that looks like a run's
        write_atomically(output_dir / CONFIG_FILE, resolved)
        write_json(output_dir / ENVIRONMENT_FILE, environment())
        datamodule.save_split(output_dir)
        write_class_names(output_dir, datamodule.class_names)
    tracked = start_trackers(trainer.loggers) if rank_zero else {}  # before training: a tracker may refuse the run

    trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    if trainer.world_size > 1 and torch.distributed.is_initialized():
        leave_process_group()  # metrics computed from here on (the test's) must not wait to sync with other ranks
    if not rank_zero:
        return {}  # rank 0 tests the best checkpoint and writes the outputs
    epochs, steps = trained_progress(trainer)
    metrics = scalar_metrics(trainer.callback_metrics)
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    tester = build_tester(cfg, trainer.loggers) if trainer.world_size > 1 else trainer
    if tester is not trainer:
        datamodule.trainer = tester  # its loaders: every image on this one device, not this rank's share
    if best:
        metrics |= calibrate(cfg, model, tester, datamodule, best)
    if cfg.get("test"):
        tester.test(model, datamodule=datamodule, ckpt_path=best or None)
        metrics |= scalar_metrics(tester.callback_metrics)
        metrics["test/confusion_matrix"] = model.confusion_matrices.get("test")
        save_test_predictions(output_dir, datamodule, model)
        metrics |= tested_decision(model, datamodule.test_table.labels)
    metrics |= {f"data/duplicate_{k}": v for k, v in duplicates.items()}
    metrics["data/skipped_images"] = len(datamodule.skipped_images)
    metrics |= {
        "best_ckpt": best,
        "epochs": epochs,
        "device": device_name(trainer),
        "wall_time_s": round(time.perf_counter() - start, 1),
    } | tracked
    write_metrics(output_dir, metrics)
    finish_run(trainer.loggers, cfg, metrics, step=steps)
    return metrics


def device_name(trainer) -> str:
    device = trainer.strategy.root_device
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"{device.type} ({torch.get_num_threads()} threads)"
    )
    return f"{trainer.world_size} x {name}" if trainer.world_size > 1 else name
