"""Fit a classifier (on one split, or on every fold of data.folds), then test it on the labelled hold-out.

python -m image_transfer.train [model=...] [finetune=...] [experiment=...] [key=value ...]
"""

from __future__ import annotations

import logging
import signal
import warnings
from pathlib import Path

import hydra
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig
from optuna import TrialPruned

from image_transfer import CONFIG_DIR
from image_transfer.console.config_tree import print_config_tree
from image_transfer.console.summary import print_summary
from image_transfer.cpu_memory import freeze_loaded_objects, keep_freed_memory
from image_transfer.runs.class_names import with_class_names
from image_transfer.runs.cross_validation import cross_validate
from image_transfer.runs.failures import report_user_errors, user_error
from image_transfer.runs.faults import is_environment_fault
from image_transfer.runs.fitting import fit
from image_transfer.runs.lr_find import with_found_lr
from image_transfer.runs.ranks import is_rank_zero, refuse_relaunching_in_sweeps
from image_transfer.runs.resume import completed, resumable, resume_hint, resumed_if_requeued
from image_transfer.runs.trackers import check_trackers
from image_transfer.sweeps.objective import check_objective, objective_value

log = logging.getLogger(__name__)
# Frozen BatchNorm layers are in eval mode on purpose (see ImageClassifier.train).
warnings.filterwarnings("ignore", message=".*module\\(s\\) in eval mode at the start of training")


def train(cfg: DictConfig) -> dict:
    """Train per `cfg`; returns the metrics also written to <output_dir>/metrics.json. Resuming a finished run
    changes nothing and returns its metrics."""
    cfg = resumed_if_requeued(cfg)
    if cfg.get("resume") and (done := completed(Path(cfg.paths.output_dir))) is not None:
        log.info("%s is complete (its metrics.json exists): nothing to resume", cfg.paths.output_dir)
        return done
    check_trackers(cfg)  # in seconds, not after an hour of training
    if not cfg.data.get("class_names"):  # main has filled them in; a direct call (tests, scripts) may not have
        cfg = with_class_names(cfg)
    cfg = with_found_lr(cfg)
    if cfg is None:  # lr_finder.then=stop: the suggestion, in lr_find.json, is the result
        return {}
    if cfg.data.get("folds") and cfg.data.get("fold") is None:
        return cross_validate(cfg)
    return fit(cfg)


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
@report_user_errors
def main(cfg: DictConfig) -> float | None:
    if cfg.get("keep_freed_memory"):
        keep_freed_memory()
    cfg = with_class_names(cfg)  # before anything resolves the config: the model's size follows the classes
    check_objective(cfg)
    refuse_relaunching_in_sweeps(cfg)
    print_config_tree(cfg)
    try:
        metrics = train(cfg)
    except SIGTERMException:  # Lightning stops at the next batch, as a SystemExit with status 0: say so, fail
        log.error("terminated (SIGTERM). %s", resume_hint(cfg.paths.output_dir))
        print_summary(cfg, None, resume_hint(cfg.paths.output_dir))
        raise SystemExit(128 + signal.SIGTERM) from None
    except (KeyboardInterrupt, SystemExit):  # Ctrl-C: Lightning turns it into exit status 1 once it has stopped
        print_summary(cfg, None, resume_hint(cfg.paths.output_dir))
        raise
    except TrialPruned:  # an Optuna search stopped this trial on purpose: not a failure to resume
        raise
    except Exception as error:
        told = user_error(error) is not None or is_environment_fault(error)  # with how to go on
        if not told and resumable(Path(cfg.paths.output_dir)):
            log.error("the run failed. %s", resume_hint(cfg.paths.output_dir))
        raise
    if not is_rank_zero():
        return None  # under DDP rank 0 tests and reports
    print_summary(cfg, metrics)
    return objective_value(cfg, metrics)  # what a Hydra sweeper optimises


if __name__ == "__main__":
    freeze_loaded_objects()  # imports done: later collections skip them (cpu_memory.py)
    main()
