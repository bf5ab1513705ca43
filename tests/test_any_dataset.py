"""Any image-classification data set: class folders (with or without train/ val/ test/ folders) and a csv with the
user's own columns and string labels, each with three classes whose names no default knows, run train -> eval ->
predict -> export end to end; the model carries its classes, and data whose classes disagree is refused."""

from __future__ import annotations

import json
import logging
import shutil
from collections import Counter
from pathlib import Path
from typing import NamedTuple

import onnx
import pytest
import torch

from image_transfer.audit import run_audit
from image_transfer.data import ImageDataModule
from image_transfer.data.table import DataError
from image_transfer.errors import ConfigError, UserError
from image_transfer.eval import evaluate
from image_transfer.export import export
from image_transfer.predict import predict
from image_transfer.train import train
from tests.helpers.configs import QUICK, compose_config
from tests.helpers.files import read_csv
from tests.helpers.images import JUNK_FILES, OTHER_CLASSES, make_csv_dataset, make_folder_dataset

SPLITS = {"train": 12, "val": 4, "test": 4}
RUN = QUICK + ["trainer.max_epochs=2", "data.val_fraction=0.2"]


class Trained(NamedTuple):
    data: list[str]  # the data overrides
    run_dir: Path
    metrics: dict


def _layout(kind: str, root: Path) -> list[str]:
    if kind == "split_folders":
        return ["data=image_folder", f"data.root={make_folder_dataset(root, splits=SPLITS)}"]
    if kind == "class_folders":
        return ["data=image_folder", f"data.root={make_folder_dataset(root, per_class=16)}"]
    make_csv_dataset(root)
    return ["data=csv", f"data.root={root / 'labels.csv'}", "data.image_dir=pictures"]


@pytest.fixture(scope="module", params=["split_folders", "class_folders", "csv_other_columns"])
def trained(request, tmp_path_factory) -> Trained:
    data = _layout(request.param, tmp_path_factory.mktemp(request.param))
    run_dir = tmp_path_factory.mktemp("run")
    return Trained(data, run_dir, train(compose_config("train", run_dir, RUN + data)))


