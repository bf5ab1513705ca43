"""The entry points as a user runs them: user errors as one message with exit status 1, runs started at once in
their own dirs, and a resume hint only where there is something to resume.

Each user error runs in this process (the entry point's main, as `python -m` runs it: its SystemExit and stderr);
what only a process shows (its exit status, no traceback, signals, two processes at once) runs in one (slow)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from image_transfer import eval as eval_module
from image_transfer import predict as predict_module
from image_transfer import train as train_module
from tests.helpers.configs import NO_PICTURES, run_entry_point
from tests.helpers.images import make_dataset

QUICK = [
    "model=cnn",
    "finetune=full",
    "model.image_size=32",
    "data.batch_size=8",
    "trainer.accelerator=cpu",
    NO_PICTURES,
]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data"), counts={0: 14, 1: 12}, size=(40, 40), name="{}.png")


def start(module: str, *args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", module, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


def run(module: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    process = start(module, *args, env=env)
    stdout, stderr = process.communicate(timeout=300)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


@pytest.mark.parametrize(
    "module, overrides, message",
    [
        ("image_transfer.train", ["data.folds=1"], "data.folds=1: use 2 or more folds"),
        ("image_transfer.train", ["data.class_names=[a,b,c]"], "no image is labelled 'c'"),
        ("image_transfer.train", ["trainer.max_epochs=0"], "trainer.max_epochs=0 trains nothing"),
        ("image_transfer.train", ["model.optimizer.lr=abc", "trainer.max_epochs=1"], "model.optimizer"),
        ("image_transfer.train", ["ckpt_path=/etc/hostname"], "is not a PyTorch checkpoint"),
        ("image_transfer.eval", ["ckpt_path=no/such.ckpt"], "ckpt_path=no/such.ckpt: no such checkpoint file"),
        ("image_transfer.predict", ["ckpt_path=no/such.ckpt"], "no such checkpoint file"),
    ],
    ids=[
        "bad-folds",
        "class-without-images",
        "zero-epochs",
        "optimizer-setting",
        "not-a-checkpoint",
        "eval-missing-checkpoint",
        "predict-missing-checkpoint",
    ],
)
def test_user_errors_are_one_message_and_exit_status_1(tmp_path, data, module, overrides, message, capsys):
    options = QUICK if module == "image_transfer.train" else ["trainer.accelerator=cpu"]
    main = {"image_transfer.train": train_module, "image_transfer.eval": eval_module}.get(module, predict_module).main
    with pytest.raises(SystemExit) as exited:
        run_entry_point(main, f"data.root={data}", *options, *overrides, f"paths.log_dir={tmp_path}")
    stderr = capsys.readouterr().err
    assert exited.value.code == 1, stderr[-2000:]
    assert "Traceback" not in stderr and message in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and message in errors[0]


@pytest.mark.slow  # a Python process that imports torch and Lightning
def test_a_user_error_ends_the_process_with_one_message_and_exit_status_1(tmp_path, data):
    result = run("image_transfer.train", f"data.root={data}", *QUICK, "data.folds=1", f"paths.log_dir={tmp_path}")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and "data.folds=1: use 2 or more folds" in errors[0]


def test_the_full_traceback_is_one_switch_away(tmp_path, data, monkeypatch):
    """With the switch the error is raised as it is (Python prints its traceback), not told in one line."""
    monkeypatch.setenv("IMAGE_TRANSFER_TRACEBACK", "1")
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")  # and Hydra's own: it would print a shortened traceback
    with pytest.raises(Exception, match="data.folds=1") as raised:
        run_entry_point(train_module.main, f"data.root={data}", *QUICK, "data.folds=1", f"paths.log_dir={tmp_path}")
    assert not isinstance(raised.value, SystemExit)


@pytest.mark.slow
def test_two_trainings_started_at_once_get_their_own_run_dirs(tmp_path, data):
    # Both name their dir as in the same second, deterministically: the default's template with a fixed time.
    same_second = "hydra.run.dir='${run_dir:null,${paths.log_dir}/train/runs/2026-01-01_00-00-00}'"
    args = [f"data.root={data}", *QUICK, "trainer.max_epochs=1", f"paths.log_dir={tmp_path}", same_second]
    first, second = start("image_transfer.train", *args, "seed=1"), start("image_transfer.train", *args, "seed=2")
    for process in (first, second):
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr[-2000:]
    runs = sorted((tmp_path / "train" / "runs").iterdir())
    assert [r.name for r in runs] == ["2026-01-01_00-00-00", "2026-01-01_00-00-00_1"]
    overrides = [(r / ".hydra" / "overrides.yaml").read_text().splitlines() for r in runs]
    assert sorted(line for lines in overrides for line in lines if "seed=" in line) == ["- seed=1", "- seed=2"]
    for run_dir in runs:
        assert (run_dir / "metrics.json").is_file()
        writers = {p.name.split(".")[-2] for p in (run_dir / "tensorboard").glob("events.*")}  # process ids
        assert len(writers) == 1


@pytest.mark.slow
def test_sigterm_before_any_finished_epoch_does_not_suggest_resuming(tmp_path, data):
    kill = [
        "+callbacks.kill._target_=tests.test_kill_resume.KillAt",
        "+callbacks.kill.epoch=0",
        "+callbacks.kill.batch=1",
        "+callbacks.kill.signal_name=SIGTERM",
    ]
    result = run("image_transfer.train", f"data.root={data}", *QUICK, *kill, f"hydra.run.dir={tmp_path}")
    assert result.returncode == 128 + signal.SIGTERM
    output = result.stdout + result.stderr
    assert "nothing to resume" in output and "resume=" not in output.replace("(without resume=)", "")
