"""Output files written atomically: a temporary file beside the target, flushed, then renamed over it.

An interrupted run never leaves a truncated file that looks complete, and an earlier file is only
replaced once its successor is whole. The result gets the mode a plain `open()` would give (the
user's umask), not the 0600 of a private temporary file, so teammates on a shared cluster can read it.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path


def umask() -> int:
    """The process umask (reading it means setting it; it is set straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomically(path: Path, data: str | bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    binary = isinstance(data, bytes)
    with tempfile.NamedTemporaryFile(
        "wb" if binary else "w",
        dir=path.parent,
        prefix=f".{path.name}.",
        delete=False,
        **({} if binary else {"encoding": "utf-8"}),
    ) as tmp:
        tmp.write(data)
        tmp.flush()
        os.fsync(tmp.fileno())
    try:
        os.chmod(tmp.name, 0o666 & ~umask())
        os.replace(tmp.name, path)
    finally:
        Path(tmp.name).unlink(missing_ok=True)
    return path


def write_json(path: Path, data: dict) -> Path:
    return write_atomically(path, json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def write_csv(path: Path, header: list[str], rows: Iterable) -> Path:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return write_atomically(path, buffer.getvalue())
