"""A multi-label csv trains end to end: a sigmoid head with binary cross-entropy, per-class thresholds picked on the
validation images, label sets in every prediction file, the pictures that make sense for it, and an ONNX file that
predicts the same sets."""

from __future__ import annotations

import json

import onnx
import pytest
import torch

from image_transfer.eval import evaluate
from image_transfer.export import export
from image_transfer.models.metric_names import direction
from image_transfer.predict import predict
from image_transfer.sweeps.objective import logged_metrics
from image_transfer.train import train
from tests.helpers.configs import NO_PICTURES, QUICK, compose_config, without
from tests.helpers.files import read_csv
from tests.test_multilabel_data import CLASSES, SETS, make_multilabel

DATA = ["data=csv", "data.image_dir=pictures", "data.label_delimiter=|", "data.name_column=file"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root, run_dir = tmp_path_factory.mktemp("multilabel_data"), tmp_path_factory.mktemp("multilabel_run")
    make_multilabel(root, [SETS[i % len(SETS)] for i in range(96)])
    data = [*DATA, f"data.root={root / 'tags.csv'}", "data.label_column=tags"]
    overrides = [
        *without(NO_PICTURES, QUICK),
        *data,
        "trainer.max_epochs=2",
        "data.val_fraction=0.3",
        "decision.pick=f1",
    ]
    overrides += ["logger=tensorboard", "callbacks.inspection.misclassified=4"]
    return run_dir, train(compose_config("train", run_dir, overrides)), root


def sets_follow(rows: list[dict], thresholds: list[float], column: str = "tags") -> bool:
    """Each row's predicted set is exactly the classes whose probability reaches their threshold."""
    for row in rows:
        expected = [c for c, t in zip(CLASSES, thresholds) if float(row[f"prob_{c}"]) >= t]
        if sorted(filter(None, row[column].split("|"))) != sorted(expected):
            return False
    return True


@pytest.mark.slow  # a fit, eval, predict, export
def test_a_multilabel_csv_trains_and_every_path_predicts_the_same_label_sets(trained, tmp_path):
    run_dir, metrics, root = trained
    thresholds = metrics["decision/thresholds"]
    assert len(thresholds) == len(CLASSES) and metrics["decision/rule"] == "best f1"
    assert {"val/map", "val/exact_match", "test/f1", "val/ece", "calibration/nll_after"} <= metrics.keys()
    assert {f"test/f1_{c}" for c in CLASSES} | logged_metrics(multi_label=True) <= metrics.keys()
    assert metrics["calibration/nll_after"] <= metrics["calibration/nll_before"] + 1e-6
    plots = {p.name for p in (run_dir / "plots").glob("*.png")}
    assert {"pr_curves.png", "test_pr_curves.png", "reliability.png", "misclassified_last.png"} <= plots
    assert "confusion_matrix.png" not in plots  # one predicted class per image: not for label sets

    tested = read_csv(run_dir / "test_predictions.csv")
    assert sets_follow(tested, thresholds) and any("|" in row["true_tags"] for row in tested)
    best = run_dir / "checkpoints" / "best.ckpt"
    evaluated = evaluate(compose_config("eval", tmp_path / "eval", [f"ckpt_path={best}"]))
    assert evaluated["test/f1"] == pytest.approx(metrics["test/f1"])

    source = [f"source={root / 'tags.csv'}"]
    from_ckpt = read_csv(predict(compose_config("predict", tmp_path / "p1", [f"ckpt_path={best}", *source])))
    assert len(from_ckpt) == 96 and sets_follow(from_ckpt, thresholds)
    onnx_file = export(compose_config("export", tmp_path / "x", [f"ckpt_path={best}"]))
    meta = {p.key: p.value for p in onnx.load(onnx_file).metadata_props}
    assert meta["multi_label"] == "true" and json.loads(meta["decision"])["thresholds"] == thresholds
    from_onnx = read_csv(predict(compose_config("predict", tmp_path / "p2", [f"ckpt_path={onnx_file}", *source])))
    assert [r["tags"] for r in from_onnx] == [r["tags"] for r in from_ckpt]
    for a, b in zip(from_onnx, from_ckpt):
        assert all(abs(float(a[f"prob_{c}"]) - float(b[f"prob_{c}"])) < 1e-4 for c in CLASSES)


def test_a_sweep_minimises_the_calibration_error_and_maximises_mean_average_precision():
    assert direction("val/ece") == "minimize" and direction("val/map") == "maximize"


def test_the_01_column_form_trains_too(tmp_path):
    root = tmp_path / "data"
    make_multilabel(root, [SETS[i % len(SETS)] for i in range(48)])
    data = [*DATA[:2], f"data.root={root / 'flags.csv'}", f"data.label_columns=[{','.join(CLASSES)}]"]
    data += ["data.label_delimiter=null", "data.name_column=file", "data.label_column=null"]
    metrics = train(compose_config("train", tmp_path / "run", [*QUICK, *data, "data.val_fraction=0.3"]))
    assert 0 <= metrics["test/f1"] <= 1 and "decision/thresholds" not in metrics  # 0.5 for every class
    rows = read_csv(tmp_path / "run" / "test_predictions.csv")
    assert sets_follow(rows, [0.5] * 3, column="label")
    saved = torch.load(tmp_path / "run" / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    assert saved["hyper_parameters"]["multi_label"] is True
