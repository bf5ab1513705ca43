"""Keyed cache folders on disk, built once and then shared by every run, fold, sweep job and DDP rank.

An entry is a folder named by the digest of its key (everything its content depends on). It is built under a
temporary name and renamed into place whole, so no reader ever sees half an entry; a lock file makes a second
builder wait for the first instead of building the same thing again. meta.json records the key and each file's
size and CRC-32 (checked at every open: about 6 GB/s): an entry whose files do not match (truncated, overwritten,
partly deleted) is set aside and rebuilt, never read.

The cache is an optimisation: a file system with no room for an entry makes its caller compute in memory (one
warning), while a cache folder that cannot be written at all is refused before any work, with the options that
move it or turn it off.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import uuid
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from image_transfer.errors import EnvironmentFault
from image_transfer.files import NO_SPACE, free_space, storage_error, umask, write_json
from image_transfer.paths import PROJECT_ROOT, from_project_root

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; the rename alone still keeps entries whole
    fcntl = None

log = logging.getLogger(__name__)

FORMAT = 1  # bumped when what the builders write changes: entries of the old format are then never found
META = "meta.json"
CHUNK = 1 << 24


def cache_root(cache_dir: str | None) -> Path:
    """data.cache_dir; by default $IMAGE_TRANSFER_CACHE_DIR, else <project>/.cache (git-ignored)."""
    if cache_dir:
        return from_project_root(cache_dir)
    return from_project_root(os.environ.get("IMAGE_TRANSFER_CACHE_DIR") or PROJECT_ROOT / ".cache")


def digest(value) -> str:
    """A short stable digest of a JSON-able value (the key of an entry, or a part of one)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:24]


def cached_entry(root: Path, kind: str, key: dict, build: Callable[[Path], None], off: str) -> Path | None:
    """The folder of the entry for `key` under root/kind, built by `build(folder)` unless a valid one exists; None
    when the file system has no room for it. `off` is the option that turns this cache off, for messages."""
    folder = root / kind
    key = {"format": FORMAT, **key}
    path = folder / digest(key)
    if _problem(path, key) is None:  # a valid entry is read, even from a read-only folder
        return path
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with _locked(folder / f".{path.name}.lock"):
            problem = _problem(path, key)
            if problem is None:  # another process built it while this one waited
                return path
            if path.exists():
                log.warning("cache %s is damaged (%s): rebuilding it", path, problem)
                _discard(path)
            _build(folder, path, key, build)
    except Exception as error:
        cause = storage_error(error)
        if cause is None:
            raise
        moves = f"data.cache_dir=DIR (or IMAGE_TRANSFER_CACHE_DIR=DIR) puts the cache elsewhere; {off} turns it off"
        if cause.errno not in NO_SPACE:
            raise EnvironmentFault(
                f"the cache folder {folder} cannot be written ({cause.strerror}): {moves}."
            ) from None
        room = free_space(folder)
        log.warning("no room for the %s cache in %s (%s): kept in memory for this run. %s.", kind, folder, room, moves)
        return None
    return path


def _build(folder: Path, path: Path, key: dict, build: Callable[[Path], None]) -> None:
    """Build under a temporary name, then rename it into place whole; the temporary folder never outlives this."""
    building = Path(tempfile.mkdtemp(dir=folder, prefix=f".{path.name}.building-"))
    try:
        build(building)
        files = {p.name: _fingerprint(p) for p in sorted(building.iterdir())}
        write_json(building / META, {"key": key, "files": files})
        os.chmod(building, 0o777 & ~umask())  # mkdtemp's 0700 would hide the cache from teammates
        try:
            os.rename(building, path)
        except OSError:  # without the lock (no fcntl, some network file systems) another builder won
            if _problem(path, key) is not None:
                raise
    finally:
        shutil.rmtree(building, ignore_errors=True)


def _problem(path: Path, key: dict) -> str | None:
    """None when the entry at `path` is whole and made for `key`; otherwise what is wrong ('absent' if missing)."""
    if not path.exists():
        return "absent"
    try:
        meta = json.loads((path / META).read_text(encoding="utf-8"))
        if meta["key"] != key:
            return "its meta.json holds another key"
        for name, expected in meta["files"].items():
            if not (path / name).is_file():
                return f"{name} is missing"
            if _fingerprint(path / name) != expected:
                return f"{name} differs from what was written (size or CRC-32)"
    except (OSError, ValueError, KeyError, TypeError) as error:
        return f"unreadable {META}: {error}"
    return None


def _fingerprint(path: Path) -> dict:
    crc = 0
    with open(path, "rb") as file:
        while block := file.read(CHUNK):
            crc = zlib.crc32(block, crc)
    return {"bytes": path.stat().st_size, "crc32": crc}


def _discard(path: Path) -> None:
    """Renamed first, so no reader finds a half-deleted entry under the real name."""
    aside = path.with_name(f".{path.name}.damaged-{uuid.uuid4().hex[:8]}")
    os.rename(path, aside)
    shutil.rmtree(aside, ignore_errors=True)


@contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    if fcntl is None:
        yield
        return
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
