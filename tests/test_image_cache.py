"""The decoded-image cache on disk: the same pixels as decoding, one entry reused, rebuilt when its key changes or
its files are damaged, and whole when two processes build it at once."""

import logging
import multiprocessing
import shutil

import numpy as np
import pytest
import torch

from image_transfer.data.decode import decode_all
from image_transfer.data.image_store import INDEX, PIXELS, DiskImages, load_images
from image_transfer.data.split import content_hash
from tests.helpers.images import blocks


def entries(cache_dir):
    return sorted(p.name for p in (cache_dir / "images").iterdir() if not p.name.startswith("."))


def cached(root, cache_dir, size=40):
    paths = sorted((root / "images").iterdir())
    names = [p.name for p in paths]
    return load_images(paths, names, [content_hash(p) for p in paths], size, cache_dir)


@pytest.fixture
def data(made_up_data, tmp_path):
    """A writable copy of the made-up images."""
    shutil.copytree(made_up_data.root, tmp_path / "data")
    return tmp_path / "data"


def test_cached_images_equal_decoded_ones_and_one_entry_is_reused(data, tmp_path):
    images, failed = cached(data, tmp_path / "cache")
    decoded, _ = decode_all(sorted((data / "images").iterdir()), 40)
    assert not failed and isinstance(images, DiskImages) and len(images) == len(decoded)
    assert all(torch.equal(images[i], decoded[i]) for i in range(len(decoded)))
    first = entries(tmp_path / "cache")
    written = (tmp_path / "cache" / "images" / first[0] / PIXELS).stat().st_mtime_ns
    again, _ = cached(data, tmp_path / "cache")
    assert entries(tmp_path / "cache") == first  # reused, not rebuilt
    assert (tmp_path / "cache" / "images" / first[0] / PIXELS).stat().st_mtime_ns == written
    assert torch.equal(again[5], decoded[5])


def test_a_changed_image_or_size_makes_a_new_entry(data, tmp_path):
    cached(data, tmp_path / "cache")
    cached(data, tmp_path / "cache", size=64)
    assert len(entries(tmp_path / "cache")) == 2
    path = data / "images" / "3.jpg"
    blocks(999).save(path, quality=95)  # same name, other content
    images, _ = cached(data, tmp_path / "cache")
    assert len(entries(tmp_path / "cache")) == 3
    assert torch.equal(images[sorted((data / "images").iterdir()).index(path)], decode_all([path], 40)[0][0])


@pytest.mark.parametrize("damage", ["truncate", "overwrite", "delete_index", "garble_meta"])
def test_a_damaged_entry_is_detected_and_rebuilt(data, tmp_path, damage, caplog):
    images, _ = cached(data, tmp_path / "cache")
    expected = [images[i].clone() for i in range(len(images))]
    entry = images.folder
    pixels = entry / PIXELS
    if damage == "truncate":
        with open(pixels, "r+b") as file:
            file.truncate(pixels.stat().st_size // 2)
    elif damage == "overwrite":
        with open(pixels, "r+b") as file:
            file.seek(1000)
            file.write(bytes(64))
    elif damage == "delete_index":
        (entry / INDEX).unlink()
    else:
        (entry / "meta.json").write_text("{not json")
    with caplog.at_level(logging.WARNING):
        rebuilt, _ = cached(data, tmp_path / "cache")
    assert f"cache {entry} is damaged" in caplog.text
    assert all(torch.equal(rebuilt[i], expected[i]) for i in range(len(expected)))
    assert entries(tmp_path / "cache") == [entry.name]
    assert not [p for p in (tmp_path / "cache" / "images").iterdir() if "damaged" in p.name or "building" in p.name]


def build_in_process(root, cache_dir, queue):
    images, _ = cached(root, cache_dir)
    queue.put((str(images.folder), images[7].numpy().tobytes()))


@pytest.mark.slow  # two processes
def test_two_processes_building_at_once_leave_one_whole_entry(data, tmp_path):
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    workers = [context.Process(target=build_in_process, args=(data, tmp_path / "cache", queue)) for _ in range(3)]
    for worker in workers:
        worker.start()
    results = [queue.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    assert len({folder for folder, _ in results}) == 1 and len({pixels for _, pixels in results}) == 1
    assert len(entries(tmp_path / "cache")) == 1
    assert not [p for p in (tmp_path / "cache" / "images").iterdir() if "building" in p.name]
    images, _ = cached(data, tmp_path / "cache")
    assert images[7].numpy().tobytes() == results[0][1]


def test_unreadable_images_are_remembered_by_the_cache(data, tmp_path):
    (data / "images" / "2.jpg").write_bytes(b"")
    for _ in range(2):  # built, then read back
        images, failed = cached(data, tmp_path / "cache")
        position = sorted((data / "images").iterdir()).index(data / "images" / "2.jpg")
        assert failed == {position: f"{data / 'images' / '2.jpg'}: empty file"}
        with pytest.raises(IndexError):
            images[position]


def test_cached_and_in_memory_batches_are_the_same(made_up_data, tmp_path):
    # Imported here: the processes the test above spawns import this module, and need no Lightning.
    from image_transfer.data import ImageDataModule

    batches = []
    for image_cache in (True, False):
        dm = ImageDataModule(
            root=str(made_up_data.root),
            image_size=32,
            batch_size=16,
            augment="strong",
            seed=3,
            image_cache=image_cache,
            cache_dir=str(tmp_path / "cache"),
        )
        dm.setup("fit")
        batches.append([next(iter(dm.train_dataloader())), next(iter(dm.val_dataloader()))])
    (cached_train, cached_val), (memory_train, memory_val) = batches
    assert torch.equal(cached_train.images, memory_train.images) and torch.equal(cached_val.images, memory_val.images)
    assert np.array_equal(cached_train.targets, memory_train.targets)
