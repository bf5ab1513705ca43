"""Faults the machine brings, made real: a tmpfs too small for a run's checkpoints or cache, a read-only mount, a
memory limit (RLIMIT_AS) on a subprocess. Each ends with one message and exit status 1 (or, for the cache, goes on),
and what was written before stays whole and loadable."""

from __future__ import annotations

import errno
import json
import logging
import subprocess
import sys
import threading
from pathlib import Path
from shutil import rmtree

import pytest
import torch

from image_transfer import export as export_module
from image_transfer import train as train_module
from image_transfer.files import write_atomically, write_json
from image_transfer.runs.checkpoints import AtomicCheckpointIO
from image_transfer.runs.faults import quiet_storage_faults_in_threads
from image_transfer.train import train
from tests.helpers.configs import QUICK, compose_config, run_entry_point
from tests.helpers.files import without_timings
from tests.helpers.images import make_dataset
from tests.helpers.mounts import fill, make_read_only, resize, tmpfs

KIB = 1024

# python -c LIMITED <MiB> <train overrides...>: train with the address space limited to what torch and Lightning
# take once imported plus <MiB>.
LIMITED = """
import resource, runpy, sys
import lightning, torch
status = open("/proc/self/status").read()
size = int(status.split("VmSize:")[1].split()[0]) * 1024 + (int(sys.argv[1]) << 20)
resource.setrlimit(resource.RLIMIT_AS, (size, size))
sys.argv = ["image_transfer.train", *sys.argv[2:]]
runpy.run_module("image_transfer.train", run_name="__main__")
"""


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data"), counts={0: 12, 1: 10}, size=(40, 40), name="{}.png")


def run_train(*args: str, memory_mib: int | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "image_transfer.train"] if memory_mib is None else [sys.executable, "-c", LIMITED]
    command += [str(memory_mib)] if memory_mib is not None else []
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=300)


def test_a_failed_write_names_its_file_and_leaves_the_earlier_one_whole(tmp_path):
    with tmpfs(tmp_path / "disk", 64 * KIB) as disk:
        metrics = write_json(disk / "metrics.json", {"val/acc": 0.5})
        with pytest.raises(OSError) as failed:
            write_atomically(metrics, bytes(256 * KIB))
        assert failed.value.errno == errno.ENOSPC and failed.value.filename == str(metrics)
        with pytest.raises(OSError) as failed:
            AtomicCheckpointIO().save_checkpoint({"weights": torch.zeros(64 * KIB)}, disk / "best.ckpt")
        assert failed.value.errno == errno.ENOSPC and failed.value.filename == str(disk / "best.ckpt")
        assert json.loads(metrics.read_text()) == {"val/acc": 0.5}
        assert [p.name for p in disk.iterdir()] == ["metrics.json"]  # no temporary file left behind


@pytest.mark.slow  # a fit per cache kind
@pytest.mark.parametrize("full_at", ["images", "features"])
def test_a_cache_dir_without_room_falls_back_to_memory_with_a_warning(tmp_path, data, caplog, full_at):
    frozen = [f"data.root={data}", *QUICK, "finetune=frozen", "data.augment=none"]  # features are cached too
    in_memory = train(compose_config("train", tmp_path / "memory", [*frozen, "data.image_cache=false"]))
    with tmpfs(tmp_path / "cache", 2**20) as cache:
        if full_at == "features":  # the images' entry is built first; then no room is left for the features'
            train(compose_config("train", tmp_path / "images", [*frozen, f"data.cache_dir={cache}"]))
            rmtree(cache / "features")
        fill(cache)
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            fell_back = train(compose_config("train", tmp_path / "full", [*frozen, f"data.cache_dir={cache}"]))
        assert not [p for p in cache.rglob("*") if ".building-" in p.name]
    warned = [r.getMessage() for r in caplog.records if r.getMessage().startswith("no room for the")]
    assert len(warned) == 1 and warned[0].startswith(f"no room for the {full_at} cache in {cache}")
    assert "data.cache_dir=DIR" in warned[0] and f"data.{full_at[:-1]}_cache=false" in warned[0]
    assert without_timings(fell_back) == without_timings(in_memory)


@pytest.fixture
def read_only(tmp_path) -> Path:
    with tmpfs(tmp_path / "read_only", 256 * KIB) as folder:
        (folder / "old_run").mkdir()
        make_read_only(folder)
        yield folder


@pytest.mark.parametrize(
    ("option", "fix"),
    [
        ("hydra.run.dir={}/run", "paths.log_dir=DIR"),
        ("paths.log_dir={}/logs", "paths.log_dir=DIR"),
        ("resume={}/old_run", "copy its dir to a writable disk"),
    ],
)
def test_a_read_only_run_dir_is_refused_before_anything_runs(read_only, data, capsys, option, fix):
    with pytest.raises(SystemExit) as exited:
        run_entry_point(train_module.main, f"data.root={data}", *QUICK, option.format(read_only))
    error = capsys.readouterr().err
    assert exited.value.code == 1 and "Read-only file system" in error and fix in error
    assert error.startswith("Error: ") and len(error.strip().splitlines()) == 1


