"""What a training run shows on the console: plain progress lines when stdout is not a terminal, images per second in
the rich bar, the config tree and the end summary (also with logger=null), and a model summary whose trainable count
is the finetune schedule's. Real short fits on made-up images."""

import json
import logging
import re
import sys

import lightning as L
import pytest
from lightning.pytorch.utilities.model_summary import get_human_readable_count

from image_transfer import train as train_module
from image_transfer.console.progress import PlainProgressBar, ThroughputRichProgressBar, progress_bar
from image_transfer.console.summary import summary_rows
from image_transfer.errors import ConfigError
from image_transfer.train import train
from tests.helpers.configs import NO_PICTURES, QUICK, compose_config, run_entry_point
from tests.helpers.images import make_dataset

# timm's test_efficientnet (0.1 M parameters) with a frozen backbone in epoch 0, everything from epoch 1.
TINY_EFFICIENTNET = [
    "model=pretrained",
    "model.backbone=timm/test_efficientnet",
    "model.pretrained=false",
    "model.image_size=32",
    "data.batch_size=8",
    "finetune=freeze_unfreeze",
    "finetune.unfreeze_at_epochs=[1]",
    "trainer.accelerator=cpu",
    "~logger",
    "callbacks.lr_monitor=null",
    NO_PICTURES,
]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> str:
    return f"data.root={make_dataset(tmp_path_factory.mktemp('data'), count=32)}"


class RecordBarMetrics(L.Callback):
    """Writes to `out` what the progress bar shows at the end of the first training epoch."""

    def __init__(self, out: str):
        self.out = out

    def on_train_epoch_end(self, trainer, pl_module):
        shown = trainer.progress_bar_callback.get_metrics(trainer, pl_module)
        with open(self.out, "w", encoding="utf-8") as handle:
            json.dump({"bar": type(trainer.progress_bar_callback).__name__, "metrics": shown}, handle)


def test_progress_bar_modes(monkeypatch):
    assert isinstance(progress_bar(), PlainProgressBar)  # pytest captures stdout: not a terminal
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    assert isinstance(progress_bar(), ThroughputRichProgressBar)
    assert isinstance(progress_bar("plain"), PlainProgressBar)
    with pytest.raises(ConfigError, match="callbacks.progress_bar.mode='fancy'"):
        progress_bar("fancy")
    with pytest.raises(ConfigError, match="callbacks.progress_bar.every_s=0"):
        progress_bar("plain", every_s=0)


def test_plain_progress_lines_when_not_a_terminal(data, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="image_transfer.console.progress")
    train(compose_config("train", tmp_path, [*QUICK, data, "callbacks.progress_bar.every_s=0.001"]))
    lines = [r.getMessage() for r in caplog.records if r.name == "image_transfer.console.progress"]
    batch = [line for line in lines if re.fullmatch(r"epoch 0/0 batch \d+/4, loss \d+\.\d{4}, img/s [\d.]+", line)]
    assert len(batch) == 4, lines  # 28 training images in batches of 8, a line each at this interval
    (end,) = [line for line in lines if line.startswith("epoch 0/0 done in")]
    assert re.search(r"val/loss [\d.]+.*train/loss [\d.]+.*img/s [\d.]+$", end), end
    assert any(re.fullmatch(r"test batch 1/1", line) for line in lines)


def test_rich_bar_shows_images_per_second(data, tmp_path):
    probe = [
        "+callbacks.probe._target_=tests.test_console.RecordBarMetrics",
        f"+callbacks.probe.out={tmp_path}/bar.json",
    ]
    train(compose_config("train", tmp_path, [*QUICK, data, "callbacks.progress_bar.mode=rich", *probe]))
    seen = json.loads((tmp_path / "bar.json").read_text())
    assert seen["bar"] == "ThroughputRichProgressBar"
    assert seen["metrics"]["img/s"] > 0 and "val/loss" in seen["metrics"]


def test_config_tree_and_summary_without_a_logger(data, tmp_path, capsys):
    run_entry_point(train_module.main, *QUICK, data, f"paths.log_dir={tmp_path}")
    (run_dir,) = (tmp_path / "train" / "runs").iterdir()
    out = capsys.readouterr().out
    assert "├── model" in out and "backbone: cnn" in out  # the tree: one branch per group
    summary = out[out.index(f"run dir: {run_dir}") :]
    assert f"best checkpoint: {run_dir / 'checkpoints' / 'best.ckpt'}" in summary
    assert (run_dir / "checkpoints" / "best.ckpt").is_file()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert f"test/acc: {metrics['test/acc']:.4g}" in summary
    assert "tensorboard" not in summary  # ~logger: nothing to open


