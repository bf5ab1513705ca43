"""The Hydra callback behind every multirun (configs/hydra/default.yaml, hydra.callbacks.sweep_summary).

Hydra's own sweeper and launcher run every job of a batch even when some fail, then end the sweep with the
first failure (exit status 1). This callback makes that visible: a failed job gets <job dir>/error.txt, and
<sweep dir>/summary.md and summary.json list every job with its overrides, status, metric and error. The summary
is rewritten after each job, because Hydra skips on_multirun_end when the sweep ends with a failure.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig
from optuna import TrialPruned

from image_transfer import markdown
from image_transfer.files import write_atomically, write_json
from image_transfer.runs.failures import error_line
from image_transfer.sweeps.job_records import jsonable, read_records, release_frames, write_error, write_record

log = logging.getLogger(__name__)


class SweepSummary(Callback):
    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if config.hydra.mode != RunMode.MULTIRUN:
            return
        job_dir = Path(config.hydra.runtime.output_dir)
        record = {"num": int(config.hydra.job.num), "overrides": list(job_return.overrides), "job_dir": str(job_dir)}
        if job_return.status == JobStatus.COMPLETED:
            record |= {"status": "ok", "value": jsonable(job_return.return_value)}
        else:
            try:
                _ = job_return.return_value  # a failed job's return_value raises its error (public API)
            except TrialPruned:
                record["status"] = "pruned"  # stopped early by an Optuna pruner: not an error
            except Exception as error:
                write_error(job_dir, record["overrides"], error)
                release_frames(error)
                record |= {"status": "failed", "error": error_line(error)}
                log.error("Job #%d failed: %s (%s)", record["num"], record["error"], job_dir / "error.txt")
        write_record(config.hydra.sweep.dir, record)
        write_summary(Path(config.hydra.sweep.dir), config.get("optimized_metric"))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        write_summary(Path(config.hydra.sweep.dir), config.get("optimized_metric"))


def write_summary(sweep_dir: Path, metric: str | None) -> None:
    """summary.json and summary.md from the job records in `sweep_dir` (nothing when no job has ended)."""
    jobs = read_records(sweep_dir)
    if not jobs:
        return
    counts = {status: sum(job["status"] == status for job in jobs) for status in ("ok", "failed", "pruned")}
    write_json(sweep_dir / "summary.json", {**counts, "optimized_metric": metric, "jobs": jobs})
    rows = [
        [job["num"], job["status"], " ".join(job["overrides"]), job.get("error", job.get("value")), job["job_dir"]]
        for job in jobs
    ]
    header = ["job", "status", "overrides", f"{metric or 'return value'} / error", "job dir"]
    title = f"# Sweep: {', '.join(f'{n} {status}' for status, n in counts.items() if n or status != 'pruned')}"
    write_atomically(sweep_dir / "summary.md", f"{title}\n\n{markdown.table(header, rows)}\n")
