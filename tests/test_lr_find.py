"""lr_find=true: Lightning's finder on the phase that trains first leaves its plot and suggestion in the run dir (and
TensorBoard), the run then trains with that LR on the usual freeze schedule, then=stop trains nothing, a resume
reuses the LR instead of searching again, and settings that cannot work are refused. Real short runs on made-up
images."""

import csv
import json
import logging
import math
import re
from pathlib import Path

import lightning as L
import numpy as np
import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image

from image_transfer import train as train_module
from image_transfer.errors import ConfigError
from image_transfer.runs.lr_find import steepest_descent, with_found_lr
from image_transfer.train import train
from tests.helpers.configs import QUICK, compose_config, run_entry_point
from tests.helpers.tensorboard import load
from tests.test_console import TINY_EFFICIENTNET

FIND = ["lr_find=true", "lr_finder.num_training=30"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> str:
    """32 images whose colour gives the class (reddish or bluish, each with its own noise): a loss that falls within
    the finder's few steps, as on real data, so there is a descent to suggest an LR from."""
    root = tmp_path_factory.mktemp("data")
    (root / "images").mkdir()
    rng, rows = np.random.default_rng(0), []
    for index in range(32):
        label = index % 2
        colour = np.array([190, 50, 50] if label else [50, 50, 190])
        pixels = np.clip(colour + rng.integers(-40, 41, (32, 48, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(root / "images" / f"{index}.png")
        rows.append((f"{index}.png", label))
    with open(root / "train.csv", "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([("image_names", "emergency_or_not"), *rows])
    return f"data.root={root}"


def only_run_dir(log_dir: Path) -> Path:
    (run_dir,) = (log_dir / "train" / "runs").iterdir()
    return run_dir


class CrashOnce(L.Callback):
    """A crash at the start of `epoch`, the first time only (`marker` remembers it), so a resume with the very same
    configuration goes on."""

    def __init__(self, epoch: int, marker: str):
        self.epoch, self.marker = epoch, Path(marker)

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch and not self.marker.exists():
            self.marker.touch()
            raise RuntimeError("simulated crash")


@pytest.mark.slow  # an LR search, then a fit
def test_lr_find_then_trains_with_it_on_the_freeze_schedule(data, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="image_transfer")
    logged = [o for o in TINY_EFFICIENTNET if o not in ("~logger", "callbacks.lr_monitor=null")]  # TensorBoard too
    run = [*logged, "trainer.max_epochs=2", data, f"paths.log_dir={tmp_path}"]
    run_entry_point(train_module.main, *run, *FIND)
    run_dir = only_run_dir(tmp_path)
    found = json.loads((run_dir / "lr_find.json").read_text())
    assert math.isfinite(found["suggestion"]) and found["suggestion"] > 0 and found["steps"] == 30
    assert (run_dir / "lr_find.png").read_bytes().startswith(b"\x89PNG")
    assert "lr_find" in load(run_dir / "tensorboard").Tags()["images"]
    # The LR it trained with is the one recorded, and nothing of the finder is left among the checkpoints.
    assert OmegaConf.load(run_dir / "config.yaml").model.optimizer.lr == found["suggestion"]
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    assert not list(run_dir.rglob(".lr_find*"))
    # The finder searched for the head alone, and the run then froze and unfroze on schedule.
    schedule = re.findall(r"epoch (\d): (\d+) trainable, (\d+) frozen", caplog.text)
    head, backbone = int(schedule[0][1]), int(schedule[0][2])
    assert found["trainable_params"] == head < backbone
    assert [(int(e), int(t), int(f)) for e, t, f in schedule] == [(0, head, backbone)] * 2 + [(1, head + backbone, 0)]
    assert json.loads((run_dir / "metrics.json").read_text())["epochs"] == 2


def test_lr_find_then_stop_trains_nothing(data, tmp_path, capsys):
    run_entry_point(train_module.main, *QUICK, data, f"paths.log_dir={tmp_path}", *FIND, "lr_finder.then=stop")
    run_dir = only_run_dir(tmp_path)
    found = json.loads((run_dir / "lr_find.json").read_text())
    assert {p.name for p in run_dir.iterdir()} == {"lr_find.json", "lr_find.png", ".hydra"}
    # finetune=full, the baseline CNN: the finder trained everything
    model = instantiate(compose_config("train", tmp_path / "model", [*QUICK, data]).model)
    assert found["trainable_params"] == sum(p.numel() for p in model.parameters())
    out = capsys.readouterr().out
    command = re.search(r"train with: (.*)", out).group(1)
    assert command.endswith(f"model.optimizer.lr={found['suggestion']:.3g}")
    assert not re.search(r" lr_find(er\.\w+)?=", command)  # the finder's own options are left out


@pytest.mark.slow  # two fits
def test_a_resumed_run_reuses_the_found_lr(data, tmp_path, caplog):
    crash = ["+callbacks.crash._target_=tests.test_lr_find.CrashOnce", "+callbacks.crash.epoch=1"]
    run = [*QUICK, data, *FIND, "trainer.max_epochs=2", *crash, f"+callbacks.crash.marker={tmp_path}/crashed"]
    first = compose_config("train", tmp_path / "run", run)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(first)
    found = (tmp_path / "run" / "lr_find.json").read_text()
    caplog.set_level(logging.INFO, logger="image_transfer")
    caplog.clear()
    resumed = train(compose_config("train", tmp_path / "run", [*run, f"resume={tmp_path / 'run'}"]))
    assert resumed["epochs"] == 2 and not [r for r in caplog.records if r.name.endswith("lr_find")]
    assert (tmp_path / "run" / "lr_find.json").read_text() == found
    saved = OmegaConf.load(tmp_path / "run" / "config.yaml")
    assert saved.model.optimizer.lr == json.loads(found)["suggestion"] != first.model.optimizer.lr


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["lr_finder.then=later"], "lr_finder.then='later'"),
        (["lr_finder.num_training=5"], "lr_finder.num_training=5"),
        (["lr_finder.min_lr=1", "lr_finder.max_lr=0.1"], "0 < min_lr < max_lr"),
        (["ckpt_path=some.ckpt"], "lr_find=true with ckpt_path"),
    ],
)
def test_settings_that_cannot_work_are_refused(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        with_found_lr(compose_config("train", tmp_path, ["lr_find=true", *overrides]))
    assert not list(tmp_path.iterdir())  # refused before anything is written


def test_suggestion_is_the_steepest_fall_against_log_lr():
    lrs = list(np.logspace(-6, 0, 100))
    # Lightning's smoothing start (rising), a plateau, a fall from 1e-3 to 1e-1 steepest near 1e-2, then divergence.
    fall = [0.7 - 0.4 / (1 + np.exp(-3 * (np.log10(lr) + 2))) for lr in lrs]
    losses = [
        f * (1 - 0.98 ** (i + 1)) / (1 - 0.98 ** (i + 2)) + (5 * (lr - 0.2) if lr > 0.2 else 0)
        for i, (lr, f) in enumerate(zip(lrs, fall))
    ]
    assert steepest_descent(lrs, losses) == pytest.approx(1e-2, rel=0.2)
    assert steepest_descent(lrs, [0.7] * 100) is None  # nothing fell: no suggestion
