"""Training augmentation on the device (a GPU): batches cross as the cached uint8 images, each with its seed, and
the augmentation's pixel work runs there, so CPU loader workers only read and collate.

Each image draws its random parameters from the CPU generator seeded with its own seed, exactly as on the CPU path
(dataset.ImageDataset): the same seed gives the same crop, flip and erasing, so a resumed run replays an
uninterrupted one. Parameters are drawn per image (torchvision.transforms.v2 given a whole batch would crop every
image alike); the ops then run on the device tensors.
"""

from __future__ import annotations

import torch
from torch.utils.data import default_collate

from image_transfer.data.dataset import transform_seeded


def padded_collate(items: list[tuple[torch.Tensor, int | torch.Tensor, int]]) -> tuple[torch.Tensor, ...]:
    """(images, labels, seeds, sizes): images of different sizes padded to the largest of the batch, each true
    (height, width) in `sizes` (the device crops the padding off before augmenting); labels collated as the CPU
    path's (class indices (N,), or multi-hot targets (N, C))."""
    images, labels, seeds = zip(*items)
    height, width = max(i.shape[1] for i in images), max(i.shape[2] for i in images)
    batch = torch.zeros(len(images), images[0].shape[0], height, width, dtype=torch.uint8)
    for slot, image in zip(batch, images):
        slot[:, : image.shape[1], : image.shape[2]] = image
    sizes = torch.tensor([i.shape[1:] for i in images])
    return batch, default_collate(labels), torch.tensor(seeds, dtype=torch.int64), sizes


class DeviceAugment:
    def __init__(self, transform):
        self.transform = transform

    def __call__(self, batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels, seeds, sizes = batch
        unpadded = (image[:, :height, :width] for image, (height, width) in zip(images, sizes.tolist()))
        return torch.stack(transform_seeded(self.transform, unpadded, seeds.tolist())), labels
