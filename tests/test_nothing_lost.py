"""Nothing lost, nothing silent: own run dirs, idempotent resume, runs that cannot mean anything refused before
they train, files readable by the user's group, and the environment on record. Synthetic data: no ../shared."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import stat
from pathlib import Path

import pytest

from image_transfer.data import ImageDataModule
from image_transfer.errors import UserError
from image_transfer.files import write_json
from image_transfer.runs.failures import user_error
from image_transfer.runs.run_dirs import claim_new_dir
from image_transfer.train import train
from tests.helpers.configs import QUICK, compose_config
from tests.helpers.images import make_dataset


def made_up(root: Path, counts: dict[int, int]) -> Path:
    """A train.csv + images/ with `counts[label]` distinct 40 x 40 PNGs per class index."""
    return make_dataset(root, counts=counts, size=(40, 40), name="{}.png")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return made_up(tmp_path_factory.mktemp("data"), {0: 12, 1: 10})


def run(tmp_path: Path, data: Path, *overrides: str) -> dict:
    return train(compose_config("train", tmp_path, [f"data.root={data}", *QUICK, *overrides]))


def test_runs_started_together_never_share_a_dir(tmp_path):
    base = str(tmp_path / "runs" / "2026-01-01_00-00-00")
    with multiprocessing.get_context("fork").Pool(4) as pool:
        claimed = pool.map(claim_new_dir, [base] * 4)
        pool.close()  # the workers end by themselves: leaving the block terminates any still starting, racily
        pool.join()
    assert sorted(claimed) == [base, f"{base}_1", f"{base}_2", f"{base}_3"]


@pytest.mark.slow  # two fits
def test_a_fresh_run_refuses_a_dir_that_holds_another_run(tmp_path, data):
    run(tmp_path, data)
    before = (tmp_path / "metrics.json").read_bytes()
    with pytest.raises(UserError, match="already holds a run: continue it with resume="):
        run(tmp_path, data)
    assert (tmp_path / "metrics.json").read_bytes() == before


@pytest.mark.slow  # two fits
def test_resuming_a_finished_run_changes_nothing(tmp_path, data):
    first = run(tmp_path, data)
    files = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in tmp_path.rglob("*") if p.is_file()}
    again = run(tmp_path, data, f"resume={tmp_path}")
    assert again == json.loads((tmp_path / "metrics.json").read_text()) and again["val/acc"] == first["val/acc"]
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in tmp_path.rglob("*") if p.is_file()} == files


def test_resume_without_a_finished_epoch_says_there_is_nothing_to_resume(tmp_path, data):
    (tmp_path / "config.yaml").write_text("seed: 1\n")
    with pytest.raises(UserError, match="no epoch of that run finished"):
        run(tmp_path, data, f"resume={tmp_path}")


@pytest.mark.slow  # two fits
def test_a_moved_run_dir_resumes_where_it_now_is(tmp_path, data):
    first = run(tmp_path / "a", data, "trainer.max_epochs=2")
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    (tmp_path / "b" / "metrics.json").unlink()  # as a kill after the last checkpoint leaves it
    resumed = run(tmp_path / "b", data, "trainer.max_epochs=2", f"resume={tmp_path / 'b'}")
    assert resumed["epochs"] == first["epochs"] and resumed["test/acc"] == first["test/acc"]
    assert (tmp_path / "b" / "metrics.json").is_file()


def test_a_missing_prediction_source_names_both_places_looked(tmp_path, data):
    datamodule = ImageDataModule(root=str(data), predict_source="nope.csv")
    with pytest.raises(UserError, match=r"source=nope.csv: found neither in data.root"):
        datamodule.setup("predict")


@pytest.mark.parametrize(
    "counts, overrides, message",
    [
        ({0: 12}, [], "no image is labelled 'emergency'"),
        ({0: 12, 1: 10}, ["data.class_names=[a,b,c]"], "no image is labelled 'c'"),
        ({0: 12, 1: 1}, [], "leaves the validation images without class 'emergency'"),
        ({0: 12, 1: 3}, ["data.folds=5"], "class 'emergency' has only 3 distinct image(s)"),
        ({0: 12, 1: 10}, ["data.subset=4"], "leaves the validation images without class"),
        ({0: 12, 1: 10}, ["data.subset=3"], "data.subset=3: use 4 or more"),
        ({0: 12, 1: 10}, ["trainer.max_epochs=0"], "trainer.max_epochs=0 trains nothing"),
        ({0: 12, 1: 10}, ["data.val_fraction=1.0"], "data.val_fraction=1.0"),
        ({0: 12, 1: 10}, ["data.fold=1"], "data.fold=1: set data.folds=K too"),
        ({0: 12, 1: 10}, ["data.folds=3", "data.fold=3"], "data.fold=3: data.folds=3 has folds 0..2"),
    ],
    ids=[
        "one-class",
        "class-without-images",
        "class-too-small-for-validation",
        "more-folds-than-images",
        "subset-too-small-to-split",
        "subset-below-two-per-class",
        "zero-epochs",
        "all-validation",
        "fold-without-folds",
        "fold-out-of-range",
    ],
)
def test_meaningless_runs_are_refused_before_training(tmp_path, counts, overrides, message):
    root = made_up(tmp_path / "data", counts)
    with pytest.raises(Exception) as refused:  # noqa: B017 (Hydra wraps what a constructor raises)
        run(tmp_path / "run", root, *overrides)
    assert isinstance(user_error(refused.value), UserError) and message in str(user_error(refused.value))
    assert not (tmp_path / "run" / "checkpoints").exists() and not (tmp_path / "run" / "config.yaml").exists()


def test_val_fraction_zero_trains_on_every_image_without_validation(tmp_path, data):
    metrics = run(tmp_path, data, "data.val_fraction=0", "trainer.max_epochs=2")
    assert not [k for k in metrics if k.startswith(("val/", "test/"))]
    assert metrics["epochs"] == 2 and Path(metrics["best_ckpt"]).name == "best.ckpt"
    assert (tmp_path / "val_split.csv").read_text().count("\n") == 1  # the header: nothing held out


def test_output_files_follow_the_umask(tmp_path):
    previous = os.umask(0o002)
    try:
        mode = stat.S_IMODE(write_json(tmp_path / "a.json", {"a": 1}).stat().st_mode)
    finally:
        os.umask(previous)
    assert mode == 0o664


def test_a_run_records_its_files_readable_and_its_environment(tmp_path, data):
    previous = os.umask(0o022)
    try:
        run(tmp_path, data)
    finally:
        os.umask(previous)
    for name in ("metrics.json", "config.yaml", "val_split.csv", "test_predictions.csv", "environment.json"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644, name
    env = json.loads((tmp_path / "environment.json").read_text())
    assert {"torch", "lightning", "timm", "torchvision", "torchmetrics", "hydra-core"} <= env["packages"].keys()
    assert env["python"] and env["git"]["commit"] and isinstance(env["git"]["dirty"], bool)
