"""Short real runs: training learns (on a small real subset: slow), writes its outputs, eval reproduces its test
metrics and predict writes a submission (each with the baseline CNN on made-up data, fast, and on the real data)."""

import json
from pathlib import Path
from typing import NamedTuple

import pytest

from image_transfer.eval import evaluate
from image_transfer.predict import predict
from image_transfer.train import train
from tests.helpers.configs import TINY, compose_config
from tests.helpers.files import read_csv


class Trained(NamedTuple):
    run_dir: Path
    metrics: dict
    data: list[str]  # the data.root override ([]: the real data)
    names: list[str]  # 24 images to predict


@pytest.fixture(scope="module")
def trained_on_real_data(shared_data, tmp_path_factory) -> Trained:
    run_dir = tmp_path_factory.mktemp("train")
    cfg = compose_config(
        "train", run_dir, TINY + ["finetune=frozen", "trainer.max_epochs=3", "data.subset=400", "model.image_size=160"]
    )
    names = [row["image_names"] for row in read_csv(shared_data / "test.csv")][:24]
    return Trained(run_dir, train(cfg), [], names)


@pytest.fixture(scope="module", params=["made_up_cnn", pytest.param("real", marks=pytest.mark.slow)])
def trained(request, tmp_path_factory) -> Trained:
    if request.param == "real":
        return request.getfixturevalue("trained_on_real_data")
    root = request.getfixturevalue("made_up_data").root
    run_dir, data = tmp_path_factory.mktemp("train_made_up"), [f"data.root={root}"]
    cfg = compose_config(
        "train", run_dir, TINY + ["model=cnn", "finetune=frozen", "trainer.max_epochs=3", "model.image_size=32", *data]
    )
    names = [row["image_names"] for row in read_csv(root / "train.csv")][:24]
    return Trained(run_dir, train(cfg), data, names)


@pytest.mark.slow
def test_training_beats_chance(trained_on_real_data):
    majority = 1 - 681 / 1646  # always predicting "non-emergency"
    assert trained_on_real_data.metrics["val/acc"] > majority + 0.15


def test_training_writes_its_outputs(trained):
    run_dir, metrics, _, _ = trained
    on_disk = json.loads((run_dir / "metrics.json").read_text())
    assert on_disk["val/acc"] == metrics["val/acc"] and on_disk["wall_time_s"] > 0
    assert {"val/f1", "val/auroc", "test/acc", "test/confusion_matrix", "train/acc"} <= on_disk.keys()
    assert (run_dir / "checkpoints" / "best.ckpt").is_file() and (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert (run_dir / "val_split.csv").is_file() and (run_dir / "config.yaml").is_file()
    tested = read_csv(run_dir / "test_predictions.csv")  # the test metrics, image by image
    assert [r["image_names"] for r in tested] == [r["image_names"] for r in read_csv(run_dir / "val_split.csv")]
    correct = sum(r["emergency_or_not"] == r["true_emergency_or_not"] for r in tested)
    assert correct / len(tested) == pytest.approx(metrics["test/acc"])


def test_eval_reproduces_the_training_test_metrics(trained, tmp_path):
    run_dir, metrics, data, _ = trained
    cfg = compose_config(
        "eval",
        tmp_path,
        [f"ckpt_path={run_dir}/checkpoints/best.ckpt", "trainer.accelerator=cpu"],  # its data: the checkpoint's
    )
    evaluated = evaluate(cfg)
    for key in ("test/acc", "test/f1", "test/auroc", "test/loss"):
        assert evaluated[key] == pytest.approx(metrics[key], abs=1e-6), key
    assert evaluated["test/confusion_matrix"] == metrics["test/confusion_matrix"]
    assert (tmp_path / "test_predictions.csv").read_text() == (run_dir / "test_predictions.csv").read_text()


def test_predict_writes_a_submission_csv(trained, tmp_path):
    run_dir, _, data, names = trained
    source = tmp_path / "some_test.csv"
    source.write_text("image_names\n" + "\n".join(names) + "\n")
    cfg = compose_config(
        "predict",
        tmp_path,
        [f"ckpt_path={run_dir}/checkpoints/best.ckpt", f"source={source}", "trainer.accelerator=cpu", *data],
    )
    rows = read_csv(predict(cfg))
    assert [r["image_names"] for r in rows] == names
    classes = ["non_emergency", "emergency"]
    for row in rows:
        p = [float(row[f"prob_{c}"]) for c in classes]
        assert sum(p) == pytest.approx(1, abs=1e-4)
        assert row["emergency_or_not"] == classes[p.index(max(p))]  # the class name, from the model
