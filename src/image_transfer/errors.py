"""Errors a user can fix, and how the entry points report them.

A UserError's message names the file, row or option and the fix. The entry points print it alone
and exit with status 1; the traceback is for unexpected errors, or on request with
IMAGE_TRANSFER_TRACEBACK=1 (HYDRA_FULL_ERROR=1 does the same for Hydra's own errors).
"""

from __future__ import annotations


class UserError(ValueError):
    """Bad input or configuration; the message says what and how to fix it."""


class ConfigError(UserError):
    """A configuration that cannot give a meaningful result."""
