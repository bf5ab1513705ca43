"""The data audit: the real data's documented defects (slow), and every kind of defect in a small made-up set
built from made-up photos (fast) or from real ones (slow)."""

from __future__ import annotations

import csv
import itertools
import json
import random
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from image_transfer.audit import run_audit
from image_transfer.data.audit import audit, duplicate_summary
from image_transfer.data.audit_report import markdown
from image_transfer.data.near_duplicates import perceptual_hash
from tests.helpers.configs import compose_config
from tests.helpers.images import as_displayed, blocks, make_dataset, save_oriented

CLASSES = ["non_emergency", "emergency"]


def _distance(a: int, b: int) -> int:
    return bin(a ^ b).count("1")


@pytest.mark.slow
def test_real_data_defects_match_the_readme(shared_data):
    report = audit(
        shared_data / "train.csv",
        shared_data / "images",
        "image_names",
        "emergency_or_not",
        CLASSES,
        test_csv=shared_data / "test.csv",
        near_duplicates=False,
    )
    assert report["rows"] == 1646
    assert report["class_balance"] == {"non_emergency": 965, "emergency": 681}
    exact = report["exact_duplicates"]
    assert (exact["groups"], exact["extra_copies"], exact["conflicting_groups"]) == (68, 80, 2)
    assert all(len(set(c["labels"])) > 1 for c in exact["conflicting"])
    assert len(report["test"]["exact_copies_of_train"]) == 46
    for section in (report, report["test"]):
        assert section["missing_files"] == [] and section["unreadable"] == []
    assert report["bad_labels"] == report["repeated_rows"] == report["unlisted_files"] == []
    assert report["modes"] == {"RGB": 1646} and report["formats"] == {"JPEG": 1646}


def test_duplicate_summary_counts_groups_copies_and_conflicts():
    summary = duplicate_summary([0, 1, 1, 1, 1, 0], ["a", "a", "b", "b", "b", "c"])
    assert summary == {"groups": 2, "extra_copies": 3, "conflicting_groups": 1}


