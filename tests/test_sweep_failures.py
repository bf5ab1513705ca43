"""A grid sweep (Hydra's own sweeper and launcher, with the sweep_summary callback) runs every job even when some
fail at run time, records each failure (error.txt, summary.md/.json) and then exits non-zero; an override that does
not compose is refused before any job trains. In this process (a command's exit status and its lone error line are
test_cli's): on made-up data, and on the real data with pretrained EfficientNet-Lite0 weights."""

import json

import pytest

from image_transfer import train as train_module
from tests.helpers.configs import NO_PICTURES, QUICK, run_entry_point

QUICK_JOB = ["debug=fast_dev_run", "data.subset=32", "model.image_size=64", "data.batch_size=8", NO_PICTURES]


def check_summary(sweep_dir, statuses: list[str], error: str) -> None:
    """Every job in the summary with its status; the failed ones with `error` in their error.txt."""
    summary = json.loads((sweep_dir / "summary.json").read_text())
    assert [(job["num"], job["status"]) for job in summary["jobs"]] == list(enumerate(statuses))
    assert (summary["ok"], summary["failed"]) == (statuses.count("ok"), statuses.count("failed"))
    markdown = (sweep_dir / "summary.md").read_text()
    for num, status in enumerate(statuses):
        assert f"| {num} | {status} |" in markdown
        if status == "ok":
            assert (sweep_dir / str(num) / "metrics.json").is_file()
        else:
            assert error in summary["jobs"][num]["error"]
            assert error in (sweep_dir / str(num) / "error.txt").read_text()


@pytest.mark.slow  # a sweep on the real data
def test_a_job_that_fails_at_run_time_does_not_stop_the_sweep(shared_data, tmp_path, capsys):
    sweep = ["-m", "model.backbone=efficientnet_lite0,no_such_net,cnn", *QUICK_JOB, f"data.root={shared_data}"]
    with pytest.raises(SystemExit) as exited:
        run_entry_point(train_module.main, *sweep, f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert exited.value.code == 1
    assert "unknown backbone model.backbone=no_such_net" in capsys.readouterr().err
    check_summary(tmp_path / "sweep", ["ok", "failed", "ok"], "unknown backbone model.backbone=no_such_net")


@pytest.mark.slow  # a sweep
def test_in_process_sweep_runs_every_job_summarises_them_and_exits_non_zero(made_up_data, tmp_path, capsys):
    sweep_dir = tmp_path / "sweep"
    with pytest.raises(SystemExit) as exited:
        run_entry_point(
            train_module.main,
            "-m",
            *QUICK,
            "model.backbone=cnn,no_such_net,cnn",
            "data.subset=48",
            f"data.root={made_up_data.root}",
            f"hydra.sweep.dir={sweep_dir}",
        )
    assert exited.value.code == 1
    err = capsys.readouterr().err
    assert "unknown backbone model.backbone=no_such_net" in err and str(sweep_dir / "summary.md") in err
    check_summary(sweep_dir, ["ok", "failed", "ok"], "unknown backbone model.backbone=no_such_net")
    assert "overrides: " in (sweep_dir / "1" / "error.txt").read_text()  # the full traceback, with its overrides


@pytest.mark.slow  # a sweep
def test_a_job_whose_metric_is_not_finite_fails(made_up_data, tmp_path, capsys):
    """A diverged run (here: an infinite learning rate) hands its sweeper no NaN: the job fails and says why."""
    sweep_dir = tmp_path / "sweep"
    with pytest.raises(SystemExit):
        run_entry_point(
            train_module.main,
            "-m",
            *QUICK,
            "model.optimizer.lr=1e-3,inf",
            "optimized_metric=val/loss",
            "data.subset=48",
            f"data.root={made_up_data.root}",
            f"hydra.sweep.dir={sweep_dir}",
        )
    check_summary(sweep_dir, ["ok", "failed"], "optimized_metric=val/loss: the run logged no finite value")


@pytest.mark.parametrize(
    "sweep", ["model=cnn,no_such_model_option", "no_such_key=1,2"], ids=["unknown-option", "unknown-key"]
)
def test_an_override_that_does_not_compose_is_refused_before_any_job(made_up_data, tmp_path, capsys, sweep):
    sweep_dir = tmp_path / "sweep"
    with pytest.raises(SystemExit) as exited:
        run_entry_point(
            train_module.main, "-m", sweep, *QUICK_JOB, f"data.root={made_up_data.root}", f"hydra.sweep.dir={sweep_dir}"
        )
    assert exited.value.code == 1
    assert "no_such" in capsys.readouterr().err
    assert not (sweep_dir / "0").exists() and not (sweep_dir / "summary.json").exists()
