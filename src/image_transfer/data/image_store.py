"""Where decoded images live: a cache on disk shared between runs (the default), or this process's memory.

The disk cache holds every image of a table decoded once (decode.py) at the configured size: one file of raw uint8
pixels, each image height x width x channels as decoders give them (`np.memmap(pixels.u8, np.uint8)` maps it), and
an index of (offset, channels, height, width). Images are served as (C, H, W) views of those bytes: channels-last
strides, on which torchvision's resize runs about a fifth faster than on planar copies. It is a
`disk_cache` entry keyed by the image names, the files' contents (the SHA-1 the split uses) and the size, so
epochs, runs, folds, sweep jobs and DDP ranks reuse it and any change of the three builds a new one. Images are
read with pread: their pages stay in the OS page cache, shared by every process, instead of growing each process's
resident memory with the data set.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from image_transfer.data.decode import DECODER_VERSION, decode_all, decode_each, stored_side
from image_transfer.data.disk_cache import cached_entry, digest
from image_transfer.files import write_json

log = logging.getLogger(__name__)

PIXELS, INDEX, ERRORS = "pixels.u8", "index.npy", "errors.json"


class DiskImages:
    """The images of a cache entry by position, as uint8 tensors (C, H, W); positions that failed to decode hold
    nothing (see `load_images`)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.index = np.load(folder / INDEX)  # (N, 4) int64: offset, channels, height, width; offset -1: failed
        self._file = None  # opened lazily in each process that reads (DataLoader workers included)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, position: int) -> torch.Tensor:
        offset, channels, height, width = self.index[position].tolist()
        if offset < 0:
            raise IndexError(f"image {position} of {self.folder} could not be decoded")
        data = bytearray(os.pread(self._fileno(), channels * height * width, offset))
        return torch.frombuffer(data, dtype=torch.uint8).view(height, width, channels).permute(2, 0, 1)

    def _fileno(self) -> int:
        if self._file is None or self._file[0] != os.getpid():
            self._file = (os.getpid(), open(self.folder / PIXELS, "rb", buffering=0))  # noqa: SIM115 (kept open)
        return self._file[1].fileno()

    def __getstate__(self) -> dict:  # spawned workers open their own file
        return self.__dict__ | {"_file": None}


def load_images(
    paths: list[Path], names: list[str], hashes: list[str] | None, image_size: int, cache_root: Path | None
) -> tuple[Sequence[torch.Tensor | None], dict[int, str]]:
    """The decoded images of a table, by position, and {position: "path: reason"} of those that failed to decode.

    With `cache_root` the images come from (or first go to) the disk cache, keyed by `names`, their content
    `hashes` and the size; without it, or without room for it, they are decoded into memory (None where decoding
    failed).
    """
    if cache_root is None:
        return decode_all(paths, image_size)
    key = {
        "images": digest(list(zip(names, hashes))),
        "count": len(names),
        "max_side": stored_side(image_size),
        "decoder": DECODER_VERSION,
    }
    folder = cached_entry(
        cache_root, "images", key, lambda building: _build(building, paths, image_size), off="data.image_cache=false"
    )
    if folder is None:  # no room on its file system (warned)
        return decode_all(paths, image_size)
    reasons = json.loads((folder / ERRORS).read_text(encoding="utf-8"))
    log.info("%d decoded images from the cache %s", len(names) - len(reasons), folder)
    return DiskImages(folder), {int(i): f"{paths[int(i)]}: {reason}" for i, reason in reasons.items()}


def _build(folder: Path, paths: list[Path], image_size: int) -> None:
    """Decode every image into folder, a chunk at a time (memory stays bounded), appending the pixels in order."""
    start = time.perf_counter()
    index = np.full((len(paths), 4), -1, dtype=np.int64)
    reasons: dict[int, str] = {}  # without the path: the same data elsewhere (a linked copy) has the same key
    offset = 0
    with open(folder / PIXELS, "wb") as pixels:
        for position, result in enumerate(decode_each(paths, image_size)):
            if isinstance(result, str):
                reasons[position] = result.removeprefix(f"{paths[position]}: ")
                continue
            pixels.write(result.permute(1, 2, 0).contiguous().numpy().data)  # a view already: decode gives HWC
            index[position] = (offset, *result.shape)
            offset += result.numel()
        pixels.flush()
        os.fsync(pixels.fileno())
    np.save(folder / INDEX, index)
    write_json(folder / ERRORS, {str(k): v for k, v in reasons.items()})
    log.info(
        "decoded %d images into the cache (%.0f MB) in %.1f s",
        len(paths),
        offset / 1e6,
        time.perf_counter() - start,
    )
