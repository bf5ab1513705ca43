"""Sweeps through hydra-submitit-launcher (hydra/launcher=local runs each job in its own process, as SLURM would),
the SLURM launcher config tied to the trainer's devices, and a requeued SLURM job continuing its run dir."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from hydra import compose, initialize_config_dir

from image_transfer import CONFIG_DIR, PROJECT_ROOT
from image_transfer import train as train_module
from tests.helpers.configs import QUICK, run_entry_point
from tests.helpers.files import metrics_without_timings, read_csv

# QUICK without the in-process tweaks, as a command line.
COMMAND = [sys.executable, "-m", "image_transfer.train", *QUICK]


@pytest.mark.slow  # submitit's job processes (the sweep itself runs in this process)
def test_a_two_job_sweep_through_submitit_local_completes_both_runs(made_up_data, tmp_path):
    sweep = tmp_path / "sweep"
    overrides = ["hydra/launcher=local", f"data.root={made_up_data.root}", "seed=1,2", f"hydra.sweep.dir={sweep}"]
    run_entry_point(train_module.main, "-m", *QUICK, *overrides)
    for job in ("0", "1"):
        metrics = json.loads((sweep / job / "metrics.json").read_text())
        assert metrics["epochs"] == 1 and (sweep / job / "checkpoints" / "best.ckpt").is_file()
        assert len(read_csv(sweep / job / "test_predictions.csv")) == len(read_csv(sweep / job / "val_split.csv"))
    assert json.loads((sweep / "summary.json").read_text())["ok"] == 2
    assert list((sweep / ".submitit").iterdir())  # submitit's own job records


def test_the_slurm_launcher_gives_one_task_per_device():
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        cfg = compose(
            "train",
            ["hydra/launcher=slurm", "trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2"],
            return_hydra_config=True,
        )
    launcher = cfg.hydra.launcher
    assert launcher.tasks_per_node == launcher.gpus_per_node == 4 and launcher.nodes == 2
    assert launcher.max_num_timeout > 0 and launcher._target_.endswith("SlurmLauncher")


@pytest.mark.slow  # a training process, preempted
def test_a_requeued_slurm_job_continues_its_run_dir(made_up_data, tmp_path, capsys, monkeypatch):
    overrides = [*QUICK, f"data.root={made_up_data.root}", "trainer.max_epochs=3", "model.image_size=48"]
    run_entry_point(train_module.main, *overrides, f"hydra.run.dir={tmp_path / 'whole'}")  # in this process
    run_dir = tmp_path / "preempted"
    command = [*COMMAND[:3], *overrides, f"hydra.run.dir={run_dir}"]
    first = subprocess.Popen(command, cwd=PROJECT_ROOT, stderr=subprocess.DEVNULL)
    while not (run_dir / "checkpoints" / "last.ckpt").is_file() and first.poll() is None:
        time.sleep(0.1)
    os.kill(first.pid, signal.SIGTERM)  # SLURM's preemption signal
    assert first.wait(timeout=120) == 128 + signal.SIGTERM
    again = [*overrides, f"hydra.run.dir={run_dir}"]  # the same command, as submitit requeues it
    with pytest.raises(SystemExit) as refused:
        run_entry_point(train_module.main, *again)
    assert refused.value.code == 1 and "already holds a run" in capsys.readouterr().err  # not a requeued job
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    run_entry_point(train_module.main, *again)
    assert metrics_without_timings(run_dir) == metrics_without_timings(tmp_path / "whole")
