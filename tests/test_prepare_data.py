"""scripts/prepare_data.py swaps in only a complete, valid data set; a failure leaves the prepared data as it was."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from image_transfer import PROJECT_ROOT
from tests.helpers.images import make_csv_dataset, make_dataset, make_folder_dataset, make_zip, snapshot
from tests.helpers.mounts import fill, make_read_only, tmpfs
from tests.helpers.scripts import load_script

prepare_data = load_script("prepare_data")


@pytest.fixture
def prepared(tmp_path, capsys) -> Path:
    """A target that holds a data set copied there earlier."""
    target = tmp_path / "project" / "data" / "emergency_vehicles"
    assert prepare_data.main([str(make_dataset(tmp_path / "first", count=6)), "--copy", "--target", str(target)]) == 0
    assert not target.is_symlink() and len(snapshot(target)) == 7
    capsys.readouterr()
    return target


def _zip_without_csv(tmp: Path) -> Path:
    source = make_dataset(tmp / "nocsv")
    (source / "train.csv").unlink()
    return make_zip(source, tmp / "nocsv.zip")


def _not_a_zip(tmp: Path) -> Path:
    (tmp / "download.zip").write_text("<html>404 not found</html>")
    return tmp / "download.zip"


def _damaged_zip(tmp: Path) -> Path:
    path = make_zip(make_dataset(tmp / "damaged"), tmp / "damaged.zip")
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0xFF  # inside a member: the directory at the end still reads, the CRC does not match
    path.write_bytes(bytes(data))
    return path


def _zip_missing_images(tmp: Path) -> Path:
    source = make_dataset(tmp / "partial")
    (source / "images" / "img_003.jpg").unlink()
    return make_zip(source, tmp / "partial.zip")


def _folder_missing_images(tmp: Path) -> Path:
    source = make_dataset(tmp / "partial_folder")
    (source / "images" / "img_005.jpg").unlink()
    return source


def _folder_without_images(tmp: Path) -> Path:
    source = make_dataset(tmp / "noimages")
    shutil.rmtree(source / "images")
    return source


BAD_SOURCES = {
    "zip without csv": (_zip_without_csv, "holds no csv of labels and only one folder"),
    "not a zip": (_not_a_zip, "neither a folder nor a zip"),
    "damaged zip": (_damaged_zip, "damaged zip"),
    "zip missing images": (_zip_missing_images, "img_003.jpg"),
    "folder missing images": (_folder_missing_images, "img_005.jpg"),
    "folder without images": (_folder_without_images, "8 listed image(s) are missing"),
    "no such path": (lambda tmp: tmp / "no_such_folder", "does not exist"),
}


@pytest.mark.parametrize("copy", [True, False], ids=["copy", "link"])
@pytest.mark.parametrize("case", BAD_SOURCES)
def test_a_bad_source_keeps_the_prepared_data_and_says_why_in_one_line(prepared, tmp_path, capsys, case, copy):
    make, expected = BAD_SOURCES[case]
    source = make(tmp_path)
    before = snapshot(prepared)

    assert prepare_data.main([str(source), "--target", str(prepared)] + (["--copy"] if copy else [])) == 1

    error = capsys.readouterr().err
    assert len(error.splitlines()) == 1 and expected in error and str(source) in error, error
    assert snapshot(prepared) == before and not prepared.is_symlink()
    assert [p.name for p in prepared.parent.iterdir()] == ["emergency_vehicles"]  # no staging folder left


def test_a_good_zip_replaces_the_prepared_data(prepared, tmp_path):
    source = make_dataset(tmp_path / "second", count=10)
    assert prepare_data.main([str(make_zip(source, tmp_path / "second.zip")), "--target", str(prepared)]) == 0
    assert snapshot(prepared) == snapshot(source)
    assert [p.name for p in prepared.parent.iterdir()] == ["emergency_vehicles"]


def test_a_zip_without_a_wrapping_folder_works_too(tmp_path):
    source, target = make_dataset(tmp_path / "flat"), tmp_path / "target"
    assert prepare_data.main([str(make_zip(source, tmp_path / "flat.zip", wrapper=None)), "--target", str(target)]) == 0
    assert snapshot(target) == snapshot(source)


def test_replacing_a_linked_data_set_leaves_the_linked_folder_alone(prepared, tmp_path):
    linked = make_dataset(tmp_path / "linked", count=4)
    linked_files = snapshot(linked)
    assert prepare_data.main([str(linked), "--target", str(prepared)]) == 0
    assert prepared.is_symlink() and prepared.resolve() == linked.resolve()
    assert prepare_data.main([str(linked), "--target", str(prepared)]) == 0  # linking again: still there
    assert prepared.resolve() == linked.resolve()

    copied = make_dataset(tmp_path / "copied", count=5)
    assert prepare_data.main([str(copied), "--copy", "--target", str(prepared)]) == 0
    assert not prepared.is_symlink() and snapshot(prepared) == snapshot(copied)
    assert snapshot(linked) == linked_files


def test_a_failed_swap_puts_the_old_data_back(prepared, tmp_path, capsys, monkeypatch):
    before, rename = snapshot(prepared), os.rename

    def no_room_for_the_new(source, destination):
        if Path(destination) == prepared and Path(source).name != "old":
            raise OSError(28, "No space left on device")
        rename(source, destination)

    monkeypatch.setattr(prepare_data.os, "rename", no_room_for_the_new)
    assert prepare_data.main([str(make_dataset(tmp_path / "second")), "--copy", "--target", str(prepared)]) == 1
    assert len(capsys.readouterr().err.splitlines()) == 1
    assert snapshot(prepared) == before
    assert [p.name for p in prepared.parent.iterdir()] == ["emergency_vehicles"]


def test_when_even_the_way_back_fails_the_old_data_is_kept_and_shown(prepared, tmp_path, capsys, monkeypatch):
    before, rename = snapshot(prepared), os.rename

    def nothing_goes_to_the_target(source, destination):
        if Path(destination) == prepared:
            raise OSError(5, "Input/output error")
        rename(source, destination)

    monkeypatch.setattr(prepare_data.os, "rename", nothing_goes_to_the_target)
    assert prepare_data.main([str(make_dataset(tmp_path / "second")), "--copy", "--target", str(prepared)]) == 1
    [staging] = prepared.parent.iterdir()
    assert snapshot(staging / "old") == before
    assert f"the previous data set is at {staging / 'old'}" in capsys.readouterr().err


def test_a_source_inside_the_target_is_refused(prepared, capsys):
    before = snapshot(prepared)
    assert prepare_data.main([str(prepared), "--target", str(prepared)]) == 1
    assert "lies inside" in capsys.readouterr().err
    assert snapshot(prepared) == before


@pytest.mark.slow  # the script's process imports torch (through image_transfer.data)
def test_the_script_exits_1_with_one_line_and_no_traceback(prepared, tmp_path):
    bad = _zip_without_csv(tmp_path)
    before = snapshot(prepared)
    done = subprocess.run(
        [sys.executable, "scripts/prepare_data.py", str(bad), "--target", str(prepared)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1 and len(done.stderr.splitlines()) == 1, done.stderr
    assert str(bad) in done.stderr and "Traceback" not in done.stderr
    assert snapshot(prepared) == before
    assert zipfile.is_zipfile(bad)  # the source is only read


@pytest.mark.parametrize("layout", ["class_folders", "split_folders", "csv_other_columns"])
def test_either_layout_with_any_columns_is_prepared(tmp_path, capsys, layout):
    if layout == "csv_other_columns":
        source = make_csv_dataset(tmp_path / "mine", image_dir="images")
    else:
        source = make_folder_dataset(
            tmp_path / "mine", per_class=4, splits={"train": 4, "val": 2} if "split" in layout else None
        )
    target = tmp_path / "data" / "mine"
    assert prepare_data.main([str(make_zip(source, tmp_path / "mine.zip")), "--target", str(target)]) == 0
    assert "3 classes ['cat', 'grand piano', 'épée-x']" in capsys.readouterr().out
    assert snapshot(target) == snapshot(source)


def test_a_target_on_a_full_or_read_only_disk_is_refused_and_left_as_it_was(tmp_path, capsys):
    source = make_dataset(tmp_path / "source", count=6)
    with tmpfs(tmp_path / "disk", 2**20) as disk:
        target = disk / "data"
        first = make_dataset(tmp_path / "first", count=2)
        assert prepare_data.main([str(first), "--copy", "--target", str(target)]) == 0
        before = snapshot(target)
        fill(disk)
        capsys.readouterr()
        assert prepare_data.main([str(source), "--copy", "--target", str(target)]) == 1
        error = capsys.readouterr().err
        assert f"no space left in {disk}" in error and f"Nothing changed at {target}" in error
        make_read_only(disk)
        assert prepare_data.main([str(source), "--copy", "--target", str(target)]) == 1
        error = capsys.readouterr().err
        assert f"cannot write in {disk} (Read-only file system): --target DIR" in error
        assert snapshot(target) == before and sorted(p.name for p in disk.iterdir()) == ["data", "filler"]
