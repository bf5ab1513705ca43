"""Launcher and sweeper that run every job of a multirun even when some fail, then summarise the sweep.

Selected in configs/hydra/default.yaml. A failed job gets `<job dir>/error.txt`; the sweep dir gets
`summary.json` and `summary.md`. The sweep exits non-zero only when every job failed.
"""

# No `from __future__ import annotations`: Hydra's plugin scan runs this module before it is in
# sys.modules, and @dataclass then cannot resolve string annotations.
import json
import logging
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_launcher import BasicLauncher
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper, BasicSweeperConf
from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, run_job, setup_globals
from hydra.errors import CompactHydraException
from omegaconf import open_dict

from vehicle_transfer import markdown
from vehicle_transfer.files import write_atomically, write_json

log = logging.getLogger(__name__)


@dataclass
class TolerantLauncherConf:
    _target_: str = "hydra_plugins.vehicle_transfer_launcher.tolerant.TolerantLauncher"


@dataclass
class TolerantSweeperConf(BasicSweeperConf):
    _target_: str = "hydra_plugins.vehicle_transfer_launcher.tolerant.TolerantSweeper"


ConfigStore.instance().store(group="hydra/launcher", name="tolerant", node=TolerantLauncherConf)
ConfigStore.instance().store(group="hydra/sweeper", name="tolerant", node=TolerantSweeperConf)


class FailedJob(JobReturn):
    """A failed job (status FAILED, the exception in `_return_value`) whose error is already recorded.

    `return_value` gives None instead of re-raising: BasicSweeper reads it for every job and would
    otherwise abort the sweep on the first failure.
    """

    @property
    def return_value(self) -> None:
        return None


class AllJobsFailed(CompactHydraException):
    """Hydra prints a compact exception's message alone and exits 1."""


class TolerantLauncher(BasicLauncher):
    """BasicLauncher that records a failing job (composition or run) and goes on with the next."""

    def __init__(self) -> None:
        super().__init__()
        self.jobs: list[dict] = []  # every job so far: a sweeper may launch several batches

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list[JobReturn]:
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        log.info(f"Launching {len(job_overrides)} jobs locally")
        runs = []
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            overrides = list(overrides)
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
            try:
                ret = self._run(idx, overrides)
                job_dir = Path(ret.hydra_cfg.hydra.runtime.output_dir)
            except Exception as error:  # e.g. a config group option that does not exist: no job dir yet
                ret = JobReturn(overrides=overrides, status=JobStatus.FAILED, _return_value=error)
                job_dir = sweep_dir / str(idx)
            if ret.status == JobStatus.FAILED:
                ret = FailedJob(**vars(ret))
                self.jobs.append(
                    {
                        "num": idx,
                        "overrides": overrides,
                        "status": "failed",
                        "error": self._record_failure(idx, ret, job_dir),
                    }
                )
            else:
                self.jobs.append(
                    {"num": idx, "overrides": overrides, "status": "ok", "return_value": _jsonable(ret.return_value)}
                )
            runs.append(ret)
            configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        self._write_summary(sweep_dir)
        return runs

    def _run(self, idx: int, overrides: list[str]) -> JobReturn:
        """BasicLauncher's per-job steps: compose the job's config, then run it in its own dir."""
        sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
        with open_dict(sweep_config):
            sweep_config.hydra.job.id = idx
            sweep_config.hydra.job.num = idx
        return run_job(
            hydra_context=self.hydra_context,
            task_function=self.task_function,
            config=sweep_config,
            job_dir_key="hydra.sweep.dir",
            job_subdir_key="hydra.sweep.subdir",
        )

    @staticmethod
    def _record_failure(idx: int, ret: JobReturn, job_dir: Path) -> str:
        """Write the full traceback to <job dir>/error.txt; returns the error on one line."""
        error = ret._return_value
        trace = "".join(traceback.format_exception(error))
        write_atomically(job_dir / "error.txt", f"overrides: {' '.join(ret.overrides)}\n\n{trace}")
        line = f"{type(error).__name__}: {' '.join(str(error).split())}"
        log.error(f"Job #{idx} failed ({' '.join(filter_overrides(ret.overrides))}): {line}")
        return line

    def _write_summary(self, sweep_dir: Path) -> None:
        failed = sum(job["status"] == "failed" for job in self.jobs)
        write_json(sweep_dir / "summary.json", {"ok": len(self.jobs) - failed, "failed": failed, "jobs": self.jobs})
        rows = [
            [job["num"], job["status"], f"`{' '.join(job['overrides'])}`", job.get("error", job.get("return_value"))]
            for job in self.jobs
        ]
        text = markdown.table(["job", "status", "overrides", "return value / error"], rows)
        title = f"# Sweep: {len(self.jobs) - failed} ok, {failed} failed"
        write_atomically(sweep_dir / "summary.md", f"{title}\n\n{text}\n")


class TolerantSweeper(BasicSweeper):
    """BasicSweeper that leaves composing each job to TolerantLauncher and fails only if every job did."""

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        """Skipped: composing every job up front aborts the sweep on one bad job; the launcher records it."""

    def sweep(self, arguments: list[str]) -> Any:
        returns = super().sweep(arguments)
        jobs = [ret for batch in returns for ret in batch]
        if all(ret.status == JobStatus.FAILED for ret in jobs):
            summary = Path(str(self.config.hydra.sweep.dir)) / "summary.md"
            raise AllJobsFailed(f"All {len(jobs)} jobs of the sweep failed; see {summary}")
        return returns


def _jsonable(value: Any) -> Any:
    """A job's return value as summary.json can hold it: as is if JSON can, else its repr."""
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)
    return value
