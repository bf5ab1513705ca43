"""A multirun runs every job even when one fails, records the failure, and summarises the sweep."""

import json
import subprocess
import sys

import pytest

from tests.conftest import SHARED_DATA


@pytest.mark.parametrize(
    ("sweep", "expected_error"),
    [
        # Composes, then fails when the model is instantiated.
        ("model.backbone=efficientnet_lite0,nonexistent_backbone_xyz", "unknown backbone 'nonexistent_backbone_xyz'"),
        # Cannot even be composed: the config group option does not exist.
        ("model=efficientnet_lite0,no_such_model_option", "Could not find 'model/no_such_model_option'"),
    ],
)
def test_failed_job_does_not_stop_the_sweep(tmp_path, sweep, expected_error):
    command = [
        sys.executable,
        "-m",
        "vehicle_transfer.train",
        "-m",
        sweep,
        "debug=fast_dev_run",
        "data.subset=32",
        "model.image_size=64",
        "data.batch_size=8",
        f"data.root={SHARED_DATA}",
        f"paths.log_dir={tmp_path}",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep_dir,) = (tmp_path / "train" / "multiruns").iterdir()
    assert (sweep_dir / "0" / "metrics.json").is_file()
    assert not (sweep_dir / "0" / "error.txt").exists()
    assert expected_error in (sweep_dir / "1" / "error.txt").read_text()

    summary = json.loads((sweep_dir / "summary.json").read_text())
    assert [(job["num"], job["status"]) for job in summary["jobs"]] == [(0, "ok"), (1, "failed")]
    assert expected_error in summary["jobs"][1]["error"]
    assert "| 1 | failed |" in (sweep_dir / "summary.md").read_text()


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
    assert "All 2 jobs of the sweep failed" in result.stderr
    (sweep_dir,) = (tmp_path / "train" / "multiruns").iterdir()
    assert json.loads((sweep_dir / "summary.json").read_text())["failed"] == 2
