"""How an entry point ends on an error: a user's mistake or a fault of the machine (runs/faults.py) as one message
and exit status 1, anything else with its traceback (the full one for user errors too with
IMAGE_TRANSFER_TRACEBACK=1). In a multirun a job's error fails that job only: the sweep records it (error.txt,
summary) and goes on."""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException, InstantiationException
from hydra.types import RunMode
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException
from optuna import TrialPruned

from image_transfer.errors import UserError
from image_transfer.runs.faults import environment_fault, quiet_storage_faults_in_threads

TRACEBACK_SWITCH = "IMAGE_TRANSFER_TRACEBACK"
# Errors of the configuration or the data: the message, not the code path, is what the user needs.
USER_ERRORS = (UserError, MisconfigurationException, OmegaConfBaseException, InstantiationException)


class JobFailed(CompactHydraException):
    """A multirun job's error (its cause), as one line. Hydra prints a compact exception's message alone when the
    sweep ends with it; the job's error.txt keeps the whole traceback."""


def user_error(error: BaseException) -> BaseException | None:
    """The innermost user error that caused `error` (Hydra wraps what a constructor raises), or None."""
    found = None
    while error is not None:
        if isinstance(error, USER_ERRORS):
            found = error
        error = error.__cause__
    return found


def error_line(error: BaseException) -> str:
    """An error on one line, as a sweep's summary shows it: the user error inside it if any, else itself."""
    if isinstance(error, JobFailed) and error.__cause__ is not None:
        error = error.__cause__
    cause = user_error(error) or error
    return f"{type(cause).__name__}: {' '.join(str(cause).split())}"


def in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def report_user_errors(task):
    """Wrap a Hydra task function. In a multirun the job fails with a JobFailed (a pruned Optuna trial with its
    TrialPruned), which the sweep records; the other jobs still run."""

    @functools.wraps(task)
    def wrapped(cfg: DictConfig):
        quiet_storage_faults_in_threads()
        try:
            try:
                return task(cfg)
            except Exception as error:  # a full disk or too little memory: the user's to fix too, told as such
                if user_error(error) is None and (fault := environment_fault(error, cfg)) is not None:
                    raise fault from error
                raise
        except TrialPruned:
            raise
        except Exception as error:
            if os.environ.get(TRACEBACK_SWITCH):
                raise
            if in_multirun():
                hydra = HydraConfig.get()
                raise JobFailed(
                    f"{error_line(error)}\nEvery job of the sweep: {Path(hydra.sweep.dir) / 'summary.md'}; "
                    f"this job's traceback: {Path(hydra.runtime.output_dir) / 'error.txt'}"
                ) from error
            cause = user_error(error)
            if cause is None:
                raise
            message = " ".join(str(cause).split()) if isinstance(cause, InstantiationException) else str(cause)
            print(f"Error: {message}\n(The full traceback: {TRACEBACK_SWITCH}=1.)", file=sys.stderr)
            raise SystemExit(1) from None

    return wrapped
