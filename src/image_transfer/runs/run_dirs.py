"""Run dirs that no two runs share: named by the second they start, with a suffix when that name is taken."""

from __future__ import annotations

import itertools
from pathlib import Path

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
