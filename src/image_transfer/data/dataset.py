"""Datasets over decoded uint8 images (see image_store) or over their cached backbone features, and the sampler
that seeds their randomness."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

import torch
from torch.utils.data import Dataset, DistributedSampler


class ImageDataset(Dataset):
    """Samples (dicts keyed by batch.Batch's fields: `collate` stacks them) of the images at `positions` of a store
    (disk cache or memory), transformed per access: indices, images and targets. A target is a class index, or for
    multi-label data a float multi-hot row (C,) of the `labels` tensor (N, C); labels=None (unlabelled images, to
    predict) gives no targets.

    Keys are indices, or (index, seed) pairs from SeededEpochSampler: the random transform then draws from the CPU
    generator seeded with `seed` alone, whenever and in whichever process it runs. A training set without a
    transform (augmentation on the device: device_augment.py) gives the image as cached, with its seed.
    """

    def __init__(
        self,
        images: Sequence[torch.Tensor],
        positions: list[int],
        labels: list[int] | torch.Tensor | None,
        transform=None,
    ):
        self.images, self.positions, self.labels, self.transform = images, positions, labels, transform

    def __len__(self) -> int:
        return len(self.positions)

    def image(self, index: int) -> torch.Tensor:
        return self.images[self.positions[index]]

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        return self.__getitems__([key])[0]

    def __getitems__(self, keys: list) -> list[dict]:
        """A batch of samples (the DataLoader asks for whole batches): one fork of the generator per batch, not per
        image (see transform_seeded)."""
        if not keys or not isinstance(keys[0], tuple):
            return [self.sample(i, images=self.transform(self.image(i))) for i in keys]
        if self.transform is None:
            return [self.sample(i, images=self.image(i), seeds=seed) for i, seed in keys]
        indices, seeds = zip(*keys)
        images = transform_seeded(self.transform, (self.image(i) for i in indices), seeds)
        return [self.sample(i, images=image) for image, i in zip(images, indices)]

    def sample(self, index: int, **fields) -> dict:
        """The sample at `index` with these fields, its index and (labelled) its target."""
        labelled = {"targets": self.labels[index]} if self.labels is not None else {}
        return {"indices": index, **labelled, **fields}


def transform_seeded(transform, images: Iterable[torch.Tensor], seeds: Iterable[int]) -> list[torch.Tensor]:
    """transform(image) with the CPU generator seeded by that image's seed alone, on the CPU path and the device
    path alike: the same seed gives the same crop, flip and erasing wherever and whenever it runs. One fork of the
    generator for them all (a fork costs 0.1 ms, as much as reading a cached image)."""
    with torch.random.fork_rng(devices=[]):
        transformed = []
        for image, seed in zip(images, seeds, strict=True):
            # The CPU generator only: torch.manual_seed would also reset CUDA's, so dropout on a GPU would repeat
            # its masks at every batch.
            torch.default_generator.manual_seed(seed)
            transformed.append(transform(image))
        return transformed


class FeatureDataset(Dataset):
    """Cached backbone features (V views, F values per image: the image, then its mirror) in place of images.

    Training keys (index, seed) give samples of one view's features (F,): with `flip` the mirror exactly when the
    image path's RandomHorizontalFlip would mirror the image under the same seed, else the image's own. Evaluation
    indices give every view's (V, F), with the image (eval-transformed) for the pictures of misclassified ones.
    Targets as ImageDataset's: class indices, or multi-hot rows.
    """

    def __init__(
        self, features: torch.Tensor, labels: list[int] | torch.Tensor, flip: bool = False, images: ImageDataset = None
    ):
        self.features, self.labels, self.flip, self.images = features, labels, flip, images

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        if isinstance(key, int):
            shown = self.images[key]["images"]
            return {"indices": key, "targets": self.labels[key], "features": self.features[key], "images": shown}
        index, seed = key
        # RandomHorizontalFlip mirrors when its first draw, torch.rand(1), is below 0.5.
        mirrored = self.flip and bool(torch.rand(1, generator=torch.Generator().manual_seed(seed)) < 0.5)
        return {"indices": index, "targets": self.labels[index], "features": self.features[index, int(mirrored)]}


class SeededEpochSampler(DistributedSampler):
    """Shuffled order and per-sample augmentation seeds drawn from (seed, epoch) alone, this rank's share of them.

    Lightning creates the first training iterator of a fit, fresh or resumed, before any epoch
    hook runs; deriving everything from the epoch number makes a resumed run replay exactly
    what an uninterrupted one does. Under DDP every rank draws the same order (the seed is shared) and takes every
    `world`-th sample from its `rank`, padded to equal shares as DistributedSampler pads (ranks must run the same
    number of steps). A DistributedSampler, so Lightning does not wrap it in another.

    With `weights` (one per sample) the order is drawn with replacement in proportion to them instead (a balanced
    sampler: each sample weighted by 1 / its class's count), from the same generator: as exact on resume.
    """

    def __init__(
        self,
        size: int,
        seed: int,
        epoch: Callable[[], int],
        rank: int = 0,
        world: int = 1,
        weights: torch.Tensor | None = None,
    ):
        self.size, self.seed, self.current_epoch, self.rank, self.world = size, seed, epoch, rank, world
        self.weights = weights

    def set_epoch(self, epoch: int) -> None:
        """Lightning calls this on DistributedSamplers; the epoch is read from the trainer instead (see above)."""

    def __len__(self) -> int:
        return math.ceil(self.size / self.world)

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.current_epoch())
        if self.weights is None:
            order = torch.randperm(self.size, generator=generator).tolist()
        else:
            order = torch.multinomial(self.weights, self.size, replacement=True, generator=generator).tolist()
        seeds = torch.randint(2**62, (self.size,), generator=generator).tolist()
        pairs = list(zip(order, seeds, strict=True))
        pairs += pairs[: len(self) * self.world - self.size]  # padding: a few samples twice in this epoch
        return iter(pairs[self.rank :: self.world])


def balancing_weights(labels: Sequence[int]) -> torch.Tensor:
    """Per sample 1 / the count of its label: every label is drawn equally often."""
    labels = torch.as_tensor(labels)
    return 1.0 / torch.bincount(labels)[labels].double()


class ShardSampler(DistributedSampler):
    """Every `world`-th index from `rank`, in order, without padding: across the ranks of a DDP run, each image of
    a validation epoch exactly once (Lightning's own DistributedSampler repeats some to even the shares)."""

    def __init__(self, size: int, rank: int, world: int):
        self.size, self.rank, self.world = size, rank, world

    def __len__(self) -> int:
        return len(range(self.rank, self.size, self.world))

    def __iter__(self):
        return iter(range(self.rank, self.size, self.world))
