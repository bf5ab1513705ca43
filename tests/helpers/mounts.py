"""Real small and read-only file systems for the fault tests: a tmpfs mounted for the test and unmounted after it.
Mounting needs root with CAP_SYS_ADMIN (as CI and this project's machines run); elsewhere the test is skipped
with the reason, since a mocked disk would prove nothing."""

from __future__ import annotations

import errno
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


def mount(*args: str) -> None:
    done = subprocess.run(["mount", *args], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount here ({done.stderr.strip() or done.returncode}): needs root with CAP_SYS_ADMIN")


@contextmanager
def tmpfs(path: Path, size: int) -> Iterator[Path]:
    """A file system of `size` bytes at `path`."""
    path.mkdir(parents=True, exist_ok=True)
    mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path))
    try:
        yield path
    finally:
        subprocess.run(["umount", "--lazy", str(path)], check=True)


def resize(path: Path, size: int) -> None:
    """Make room: the tmpfs at `path` grows (or shrinks) to `size` bytes, its files kept."""
    mount("-o", f"remount,size={size}", str(path))


def make_read_only(path: Path) -> None:
    """The tmpfs at `path` becomes read-only, as a mount of a shared disk would be."""
    mount("-o", "remount,ro", str(path))


def fill(folder: Path) -> None:
    """Take the rest of the space of the file system holding `folder`."""
    with open(folder / "filler", "wb", buffering=0) as filler:
        try:
            while True:
                filler.write(bytes(4096))
        except OSError as error:
            assert error.errno == errno.ENOSPC
