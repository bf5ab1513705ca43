"""Run dirs that no two runs share (named by the second they start, with a suffix when that name is taken), and
that can be written (checked before Hydra writes its records there)."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from image_transfer.errors import EnvironmentFault
from image_transfer.files import require_writable, storage_error
from image_transfer.paths import from_project_root


def claim_new_dir(base: str) -> str:
    """`base`, or `base_1`, `base_2` ...: the first that did not exist. Creating it claims it (mkdir is atomic),
    so runs started in the same second, in one shell loop or on one cluster, never write into one dir.

    Registered as a cached resolver: Hydra resolves a run's dir more than once, and copies the cache into
    every job of a sweep, so a run keeps the dir it claimed."""
    for n in itertools.count():
        candidate = Path(base if n == 0 else f"{base}_{n}")
        try:
            candidate.mkdir(parents=True)
        except FileExistsError:
            continue
        return str(candidate)


def run_dir(resume: str | None, fresh: str) -> str:
    """hydra.run.dir: the run dir named by `resume` (continue that run in place), else a new one."""
    return str(from_project_root(resume)) if resume else claim_new_dir(fresh)


def record_dir(resume: str | None, now: str) -> str:
    """hydra.output_subdir: a resumed run keeps the original .hydra/ record and adds its own beside it."""
    return f".hydra/resumed_{now}" if resume else ".hydra"


class RunDirCheck(Callback):
    """Refuses a run or sweep whose dir cannot be written before Hydra writes its records there, with one message
    naming the folder and the option that moves it (configs/hydra/default.yaml, hydra.callbacks.run_dir_check)."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        require_writable_dir(config, "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        require_writable_dir(config, "hydra.sweep.dir")


def require_writable_dir(config: DictConfig, key: str) -> None:
    if OmegaConf.select(config, "resume", default=None):
        fix = "resume= continues a run in place: copy its dir to a writable disk and resume the copy"
    else:
        fix = f"paths.log_dir=DIR (where run dirs go) or {key}=DIR puts it on a writable disk"
    try:
        require_writable(Path(OmegaConf.select(config, key)), fix)  # resolving claims a new run dir
        return
    except EnvironmentFault as error:
        message = str(error)
    except Exception as error:
        if (cause := storage_error(error)) is None:
            raise
        message = f"cannot create {cause.filename} ({cause.strerror}): {fix}."
    # Hydra turns a callback's exceptions into warnings and goes on; exiting is what stops it here.
    print(f"Error: {message}", file=sys.stderr)
    raise SystemExit(1)
