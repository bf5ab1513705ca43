"""What every data loader of the package gives the model: a Batch, its parts named.

Which fields are set says what the batch is, never the tensors' shapes:
  images (uint8)                  image batches: training (augmented), validation, test, predict
  images, seeds, sizes            the device path before augmentation (device_augment.py): cached images, padded
  features                        cached backbone features in training (one view per image: the image or its mirror)
  features, images                cached features in evaluation (every view), with the images they were computed from
and `indices` always; `targets` wherever the images are labelled (not predict).

Datasets give each sample as a dict keyed by these field names; `collate` stacks them into a Batch. A mutable dataclass:
Lightning moves it between devices (and DDP scatters it) with apply_to_collection, which refuses frozen ones; the
DataLoader pins it through its pin_memory().
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from lightning_utilities.core.apply_func import apply_to_collection
from torch.utils.data import default_collate


@dataclass(eq=False)  # no generated __eq__: comparing tensors has no single truth value
class Batch:
    """One batch of samples, its parts named; the fields a loader leaves out are None (see above)."""

    indices: torch.Tensor
    """(N,) int64: each sample's position in its dataset (its row in the split's table); N is the batch size."""
    targets: torch.Tensor | None = None
    """Class indices (N,) int64, or multi-hot rows (N, C) float32 for multi-label data; None for unlabelled images."""
    images: torch.Tensor | None = None
    """uint8 (N, 3, H, W): what the model sees; beside `features`, the evaluation images they stand for (pictures)."""
    features: torch.Tensor | None = None
    """Cached backbone features, float32: (N, F) in training (one view); (N, views, F) in evaluation."""
    seeds: torch.Tensor | None = None
    """(N,) int64: each image's augmentation seed, while augmentation is still to run on the device."""
    sizes: torch.Tensor | None = None
    """(N, 2) int64: each padded image's true (height, width), while augmentation is still to run on the device."""

    def pin_memory(self) -> Batch:
        """The DataLoader's pin_memory=True calls this for types it does not know."""
        return apply_to_collection(self, torch.Tensor, torch.Tensor.pin_memory)

    def replace(self, **changes) -> Batch:
        return dataclasses.replace(self, **changes)


def collate(samples: list[dict]) -> Batch:
    """Samples (dicts keyed by Batch's field names) stacked into a Batch, each field as default_collate stacks it."""
    return Batch(**default_collate(samples))