def test_a_read_only_cache_dir_is_refused_before_training(read_only, data, tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        run_entry_point(
            train_module.main,
            f"data.root={data}",
            *QUICK,
            f"data.cache_dir={read_only}/cache",
            f"hydra.run.dir={tmp_path / 'run'}",
        )
    error = capsys.readouterr().err
    assert exited.value.code == 1 and f"the cache folder {read_only}/cache" in error
    assert "data.cache_dir=DIR" in error and "data.image_cache=false" in error
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.slow  # a fit, then an export
def test_an_export_to_a_full_disk_names_the_file_and_the_option_that_moves_it(tmp_path, data, capsys):
    train(compose_config("train", tmp_path / "run", [f"data.root={data}", *QUICK]))
    with tmpfs(tmp_path / "disk", 16 * KIB) as disk, pytest.raises(SystemExit) as exited:
        run_entry_point(
            export_module.main,
            f"ckpt_path={tmp_path / 'run/checkpoints/best.ckpt'}",
            f"output={disk / 'model.onnx'}",
            f"hydra.run.dir={tmp_path / 'export'}",
        )
    error = capsys.readouterr().err
    assert exited.value.code == 1 and f"no space left for {disk / 'model.onnx'}" in error and "output=FILE" in error


@pytest.mark.slow  # a training process, and its resume in this one
def test_a_full_disk_stops_training_with_one_message_and_the_run_resumes_once_there_is_room(tmp_path, data):
    overrides = [f"data.root={data}", *QUICK, "trainer.max_epochs=3"]
    train(compose_config("train", tmp_path / "probe", [*overrides, "trainer.max_epochs=1"]))
    checkpoint = (tmp_path / "probe" / "checkpoints" / "best.ckpt").stat().st_size
    # Room for best.ckpt and last.ckpt of the first epoch, not for the next epoch's first new checkpoint.
    with tmpfs(tmp_path / "disk", int(2.5 * checkpoint) + 64 * KIB) as disk:
        run_dir = disk / "run"
        failed = run_train(*overrides, f"hydra.run.dir={run_dir}")
        assert failed.returncode == 1 and "Traceback" not in failed.stderr, failed.stderr
        assert f"Error: no space left for {run_dir / 'checkpoints'}/" in failed.stderr
        assert "checkpoints/last.ckpt (epoch 0)" in failed.stderr and f"resume={run_dir}" in failed.stderr
        assert not [p for p in run_dir.rglob("*") if p.name.endswith(".partial")]
        for path in run_dir.rglob("*.ckpt"):
            assert torch.load(path, weights_only=False)["epoch"] == 0

        resize(disk, 16 * 2**20)
        train(compose_config("train", run_dir, [*overrides, f"resume={run_dir}"]))
        assert json.loads((run_dir / "metrics.json").read_text())["epochs"] == 3


@pytest.mark.slow  # a training process under a memory limit
def test_a_batch_too_large_for_the_memory_names_the_batch_size_to_try(tmp_path, data):
    failed = run_train(
        f"data.root={data}",
        *QUICK,
        "model.image_size=1024",
        "data.batch_size=64",
        f"hydra.run.dir={tmp_path / 'run'}",
        memory_mib=1500,
    )
    assert failed.returncode == 1 and "Traceback" not in failed.stderr, failed.stderr
    assert "Error: out of CPU memory" in failed.stderr
    assert "data.batch_size=64 and image size 1024: try data.batch_size=32" in failed.stderr


def test_a_writer_thread_that_meets_a_full_disk_leaves_the_report_to_the_main_thread(monkeypatch):
    reported = []  # what the hook before (Python's: print the traceback) is given
    monkeypatch.setattr(threading, "excepthook", lambda args: reported.append(args.exc_value))
    quiet_storage_faults_in_threads()
    quiet_storage_faults_in_threads()  # once per process, however often an entry point runs

    def fail(error: Exception) -> None:
        raise error

    for error in (OSError(errno.ENOSPC, "No space left on device"), ValueError("a bug")):
        thread = threading.Thread(target=fail, args=(error,))
        thread.start()
        thread.join()
    assert [type(error) for error in reported] == [ValueError]


@pytest.mark.slow  # a search on a full disk
def test_a_search_whose_storage_has_no_room_names_it_and_how_to_continue(tmp_path, data, capsys):
    with tmpfs(tmp_path / "storage", 8 * KIB) as storage, pytest.raises(SystemExit) as exited:
        run_entry_point(
            train_module.main,
            "-m",
            "hparams_search=cnn_optuna",
            f"data.root={data}",
            *QUICK,
            f"hydra.sweep.dir={tmp_path / 'search'}",
            f"hydra.sweeper.storage=sqlite:///{storage}/optuna.db",
        )
    error = capsys.readouterr().err
    assert exited.value.code == 1 and "SQLite: database or disk is full" in error
    assert f"sqlite:///{storage}/optuna.db" in error and f"hydra.sweep.dir={tmp_path / 'search'}" in error