def test_classes_are_inferred_written_and_carried_by_the_checkpoint(trained):
    assert json.loads((trained.run_dir / "class_names.json").read_text(encoding="utf-8")) == OTHER_CLASSES
    saved = torch.load(trained.run_dir / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    assert saved["hyper_parameters"]["class_names"] == OTHER_CLASSES


def test_predictions_name_the_classes(trained):
    rows = read_csv(trained.run_dir / "test_predictions.csv")
    label, true = list(rows[0])[1], list(rows[0])[-1]
    assert list(rows[0])[2:-1] == [f"prob_{c}" for c in OTHER_CLASSES]
    assert {r[label] for r in rows} <= set(OTHER_CLASSES) and {r[true] for r in rows} == set(OTHER_CLASSES)


@pytest.mark.slow  # eval, predict and export of each layout
def test_eval_predict_and_export_take_the_classes_from_the_model(trained, tmp_path):
    ckpt = trained.run_dir / "checkpoints" / "best.ckpt"
    # eval with no data options: the checkpoint's own data settings, and what its run tested on (a test/ folder, or
    # the run's validation split)
    metrics = evaluate(compose_config("eval", tmp_path / "eval", [f"ckpt_path={ckpt}"]))
    assert metrics["test/loss"] == pytest.approx(trained.metrics["test/loss"], abs=1e-5)
    photos = make_folder_dataset(tmp_path / "new_photos", classes=["unsorted"], per_class=5)
    out = predict(compose_config("predict", tmp_path / "p", [f"ckpt_path={ckpt}", f"source={photos}"]))
    rows = read_csv(out)
    assert len(rows) == 5 and list(rows[0]) == ["image", "label"] + [f"prob_{c}" for c in OTHER_CLASSES]
    assert {r["label"] for r in rows} <= set(OTHER_CLASSES)
    onnx_file = export(compose_config("export", tmp_path / "x", [f"ckpt_path={ckpt}"]))
    assert json.loads(_metadata(onnx_file)["class_names"]) == OTHER_CLASSES
    from_onnx = read_csv(
        predict(compose_config("predict", tmp_path / "o", [f"ckpt_path={onnx_file}", f"source={photos}"]))
    )
    assert [r["label"] for r in from_onnx] == [r["label"] for r in rows]


def test_data_whose_classes_are_in_another_order_is_refused(trained, tmp_path):
    ckpt = trained.run_dir / "checkpoints" / "best.ckpt"
    reordered = [OTHER_CLASSES[1], OTHER_CLASSES[0], OTHER_CLASSES[2]]
    override = "data.class_names=[" + ",".join(f"'{c}'" for c in reordered) + "]"
    for entry in ("eval", "predict"):
        cfg = compose_config(entry, tmp_path / entry, [f"ckpt_path={ckpt}", override, *trained.data])
        with pytest.raises(UserError, match="but the model's classes are") as refused:
            (evaluate if entry == "eval" else predict)(cfg)
        assert str(reordered) in str(refused.value) and str(OTHER_CLASSES) in str(refused.value)


def test_split_folders_validate_on_exactly_the_val_folder_and_test_on_test(tmp_path):
    root = make_folder_dataset(tmp_path / "d", splits=SPLITS)
    dm = ImageDataModule(root=str(root), layout="folder", image_size=32)
    dm.setup("fit")
    dm.setup("test")
    val_files = sorted(
        p.relative_to(root).as_posix() for p in (root / "val").rglob("img_*.jpg") if ".ipynb" not in str(p)
    )
    assert sorted(dm.val_table.names) == val_files and len(val_files) == 3 * SPLITS["val"]
    assert all(n.startswith("train/") for n in dm.train_table.names) and len(dm.train_table) == 3 * SPLITS["train"]
    assert all(n.startswith("test/") for n in dm.test_table.names) and len(dm.test_table) == 3 * SPLITS["test"]
    with pytest.raises(DataError, match="validation folder"):
        ImageDataModule(root=str(root), layout="folder", folds=2).check_split()


def test_class_folders_skip_what_is_not_an_image_and_keep_nested_folders(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    root = make_folder_dataset(tmp_path / "d", per_class=9)
    dm = ImageDataModule(root=str(root), layout="folder")
    assert len(dm.table) == 27 and dm.class_names == OTHER_CLASSES
    assert any("/nested/deeper/" in n for n in dm.table.names)
    assert not [n for n in dm.table.names if Path(n).name in {Path(j).name for j in JUNK_FILES}]
    assert "4 file(s) that are not images left out" in caplog.text
    # given names in another order fix the label order; names the folders do not have are refused
    reordered = ImageDataModule(root=str(root), layout="folder", class_names=OTHER_CLASSES[::-1])
    assert reordered.table.labels == [2 - label for label in dm.table.labels]
    with pytest.raises(DataError, match="does not match the class folders"):
        _ = ImageDataModule(root=str(root), layout="folder", class_names=["cat", "dog", "grand piano"]).table


@pytest.mark.parametrize(
    "where, message",
    [
        ("missing", "no such folder"),
        ("a_file", "is a file, not a folder"),
        ("no_classes", "has no class folders"),
        ("empty_class", "hold no images"),
    ],
)
def test_a_folder_message_says_what_is_wrong_with_the_path(tmp_path, where, message):
    root = tmp_path / where
    if where == "a_file":
        root.write_text("x")
    elif where == "no_classes":
        root.mkdir()
        (root / "Thumbs.db").write_bytes(b"x")
    elif where == "empty_class":
        make_folder_dataset(root, per_class=3)
        (root / "empty").mkdir()
        (root / "empty" / ".DS_Store").write_bytes(b"x")
    with pytest.raises(DataError, match=message):
        _ = ImageDataModule(root=str(root), layout="folder").table


def test_csv_columns_default_to_the_first_two_and_index_labels_get_names(tmp_path, caplog):
    root = make_csv_dataset(tmp_path / "d", columns=("path", "kind"), image_dir="images")
    dm = ImageDataModule(root=str(root))
    assert dm.class_names == OTHER_CLASSES and (dm.name_column, dm.label_column) == ("path", "kind")
    text = (root / "labels.csv").read_text(encoding="utf-8")
    for i, name in enumerate(OTHER_CLASSES):
        text = text.replace(f",{name},", f",{i},")
    (root / "labels.csv").write_text(text, encoding="utf-8")
    assert ImageDataModule(root=str(root)).class_names == ["class_0", "class_1", "class_2"]
    assert "Set data.class_names" in caplog.text
    named = ImageDataModule(root=str(root), class_names=["x", "y", "z"])
    assert Counter(named.table.labels) == {0: 20, 1: 20, 2: 20}


@pytest.mark.slow  # eval, predict and export of each layout
def test_a_checkpoint_without_class_names_loads_with_the_configured_ones(trained, tmp_path, caplog):
    saved = torch.load(trained.run_dir / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    del saved["hyper_parameters"]["class_names"]  # as checkpoints were written before the classes travelled
    old = tmp_path / "old.ckpt"
    torch.save(saved, old)
    # Its run's data settings (saved beside the weights) still name them, with a warning.
    onnx_file = export(compose_config("export", tmp_path / "x", [f"ckpt_path={old}"]))
    assert "carries no class names" in caplog.text
    assert json.loads(_metadata(onnx_file)["class_names"]) == OTHER_CLASSES
    del saved["datamodule_hyper_parameters"]["class_names"]
    torch.save(saved, old)
    with pytest.raises(UserError, match="written before checkpoints carried their class names"):
        export(compose_config("export", tmp_path / "y", [f"ckpt_path={old}"]))
    names = "[" + ",".join(f"'{c}'" for c in OTHER_CLASSES) + "]"
    onnx_file = export(compose_config("export", tmp_path / "z", [f"ckpt_path={old}", f"class_names={names}"]))
    assert json.loads(_metadata(onnx_file)["class_names"]) == OTHER_CLASSES


def _metadata(onnx_file: Path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(onnx_file).metadata_props}


def test_the_audit_reads_class_folders_and_their_test_folder(tmp_path):
    root = make_folder_dataset(tmp_path / "d", splits=SPLITS)
    copy = next((root / "train" / OTHER_CLASSES[0]).glob("img_*.jpg"))
    shutil.copyfile(copy, root / "test" / OTHER_CLASSES[1] / "copied.jpg")  # a test image that copies a training one
    report = run_audit(compose_config("audit", tmp_path / "audit", ["data=image_folder", f"data.root={root}"]))
    per_class = SPLITS["train"] + SPLITS["val"]
    assert report["class_balance"] == dict.fromkeys(OTHER_CLASSES, per_class)
    assert report["rows"] == 3 * per_class and not report["unreadable"] and not report["missing_files"]
    assert report["test"]["rows"] == 3 * SPLITS["test"] + 1
    assert report["test"]["exact_copies_of_train"] == [f"test/{OTHER_CLASSES[1]}/copied.jpg"]
    assert (tmp_path / "audit" / "audit.md").is_file()


def test_training_without_data_to_train_on_says_what_to_give(tmp_path):
    cfg = compose_config("train", tmp_path, [*QUICK, "data=image_folder"])
    cfg.data.root = "???"  # as composed without data.root=
    with pytest.raises(ConfigError, match="data.root is not set: give the data to train on"):
        train(cfg)
    with pytest.raises(ConfigError, match="data=checkpoint reads the data settings of a checkpoint"):
        train(compose_config("train", tmp_path, [*QUICK, "data=checkpoint"]))


@pytest.mark.slow  # three fits
def test_cross_validation_of_class_folders_names_the_classes(tmp_path):
    root = make_folder_dataset(tmp_path / "d", per_class=8)
    metrics = train(
        compose_config("train", tmp_path / "run", [*QUICK, "data=image_folder", f"data.root={root}", "data.folds=2"])
    )
    rows = read_csv(tmp_path / "run" / "oof_predictions.csv")
    assert len(rows) == 24 and len(metrics["folds"]["val/acc"]) == 2
    assert {r["true_label"] for r in rows} == set(OTHER_CLASSES) and {r["label"] for r in rows} <= set(OTHER_CLASSES)
