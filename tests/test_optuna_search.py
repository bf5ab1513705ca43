"""The Optuna search (hydra/sweeper=optuna, configs/hparams_search): trials, outputs, resuming, failures, pruning and
several workers on one study. In this process with the baseline CNN on made-up data and with EfficientNet-Lite0 on the
real data; two worker processes from the command line share one study."""

import csv
import json
import subprocess
import sys

import optuna
import pytest
import yaml

from image_transfer import train as train_module
from image_transfer.sweeps.objective import logged_metrics
from tests.helpers.configs import NO_PICTURES, QUICK, run_entry_point

# hparams_search=cnn_optuna's search space over QUICK's tiny fits; no TensorBoard, no LR monitor.
SEARCH = ["-m", "hparams_search=cnn_optuna", *QUICK, "data.subset=48"]

# Two trials in a known order (brute force over one choice): one that fails, one that a pruner stops at once.
PRUNE_OR_FAIL = """# @package _global_
defaults:
  - override /model: cnn
  - override /finetune: full
  - override /hydra/sweeper: optuna
callbacks:
  optuna_pruning:
    _target_: image_transfer.sweeps.pruning.OptunaPruning
    monitor: ${optimized_metric}
hydra:
  sweeper:
    study_name: prune_or_fail
    sampler: {_target_: optuna.samplers.BruteForceSampler, seed: 0}
    pruner: {_target_: optuna.pruners.ThresholdPruner, lower: 2.0}   # accuracy is never above 2: always prunes
    params: {model.backbone: "choice(no_such_net, cnn)"}
"""


def read_trials(sweep_dir) -> list[dict]:
    with open(sweep_dir / "trials.csv", newline="") as f:
        return list(csv.DictReader(f))


def job_dir_times(sweep_dir) -> dict:
    return {p.parent.name: p.stat().st_mtime_ns for p in sweep_dir.glob("*/.hydra/config.yaml")}


@pytest.mark.slow  # two searches
def test_search_writes_its_results_and_the_same_command_continues_it(made_up_data, tmp_path):
    sweep_dir = tmp_path / "search"
    command = [*SEARCH, f"data.root={made_up_data.root}", f"hydra.sweep.dir={sweep_dir}"]
    run_entry_point(train_module.main, *command, "hydra.sweeper.n_trials=2")

    trials = read_trials(sweep_dir)
    assert [(t["number"], t["state"]) for t in trials] == [("0", "COMPLETE"), ("1", "COMPLETE")]
    assert {"model.optimizer.lr", "callbacks", "data.augment"} <= set(trials[0])
    assert trials[0]["model.optimizer.lr"] != trials[1]["model.optimizer.lr"]
    results = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert results["best_value"] == max(float(t["value"]) for t in trials)
    assert set(results["best_params"]) == {k for k in trials[0] if "." in k or k == "callbacks"}
    assert f"model.optimizer.lr={results['best_params']['model.optimizer.lr']}" in results["best_overrides"]
    assert (sweep_dir / "optimization_history.png").read_bytes()[:4] == b"\x89PNG"
    assert (sweep_dir / "param_importances.png").is_file() and (sweep_dir / "parallel_coordinate.png").is_file()
    # The module logs every metric an optimized_metric may name (checked before a run starts).
    assert set(json.loads((sweep_dir / "0" / "metrics.json").read_text())) >= logged_metrics(multi_label=False)

    recipe = (sweep_dir / "experiment" / "best_recipe.yaml").read_text()
    assert "override /model: cnn" in recipe and "hparams_search" not in recipe
    assert str(results["best_params"]["model.optimizer.lr"]) in recipe
    # The recipe runs as its header says, and trains with the best trial's settings.
    rerun = tmp_path / "best_recipe_run"
    run_entry_point(
        train_module.main, "--config-dir", str(sweep_dir), "experiment=best_recipe", f"hydra.run.dir={rerun}"
    )
    rerun_config = yaml.safe_load((rerun / "config.yaml").read_text())
    assert rerun_config["model"]["optimizer"]["lr"] == results["best_params"]["model.optimizer.lr"]
    assert (rerun / "metrics.json").is_file()

    before = job_dir_times(sweep_dir)
    run_entry_point(train_module.main, *command, "hydra.sweeper.n_trials=3")
    trials = read_trials(sweep_dir)
    assert [t["number"] for t in trials] == ["0", "1", "2"]  # one more trial, the first two not run again
    assert {k: v for k, v in job_dir_times(sweep_dir).items() if k in before} == before  # no job dir rewritten
    assert trials[2]["model.optimizer.lr"] not in (trials[0]["model.optimizer.lr"], trials[1]["model.optimizer.lr"])
    summary = json.loads((sweep_dir / "summary.json").read_text())
    assert [job["num"] for job in summary["jobs"]] == [0, 1, 2] and summary["ok"] == 3


