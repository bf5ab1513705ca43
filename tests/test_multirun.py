"""A Hydra multirun puts each job in its own run dir (in this process: on the real data, and with the baseline CNN on
made-up data), and sweeps named alike claim their own dirs."""

import json

import pytest

from image_transfer import train as train_module
from tests.helpers.configs import NO_PICTURES, run_entry_point

SWEEP = [
    "finetune=frozen,full,freeze_unfreeze",
    "debug=fast_dev_run",
    "data.subset=48",
    "model.image_size=64",
    NO_PICTURES,
]


def check_jobs(log_dir) -> None:
    jobs = sorted((log_dir / "train" / "multiruns").glob("*/*/metrics.json"))
    assert [p.parent.name for p in jobs] == ["0", "1", "2"]
    strategies = [(p.parent / ".hydra" / "overrides.yaml").read_text() for p in jobs]
    assert ["frozen" in s for s in strategies][0] and "full" in strategies[1] and "freeze_unfreeze" in strategies[2]
    assert all("test/acc" in json.loads(p.read_text()) for p in jobs)


@pytest.mark.slow  # a sweep
@pytest.mark.parametrize("data", ["made_up_cnn", "real"])
def test_finetune_sweep_runs_each_job_in_its_own_dir(tmp_path, data, request):
    if data == "real":  # with the default model, EfficientNet-Lite0
        options = [f"data.root={request.getfixturevalue('shared_data')}"]
    else:
        options = ["model=cnn", f"data.root={request.getfixturevalue('made_up_data').root}"]
    run_entry_point(train_module.main, "-m", *SWEEP, "data.batch_size=8", *options, f"paths.log_dir={tmp_path}")
    check_jobs(tmp_path)


@pytest.mark.slow  # two sweeps
def test_sweeps_named_alike_claim_their_own_dirs_and_jobs_follow(made_up_data, tmp_path):
    # Both sweep dirs are named as in the same second; the second sweep's jobs must land in its own claimed dir.
    same_second = "hydra.sweep.dir='${paths.log_dir}/train/multiruns/2026-01-01_00-00-00'"
    args = [
        "-m",
        "debug=fast_dev_run",
        "model=cnn",
        "model.image_size=32",
        "data.batch_size=8",
        NO_PICTURES,
        same_second,
    ]
    for seed in (1, 2):
        run_entry_point(
            train_module.main, *args, f"seed={seed}", f"data.root={made_up_data.root}", f"paths.log_dir={tmp_path}"
        )
    sweeps = sorted((tmp_path / "train" / "multiruns").iterdir())
    assert [s.name for s in sweeps] == ["2026-01-01_00-00-00", "2026-01-01_00-00-00_1"]
    for seed, sweep in zip((1, 2), sweeps):
        assert f"- seed={seed}" in (sweep / "0" / ".hydra" / "overrides.yaml").read_text()
        assert (sweep / "0" / "metrics.json").is_file() and (sweep / "multirun.yaml").is_file()
