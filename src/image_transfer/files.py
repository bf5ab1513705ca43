"""Output files written atomically: a temporary file beside the target, flushed, then renamed over it.

An interrupted run never leaves a truncated file that looks complete, and an earlier file is only
replaced once its successor is whole; a write that fails (a full disk) removes its temporary file and
raises an OSError that names the target (write() errors carry no file name). The result gets the mode a
plain `open()` would give (the user's umask), not the 0600 of a private temporary file, so teammates on a
shared cluster can read it.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from image_transfer.errors import EnvironmentFault, chain

# The file system cannot take more: full, over a quota, or over the process's file size limit (RLIMIT_FSIZE).
NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
# The folder cannot be written: a read-only mount, or permissions.
NOT_WRITABLE = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})


def umask() -> int:
    """The process umask (reading it means setting it; it is set straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def storage_error(error: BaseException) -> OSError | None:
    """The OSError of a full or unwritable file system that caused `error` (itself, or in its chain: torch's
    "unexpected pos" RuntimeError hides the ENOSPC it met), or None."""
    return next((e for e in chain(error) if isinstance(e, OSError) and e.errno in NO_SPACE | NOT_WRITABLE), None)


@contextmanager
def writing(path: Path) -> Iterator[None]:
    """Re-raise a full or unwritable file system's error met inside as an OSError naming `path`."""
    try:
        yield
    except Exception as error:
        cause = storage_error(error)
        if cause is None or cause.filename:
            raise
        raise OSError(cause.errno, cause.strerror, str(path)) from error


def free_space(path: Path) -> str:
    """'<free> free of <size>' on the file system holding `path` (or its nearest existing parent)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    usage = shutil.disk_usage(path)
    return f"{usage.free / 2**20:.1f} MiB free of {usage.total / 2**20:.1f} MiB"


def require_writable(folder: Path, fix: str) -> Path:
    """Create `folder` if needed and write a small probe file in it, so a read-only mount, missing permissions or a
    full disk are refused before any work starts, naming the folder and `fix` (the option that moves it). Only a
    real write tells: for root, permission bits and os.access say yes where a read-only mount says no."""
    folder = Path(folder)
    probe = folder / f".write-probe-{uuid.uuid4().hex[:8]}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(bytes(4096))
        probe.unlink()
    except OSError as error:
        if storage_error(error) is None:
            raise
        if probe.exists():
            probe.unlink()
        if error.errno in NO_SPACE:
            raise EnvironmentFault(f"no space left in {folder} ({free_space(folder)}): {fix}.") from None
        raise EnvironmentFault(f"cannot write in {folder} ({error.strerror}): {fix}.") from None
    return folder


def write_atomically(path: Path, data: str | bytes) -> Path:
    path = Path(path)
    binary = isinstance(data, bytes)
    tmp = None
    with writing(path):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
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
            os.chmod(tmp.name, 0o666 & ~umask())
            os.replace(tmp.name, path)
        finally:
            if tmp is not None:
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
