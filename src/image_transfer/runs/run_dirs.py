"""Run dirs that no two runs share (named by the second they start, with a suffix when that name is taken), and
that can be written (checked before Hydra writes its records there).

The config only names a run's dir (its resolvers create nothing: composing or printing a config leaves the disk as
it was); the dir is claimed, created under a name no other run holds, when the run or sweep starts (ClaimRunDir)."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, read_write

from image_transfer.errors import EnvironmentFault
from image_transfer.files import require_writable, storage_error
from image_transfer.paths import from_project_root


def claim_new_dir(base: str) -> str:
    """`base`, or `base_1`, `base_2` ...: the first that did not exist. Creating it claims it (mkdir is atomic),
    so runs started in the same second, in one shell loop or on one cluster, never write into one dir."""
    for n in itertools.count():
        candidate = Path(base if n == 0 else f"{base}_{n}")
        try:
            candidate.mkdir(parents=True)
        except FileExistsError:
            continue
        return str(candidate)


def run_dir(resume: str | None, fresh: str) -> str:
    """hydra.run.dir: the run dir named by `resume` (continue that run in place), else the new one's name."""
    return str(from_project_root(resume)) if resume else fresh


def record_dir(resume: str | None, now: str) -> str:
    """hydra.output_subdir: a resumed run keeps the original .hydra/ record and adds its own beside it."""
    return f".hydra/resumed_{now}" if resume else ".hydra"


class ClaimRunDir(Callback):
    """Claims a new run's (or sweep's) dir before Hydra writes its records there, and refuses one that cannot be
    written, with one message naming the folder and the option that moves it (configs/hydra/default.yaml)."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        claim(config, "run")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        claim(config, "sweep")


def claim(config: DictConfig, mode: str) -> None:
    """A dir the config computes (the time-named default; not resume=, nor a path given as hydra.run.dir=, such as
    Lightning's DDP ranks joining rank 0's dir) is claimed and pinned in `config`; any dir must be writable."""
    node, key = config.hydra[mode], f"hydra.{mode}.dir"
    resumed = bool(OmegaConf.select(config, "resume", default=None))
    fresh = OmegaConf.is_interpolation(node, "dir") and not resumed
    fix = (
        "resume= continues a run in place: copy its dir to a writable disk and resume the copy"
        if resumed
        else f"paths.log_dir=DIR (where run dirs go) or {key}=DIR puts it on a writable disk"
    )
    try:
        path = Path(claim_new_dir(node.dir) if fresh else node.dir)
        require_writable(path, fix)
    except EnvironmentFault as error:
        message = str(error)
    except Exception as error:
        if (cause := storage_error(error)) is None:
            raise
        message = f"cannot create {cause.filename} ({cause.strerror}): {fix}."
    else:
        if fresh:
            with read_write(config.hydra):
                node.dir = str(path)
                if mode == "sweep":  # each job's config is composed again from the sweep's overrides
                    quoted = str(path).replace("'", r"\'")
                    config.hydra.overrides.hydra.append(f"{key}='{quoted}'")
        return
    # Hydra turns a callback's exceptions into warnings and goes on; exiting is what stops it here.
    print(f"Error: {message}", file=sys.stderr)
    raise SystemExit(1)
