"""Where an Optuna study lives, and how a job reattaches to its trial there (pruning runs in the job's process,
which may be another process or machine than the sweeper's).

hydra.sweeper.storage: null (sqlite:///<sweep dir>/optuna.db), any Optuna RDB URL (sqlite:///..., postgresql://...,
mysql://...), or journal:<file> (Optuna's journal file storage: the robust choice for many processes on one file
system).
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import optuna
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from sqlalchemy.exc import IntegrityError, OperationalError

from image_transfer.errors import ConfigError, chain
from image_transfer.files import free_space, storage_error
from image_transfer.runs.failures import in_multirun
from image_transfer.sweeps import SWEEPER_TARGET

DEFAULT_FILE = "optuna.db"
JOURNAL = "journal:"
SQLITE_FAULTS = ("database or disk is full", "readonly database", "unable to open database file")
SQLITE_TIMEOUT_S = 120  # SQLite serialises writers; workers sharing the file wait their turn instead of failing


def storage_url(storage: str | None, sweep_dir: str) -> str:
    return storage or f"sqlite:///{Path(sweep_dir).resolve() / DEFAULT_FILE}"


def open_storage(url: str) -> BaseStorage:
    if url.startswith(JOURNAL):
        path = Path(url[len(JOURNAL) :]).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    engine_kwargs = {"connect_args": {"timeout": SQLITE_TIMEOUT_S}} if url.startswith("sqlite") else None
    for attempt in range(3):
        try:
            return RDBStorage(url, engine_kwargs=engine_kwargs)
        except (OperationalError, IntegrityError):
            # Workers started together race to create a new database: its tables ("table ... already exists") and
            # its schema revision (alembic's stamp: "UNIQUE constraint failed: alembic_version"). The loser opens
            # it again once the winner has made them.
            if attempt == 2:
                raise
            time.sleep(1 + attempt)


def storage_fault(error: BaseException) -> str | None:
    """Why the study's storage or the sweep dir could not be written (a full or read-only file system), or None.
    SQLite says so in words, without an errno."""
    if (cause := storage_error(error)) is not None:
        where = cause.filename or "a file"
        return f"{where}: {cause.strerror}, {free_space(cause.filename or '.')}"
    sqlite = (e for e in chain(error) if isinstance(e, sqlite3.OperationalError))
    return next((f"SQLite: {e}" for e in sqlite if any(sign in str(e) for sign in SQLITE_FAULTS)), None)


def current_trial() -> optuna.trial.Trial:
    """The trial this job runs: the study named by hydra.sweeper in its storage, trial number hydra.job.num (the
    Optuna sweeper numbers jobs by trial), with the study's pruner built from hydra.sweeper.pruner."""
    hydra = HydraConfig.get() if in_multirun() else None
    if hydra is None or hydra.sweeper.get("_target_") != SWEEPER_TARGET:
        raise ConfigError(
            "callbacks.optuna_pruning reports to an Optuna trial, so it runs only in an Optuna search: "
            "python -m image_transfer.train -m hparams_search=<name> (or drop callbacks.optuna_pruning)."
        )
    sweeper = hydra.sweeper
    storage = open_storage(storage_url(sweeper.storage, hydra.sweep.dir))
    study = optuna.load_study(
        study_name=sweeper.study_name,
        storage=storage,
        sampler=optuna.samplers.RandomSampler(),  # the job samples nothing
        pruner=instantiate(sweeper.pruner) if sweeper.pruner else optuna.pruners.NopPruner(),
    )
    study_id = storage.get_study_id_from_name(sweeper.study_name)
    return optuna.trial.Trial(study, storage.get_trial_id_from_study_id_trial_number(study_id, hydra.job.num))
