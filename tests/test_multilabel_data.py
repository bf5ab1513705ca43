"""Multi-label data: a csv whose label cell lists several classes (data.label_delimiter) or a 0/1 column per class
(data.label_columns) reads to one table; splits stay by content with every class on both sides; batches carry
float multi-hot targets (N, C); split and prediction files list label sets; the audit compares label sets."""

from __future__ import annotations

import csv
import hashlib
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from image_transfer.audit import run_audit
from image_transfer.data import ImageDataModule
from image_transfer.data.audit import audit, duplicate_summary
from image_transfer.data.batch import collate
from image_transfer.data.dataset import FeatureDataset
from image_transfer.data.splitting import read_split_names
from image_transfer.data.table import DataError
from image_transfer.runs.outputs import write_predictions
from tests.helpers.configs import compose_config
from tests.helpers.files import read_csv
from tests.helpers.images import blocks

CLASSES = ["cat", "dog", "grand piano"]
# Label sets cycled over the images: counts 16 cat, 24 dog, 16 grand piano, and 8 images of none.
SETS = [("cat",), ("dog",), ("cat", "dog"), ("grand piano",), ("dog", "grand piano"), ()]
FLAG_WORDS = {True: ("1", "true", "1.0"), False: ("0", "False", "0.0")}  # how spreadsheets write 0/1


def write_rows(path: Path, header: list[str], rows: list) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([header, *rows])
    return path


def make_multilabel(root: Path, sets: list[tuple[str, ...]], copies: int = 0) -> dict[str, tuple[str, ...]]:
    """Distinct images p000.png .. in root/pictures with `sets`, and the first `copies` of them again byte for byte
    as copy_*: tags.csv (file, tags joined by |, listed in reverse) and flags.csv (file, a 0/1 column per class), rows
    shuffled. Returns each image's label set."""
    (root / "pictures").mkdir(parents=True)
    label_of = {}
    for i, labels in enumerate(sets):
        blocks(7000 + i).save(root / "pictures" / f"p{i:03d}.png")
        label_of[f"p{i:03d}.png"] = labels
    for i in range(copies):
        shutil.copyfile(root / "pictures" / f"p{i:03d}.png", root / "pictures" / f"copy_{i:03d}.png")
        label_of[f"copy_{i:03d}.png"] = sets[i]
    names = list(label_of)
    np.random.default_rng(0).shuffle(names)
    write_rows(root / "tags.csv", ["file", "tags", "comment"], [(n, "|".join(label_of[n][::-1]), "x") for n in names])
    flags = [[n, *(FLAG_WORDS[c in label_of[n]][i % 3] for c in CLASSES)] for i, n in enumerate(names)]
    write_rows(root / "flags.csv", ["file", *CLASSES], flags)
    return label_of