def test_summary_of_cross_validation_and_of_a_stopped_run(tmp_path):
    cfg = compose_config("train", tmp_path, ["data.folds=2"])
    folds = {"test/acc": 0.9, "test/acc_std": 0.0123, "fold_ckpts": ["f0/best.ckpt", "f1/best.ckpt"], "train/loss": 1}
    rows = dict(summary_rows(cfg, folds))
    assert rows["test/acc"] == "0.9 ± 0.012" and rows["best checkpoint, fold 1"] == "f1/best.ckpt"
    assert "train/loss" not in rows and "test/acc_std" not in rows
    assert rows["tensorboard"] == f"tensorboard --logdir {tmp_path}"
    stopped = dict(summary_rows(cfg, None, note="Continue it with: ... resume=X"))
    assert stopped["next"] == "Continue it with: ... resume=X" and "best checkpoint" not in stopped


def test_summary_says_the_calibration_and_the_decision_in_words(tmp_path):
    cfg = compose_config("train", tmp_path)
    metrics = {"calibration/temperature": 0.53, "calibration/images": 140}
    metrics |= {f"calibration/{k}_{w}": v for k, w, v in [("ece", "before", 0.07), ("ece", "after", 0.02)]}
    metrics |= {f"calibration/nll_{w}": v for w, v in [("before", 0.14), ("after", 0.1)]}
    metrics |= {"decision/positive_class": "emergency", "decision/threshold": 0.153, "decision/rule": "recall>=0.98"}
    metrics |= {"decision/val_precision": 0.905, "decision/val_recall": 0.983}
    rows = dict(summary_rows(cfg, metrics))
    assert rows["calibration"] == "temperature 0.53: ECE 0.0700 -> 0.0200, NLL 0.1400 -> 0.1000 (140 validation images)"
    assert rows["decision"] == "emergency when p >= 0.153 (recall>=0.98): validation precision 0.905 recall 0.983"
    rows = dict(summary_rows(cfg, {"decision/thresholds": [0.4, 0.55], "decision/rule": "best f1"}))
    assert rows["decision"] == "per-class thresholds 0.4, 0.55 (best f1)" and "calibration" not in rows


def test_model_summary_counts_what_the_frozen_phase_trains(data, tmp_path, caplog):
    summary_log = logging.getLogger("lightning.pytorch.callbacks.model_summary")
    summary_log.addHandler(caplog.handler)  # Lightning's logger may not propagate to the root logger
    caplog.set_level(logging.INFO)
    try:
        train(compose_config("train", tmp_path, [*TINY_EFFICIENTNET, data, "trainer.max_epochs=1"]))
    finally:
        summary_log.removeHandler(caplog.handler)
    records = {id(r): r for r in caplog.records}.values()  # once, where Lightning's logger also propagates
    messages = "\n".join(r.getMessage() for r in records)
    trainable, frozen = map(int, re.search(r"epoch 0: (\d+) trainable, (\d+) frozen parameters", messages).groups())
    assert 0 < trainable < frozen  # the head alone
    assert len(re.findall(r"Trainable params", messages)) == 1  # Lightning's default summary is off
    assert re.search(rf"{re.escape(get_human_readable_count(trainable))}\s+Trainable params", messages)
    assert re.search(rf"{re.escape(get_human_readable_count(frozen))}\s+Non-trainable params", messages)


def test_eval_and_predict_follow_trains_console_rule(data, tmp_path, capfd, caplog):
    """stdout not a terminal (a log file, CI): plain progress lines in eval and predict as in train, no rich bar."""
    from image_transfer.eval import main as eval_main
    from image_transfer.predict import main as predict_main

    train(compose_config("train", tmp_path / "run", [*QUICK, data]))
    common = [f"ckpt_path={tmp_path / 'run' / 'checkpoints' / 'best.ckpt'}", "trainer.accelerator=cpu"]
    images = data.removeprefix("data.root=") + "/images"
    caplog.set_level(logging.INFO, logger="image_transfer.console.progress")
    capfd.readouterr()
    run_entry_point(eval_main, *common, f"hydra.run.dir={tmp_path / 'eval'}")
    run_entry_point(predict_main, *common, f"source={images}", f"hydra.run.dir={tmp_path / 'p'}")
    shown = "".join(capfd.readouterr())
    # Lightning's table of test metrics stays; before, the rich bar was drawn as well ("Testing ━━━ 1/1 0:00:00 ...").
    assert not re.search(r"(Testing|Predicting) ━", shown) and "\x1b[" not in shown, shown
    lines = [r.getMessage() for r in caplog.records if r.name == "image_transfer.console.progress"]
    assert "test batch 1/1" in lines and "predict batch 1/4" in lines, lines
    assert (tmp_path / "p" / "predictions.csv").is_file()