# ---- a made-up data set with one of each defect -------------------------------------------------
def _real_photos(root: Path) -> Iterator[Path]:
    with open(root / "train.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            yield root / "images" / row["image_names"]


def _made_up_photos(folder: Path) -> Iterator[Path]:
    """224 x 224 JPEGs of coloured blocks, the real photos' size and format."""
    folder.mkdir()
    for index in itertools.count():
        blocks(index, (224, 224)).save(folder / f"{index}.jpg", quality=95)
        yield folder / f"{index}.jpg"


def _distinct_images(candidates: Iterator[Path], count: int) -> list[Path]:
    """Images far apart by perceptual hash, so only the copies made below are near duplicates."""
    chosen, hashes = [], []
    for path in candidates:
        h = perceptual_hash(path)
        if all(_distance(h, other) > 16 for other in hashes):
            chosen.append(path)
            hashes.append(h)
        if len(chosen) == count:
            return chosen


def _reencode(source: Path, target: Path) -> None:
    with Image.open(source) as image:
        image.convert("RGB").save(target, quality=75)
    assert source.read_bytes() != target.read_bytes()
    assert _distance(perceptual_hash(source), perceptual_hash(target)) <= 4


@pytest.fixture(scope="module", params=["made_up_photos", pytest.param("real_photos", marks=pytest.mark.slow)])
def synthetic(request, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthetic")
    images = root / "images"
    images.mkdir()
    if request.param == "real_photos":
        candidates = _real_photos(request.getfixturevalue("shared_data"))
    else:
        candidates = _made_up_photos(tmp_path_factory.mktemp("photos") / "photos")
    photos = iter(_distinct_images(candidates, 25))

    def rgb() -> Image.Image:  # a fresh photo each call
        with Image.open(next(photos)) as image:
            return image.convert("RGB")

    for i in range(8):
        shutil.copy(next(photos), images / f"a{i}.jpg")
    for name in ("copy_same.jpg", "copy_conflict.jpg"):
        shutil.copy(images / ("a0.jpg" if name == "copy_same.jpg" else "a1.jpg"), images / name)
    _reencode(images / "a2.jpg", images / "reencoded.jpg")
    _reencode(images / "a3.jpg", images / "reencoded_conflict.jpg")
    (images / "empty.jpg").write_bytes(b"")
    half = next(photos).read_bytes()
    (images / "truncated.jpg").write_bytes(half[: len(half) // 2])
    (images / "corrupt.jpg").write_bytes(random.Random(0).randbytes(5000))
    rgb().save(images / "png.png")
    rgb().save(images / "gif.gif")
    rgb().convert("L").save(images / "gray.jpg")
    rgb().convert("P", palette=Image.ADAPTIVE).save(images / "palette.png")
    rgb().convert("RGBA").save(images / "rgba.png")
    rgb().convert("CMYK").save(images / "cmyk.jpg")
    Image.fromarray(np.asarray(rgb().convert("L"), dtype=np.uint16) * 257).save(images / "sixteen.png")
    for name in (
        "fire truck.jpg",
        "ambulançe_é.jpg",
        "badlabel.jpg",
        "nolabel.jpg",
        "name_label.jpg",
        "extra.jpg",
        "test_new.jpg",
    ):
        shutil.copy(next(photos), images / name)
    Image.fromarray(np.tile(np.arange(4100, dtype=np.uint16) % 256, (16, 1)).astype(np.uint8)).save(images / "wide.png")
    shutil.copy(images / "a7.jpg", images / "test_copy.jpg")
    _reencode(images / "a6.jpg", images / "test_near.jpg")

    rows = [(f"a{i}.jpg", i % 2) for i in range(8)] + [
        ("copy_same.jpg", 0),
        ("copy_conflict.jpg", 0),
        ("reencoded.jpg", 0),
        ("reencoded_conflict.jpg", 0),
        ("empty.jpg", 0),
        ("truncated.jpg", 1),
        ("corrupt.jpg", 0),
        ("png.png", 1),
        ("gif.gif", 0),
        ("gray.jpg", 1),
        ("palette.png", 0),
        ("rgba.png", 1),
        ("cmyk.jpg", 0),
        ("sixteen.png", 1),
        ("fire truck.jpg", 1),
        ("ambulançe_é.jpg", 0),
        ("a4.jpg", 0),
        ("a5.jpg", 0),
        ("missing.jpg", 1),
        ("badlabel.jpg", 7),
        ("nolabel.jpg", ""),
        ("wide.png", 0),
        ("name_label.jpg", "emergency"),
    ]
    with open(root / "train.csv", "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([("image_names", "emergency_or_not"), *rows])
    (root / "test.csv").write_text("image_names\ntest_copy.jpg\ntest_near.jpg\ntest_new.jpg\n", encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def synthetic_run(synthetic, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("audit_run")
    cfg = compose_config("audit", run_dir, [f"data.root={synthetic}", "clean_csv=true"])
    return run_dir, run_audit(cfg)


def test_missing_files_bad_labels_and_repeated_rows(synthetic_run):
    _, report = synthetic_run
    assert report["rows"] == 31
    assert report["missing_files"] == ["missing.jpg"]
    assert [(b["line"], b["name"], b["label"]) for b in report["bad_labels"]] == [
        (29, "badlabel.jpg", "7"),
        (30, "nolabel.jpg", ""),
    ]
    assert [(r["name"], r["lines"], r["conflicting"]) for r in report["repeated_rows"]] == [
        ("a4.jpg", [6, 26], False),
        ("a5.jpg", [7, 27], True),
    ]
    assert report["unlisted_files"] == ["extra.jpg"]
    # Class names are valid labels too: name_label.jpg counts as emergency.
    assert report["class_balance"] == {"non_emergency": 17, "emergency": 12}


def test_unreadable_images_with_their_reasons(synthetic_run):
    _, report = synthetic_run
    reasons = {u["name"]: u["reason"] for u in report["unreadable"]}
    assert reasons.keys() == {"empty.jpg", "truncated.jpg", "corrupt.jpg"}
    assert reasons["empty.jpg"] == "empty file"
    assert "truncated" in reasons["truncated.jpg"]
    assert reasons["corrupt.jpg"].startswith("UnidentifiedImageError")


def test_formats_modes_sizes_and_odd_names(synthetic_run, synthetic):
    _, report = synthetic_run
    with Image.open(synthetic / "images" / "sixteen.png") as image:
        sixteen = image.mode  # Pillow reopens 16-bit grey PNGs as "I;16" (older versions: "I")
    assert sixteen in ("I;16", "I")
    assert report["formats"] == {"JPEG": 19, "PNG": 5, "GIF": 1}
    assert report["modes"] == {"RGB": 18, "P": 2, "L": 2, "RGBA": 1, "CMYK": 1, sixteen: 1}  # L: gray.jpg, wide.png
    assert report["large_images"] == [{"name": "wide.png", "size": [4100, 16]}]
    assert report["sizes"]["most_common"]["224x224"] == 24 and report["sizes"]["width"]["max"] == 4100
    broken = set(report["missing_files"]) | {u["name"] for u in report["unreadable"]}
    assert not {"fire truck.jpg", "ambulançe_é.jpg"} & broken


def test_exact_and_near_duplicates_with_conflicts(synthetic_run):
    _, report = synthetic_run
    exact, near = report["exact_duplicates"], report["near_duplicates"]
    assert (exact["groups"], exact["extra_copies"], exact["conflicting_groups"]) == (2, 2, 1)
    assert sorted(map(sorted, exact["group_names"])) == [["a0.jpg", "copy_same.jpg"], ["a1.jpg", "copy_conflict.jpg"]]
    assert exact["conflicting"] == [
        {"names": ["a1.jpg", "copy_conflict.jpg"], "labels": ["emergency", "non_emergency"]}
    ]
    assert (near["groups"], near["extra_copies"], near["conflicting_groups"]) == (2, 2, 1)
    assert sorted(map(sorted, near["group_names"])) == [
        ["a2.jpg", "reencoded.jpg"],
        ["a3.jpg", "reencoded_conflict.jpg"],
    ]
    assert [c["names"] for c in near["conflicting"]] == [["a3.jpg", "reencoded_conflict.jpg"]]


def test_test_images_copying_training_images(synthetic_run):
    _, report = synthetic_run
    test = report["test"]
    assert test["rows"] == 3
    assert test["exact_copies_of_train"] == ["test_copy.jpg"]
    assert test["near_copies_of_train"] == ["test_near.jpg"]


def test_clean_csv_drops_and_collapses_the_right_rows(synthetic_run):
    run_dir, report = synthetic_run
    with open(run_dir / "train_clean.csv", newline="", encoding="utf-8") as handle:
        kept = [(row["image_names"], row["emergency_or_not"]) for row in csv.DictReader(handle)]
    assert kept == [
        ("a0.jpg", "0"),
        ("a2.jpg", "0"),
        ("a4.jpg", "0"),
        ("a6.jpg", "0"),
        ("a7.jpg", "1"),
        ("png.png", "1"),
        ("gif.gif", "0"),
        ("gray.jpg", "1"),
        ("palette.png", "0"),
        ("rgba.png", "1"),
        ("cmyk.jpg", "0"),
        ("sixteen.png", "1"),
        ("fire truck.jpg", "1"),
        ("ambulançe_é.jpg", "0"),
        ("wide.png", "0"),
        ("name_label.jpg", "emergency"),
    ]
    assert report["clean"]["dropped"] == {
        "bad_label": ["badlabel.jpg", "nolabel.jpg"],
        "missing_or_unreadable": ["empty.jpg", "truncated.jpg", "corrupt.jpg", "missing.jpg"],
        "repeated_row": ["a4.jpg"],
        "conflicting_repeated_row": ["a5.jpg", "a5.jpg"],
        "exact_duplicate": ["copy_same.jpg"],
        "conflicting_exact_duplicate": ["a1.jpg", "copy_conflict.jpg"],
        "near_duplicate": ["reencoded.jpg"],
        "conflicting_near_duplicate": ["a3.jpg", "reencoded_conflict.jpg"],
    }
    assert report["clean"]["rows_kept"] == len(kept)


def test_entry_point_writes_the_report(synthetic_run):
    run_dir, report = synthetic_run
    assert json.loads((run_dir / "audit.json").read_text(encoding="utf-8"))["summary"] == report["summary"]
    text = (run_dir / "audit.md").read_text(encoding="utf-8")
    assert "| exact duplicate groups | 2 |" in text and "corrupt.jpg" in text and "## Clean csv" in text


def test_absent_test_csv_is_skipped_with_a_note(synthetic):
    report = audit(
        synthetic / "train.csv",
        synthetic / "images",
        "image_names",
        "emergency_or_not",
        CLASSES,
        test_csv=synthetic / "no_such.csv",
        near_duplicates=False,
    )
    assert "skipped" in report["test"]["note"] and "near_duplicates" not in report
    assert "test rows" not in report["summary"]


def test_exif_orientation_is_counted_and_sizes_are_as_displayed(tmp_path):
    root = make_dataset(tmp_path, count=6)  # 48 x 32 JPEGs
    for index, tag in ((0, 6), (1, 8), (2, 3), (3, 1)):  # 1: as stored, nothing to turn
        save_oriented(blocks(index), root / "images" / f"img_{index:03d}.jpg", tag, quality=95)
    as_displayed(blocks(0), 6).save(root / "images" / "img_000_turned.jpg", quality=95)  # what img_000 shows
    with open(root / "train.csv", "a", encoding="utf-8") as handle:
        handle.write("img_000_turned.jpg,0\n")

    report = audit(root / "train.csv", root / "images", "image_names", "emergency_or_not", CLASSES)
    assert report["oriented_images"] == [
        {"name": "img_000.jpg", "orientation": 6},
        {"name": "img_001.jpg", "orientation": 8},
        {"name": "img_002.jpg", "orientation": 3},
    ]
    assert report["summary"]["images with an EXIF orientation (read turned)"] == 3
    assert report["sizes"]["most_common"] == {"48x32": 4, "32x48": 3}
    assert report["near_duplicates"]["group_names"] == [["img_000.jpg", "img_000_turned.jpg"]]
    text = markdown(report)
    assert "| images with an EXIF orientation (read turned) | 3 |" in text and "img_001.jpg (8)" in text
