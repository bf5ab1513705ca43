"""Runs killed by real signals resume in place and end exactly as an uninterrupted run (slow: subprocesses on the
real data); reruns reproduce (the baseline CNN on made-up data: fast; the default model on the real data: slow)."""

import os
import signal
import subprocess
import sys

import lightning as L
import pytest

from image_transfer.train import train
from tests.helpers.configs import NO_PICTURES, SHARED_DATA, TINY, compose_config, without
from tests.helpers.files import metrics_without_timings

# With pictures: drawing must leave a resumed run exact.
RUN = without(("logger=tensorboard", NO_PICTURES), TINY) + [
    "data.subset=96",
    "finetune=freeze_unfreeze",
    "finetune.unfreeze_at_epochs=[1]",
    "trainer.max_epochs=3",
    f"data.root={SHARED_DATA}",
]


class KillAt(L.Callback):
    """Sends `signal_name` to this process at a batch of an epoch, unless the run was resumed."""

    def __init__(self, epoch: int, batch: int, signal_name: str):
        self.epoch, self.batch, self.signal = epoch, batch, getattr(signal, signal_name)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.ckpt_path is None and (trainer.current_epoch, batch_idx) == (self.epoch, self.batch):
            os.kill(os.getpid(), self.signal)


def run(run_dir, *extra):
    command = [sys.executable, "-m", "image_transfer.train", *RUN, f"hydra.run.dir={run_dir}", *extra]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def trained(run_dir, overrides: list[str]) -> dict:
    """The metrics of a run trained in this process, without timings."""
    train(compose_config("train", run_dir, overrides))
    return metrics_without_timings(run_dir)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    return trained(tmp_path_factory.mktemp("uninterrupted"), RUN)  # in this process: only the killed run needs its own


@pytest.mark.parametrize(
    "signal_name, epoch", [("SIGKILL", 2), ("SIGTERM", 1)], ids=["sigkill-after-unfreeze", "sigterm-in-unfreeze-epoch"]
)
@pytest.mark.slow  # subprocesses that import torch, on the real data
def test_killed_run_resumes_in_place_to_the_same_metrics(tmp_path, uninterrupted, signal_name, epoch):
    killed = tmp_path / "killed"
    kill = [
        "+callbacks.kill._target_=tests.test_kill_resume.KillAt",
        f"+callbacks.kill.epoch={epoch}",
        "+callbacks.kill.batch=2",
        f"+callbacks.kill.signal_name={signal_name}",
    ]
    first = run(killed, *kill)
    assert first.returncode == 128 + getattr(signal, signal_name) or first.returncode == -getattr(signal, signal_name)
    assert not (killed / "metrics.json").exists()
    assert not list((killed / "checkpoints").glob(".*partial"))  # no half-written checkpoint left behind
    assert trained(killed, [*RUN, *kill, f"resume={killed}"]) == uninterrupted


@pytest.mark.slow
def test_resume_refuses_a_different_configuration(tmp_path):
    cfg = compose_config("train", tmp_path, RUN + ["trainer.max_epochs=1"])
    train(cfg)
    (tmp_path / "metrics.json").unlink()  # as a kill after the last checkpoint leaves it: resumable, not complete
    changed = compose_config(
        "train", tmp_path, RUN + ["trainer.max_epochs=1", "model.optimizer.lr=0.5", f"resume={tmp_path}"]
    )
    with pytest.raises(ValueError, match=r"model.optimizer.lr: 0.001 -> 0.5"):
        train(changed)


@pytest.mark.slow  # two fits
@pytest.mark.parametrize("data", ["made_up_cnn", "real"])
def test_two_runs_with_one_seed_give_identical_metrics(tmp_path, data, request):
    if data == "real":  # the default model on the real data: the first of the two is the killed runs' reference
        run, first = RUN, request.getfixturevalue("uninterrupted")
    else:
        run = [*RUN, "model=cnn", "model.image_size=32", f"data.root={request.getfixturevalue('made_up_data').root}"]
        first = trained(tmp_path / "a", run)
    assert trained(tmp_path / "b", run) == first
