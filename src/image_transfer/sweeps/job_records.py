"""What a sweep keeps of each job: a failed job's error.txt (one writer for grid sweeps and Optuna searches) and
a small record per job in <sweep dir>/jobs/, from which the sweep's summary is built."""

from __future__ import annotations

import json
import traceback
from pathlib import Path

from image_transfer.files import write_atomically, write_json

ERROR_FILE = "error.txt"
RECORDS_DIR = "jobs"


def write_error(job_dir: Path, overrides: list[str], error: BaseException | str) -> Path:
    """<job dir>/error.txt: the job's overrides and its whole traceback (causes included)."""
    text = error if isinstance(error, str) else "".join(traceback.format_exception(error))
    return write_atomically(Path(job_dir) / ERROR_FILE, f"overrides: {' '.join(overrides)}\n\n{text}\n")


def release_frames(error: BaseException) -> None:
    """Drop the local variables held by the error's traceback (and its causes'): a failed job's model and
    batches would otherwise stay in memory, on the GPU too, while the sweep goes on."""
    while error is not None:
        traceback.clear_frames(error.__traceback__)
        error = error.__cause__ or error.__context__


def write_record(sweep_dir: Path, record: dict) -> Path:
    """One file per job number: jobs run in other processes (or machines) never write the same file."""
    return write_json(Path(sweep_dir) / RECORDS_DIR / f"{record['num']}.json", record)


def read_records(sweep_dir: Path) -> list[dict]:
    records = [json.loads(p.read_text(encoding="utf-8")) for p in (Path(sweep_dir) / RECORDS_DIR).glob("*.json")]
    return sorted(records, key=lambda r: r["num"])


def jsonable(value: object) -> object:
    """A job's return value as JSON can hold it: as is if JSON can, else its repr."""
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)
    return value
