"""Near-duplicate images by perceptual hash.

Byte hashes (see `split.content_hash`) only catch exact copies. The same photo re-encoded, resized
or converted to another colour mode has different bytes, and if one copy lands in training and the
other in validation, validation scores measure memory rather than generalisation. A difference hash
(dHash) is nearly unchanged by such edits, so images whose hashes differ in only a few bits are
treated as one group, and a group-aware split keeps a whole group on one side.

Written here, not ImageHash's dhash: that adds SciPy and PyWavelets for twenty lines, and its grayscale (Pillow's
"L") drops transparency instead of compositing it onto white as decode.read_upright's images are.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from image_transfer.data.decode import read_upright

HASH_SIZE = 8  # 8 x 8 comparisons -> 64 bits


def _grayscale_array(image: Image.Image) -> np.ndarray:
    """Luminance of an 8-bit image (see `decode.read_upright`) as float32 on a 0..255 scale, whatever the mode.

    Transparent pixels are composited onto white; palette and CMYK images go through RGB.
    """
    mode = image.mode
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        mode = image.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
        mode = image.mode
    if mode != "L":
        image = image.convert("RGB").convert("L")  # also covers CMYK, YCbCr, LAB, HSV, 1
    return np.asarray(image, dtype=np.float32)


def perceptual_hash(path: str | Path) -> int:
    """64-bit difference hash (dHash) of the image at `path`, as displayed (EXIF orientation applied).

    The grayscale image is shrunk to 9 x 8 (Lanczos, on floats, so no rounding ties) and each bit
    says whether a pixel is brighter than its right-hand neighbour; bit 63 is the top-left
    comparison. Re-encoding, resizing and mode changes flip few bits; different photos flip ~32.
    """
    gray = _grayscale_array(read_upright(Path(path)))
    small = Image.fromarray(gray).resize((HASH_SIZE + 1, HASH_SIZE), Image.LANCZOS)
    pixels = np.asarray(small, dtype=np.float32)
    bits = (pixels[:, 1:] > pixels[:, :-1]).ravel()
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


def _popcount(values: np.ndarray) -> np.ndarray:
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0
        return np.bitwise_count(values).astype(np.uint8)
    table = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)
    as_bytes = values.view(np.uint8).reshape(*values.shape, 8)
    return table[as_bytes].sum(axis=-1, dtype=np.uint8)


def hamming_distances(hashes: list[int]) -> np.ndarray:
    """(n, n) uint8 matrix of bitwise Hamming distances between 64-bit hashes."""
    values = np.asarray([int(h) for h in hashes], dtype=np.uint64)
    return _popcount(values[:, None] ^ values[None, :])


def near_duplicate_groups(hashes: list[int], max_distance: int = 4, block: int = 512) -> list[int]:
    """A group id per hash: hashes within `max_distance` bits are in one group, transitively.

    The group id is the smallest hash value (as an int) among the group's members, so it depends
    only on the group's content, not on the order of the input or on file names; distinct groups
    always get distinct ids (equal hashes are at distance 0, hence in the same group). Distances
    are computed in row blocks with numpy (about 6M pairs for 2,500 images), then merged by
    union-find.
    """
    values = np.asarray([int(h) for h in hashes], dtype=np.uint64)
    n = len(values)
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for start in range(0, n, block):
        rows = values[start : start + block]
        close = _popcount(rows[:, None] ^ values[None, :]) <= max_distance
        for i, j in zip(*np.nonzero(close), strict=True):
            a, b = find(start + int(i)), find(int(j))
            if a != b:
                parent[max(a, b)] = min(a, b)

    smallest: dict[int, int] = {}
    for i in range(n):
        root = find(i)
        smallest[root] = min(smallest.get(root, int(values[i])), int(values[i]))
    return [smallest[find(i)] for i in range(n)]
