"""A Hydra multirun from the command line puts each job in its own run dir."""

import json
import subprocess
import sys

from tests.conftest import SHARED_DATA


def test_finetune_sweep_runs_each_job_in_its_own_dir(tmp_path):
    command = [
        sys.executable,
        "-m",
        "vehicle_transfer.train",
        "-m",
        "finetune=frozen,full,freeze_unfreeze",
        "debug=fast_dev_run",
        "data.subset=48",
        "model.image_size=64",
        "data.batch_size=8",
        f"data.root={SHARED_DATA}",
        f"paths.log_dir={tmp_path}",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = sorted((tmp_path / "train" / "multiruns").glob("*/*/metrics.json"))
    assert [p.parent.name for p in jobs] == ["0", "1", "2"]
    strategies = [(p.parent / ".hydra" / "overrides.yaml").read_text() for p in jobs]
    assert ["frozen" in s for s in strategies][0] and "full" in strategies[1] and "freeze_unfreeze" in strategies[2]
    assert all("test/acc" in json.loads(p.read_text()) for p in jobs)
