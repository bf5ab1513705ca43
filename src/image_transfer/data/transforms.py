"""Image transforms (torchvision.transforms.v2) on uint8 CHW tensors.

Normalisation is not here: the model owns its backbone's mean/std, so batches stay uint8
(4x less to copy to a GPU) and a checkpoint carries its own preprocessing.
"""

from __future__ import annotations

from torchvision.transforms import v2

from image_transfer.errors import UserError

AUGMENTATIONS = ("none", "flip", "light", "strong")


def eval_transform(image_size: int) -> v2.Transform:
    return v2.Compose([v2.Resize(image_size, antialias=True), v2.CenterCrop(image_size)])


def train_transform(image_size: int, augment: str) -> v2.Transform:
    if augment == "none":
        return eval_transform(image_size)
    if augment == "flip":  # two fixed views per image: what a frozen backbone's feature cache can hold
        return v2.Compose([eval_transform(image_size), v2.RandomHorizontalFlip()])
    if augment == "light":
        return v2.Compose(
            [v2.RandomResizedCrop(image_size, scale=(0.6, 1.0), antialias=True), v2.RandomHorizontalFlip()]
        )
    if augment == "strong":
        return v2.Compose(
            [
                v2.RandomResizedCrop(image_size, scale=(0.3, 1.0), antialias=True),
                v2.RandomHorizontalFlip(),
                v2.TrivialAugmentWide(),
                v2.RandomErasing(p=0.25, value=0),
            ]
        )
    raise UserError(f"data.augment={augment!r} is not one of {', '.join(AUGMENTATIONS)}")