@pytest.mark.slow  # two searches
def test_failed_and_pruned_trials_are_recorded_and_a_search_without_a_completed_trial_fails(
    made_up_data, tmp_path, capsys
):
    (tmp_path / "configs" / "hparams_search").mkdir(parents=True)
    (tmp_path / "configs" / "hparams_search" / "prune_or_fail.yaml").write_text(PRUNE_OR_FAIL)
    sweep_dir = tmp_path / "search"
    with pytest.raises(SystemExit) as exited:
        run_entry_point(
            train_module.main,
            "--config-dir",
            str(tmp_path / "configs"),
            "-m",
            "hparams_search=prune_or_fail",
            *QUICK,
            "trainer.max_epochs=2",
            "data.subset=48",
            f"data.root={made_up_data.root}",
            f"hydra.sweep.dir={sweep_dir}",
            "hydra.sweeper.n_trials=5",  # the brute-force sampler ends the search after its 2 points
        )
    assert exited.value.code == 1
    assert "no trial of study prune_or_fail completed" in capsys.readouterr().err

    states = {t["model.backbone"]: t for t in read_trials(sweep_dir)}
    assert states["cnn"]["state"] == "PRUNED" and not (sweep_dir / states["cnn"]["number"] / "error.txt").exists()
    assert states["no_such_net"]["state"] == "FAIL" and "unknown backbone" in states["no_such_net"]["error"]
    assert "unknown backbone" in (sweep_dir / states["no_such_net"]["number"] / "error.txt").read_text()
    study = optuna.load_study(study_name="prune_or_fail", storage=f"sqlite:///{sweep_dir / 'optuna.db'}")
    pruned = study.trials[int(states["cnn"]["number"])]
    assert list(pruned.intermediate_values) == [0]  # reported after epoch 0, stopped there (2 epochs configured)


def test_a_search_space_that_does_not_compose_is_rejected_before_any_trial(made_up_data, tmp_path, capsys):
    sweep_dir = tmp_path / "search"
    with pytest.raises(SystemExit):
        run_entry_point(
            train_module.main,
            *SEARCH,
            "model=choice(cnn,no_such_model)",
            f"data.root={made_up_data.root}",
            f"hydra.sweep.dir={sweep_dir}",
        )
    assert "model/no_such_model" in capsys.readouterr().err
    assert not (sweep_dir / "optuna.db").exists() and not (sweep_dir / "0").exists()


@pytest.mark.parametrize("search", [False, True], ids=["run", "search"])
def test_an_optimized_metric_the_run_does_not_log_is_refused_at_the_start(made_up_data, tmp_path, capsys, search):
    args = [*SEARCH] if search else [*QUICK]
    with pytest.raises(SystemExit) as exited:
        run_entry_point(
            train_module.main,
            *args,
            "optimized_metric=val/accuracy",
            f"data.root={made_up_data.root}",
            f"hydra.run.dir={tmp_path / 'run'}",
            f"hydra.sweep.dir={tmp_path / 'search'}",
        )
    assert exited.value.code == 1
    assert "optimized_metric=val/accuracy is not a metric this project logs" in capsys.readouterr().err
    assert not (tmp_path / "run" / "config.yaml").exists() and not (tmp_path / "search" / "0").exists()  # no run


@pytest.mark.slow  # two processes that import torch and train at once
def test_two_workers_with_one_storage_run_n_trials_between_them(made_up_data, tmp_path):
    sweep_dir = tmp_path / "search"
    command = [
        sys.executable,
        "-m",
        "image_transfer.train",
        *SEARCH,
        f"data.root={made_up_data.root}",
        f"hydra.sweep.dir={sweep_dir}",
        "hydra.sweeper.n_trials=5",
    ]
    workers = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in "ab"]
    outputs = [worker.communicate(timeout=600)[0] for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]

    study = optuna.load_study(study_name="cnn_optuna", storage=f"sqlite:///{sweep_dir / 'optuna.db'}")
    numbers = [t.number for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert sorted(numbers) == [0, 1, 2, 3, 4]  # five in all: none twice, none lost
    assert all("Trial" in output for output in outputs)  # both workers ran trials
    assert sorted(int(t["number"]) for t in read_trials(sweep_dir)) == numbers
    assert sorted(int(p.name) for p in sweep_dir.iterdir() if p.name.isdigit()) == numbers


@pytest.mark.slow  # the README's search, on the real data (processes run searches in the test above)
def test_lite0_search_and_its_continuation(shared_data, tmp_path):
    sweep_dir = tmp_path / "search"
    search = ["-m", "hparams_search=lite0_optuna", "data.subset=48", "trainer.max_epochs=1", NO_PICTURES]
    search += [f"data.root={shared_data}", f"hydra.sweep.dir={sweep_dir}"]
    run_entry_point(train_module.main, *search, "hydra.sweeper.n_trials=2")
    assert len(read_trials(sweep_dir)) == 2
    run_entry_point(train_module.main, *search, "hydra.sweeper.n_trials=3")  # the same command continues it
    assert len(read_trials(sweep_dir)) == 3
    results = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert {"best_params", "best_value"} <= set(results)
