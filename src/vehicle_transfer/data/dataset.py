"""Decoding images (any format and mode) into a uint8 cache, and the Dataset over it."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset, Sampler
from torchvision.transforms.v2 import functional as F

# Cached images keep at most this multiple of the training size on their shorter side: enough room
# for crops, bounded memory for data sets of large photos.
CACHE_SCALE = 1.25
HIGH_BIT_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


def decode_image(path: Path, max_short_side: int) -> torch.Tensor:
    """An image file as a uint8 RGB tensor (C, H, W).

    Grey, palette, RGBA (alpha dropped), CMYK and 16-bit images become 8-bit RGB; large images are
    downscaled (JPEGs already while decoding, via draft mode) to `max_short_side`.
    """
    with Image.open(path) as image:
        image.draft("RGB", (max_short_side, max_short_side))  # JPEG only: decode at a reduced scale
        if image.mode in HIGH_BIT_DEPTH_MODES:
            # PIL's convert() would clip 16-bit values at 255 (a white image): rescale instead.
            values = np.asarray(image, dtype=np.float32)
            image = Image.fromarray(np.clip(values / 257.0 if values.max() > 255 else values, 0, 255).astype(np.uint8))
        image = image.convert("RGB")
        if min(image.size) > max_short_side:
            scale = max_short_side / min(image.size)
            image = image.resize((round(image.width * scale), round(image.height * scale)), Image.BICUBIC)
        return F.pil_to_tensor(image)


def decode_all(paths: list[Path], image_size: int, threads: int = 4) -> tuple[list[torch.Tensor | None], list[str]]:
    """Decode every image once (PIL releases the GIL, so threads help).

    Returns the images (None where decoding failed) and one "path: reason" line per failure.
    """
    max_side = round(image_size * CACHE_SCALE)

    def load(path: Path):
        try:
            return decode_image(path, max_side)
        except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as error:
            reason = "empty file" if path.stat().st_size == 0 else f"{type(error).__name__}: {error}"
            return f"{path}: {reason}"

    with ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(load, paths))
    bad = [r for r in results if isinstance(r, str)]
    return [None if isinstance(r, str) else r for r in results], bad


class CachedImageDataset(Dataset):
    """(image, label) pairs from decoded uint8 tensors, with a transform applied per access.

    Indexed by `index`, or by `(index, seed)` from SeededEpochSampler: the random transform then
    draws from its own generator state, independent of when or in which process it runs.
    """

    def __init__(self, images: list[torch.Tensor], labels: list[int], transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: int | tuple[int, int]):
        if isinstance(key, int):
            return self.transform(self.images[key]), self.labels[key]
        index, seed = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.transform(self.images[index]), self.labels[index]


class SeededEpochSampler(Sampler):
    """Shuffled order and per-sample augmentation seeds drawn from (seed, epoch) alone.

    Lightning creates the first training iterator of a fit, fresh or resumed, before any epoch
    hook runs; deriving everything from the epoch number makes a resumed run replay exactly
    what an uninterrupted one does.
    """

    def __init__(self, size: int, seed: int, epoch: Callable[[], int]):
        self.size, self.seed, self.epoch = size, seed, epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch())
        order = torch.randperm(self.size, generator=generator).tolist()
        seeds = torch.randint(2**62, (self.size,), generator=generator).tolist()
        return iter(zip(order, seeds))
