"""Fixtures and process-wide setup only; helpers live in tests/helpers (configs.py, images.py)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import NamedTuple

import pytest
import torch

from image_transfer.cpu_memory import freeze_loaded_objects, keep_freed_memory
from tests.helpers.configs import SHARED_DATA
from tests.helpers.images import add_copies, make_dataset

CACHE_DIR = pytest.StashKey[Path]()
keep_freed_memory()  # as the entry points do: in-process training runs page-fault less


def pytest_configure(config: pytest.Config) -> None:
    """The tests' own disk cache of decoded images and features, never the user's <project>/.cache: made once by the
    controlling process and inherited by pytest-xdist's workers and every process the tests start, so each image is
    decoded once per test run however the tests are spread."""
    if not hasattr(config, "workerinput"):  # the controller (or a run without xdist)
        config.stash[CACHE_DIR] = Path(tempfile.mkdtemp(prefix="image_transfer_test_cache_"))
        os.environ["IMAGE_TRANSFER_CACHE_DIR"] = str(config.stash[CACHE_DIR])
    if hasattr(config, "workerinput"):  # xdist runs one worker per core: a second thread each would only contend
        torch.set_num_threads(1)
        os.environ["OMP_NUM_THREADS"] = "1"  # and the processes the tests start alike


# The files that take longest (pytest --durations), first: with --no-loadscope-reorder (Makefile) pytest-xdist hands
# files out in collection order, and a long one started last would leave the other workers idle at the end. The rest
# keep their order.
LONGEST_FIRST = (
    "test_ddp.py",
    "test_benchmark.py",
    "test_reproduce.py",
    "test_kill_resume.py",
    "test_optuna_search.py",
    "test_export.py",
    "test_trackers.py",
    "test_serve.py",
    "test_environment_faults.py",
    "test_cli.py",
    "test_launchers.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


def pytest_collection_finish() -> None:
    """The test modules and what they import are loaded: as the entry points do, collections leave them alone."""
    freeze_loaded_objects()


def pytest_unconfigure(config: pytest.Config) -> None:
    """A full run fills the cache with ~0.7 GB: removed at the end."""
    if CACHE_DIR in config.stash:
        os.environ.pop("IMAGE_TRANSFER_CACHE_DIR", None)
        shutil.rmtree(config.stash[CACHE_DIR], ignore_errors=True)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data set (tests that use it are marked slow)."""
    if not (SHARED_DATA / "train.csv").is_file():
        pytest.fail(f"the real data set is expected at {SHARED_DATA} (../shared beside the project)")
    return SHARED_DATA


class Labelled(NamedTuple):
    root: Path  # train.csv (image_names, emergency_or_not) and images/ named 0.jpg, 1.jpg, ...
    rows: int  # rows of train.csv


@pytest.fixture(scope="session")
def made_up_data(tmp_path_factory) -> Labelled:
    """A made-up labelled data set laid out as the real one: 140 images 48 x 32 (classes 3:2), 12 byte-identical
    copies and 8 re-encoded ones under other names. Read-only: tests that change files copy or link it."""
    root = make_dataset(tmp_path_factory.mktemp("made_up_data"), counts={0: 84, 1: 56}, name="{}.jpg")
    add_copies(root, [f"{i}.jpg" for i in range(0, 120, 10)], "copy_")
    add_copies(root, [f"{i}.jpg" for i in range(5, 120, 15)], "near_", quality=70)
    return Labelled(root, 140 + 12 + 8)


@pytest.fixture(scope="session", params=["synthetic", pytest.param("real", marks=pytest.mark.slow)])
def labelled(request) -> Labelled:
    """The made-up data set (fast), or the real one (slow): for tests of logic that runs on either."""
    if request.param == "real":
        return Labelled(request.getfixturevalue("shared_data"), 1646)
    return request.getfixturevalue("made_up_data")
