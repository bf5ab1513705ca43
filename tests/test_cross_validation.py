"""K-fold splits by image content, and a cross-validated training run with the strong recipe's parts: of the
baseline CNN on made-up data (fast), and of the default model on the real data (slow)."""

import json
import random
from collections import Counter
from pathlib import Path
from typing import NamedTuple

import pytest

from image_transfer.data.split import stratified_group_folds
from image_transfer.eval import evaluate
from image_transfer.train import train
from tests.helpers.configs import TINY, compose_config
from tests.helpers.files import read_csv
from tests.helpers.tensorboard import sessions


def test_folds_keep_copies_together_balance_classes_and_ignore_order():
    rng = random.Random(0)
    groups = [f"g{rng.randrange(300)}" for _ in range(600)]  # many groups have several copies
    labels = [int(g[1:]) % 3 == 0 for g in groups]
    fold_of = stratified_group_folds(labels, groups, folds=5, seed=7)
    assert set(fold_of) == set(range(5))
    for group in set(groups):
        assert len({f for f, g in zip(fold_of, groups) if g == group}) == 1, group
    for label in (0, 1):
        per_fold = Counter(f for f, lbl in zip(fold_of, labels) if lbl == label)
        assert max(per_fold.values()) - min(per_fold.values()) <= 6  # at most a group's size apart

    order = list(range(600))
    rng.shuffle(order)  # rows in another order: every content group keeps its fold
    shuffled = stratified_group_folds([labels[i] for i in order], [groups[i] for i in order], folds=5, seed=7)
    assert {groups[i]: f for i, f in zip(order, shuffled)} == dict(zip(groups, fold_of))
    assert stratified_group_folds(labels, groups, folds=5, seed=8) != fold_of


def test_folds_need_two_or_more():
    with pytest.raises(ValueError, match="data.folds=1"):
        stratified_group_folds([0, 1, 0], ["a", "b", "c"], folds=1, seed=0)


STRONG = [
    "callbacks=ema",
    "data.augment=strong",
    "model.mixup_alpha=0.2",
    "model.cutmix_alpha=1.0",
    "model.tta_flip=true",
    "finetune=freeze_unfreeze",
    "finetune.unfreeze_at_epochs=[1]",
    "trainer.max_epochs=2",
    "+trainer.limit_train_batches=3",
    "data.subset=96",
    "model.image_size=64",
    "data.batch_size=16",
]


class CrossValidated(NamedTuple):
    run_dir: Path
    metrics: dict
    data: list[str]  # the data.root override ([]: the real data)
    options: list[str]  # every override of the run


@pytest.fixture(
    scope="module",
    # Slow either way: several fits.
    params=[pytest.param("made_up_cnn", marks=pytest.mark.slow), pytest.param("real", marks=pytest.mark.slow)],
)
def cross_validated(request, tmp_path_factory) -> CrossValidated:
    if request.param == "real":
        request.getfixturevalue("shared_data")
        data, model = [], []
    else:
        data, model = [f"data.root={request.getfixturevalue('made_up_data').root}"], ["model=cnn"]
    options = TINY + STRONG + ["data.folds=3", *data, *model]
    run_dir = tmp_path_factory.mktemp("cv")
    return CrossValidated(run_dir, train(compose_config("train", run_dir, options)), data, options)


def test_cross_validation_fits_every_fold_and_reports_mean_and_std(cross_validated):
    run_dir, metrics, _, _ = cross_validated
    val_names = []
    for fold in range(3):
        fold_dir = run_dir / f"fold_{fold}"
        assert (fold_dir / "checkpoints" / "best.ckpt").is_file() and (fold_dir / "metrics.json").is_file()
        val_names += (fold_dir / "val_split.csv").read_text().splitlines()[1:]
    assert len(val_names) == len(set(val_names)) == 96  # every image validated exactly once
    accuracies = metrics["folds"]["val/acc"]
    assert metrics["val/acc"] == pytest.approx(sum(accuracies) / 3)
    assert metrics["val/acc_std"] >= 0 and len(metrics["fold_ckpts"]) == 3
    assert json.loads((run_dir / "metrics.json").read_text())["val/acc"] == metrics["val/acc"]
    assert sum(map(sum, metrics["test/confusion_matrix"])) == 96  # pooled over the folds
    assert metrics["train/images_per_s"] > 0 and metrics["device"].startswith("cpu")


def test_out_of_fold_predictions_cover_every_image_once_and_give_each_folds_accuracy(cross_validated):
    run_dir, metrics, _, _ = cross_validated
    rows = read_csv(run_dir / "oof_predictions.csv")
    assert len(rows) == len({r["image_names"] for r in rows}) == 96
    for fold in range(3):
        fold_rows = [r for r in rows if r["fold"] == str(fold)]
        validated = read_csv(run_dir / f"fold_{fold}" / "val_split.csv")
        assert [(r["image_names"], r["true_emergency_or_not"]) for r in fold_rows] == [
            (r["image_names"], r["emergency_or_not"]) for r in validated
        ]
        correct = sum(r["emergency_or_not"] == r["true_emergency_or_not"] for r in fold_rows)
        assert correct / len(fold_rows) == pytest.approx(metrics["folds"]["test/acc"][fold])
    assert all(float(r["prob_non_emergency"]) + float(r["prob_emergency"]) == pytest.approx(1, abs=1e-4) for r in rows)


def test_a_second_run_with_the_same_seed_is_identical(cross_validated, tmp_path):
    _, metrics, _, options = cross_validated
    again = train(compose_config("train", tmp_path, options))
    assert again["folds"]["val/acc"] == metrics["folds"]["val/acc"]
    assert again["folds"]["val/loss"] == metrics["folds"]["val/loss"]


def test_checkpoints_hold_the_averaged_weights_and_train_tests_them(cross_validated, tmp_path):
    import torch

    run_dir, _, data, _ = cross_validated
    fold = json.loads((run_dir / "fold_0" / "metrics.json").read_text())
    checkpoint = torch.load(fold["best_ckpt"], map_location="cpu", weights_only=False)
    averaged, raw = checkpoint["state_dict"], checkpoint["current_model_state"]
    assert any(not torch.equal(averaged[k], raw[k]) for k in raw if raw[k].is_floating_point())
    cfg = compose_config(
        "eval",
        tmp_path,
        [f"ckpt_path={fold['best_ckpt']}", "trainer.accelerator=cpu"],  # its data: the checkpoint's
    )
    assert evaluate(cfg)["test/loss"] == pytest.approx(fold["test/loss"], abs=1e-6)


def test_resume_skips_finished_folds(cross_validated, tmp_path):
    run_dir, metrics, _, options = cross_validated
    cfg = compose_config("train", run_dir, [*options, f"resume={run_dir}"])
    assert train(cfg)["folds"]["val/acc"] == metrics["folds"]["val/acc"]


def test_tensorboard_holds_a_session_per_fold_and_one_for_the_mean(cross_validated):
    run_dir, metrics, _, _ = cross_validated
    by_fold = {s.hparams["fold"]: s for s in sessions(run_dir)}
    assert set(by_fold) == {"0", "1", "2", "mean"}
    assert by_fold["mean"].run == run_dir / "tensorboard"
    for tag in ("val/acc_best", "val/loss", "test/acc"):
        assert by_fold["mean"].metrics[tag] == pytest.approx(metrics[tag], abs=1e-6)
        assert [by_fold[str(f)].metrics[tag] for f in range(3)] == pytest.approx(metrics["folds"][tag], abs=1e-6)
