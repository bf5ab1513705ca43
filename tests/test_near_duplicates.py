"""Near-duplicate detection on made-up photos (fast) and on the real emergency-vehicle images (slow)."""

from __future__ import annotations

import csv
import hashlib
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from image_transfer.data.near_duplicates import hamming_distances, near_duplicate_groups, perceptual_hash
from tests.helpers.configs import SHARED_DATA
from tests.helpers.images import blocks


def _distance(a: int, b: int) -> int:
    return bin(a ^ b).count("1")


def _names(csv_name: str) -> list[str]:
    with open(SHARED_DATA / csv_name, newline="") as handle:
        return [row["image_names"] for row in csv.DictReader(handle)]


@pytest.fixture(scope="module")
def train_images(shared_data: Path) -> list[Path]:
    return [shared_data / "images" / name for name in _names("train.csv")]


@pytest.fixture(scope="module", params=["made_up", pytest.param("real", marks=pytest.mark.slow)])
def photos(request, tmp_path_factory) -> list[Path]:
    """224 x 224 JPEGs: 24 of coloured blocks, or the real training images (slow)."""
    if request.param == "real":
        return request.getfixturevalue("train_images")
    folder = tmp_path_factory.mktemp("photos")
    for index in range(24):
        blocks(index, (224, 224)).save(folder / f"{index}.jpg", quality=95)
    return [folder / f"{index}.jpg" for index in range(24)]


def test_reencoded_copy_is_a_near_duplicate_and_other_photos_are_not(photos, tmp_path):
    original = photos[0]
    copy = tmp_path / "copy.jpg"
    with Image.open(original) as image:
        image.convert("RGB").resize((200, 200), Image.BICUBIC).save(copy, quality=60)
    assert copy.read_bytes() != original.read_bytes()

    h_original, h_copy = perceptual_hash(original), perceptual_hash(copy)
    assert _distance(h_original, h_copy) <= 4

    # A clearly different photo: the first (in csv order) more than 10 bits away.
    other = next(p for p in photos[1:] if _distance(perceptual_hash(p), h_original) > 10)
    h_other = perceptual_hash(other)
    assert _distance(h_other, h_original) > 10

    groups = near_duplicate_groups([h_original, h_copy, h_other], max_distance=4)
    assert groups[0] == groups[1] != groups[2]
    assert groups[0] == min(h_original, h_copy)  # documented id: smallest hash in the group
    # Labels only: reordering the input does not change any image's group id.
    assert near_duplicate_groups([h_other, h_copy, h_original]) == groups[::-1]
    assert hamming_distances([h_original, h_copy, h_other]).tolist()[0] == [
        0,
        _distance(h_original, h_copy),
        _distance(h_original, h_other),
    ]


def test_colour_modes_and_16_bit_hash_like_the_rgb_original(photos, tmp_path):
    original = photos[0]
    with Image.open(original) as image:
        rgb = image.convert("RGB")
    gray = rgb.convert("L")
    sixteen = Image.fromarray(np.asarray(gray, dtype=np.uint16) * 257)
    assert sixteen.mode == "I;16"
    assert np.asarray(sixteen).max() > 255  # clipping to 8 bits would whiten most of the image

    rgba = rgb.convert("RGBA")
    rgba.putalpha(255)
    versions = {
        "L.png": gray,
        "P.png": rgb.convert("P", palette=Image.ADAPTIVE, colors=256),
        "RGBA.png": rgba,
        "CMYK.tif": rgb.convert("CMYK"),
        "I16.png": sixteen,
    }
    h_rgb = perceptual_hash(original)
    for name, version in versions.items():
        path = tmp_path / name
        version.save(path)
        with Image.open(path) as reopened:
            assert reopened.mode == version.mode or name == "I16.png"  # PNG may reopen 16-bit as "I"
        distance = _distance(perceptual_hash(path), h_rgb)
        assert distance <= 6, f"{name} ({version.mode}) is {distance} bits from the RGB original"

    # A 16-bit image kept as 32-bit "I" (values up to 65535) is scaled the same way.
    as_int32 = tmp_path / "I32.tif"
    Image.fromarray(np.asarray(gray, dtype=np.int32) * 257).save(as_int32)
    assert _distance(perceptual_hash(as_int32), h_rgb) <= 6


@pytest.mark.slow
def test_whole_train_set_exact_copies_share_a_group(train_images):
    assert len(train_images) == 1646
    start = time.perf_counter()
    hashes = [perceptual_hash(path) for path in train_images]
    hashed = time.perf_counter()
    groups = near_duplicate_groups(hashes, max_distance=4)
    grouped = time.perf_counter()

    by_sha: dict[str, set[int]] = defaultdict(set)
    for path, group in zip(train_images, groups):
        by_sha[hashlib.sha1(path.read_bytes()).hexdigest()].add(group)
    assert all(len(ids) == 1 for ids in by_sha.values())
    assert sum(1 for ids in by_sha.values()) < len(train_images)  # the data does hold exact copies

    sizes = Counter(groups)
    multi = [g for g, n in sizes.items() if n > 1]
    print(
        f"\n{len(train_images)} train images: hashing {hashed - start:.2f} s, grouping {grouped - hashed:.3f} s; "
        f"{len(multi)} near-duplicate groups (max_distance=4) covering {sum(sizes[g] for g in multi)} images"
    )
    assert grouped - start < 30.0
