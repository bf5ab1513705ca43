"""Decisions users can trust: calibrated probabilities, an operating point picked for a target, and imbalanced
classes (balanced sampler, class weights, focal loss): the numerics on synthetic numbers, then a real run whose
temperature and threshold travel from the checkpoint to eval, predict and the ONNX file unchanged."""

from __future__ import annotations

import json
import logging
from collections import Counter

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from image_transfer.data.dataset import SeededEpochSampler, balancing_weights
from image_transfer.errors import ConfigError
from image_transfer.eval import evaluate
from image_transfer.export import export
from image_transfer.models.calibration import (
    calibrated_log_probs,
    calibrated_probs,
    calibration_scores,
    fit_temperature,
)
from image_transfer.models.decision import check_settings, pick_threshold, with_threshold
from image_transfer.models.losses import classification_loss
from image_transfer.predict import predict
from image_transfer.runs.checkpoints import load_classifier
from image_transfer.runs.imbalance import class_weights, warn_if_imbalanced
from image_transfer.train import train
from tests.helpers.configs import NO_PICTURES, QUICK, compose_config, without
from tests.helpers.files import read_csv
from tests.helpers.scripts import load_script


def overconfident(seed: int, n: int = 3000, classes: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (n, 1 view, classes) four times as sharp as the probabilities the labels are drawn from."""
    generator = torch.Generator().manual_seed(seed)
    true_logits = torch.randn(n, classes, generator=generator) * 1.5
    labels = torch.multinomial(true_logits.softmax(1), 1, generator=generator).squeeze(1)
    return (4 * true_logits).unsqueeze(1), labels


@pytest.mark.parametrize("per_class", [False, True])
def test_temperature_lowers_the_nll_and_ece_of_an_overconfident_model(per_class):
    view_logits, labels = overconfident(0)
    temperature = fit_temperature(view_logits, labels, per_class=per_class)
    before = calibration_scores(calibrated_probs(view_logits, torch.ones(3)), labels)
    calibrated = calibrated_probs(view_logits, temperature)
    after = calibration_scores(calibrated, labels)
    assert after["nll"] < before["nll"] - 0.3 and after["ece"] < before["ece"] / 3 and after["ece"] < 0.03
    assert temperature.min() > 3 and temperature.max() < 5  # the sharpening it undoes
    if not per_class:
        assert torch.equal(calibrated.argmax(1), view_logits[:, 0].argmax(1))  # one temperature moves no argmax


def test_temperature_one_changes_no_probability():
    view_logits, _ = overconfident(1)
    two_views = torch.stack([view_logits[:, 0], view_logits[:, 0].roll(1, 0)], dim=1)
    expected = torch.logaddexp(*two_views.log_softmax(-1).unbind(1)) - np.log(2)
    assert torch.equal(calibrated_log_probs(two_views, torch.ones(3)), expected)
    assert torch.equal(calibrated_log_probs(view_logits, torch.ones(3)), view_logits[:, 0].log_softmax(-1))


def scores_and_truth(seed: int, n: int = 400) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    truth = torch.rand(n, generator=generator) < 0.4
    scores = (torch.randn(n, generator=generator) + 1.2 * truth).sigmoid()  # overlapping classes
    return scores, truth


def confusion(scores, truth, threshold) -> tuple[int, int, int]:
    predicted = scores >= threshold
    return int((predicted & truth).sum()), int((predicted & ~truth).sum()), int((~predicted & truth).sum())


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(
    "pick,at_least", [("recall", 0.98), ("recall", 0.8), ("precision", 0.7), ("f1", 0), ("cost", 0)]
)
def test_a_picked_threshold_reaches_its_target_and_is_the_best_that_does(seed, pick, at_least):
    scores, truth = scores_and_truth(seed)
    settings = OmegaConf.create({"pick": pick, "at_least": at_least, "cost_ratio": 5.0})
    threshold, _ = pick_threshold(scores, truth, settings)

    def value(t) -> tuple[float, float]:  # (what must reach at_least, what is maximised)
        tp, fp, fn = confusion(scores, truth, t)
        precision, recall = tp / (tp + fp) if tp + fp else 1.0, tp / (tp + fn)
        return {
            "recall": (recall, precision),
            "precision": (precision, recall),
            "f1": (1.0, 2 * tp / (2 * tp + fp + fn)),
            "cost": (1.0, -(fp + 5.0 * fn)),
        }[pick]

    reached, best = value(threshold)
    assert reached >= at_least
    # No candidate threshold (every score) reaching the target does better.
    assert all(value(t)[1] <= best + 1e-12 for t in scores.tolist() if value(t)[0] >= at_least)


def test_decision_settings_that_cannot_apply_are_refused():
    two = ["cat", "dog"]
    with pytest.raises(ConfigError, match="two classes"):
        check_settings({"threshold": 0.3}, ["a", "b", "c"])
    with pytest.raises(ConfigError, match="decision.positive=cow"):
        check_settings({"pick": "recall", "positive": "cow", "at_least": 0.9}, two)
    with pytest.raises(ConfigError, match="decision.pick=accuracy"):
        check_settings({"pick": "accuracy"}, two)
    with pytest.raises(ConfigError, match="both set"):
        check_settings({"pick": "f1", "threshold": 0.4}, two)
    with pytest.raises(ConfigError, match="decision.threshold=high: use a probability"):
        check_settings({"threshold": "high"}, two)
    with pytest.raises(ConfigError, match="decision.cost_ratio=-1"):
        check_settings({"pick": "cost", "cost_ratio": -1}, two)
    with pytest.raises(ConfigError, match="threshold=2: use a probability"):
        with_threshold(None, 2, two)
    with pytest.raises(ConfigError, match="applies to two-class and multi-label models"):
        with_threshold(None, 0.3, ["a", "b", "c"])
    assert with_threshold(None, 0.3, ["a", "b", "c"], multi_label=True)["thresholds"] == [0.3] * 3


def test_focal_loss_down_weights_easy_images_and_is_cross_entropy_at_gamma_zero():
    logits, targets = torch.randn(64, 3, generator=torch.Generator().manual_seed(0)) * 3, torch.arange(64) % 3
    focal0 = classification_loss(logits, targets, "focal", label_smoothing=0.1, gamma=0.0)
    assert torch.allclose(focal0, F.cross_entropy(logits, targets, label_smoothing=0.1), atol=1e-6)
    assert classification_loss(logits, targets, "focal", gamma=2.0) < F.cross_entropy(logits, targets)
    weight = torch.tensor([1.0, 1.0, 9.0])  # the third class's images count nine times
    weighted = classification_loss(logits, targets, "focal", weight=weight, gamma=0.0)
    per_image = F.cross_entropy(logits, targets, reduction="none")
    assert torch.allclose(weighted, (per_image * weight[targets]).mean(), atol=1e-6)


def test_balanced_sampler_draws_every_class_equally_and_only_from_seed_and_epoch():
    labels = [0] * 900 + [1] * 80 + [2] * 20
    epoch = {"now": 0}

    def sampler(seed: int) -> SeededEpochSampler:
        return SeededEpochSampler(len(labels), seed, lambda: epoch["now"], weights=balancing_weights(labels))

    drawn = Counter()
    orders = []
    for epoch["now"] in range(5):
        order = [index for index, _ in sampler(7)]
        assert order == [index for index, _ in sampler(7)]  # a resumed run redraws exactly this epoch's order
        orders.append(order)
        drawn.update(labels[i] for i in order)
    assert orders[0] != orders[1] and [i for i, _ in sampler(8)] != orders[-1]
    assert all(abs(drawn[c] / sum(drawn.values()) - 1 / 3) < 0.03 for c in range(3)), drawn


def test_auto_class_weights_and_the_imbalance_warning(caplog):
    cfg = OmegaConf.create({"model": {"class_weights": "auto"}})
    single = [(0,)] * 90 + [(1,)] * 10
    assert class_weights(cfg, single, 2, False)["class_weights"] == pytest.approx([100 / 180, 100 / 20])
    multi = [(0, 1)] * 10 + [(0,)] * 70 + [()] * 20  # class 0 in 80 images, class 1 in 10
    assert class_weights(cfg, multi, 2, True)["class_weights"] == pytest.approx([20 / 80, 90 / 10])
    assert class_weights(OmegaConf.create({"model": {"class_weights": None}}), single, 2, False) == {}
    with caplog.at_level(logging.WARNING):
        warn_if_imbalanced([(0,)] * 95 + [(1,)] * 5, ["common", "rare"])
    assert "rare 5.0%" in caplog.text and "data.sampler=balanced" in caplog.text
    caplog.clear()
    warn_if_imbalanced([(0,)] * 80 + [(1,)] * 20, ["common", "rare"])
    assert not caplog.text


# ---- a real run ----------------------------------------------------------------------------------------------
RUN = [
    *without(NO_PICTURES, QUICK),
    "trainer.max_epochs=2",
    "data.val_fraction=0.3",
    "decision.positive=emergency",
]  # + reliability.png


@pytest.fixture(scope="module")
def decided(made_up_data, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("decided")
    data = [f"data.root={made_up_data.root}"]
    cfg = compose_config("train", run_dir, RUN + data + ["decision.pick=recall", "decision.at_least=0.9"])
    return run_dir, train(cfg), data


@pytest.mark.slow  # a fit, eval, predict, export
def test_the_threshold_and_temperature_travel_unchanged_to_eval_predict_and_onnx(decided, tmp_path):
    run_dir, metrics, data = decided
    threshold, temperature = metrics["decision/threshold"], metrics["calibration/temperature"]
    assert metrics["decision/val_recall"] >= 0.9 and metrics["decision/rule"] == "recall>=0.9"
    assert metrics["calibration/nll_after"] <= metrics["calibration/nll_before"]
    assert {"val/balanced_acc", "val/recall_emergency", "test/ece", "calibration/ece_before"} <= metrics.keys()
    assert (run_dir / "plots" / "reliability.png").is_file()
    best = run_dir / "checkpoints" / "best.ckpt"
    saved = torch.load(best, map_location="cpu", weights_only=True)
    assert saved["hyper_parameters"]["decision"]["threshold"] == threshold
    assert saved["state_dict"]["temperature"].tolist() == [temperature] * 2

    def labels_follow(rows, t, column="emergency_or_not") -> bool:
        return all((float(r["prob_emergency"]) >= t) == (r[column] == "emergency") for r in rows)

    tested = read_csv(run_dir / "test_predictions.csv")
    assert labels_follow(tested, threshold)
    evaluated = evaluate(compose_config("eval", tmp_path / "eval", [f"ckpt_path={best}"]))
    assert evaluated["test/acc"] == pytest.approx(metrics["test/acc"])
    assert evaluated["decision/test_recall"] == pytest.approx(metrics["decision/test_recall"])
    assert read_csv(tmp_path / "eval" / "test_predictions.csv") == tested

    source = ["source=train.csv", *data]
    from_ckpt = read_csv(predict(compose_config("predict", tmp_path / "p1", [f"ckpt_path={best}", *source])))
    assert labels_follow(from_ckpt, threshold)
    onnx_file = export(compose_config("export", tmp_path / "x", [f"ckpt_path={best}"]))
    meta = {p.key: p.value for p in onnx.load(onnx_file).metadata_props}
    assert json.loads(meta["decision"])["threshold"] == threshold
    from_onnx = read_csv(predict(compose_config("predict", tmp_path / "p2", [f"ckpt_path={onnx_file}", *source])))
    assert [r["emergency_or_not"] for r in from_onnx] == [r["emergency_or_not"] for r in from_ckpt]
    for a, b in zip(from_onnx, from_ckpt):
        assert abs(float(a["prob_emergency"]) - float(b["prob_emergency"])) < 1e-4

    moved = ["threshold=0.5", *source]
    at_half = read_csv(predict(compose_config("predict", tmp_path / "p3", [f"ckpt_path={onnx_file}", *moved])))
    assert labels_follow(at_half, 0.5)


@pytest.mark.slow  # a fit with a picked threshold
def test_a_checkpoint_from_before_calibration_loads_uncalibrated(decided, tmp_path):
    run_dir, _, _ = decided
    saved = torch.load(run_dir / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    del saved["state_dict"]["temperature"], saved["hyper_parameters"]["decision"]
    torch.save(saved, tmp_path / "old.ckpt")
    model = load_classifier(str(tmp_path / "old.ckpt"), OmegaConf.create({}))
    assert model.temperature.tolist() == [1.0, 1.0] and model.hparams.decision is None


def test_picking_a_threshold_without_validation_is_refused_before_training(made_up_data, tmp_path):
    overrides = [*RUN, f"data.root={made_up_data.root}", "data.val_fraction=0", "decision.pick=f1"]
    with pytest.raises(ConfigError, match="decision.pick=f1 picks a threshold on validation"):
        train(compose_config("train", tmp_path, overrides))
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.slow  # three fits
def test_a_balanced_run_with_class_weights_focal_loss_and_best_balanced_accuracy_resumes_exactly(
    made_up_data, tmp_path
):
    run = [*RUN, f"data.root={made_up_data.root}", "trainer.max_epochs=3", "data.sampler=balanced"]
    run += ["model.class_weights=auto", "model.loss=focal"]
    run += ["callbacks.model_checkpoint.monitor=val/balanced_acc", "callbacks.model_checkpoint.mode=max"]
    uninterrupted = train(compose_config("train", tmp_path / "a", run))
    crash = ["+callbacks.stop._target_=tests.test_resume.StopAtEpoch", "+callbacks.stop.epoch=2"]
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(compose_config("train", tmp_path / "b", run + crash))
    last = tmp_path / "b" / "checkpoints" / "last.ckpt"
    resumed = train(compose_config("train", tmp_path / "c", run + [f"ckpt_path={last}"]))
    for key in ("val/loss", "train/loss", "val/balanced_acc", "val/recall_emergency"):  # test/*: see test_resume
        assert resumed[key] == pytest.approx(uninterrupted[key], abs=1e-6), key


@pytest.fixture(scope="module")
def cross_validated(made_up_data, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("cross_validated")
    overrides = [*RUN, f"data.root={made_up_data.root}", "data.folds=3", "decision.pick=recall"]
    return run_dir, train(compose_config("train", run_dir, overrides + ["decision.at_least=0.8"]))


@pytest.mark.slow  # three fits
def test_cross_validation_picks_one_threshold_on_the_out_of_fold_predictions(cross_validated):
    tmp_path, metrics = cross_validated
    threshold = metrics["decision/threshold"]
    assert metrics["decision/oof_recall"] >= 0.8 and "calibration/oof_ece" in metrics
    assert metrics["calibration/ece_after"] <= metrics["calibration/ece_before"] + 0.05  # each fold's own, averaged
    for checkpoint in metrics["fold_ckpts"]:
        saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
        assert saved["hyper_parameters"]["decision"]["threshold"] == threshold
    rows = read_csv(tmp_path / "oof_predictions.csv")
    assert len(rows) == 160 and {r["fold"] for r in rows} == {"0", "1", "2"}
    assert all((float(r["prob_emergency"]) >= threshold) == (r["emergency_or_not"] == "emergency") for r in rows)
    recall = sum(r["emergency_or_not"] == "emergency" == r["true_emergency_or_not"] for r in rows)
    assert recall / sum(r["true_emergency_or_not"] == "emergency" for r in rows) == pytest.approx(
        metrics["decision/oof_recall"]
    )


@pytest.mark.slow  # three fits
def test_the_crossfit_script_scores_each_fold_with_a_temperature_fitted_on_the_others(cross_validated):
    crossfit = load_script("crossfit_calibration")
    run_dir, _ = cross_validated
    folds = crossfit.held_out_logits(run_dir)
    sizes = [len(read_csv(run_dir / f"fold_{k}" / "val_split.csv")) for k in range(3)]
    assert [len(labels) for _, labels in folds] == sizes
    rows = crossfit.crossfit(folds)
    assert [row[0] for row in rows] == [0, 1, 2, "pooled"] and rows[-1][1] == 160
    corrupted = [folds[0], folds[1], (folds[2][0] * 5, folds[2][1])]  # fold 2's own numbers change ...
    assert crossfit.crossfit(corrupted)[2][2] == pytest.approx(rows[2][2])  # ... not the temperature it is scored with
