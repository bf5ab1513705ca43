"""Errors a user can fix, and how the entry points report them.

A UserError's message names the file, row or option and the fix. The entry points print it alone
and exit with status 1; the traceback is for unexpected errors, or on request with
IMAGE_TRANSFER_TRACEBACK=1 (HYDRA_FULL_ERROR=1 does the same for Hydra's own errors).
"""

from __future__ import annotations

from collections.abc import Iterator


class UserError(ValueError):
    """Bad input or configuration; the message says what and how to fix it."""


class ConfigError(UserError):
    """A configuration that cannot give a meaningful result."""


class EnvironmentFault(UserError):
    """The machine, not the input: a full or read-only file system, too little memory. The message names what
    failed, what is intact and how to go on."""


def chain(error: BaseException | None) -> Iterator[BaseException]:
    """`error` and what caused it, or was being handled when it arose, innermost last (each once)."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__
