"""Training augmentation on the device (a GPU): batches cross as the cached uint8 images, each with its seed, and
the augmentation's pixel work runs there, so CPU loader workers only read and collate.

Each image draws its random parameters from the CPU generator seeded with its own seed, exactly as on the CPU path
(dataset.ImageDataset): the same seed gives the same crop, flip and erasing, so a resumed run replays an
uninterrupted one. Parameters are drawn per image (torchvision.transforms.v2 given a whole batch would crop every
image alike); the ops then run on the device tensors.
"""

from __future__ import annotations

import torch

from image_transfer.data.batch import Batch, collate
from image_transfer.data.dataset import transform_seeded


def padded_collate(samples: list[dict]) -> Batch:
    """Samples of cached images with their seeds as one Batch: images of different sizes padded to the largest of
    the batch, each true (height, width) in `sizes` (the device crops the padding off before augmenting); the other
    fields collated as the CPU path's (targets: class indices (N,), or multi-hot rows (N, C))."""
    images = [sample["images"] for sample in samples]
    height, width = max(i.shape[1] for i in images), max(i.shape[2] for i in images)
    padded = torch.zeros(len(images), images[0].shape[0], height, width, dtype=torch.uint8)
    for slot, image in zip(padded, images):
        slot[:, : image.shape[1], : image.shape[2]] = image
    rest = collate([{name: value for name, value in sample.items() if name != "images"} for sample in samples])
    return rest.replace(images=padded, sizes=torch.tensor([i.shape[1:] for i in images]))


class DeviceAugment:
    def __init__(self, transform):
        self.transform = transform

    def __call__(self, batch: Batch) -> Batch:
        """The batch as the CPU path gives it: its images augmented from their seeds, padding, seeds and sizes gone."""
        unpadded = (image[:, :height, :width] for image, (height, width) in zip(batch.images, batch.sizes.tolist()))
        augmented = torch.stack(transform_seeded(self.transform, unpadded, batch.seeds.tolist()))
        return batch.replace(images=augmented, seeds=None, sizes=None)
