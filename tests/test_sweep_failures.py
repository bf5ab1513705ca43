"""A multirun runs every job even when one fails, records the failure, and summarises the sweep: in this process on
made-up data (fast), and from the command line on the real data (slow)."""

import json
import subprocess
import sys

import pytest

from tests.helpers.configs import SHARED_DATA, run_entry_point
from vehicle_transfer import train as train_module

SWEEPS = [
    # Composes, then fails when the model is instantiated.
    (
        "model.backbone=efficientnet_lite0,nonexistent_backbone_xyz",
        "unknown backbone model.backbone=nonexistent_backbone_xyz",
    ),
    # Cannot even be composed: the config group option does not exist.
    ("model=efficientnet_lite0,no_such_model_option", "Could not find 'model/no_such_model_option'"),
]
QUICK_JOB = ["debug=fast_dev_run", "data.subset=32", "model.image_size=64", "data.batch_size=8"]


def check_sweep(log_dir, expected_error) -> None:
    """Job 0 ran; job 1 failed, and error.txt and the summary say so with `expected_error`."""
    (sweep_dir,) = (log_dir / "train" / "multiruns").iterdir()
    assert (sweep_dir / "0" / "metrics.json").is_file()
    assert not (sweep_dir / "0" / "error.txt").exists()
    assert expected_error in (sweep_dir / "1" / "error.txt").read_text()

    summary = json.loads((sweep_dir / "summary.json").read_text())
    assert [(job["num"], job["status"]) for job in summary["jobs"]] == [(0, "ok"), (1, "failed")]
    assert expected_error in summary["jobs"][1]["error"]
    assert "| 1 | failed |" in (sweep_dir / "summary.md").read_text()


@pytest.mark.slow  # a subprocess that imports torch, on the real data
@pytest.mark.parametrize(("sweep", "expected_error"), SWEEPS)
def test_failed_job_does_not_stop_the_sweep(tmp_path, sweep, expected_error):
    command = [
        sys.executable,
        "-m",
        "vehicle_transfer.train",
        "-m",
        sweep,
        *QUICK_JOB,
        f"data.root={SHARED_DATA}",
        f"paths.log_dir={tmp_path}",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    check_sweep(tmp_path, expected_error)


@pytest.mark.parametrize(
    ("sweep", "expected_error"),
    [
        ("model.backbone=cnn,nonexistent_backbone_xyz", "nonexistent_backbone_xyz"),
        ("model=cnn,no_such_model_option", "Could not find 'model/no_such_model_option'"),
    ],
    ids=["fails-when-instantiated", "fails-to-compose"],
)
def test_failed_job_does_not_stop_an_in_process_sweep(made_up_data, tmp_path, sweep, expected_error):
    """As above with the baseline CNN on made-up data, in this process (the sweeper and launcher are the same)."""
    run_entry_point(
        train_module.main, "-m", sweep, *QUICK_JOB, f"data.root={made_up_data.root}", f"paths.log_dir={tmp_path}"
    )
    check_sweep(tmp_path, expected_error)
    if "backbone" in sweep:
        (sweep_dir,) = (tmp_path / "train" / "multiruns").iterdir()
        assert "unknown backbone" in (sweep_dir / "1" / "error.txt").read_text()


def check_all_failed(log_dir, stderr: str) -> None:
    assert "All 2 jobs of the sweep failed" in stderr
    (sweep_dir,) = (log_dir / "train" / "multiruns").iterdir()
    assert json.loads((sweep_dir / "summary.json").read_text())["failed"] == 2


@pytest.mark.slow  # a subprocess that imports torch
def test_sweep_where_every_job_fails_exits_non_zero(tmp_path):
    command = [
        sys.executable,
        "-m",
        "vehicle_transfer.train",
        "-m",
        "model=no_such_model_a,no_such_model_b",
        f"data.root={SHARED_DATA}",
        f"paths.log_dir={tmp_path}",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    check_all_failed(tmp_path, result.stderr)


def test_in_process_sweep_where_every_job_fails_exits_non_zero(made_up_data, tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        run_entry_point(
            train_module.main,
            "-m",
            "model=no_such_model_a,no_such_model_b",
            f"data.root={made_up_data.root}",
            f"paths.log_dir={tmp_path}",
        )
    assert exited.value.code != 0
    check_all_failed(tmp_path, capsys.readouterr().err)
