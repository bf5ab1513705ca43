"""How an entry point ends on an error: a user's mistake as one message and exit status 1, anything else
with its traceback (the full one for user errors too with VEHICLE_TRANSFER_TRACEBACK=1)."""

from __future__ import annotations

import functools
import os
import sys

from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from omegaconf.errors import OmegaConfBaseException

from vehicle_transfer.errors import UserError

TRACEBACK_SWITCH = "VEHICLE_TRANSFER_TRACEBACK"
# Errors of the configuration or the data: the message, not the code path, is what the user needs.
USER_ERRORS = (UserError, MisconfigurationException, OmegaConfBaseException, InstantiationException)


def user_error(error: BaseException) -> BaseException | None:
    """The innermost user error that caused `error` (Hydra wraps what a constructor raises), or None."""
    found = None
    while error is not None:
        if isinstance(error, USER_ERRORS):
            found = error
        error = error.__cause__
    return found


def _multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def report_user_errors(task):
    """Wrap a Hydra task function. In a multirun the error propagates, so the launcher records the job as failed
    (error.txt) and the sweep goes on."""

    @functools.wraps(task)
    def wrapped(*args, **kwargs):
        try:
            return task(*args, **kwargs)
        except Exception as error:
            cause = user_error(error)
            if cause is None or os.environ.get(TRACEBACK_SWITCH) or _multirun():
                raise
            message = " ".join(str(cause).split()) if isinstance(cause, InstantiationException) else str(cause)
            print(f"Error: {message}\n(The full traceback: {TRACEBACK_SWITCH}=1.)", file=sys.stderr)
            raise SystemExit(1) from None

    return wrapped
