"""The HPARAMS session a run leaves in TensorBoard: its settings and its real final metrics, no placeholder."""

import json

import pytest

from image_transfer.callbacks.finetune_config import CUSTOM, finetune
from image_transfer.runs.hparams import run_hparams
from image_transfer.train import train
from tests.helpers.configs import QUICK, compose_config, without
from tests.helpers.tensorboard import load, runs, sessions

LOGGED = without(("~logger", "callbacks.lr_monitor=null"), QUICK) + [
    "logger=tensorboard",
    "trainer.max_epochs=2",
    "trainer.log_every_n_steps=1",
]


@pytest.fixture(scope="module")
def logged_run(made_up_data, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("logged")
    train(compose_config("train", run_dir, [*LOGGED, f"data.root={made_up_data.root}", "model.optimizer.lr=0.003"]))
    return run_dir


@pytest.mark.slow  # a fit with every logger
def test_the_session_holds_the_settings_and_the_metrics_of_metrics_json(logged_run):
    on_disk = json.loads((logged_run / "metrics.json").read_text())
    (session,) = sessions(logged_run)
    assert session.run == logged_run / "tensorboard"  # beside the curves it summarises
    assert session.hparams["backbone"] == "cnn" and session.hparams["finetune"] == "full"
    assert session.hparams["lr"] == pytest.approx(0.003) and session.hparams["max_epochs"] == 2
    assert session.hparams["fold"] == "none" and session.hparams["augment"] == "light"
    assert set(session.metrics) == {"val/acc_best", "val/acc", "val/loss", "test/acc"}
    for tag, value in session.metrics.items():
        assert value == pytest.approx(on_disk[tag], abs=1e-6), tag


@pytest.mark.slow  # a fit with every logger
def test_no_placeholder_metric_and_learning_rates_per_named_group_and_step(logged_run):
    (run,) = runs(logged_run)
    tags = load(run).Tags()["scalars"]
    assert not [t for t in tags if "hp_metric" in t]
    assert {"lr-AdamW/backbone", "lr-AdamW/head", "lr-AdamW/head_no_decay"} <= set(tags)
    steps = [s.step for s in load(run).Scalars("lr-AdamW/head")]
    on_disk = json.loads((logged_run / "metrics.json").read_text())
    assert len(steps) > on_disk["epochs"] + 1  # per step: the warm-up and cosine shape, not one point per epoch
    assert not [k for k in on_disk if k.startswith("lr-")]  # a curve, not a final metric


@pytest.mark.parametrize("name", ["frozen", "full", "freeze_unfreeze", "gradual"])
def test_the_strategy_is_recorded_by_its_name(name, tmp_path):
    cfg = compose_config("train", tmp_path, [f"finetune={name}", "finetune.unfreeze_at_epochs=[1,4]"])
    assert run_hparams(cfg)["finetune"] == name  # by name, whatever its epochs


def test_a_schedule_of_ones_own_without_a_name_is_custom(tmp_path):
    cfg = compose_config("train", tmp_path, ["finetune=freeze_unfreeze", "~finetune.strategy"])
    assert (run_hparams(cfg)["finetune"], finetune(cfg).unfreeze_at_epochs) == (CUSTOM, (2,))