@pytest.fixture(scope="module")
def multi(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("multilabel")
    return root, make_multilabel(root, [SETS[i % len(SETS)] for i in range(48)], copies=6)


def datamodule(root: Path, form: str, **kwargs) -> ImageDataModule:
    """The data of `form` (tags: a delimited label cell; flags: 0/1 columns)."""
    options = {"label_delimiter": "|"} if form == "tags" else {"label_columns": CLASSES}
    return ImageDataModule(
        root=str(root / f"{form}.csv"), image_dir="pictures", image_size=32, batch_size=8, **options | kwargs
    )


def digests(table) -> set[str]:
    return {hashlib.sha1(p.read_bytes()).hexdigest() for p in table.paths}


def names_of(table, classes) -> list[tuple[str, ...]]:
    return [tuple(classes[c] for c in cs) for cs in table.label_sets]


# ---- reading --------------------------------------------------------------------------------------
def test_both_forms_read_to_the_same_table(multi):
    root, label_of = multi
    tags, flags = datamodule(root, "tags"), datamodule(root, "flags")
    assert tags.multi_label and flags.multi_label and tags.data.multi_label and tags.table.multi_label
    assert tags.class_names == flags.class_names == CLASSES
    assert tags.table.names == flags.table.names and len(tags.table) == 54
    assert tags.table.label_sets == flags.table.label_sets
    assert names_of(tags.table, CLASSES) == [tuple(sorted(label_of[n])) for n in tags.table.names]
    # The stratum: the image's rarest class (cat and grand piano 16, dog 24; ties to the lower index), 3 for none.
    stratum = dict(zip(tags.table.label_sets, tags.table.labels))
    assert stratum[(0, 1)] == 0 and stratum[(1, 2)] == 2 and stratum[(1,)] == 1 and stratum[()] == 3
    assert tags.table.labels == flags.table.labels
    assert not ImageDataModule(root=str(root / "tags.csv"), image_dir="pictures").multi_label  # one label a row


def test_class_indices_and_given_class_names(tmp_path):
    (tmp_path / "images").mkdir()
    for i in range(4):
        blocks(i).save(tmp_path / "images" / f"{i}.png")
    write_rows(
        tmp_path / "train.csv",
        ["image", "labels"],
        [("0.png", "0 2"), ("1.png", ""), ("2.png", "1"), ("3.png", "2  0")],
    )
    dm = ImageDataModule(root=str(tmp_path), label_delimiter=" ")
    assert dm.class_names == ["class_0", "class_1", "class_2"]
    assert dm.table.label_sets == ((0, 2), (), (1,), (0, 2))
    named = ImageDataModule(root=str(tmp_path), label_delimiter=" ", class_names=["a", "b", "c"])
    assert named.table.label_sets == dm.table.label_sets and named.class_names == ["a", "b", "c"]
    with pytest.raises(DataError, match=r"\['b c'\] contain data.label_delimiter=' '"):
        _ = ImageDataModule(root=str(tmp_path), label_delimiter=" ", class_names=["a", "b c", "d"]).table


def test_unknown_names_and_bad_cells_are_refused_naming_file_line_and_column(multi, tmp_path):
    root, _ = multi
    with pytest.raises(DataError) as refused:
        _ = datamodule(root, "tags", class_names=["cat", "dog"]).table
    message = str(refused.value)  # 16 images of grand piano and 2 copies
    assert message.startswith(f"{root / 'tags.csv'}: 18 row(s) have a label outside the classes ['cat', 'dog']")
    assert re.search(r"line \d+: 'grand piano' in 'grand piano\|dog'", message)

    (tmp_path / "pictures").symlink_to(root / "pictures")
    rows = read_csv(root / "flags.csv")
    rows[1]["dog"], rows[4]["cat"] = "yes", ""
    write_rows(tmp_path / "flags.csv", list(rows[0]), [list(r.values()) for r in rows])
    with pytest.raises(DataError) as refused:
        _ = datamodule(tmp_path, "flags").table
    message = str(refused.value)
    assert str(tmp_path / "flags.csv") in message and "2 row(s) have a cell that is not 0 or 1" in message
    assert "line 3: column 'dog' has 'yes'" in message and "line 6: column 'cat' has ''" in message


@pytest.mark.parametrize(
    ("options", "refusal"),
    [
        ({"label_delimiter": "|", "label_columns": CLASSES}, "two forms of multi-label csv"),
        ({"label_columns": CLASSES, "label_column": "tags"}, "set data.label_column=null"),
        ({"label_columns": ["cat"]}, "two or more distinct 0/1 columns"),
        ({"label_delimiter": ""}, "give the text between a cell's labels"),
        ({"label_delimiter": "|", "layout": "folder"}, "a folder per class .* gives each image one class"),
    ],
)
def test_conflicting_options_are_refused(multi, options, refusal):
    with pytest.raises(DataError, match=refusal):
        ImageDataModule(root=str(multi[0] / "tags.csv"), **options)


def test_class_names_must_name_each_label_column(multi):
    with pytest.raises(DataError, match=r"names 2 classes but data.label_columns=.* has 3 columns"):
        _ = datamodule(multi[0], "flags", class_names=["a", "b"]).table
    renamed = datamodule(multi[0], "flags", class_names=["A", "B", "C"])
    assert (
        renamed.class_names == ["A", "B", "C"]
        and renamed.table.label_sets == datamodule(multi[0], "tags").table.label_sets
    )


def test_repeated_rows_with_other_label_sets_are_refused(multi, tmp_path):
    (tmp_path / "pictures").symlink_to(multi[0] / "pictures")
    write_rows(
        tmp_path / "tags.csv", ["file", "tags"], [("p000.png", "cat|dog"), ("p001.png", "dog"), ("p000.png", "dog|cat")]
    )
    assert datamodule(tmp_path, "tags").table.label_sets == ((0, 1), (1,))  # the same set, in another order
    write_rows(
        tmp_path / "tags.csv", ["file", "tags"], [("p000.png", "cat|dog"), ("p001.png", "dog"), ("p000.png", "cat")]
    )
    with pytest.raises(DataError, match=r"listed twice with different labels: p000.png \(lines 2 and 4\)"):
        _ = datamodule(tmp_path, "tags").table


# ---- splitting ----------------------------------------------------------------------------------
def test_split_is_by_content_with_every_class_on_both_sides(multi):
    root, _ = multi
    dm = datamodule(root, "tags", val_fraction=0.25)
    dm.check_split()
    assert len(dm.train_table) + len(dm.val_table) == 54 and 10 <= len(dm.val_table) <= 17
    assert not digests(dm.train_table) & digests(dm.val_table)  # copies stay together
    for side in (dm.train_table, dm.val_table):
        assert {c for cs in side.label_sets for c in cs} == {0, 1, 2} and () in side.label_sets
    flags = datamodule(root, "flags", val_fraction=0.25)
    flags.check_split()
    assert flags.val_table.names == dm.val_table.names  # the same content and labels: the same split

    folds = datamodule(root, "tags", folds=3, fold=0)
    folds.check_folds()
    fold_of = folds.folds_of(folds.table)
    for k in range(3):
        assert {c for cs, f in zip(folds.table.label_sets, fold_of) if f == k for c in cs} == {0, 1, 2}


def test_a_class_the_split_cannot_share_is_refused(tmp_path):
    sets = [SETS[i % 3] for i in range(20)] + [("dog", "grand piano")]  # one image of grand piano (and a copy)
    make_multilabel(tmp_path, sets, copies=0)
    shutil.copyfile(tmp_path / "pictures" / "p020.png", tmp_path / "pictures" / "copy.png")
    with open(tmp_path / "tags.csv", "a", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerow(("copy.png", "grand piano|dog", ""))
    with pytest.raises(DataError, match=r"leaves the validation images without class 'grand piano' \(.*2 grand piano"):
        datamodule(tmp_path, "tags", val_fraction=0.2).check_split()
    with pytest.raises(DataError, match="class 'grand piano' has only 1 distinct image"):
        datamodule(tmp_path, "tags", folds=2, fold=0).check_split()


def test_subset_keeps_label_sets(multi):
    root, label_of = multi
    dm = datamodule(root, "tags", subset=24)
    assert 20 <= len(dm.table) <= 28 and len(dm.table.label_sets) == len(dm.table)
    assert names_of(dm.table, CLASSES) == [tuple(sorted(label_of[n])) for n in dm.table.names]


# ---- batches ------------------------------------------------------------------------------------
def multi_hot(table) -> torch.Tensor:
    return torch.tensor([[float(c in cs) for c in range(len(CLASSES))] for cs in table.label_sets])


def test_batches_carry_float_multi_hot_targets(multi):
    dm = datamodule(multi[0], "tags", augment_on="cpu")
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch.images.dtype == torch.uint8 and batch.targets.dtype == torch.float32 and batch.targets.shape == (8, 3)
    assert torch.equal(torch.cat([b.targets for b in dm.val_dataloader()]), multi_hot(dm.val_table))

    # The device path: images, targets, seeds and sizes cross; the device augments the images, keeps the targets.
    device = datamodule(multi[0], "tags", augment_on="device")
    device.setup("fit")
    batch = next(iter(device.train_dataloader()))
    assert batch.targets.shape == (8, 3) and batch.targets.dtype == torch.float32
    assert device._device_augment(batch).targets is batch.targets

    # Cached features: training samples of one view's features, evaluation samples of every view's and the image.
    labels = dm.dataset("val").labels
    features = FeatureDataset(torch.zeros(len(labels), 2, 5), labels, flip=True, images=dm.dataset("val"))
    trained = collate([features[(i, 100 + i)] for i in range(4)])
    assert trained.features.shape == (4, 5) and torch.equal(trained.targets, multi_hot(dm.val_table)[:4])
    assert torch.equal(features[0]["targets"], multi_hot(dm.val_table)[0])


# ---- files --------------------------------------------------------------------------------------
@pytest.mark.parametrize(("form", "column"), [("tags", "tags"), ("flags", "label")])
def test_saved_split_lists_label_sets_and_is_reused(multi, tmp_path, form, column):
    dm = datamodule(multi[0], form, val_fraction=0.25)
    path = dm.save_split(tmp_path)
    rows = read_csv(path)
    assert [r[column] for r in rows] == ["|".join(s) for s in names_of(dm.val_table, CLASSES)]
    assert any("|" in r[column] for r in rows) and any(r[column] == "" for r in rows)
    assert read_split_names(path, "file") == set(dm.val_table.names)
    reused = datamodule(multi[0], form, val_split_csv=str(path))
    reused.setup("validate")
    assert reused.val_table.names == dm.val_table.names


def test_write_predictions_lists_predicted_and_true_label_sets(tmp_path):
    probs = np.array([[0.9, 0.7, 0.1], [0.2, 0.1, 0.3], [0.6, 0.2, 0.8]])
    predicted = probs >= np.array([0.5, 0.5, 0.25])  # per-class thresholds, as the caller applies them
    path = write_predictions(
        tmp_path / "p.csv",
        ["a", "b", "c"],
        probs,
        "file",
        "tags",
        CLASSES,
        true_labels=[(0, 1), (), (2,)],
        predicted=predicted,
    )
    assert path.read_text(encoding="utf-8").splitlines() == [
        "file,tags,prob_cat,prob_dog,prob_grand piano,true_tags",
        "a,cat|dog,0.900000,0.700000,0.100000,cat|dog",
        "b,grand piano,0.200000,0.100000,0.300000,",
        "c,cat|grand piano,0.600000,0.200000,0.800000,grand piano",
    ]
    indices = write_predictions(
        tmp_path / "i.csv",
        ["a", "b"],
        probs[:2],
        "file",
        "tags",
        CLASSES,
        probabilities=False,
        label_format="index",
        predicted=predicted[:2] & [True, True, False],
        delimiter=" ",
    )
    assert indices.read_text(encoding="utf-8") == "file,tags\na,0 1\nb,\n"


def test_single_label_predictions_are_unchanged(tmp_path):
    path = write_predictions(
        tmp_path / "p.csv",
        ["a.jpg", "b.jpg"],
        np.array([[0.2, 0.8], [0.6, 0.4]]),
        "image",
        "label",
        ["x", "y"],
        true_labels=[1, 1],
    )
    assert (
        path.read_bytes()
        == b"image,label,prob_x,prob_y,true_label\na.jpg,y,0.200000,0.800000,y\nb.jpg,x,0.600000,0.400000,y\n"
    )


# ---- the audit ----------------------------------------------------------------------------------
def test_audit_compares_label_sets(multi, tmp_path):
    root, _ = multi
    report = audit(
        root / "tags.csv", root / "pictures", "file", "tags", CLASSES, near_duplicates=False, label_delimiter="|"
    )
    assert report["class_balance"] == {"cat": 18, "dog": 27, "grand piano": 18}  # 6 copies counted again
    assert report["exact_duplicates"]["groups"] == 6 and report["exact_duplicates"]["conflicting_groups"] == 0
    assert not report["bad_labels"]

    (tmp_path / "pictures").symlink_to(root / "pictures")
    rows = read_csv(root / "tags.csv")
    conflicting = next(r for r in rows if r["file"] == "copy_002.png")  # p002's copy: cat|dog
    conflicting["tags"] = "cat"
    write_rows(tmp_path / "tags.csv", list(rows[0]), [list(r.values()) for r in rows])
    report = audit(
        tmp_path / "tags.csv",
        tmp_path / "pictures",
        "file",
        "tags",
        CLASSES,
        near_duplicates=False,
        label_delimiter="|",
    )
    (group,) = report["exact_duplicates"]["conflicting"]
    assert sorted(zip(group["names"], group["labels"])) == [("copy_002.png", "cat"), ("p002.png", "cat|dog")]
    dm = datamodule(root, "tags")
    assert duplicate_summary(dm.table.classes(), dm.content_hashes(dm.table))["groups"] == 6

    run_dir = tmp_path / "run"
    cfg = compose_config(
        "audit",
        run_dir,
        [
            f"data.root={root / 'flags.csv'}",
            "data.image_dir=pictures",
            "data.name_column=null",
            "data.label_column=null",
            "data.class_names=null",
            f"data.label_columns=[{','.join(repr(c) for c in CLASSES)}]",
            "test_csv=null",
            "near_duplicates=false",
            "clean_csv=true",
        ],
    )
    report = run_audit(cfg)
    assert report["class_balance"] == {"cat": 18, "dog": 27, "grand piano": 18}
    assert report["clean"]["rows_kept"] == 48  # the copies collapse to one row each
