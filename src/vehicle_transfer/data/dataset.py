"""The Dataset over decoded uint8 images (see `decode`), and the sampler that seeds its augmentation."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.data import Dataset, Sampler


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
        return iter(zip(order, seeds, strict=True))
