"""Real short runs on a small real subset: training learns, eval reproduces, predict writes a submission."""

import csv
import json

import pytest

from tests.conftest import TINY, compose_config
from vehicle_transfer.eval import evaluate
from vehicle_transfer.predict import predict
from vehicle_transfer.train import train


@pytest.fixture(scope="module")
def trained(shared_data, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("train")
    cfg = compose_config(
        "train", run_dir, TINY + ["finetune=frozen", "trainer.max_epochs=3", "data.subset=400", "model.image_size=160"]
    )
    return run_dir, train(cfg)


def test_training_beats_chance_and_writes_its_outputs(trained):
    run_dir, metrics = trained
    majority = 1 - 681 / 1646  # always predicting "non-emergency"
    assert metrics["val/acc"] > majority + 0.15
    on_disk = json.loads((run_dir / "metrics.json").read_text())
    assert on_disk["val/acc"] == metrics["val/acc"] and on_disk["wall_time_s"] > 0
    assert {"val/f1", "val/auroc", "test/acc", "test/confusion_matrix", "train/acc"} <= on_disk.keys()
    assert (run_dir / "checkpoints" / "best.ckpt").is_file() and (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert (run_dir / "val_split.csv").is_file() and (run_dir / "config.yaml").is_file()
    tested = list(csv.DictReader(open(run_dir / "test_predictions.csv")))  # the test metrics, image by image
    assert [r["image_names"] for r in tested] == [
        r["image_names"] for r in csv.DictReader(open(run_dir / "val_split.csv"))
    ]
    correct = sum(r["emergency_or_not"] == r["true_emergency_or_not"] for r in tested)
    assert correct / len(tested) == pytest.approx(metrics["test/acc"])


def test_eval_reproduces_the_training_test_metrics(trained, tmp_path):
    run_dir, metrics = trained
    cfg = compose_config(
        "eval", tmp_path, [f"ckpt_path={run_dir}/checkpoints/best.ckpt", "data.subset=400", "trainer.accelerator=cpu"]
    )
    evaluated = evaluate(cfg)
    for key in ("test/acc", "test/f1", "test/auroc", "test/loss"):
        assert evaluated[key] == pytest.approx(metrics[key], abs=1e-6), key
    assert evaluated["test/confusion_matrix"] == metrics["test/confusion_matrix"]
    assert (tmp_path / "test_predictions.csv").read_text() == (run_dir / "test_predictions.csv").read_text()


def test_predict_writes_a_submission_csv(trained, shared_data, tmp_path):
    run_dir, _ = trained
    names = [row["image_names"] for row in csv.DictReader(open(shared_data / "test.csv"))][:24]
    source = tmp_path / "some_test.csv"
    source.write_text("image_names\n" + "\n".join(names) + "\n")
    cfg = compose_config(
        "predict",
        tmp_path,
        [f"ckpt_path={run_dir}/checkpoints/best.ckpt", f"source={source}", "trainer.accelerator=cpu"],
    )
    rows = list(csv.DictReader(open(predict(cfg))))
    assert [r["image_names"] for r in rows] == names
    for row in rows:
        assert row["emergency_or_not"] in {"0", "1"}
        p = [float(row["prob_non_emergency"]), float(row["prob_emergency"])]
        assert sum(p) == pytest.approx(1, abs=1e-4) and float(row["probability"]) == pytest.approx(max(p), abs=1e-6)
        assert int(row["emergency_or_not"]) == p.index(max(p))
