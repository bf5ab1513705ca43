"""The datamodule: stratified, seeded splits by image content; data layouts; uint8 batches; csv errors.

Each split test runs on a made-up set with copies (fast) and on the real data (slow): the `labelled` fixture."""

import csv
import hashlib
import random
import re
from collections import Counter

import pytest
import torch

from image_transfer.data import ImageDataModule
from image_transfer.data.table import DataError

# The first data set's columns and classes, as its config (data=emergency_vehicles) gives them.
EMERGENCY = {
    "name_column": "image_names",
    "label_column": "emergency_or_not",
    "class_names": ["non_emergency", "emergency"],
}


def split_of(root, **kwargs):
    dm = ImageDataModule(root=str(root), **kwargs)
    dm.setup("fit")
    return dm


def digests(table) -> set[str]:
    return {hashlib.sha1(p.read_bytes()).hexdigest() for p in table.paths}


def read_rows(path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_split_is_stratified_and_deterministic(labelled):
    a, b = split_of(labelled.root, split_seed=0), split_of(labelled.root, split_seed=0)
    assert a.val_table.names == b.val_table.names
    total, val = Counter(a.table.labels), Counter(a.val_table.labels)
    assert len(a.train_table) + len(a.val_table) == labelled.rows
    for label in (0, 1):  # each class is held out at 10%, within a duplicate group's size
        assert abs(val[label] - 0.1 * total[label]) <= 3
    assert split_of(labelled.root, split_seed=1).val_table.names != a.val_table.names


def test_identical_images_never_cross_the_split(labelled):
    dm = split_of(labelled.root)
    assert len(digests(dm.table)) < len(dm.table)  # the data does hold exact copies
    assert not digests(dm.train_table) & digests(dm.val_table)


def test_split_ignores_row_order_and_file_names(labelled, tmp_path):
    """The same images under shuffled rows and other names give the same split."""
    rows = read_rows(labelled.root / "train.csv")
    random.Random(0).shuffle(rows)
    (tmp_path / "images").mkdir()
    renamed = {}
    for i, row in enumerate(rows):
        renamed[row["image_names"]] = f"img_{i:04d}.jpg"
        (tmp_path / "images" / renamed[row["image_names"]]).symlink_to(labelled.root / "images" / row["image_names"])
    with open(tmp_path / "emergency_classification.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image_names", "emergency_or_not"])
        writer.writerows((renamed[r["image_names"]], r["emergency_or_not"]) for r in rows)
    original, shuffled = split_of(labelled.root), split_of(tmp_path)  # also: the course layout is found
    assert sorted(renamed[n] for n in original.val_table.names) == sorted(shuffled.val_table.names)


def test_hackathon_layout_with_train_folder(labelled, tmp_path):
    (tmp_path / "train").symlink_to(labelled.root / "images")
    (tmp_path / "train.csv").symlink_to(labelled.root / "train.csv")
    assert len(split_of(tmp_path).table) == labelled.rows


def test_batches_are_uint8_images_at_the_backbone_size(labelled, tmp_path):
    dm = ImageDataModule(root=str(labelled.root), subset=64, image_size=96, batch_size=8, augment="strong")
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch.images.shape == (8, 3, 96, 96) and batch.images.dtype == torch.uint8
    assert set(batch.targets.tolist()) <= {0, 1}
    dm.save_split(tmp_path)
    reused = ImageDataModule(root=str(labelled.root), subset=64, val_split_csv=str(tmp_path / "val_split.csv"))
    reused.setup("validate")
    assert reused.val_table.names == dm.val_table.names


def test_near_duplicates_stay_together_when_enabled(labelled):
    from image_transfer.data.near_duplicates import near_duplicate_groups, perceptual_hash

    dm = split_of(labelled.root, near_duplicate_distance=4)
    group_of = dict(zip(dm.table.names, near_duplicate_groups([perceptual_hash(p) for p in dm.table.paths], 4)))
    assert len(set(group_of.values())) < len(digests(dm.table))  # some groups join images of different bytes
    assert not {group_of[n] for n in dm.train_table.names} & {group_of[n] for n in dm.val_table.names}
    assert abs(len(dm.val_table) - round(0.1 * labelled.rows)) <= 4  # still about 10% (real data: 165)


def write_csv(path, header, rows):
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([header, *rows] if header else [])


@pytest.mark.parametrize(
    "header, rows, message",
    [
        (["name", "emergency_or_not"], [["0.jpg", "0"]], "column(s) ['image_names'] not found"),
        (["image_names", "emergency_or_not"], [["0.jpg", "2"]], "line 2: '2'"),
        (["image_names", "emergency_or_not"], [["0.jpg", ""]], "outside the classes"),
        (["image_names", "emergency_or_not"], [["nope.jpg", "1"]], "missing from"),
        (["image_names", "emergency_or_not"], [], "no rows"),
        ([], [], "is empty"),
    ],
)
def test_bad_csv_gets_a_clear_error(labelled, tmp_path, header, rows, message):
    (tmp_path / "images").symlink_to(labelled.root / "images")
    write_csv(tmp_path / "train.csv", header, rows)
    with pytest.raises(DataError, match=re.escape(message)):
        split_of(tmp_path, **EMERGENCY)


def test_missing_data_folder_says_how_to_fix(tmp_path):
    with pytest.raises(DataError, match="prepare_data.py"):
        split_of(tmp_path / "absent")


def test_missing_csv_or_image_folder_names_the_option(labelled, tmp_path):
    (tmp_path / "images").symlink_to(labelled.root / "images")
    with pytest.raises(DataError, match=re.escape("no train.csv and 0 other csv files (none); set data.csv_file=NAME")):
        split_of(tmp_path)
    (tmp_path / "images").unlink()
    (tmp_path / "train.csv").symlink_to(labelled.root / "train.csv")
    with pytest.raises(DataError, match="missing from .*point data.image_dir at the folder that holds them"):
        split_of(tmp_path)
    with pytest.raises(DataError, match=re.escape("data.image_dir=") + ".*no such folder"):
        split_of(tmp_path, image_dir="pictures")
