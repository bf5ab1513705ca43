"""Backbone features computed once, for a backbone that never trains (finetune=frozen): the head then trains on
them, and an epoch costs milliseconds instead of a backbone pass over every image.

Exact only while the backbone is a fixed function of the image: frozen, in eval mode (BatchNorm statistics fixed,
no dropout), and fed the same images every epoch: the evaluation view and, for a flip augmentation or flip TTA,
its mirror. runs/feature_mode.py decides when that holds. On disk the features are a disk_cache entry keyed like
the images plus the backbone's weights and normalisation, the views and the precision, so folds, sweep jobs and
DDP ranks over the same backbone share them.
"""

from __future__ import annotations

import logging
import time
import zlib
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import numpy as np
import torch

from image_transfer.data.disk_cache import cached_entry, digest
from image_transfer.data.transforms import eval_transform

log = logging.getLogger(__name__)

FEATURES = "features.npy"


def cached_features(
    model,
    images: Sequence[torch.Tensor | None],
    positions: list[int],
    views: int,
    image_size: int,
    batch_size: int,
    cache: tuple[Path, str] | None = None,
    context: tuple[str, AbstractContextManager] = ("32-true", nullcontext()),
) -> torch.Tensor:
    """Features (len(images), views, F) of the images at `positions` (zeros elsewhere), computed by model.embed on
    the model's device under the precision `context` (its name, the context manager).

    `cache` = (cache root, the images' own cache key) keeps them on disk; None computes them in memory.
    """

    def compute() -> torch.Tensor:
        start = time.perf_counter()
        features = embed_views(model, images, positions, views, image_size, batch_size, context[1])
        log.info("backbone features of %d images x %d view(s) in %.1f s", len(positions), views, time.perf_counter() - start)
        full = torch.zeros(len(images), *features.shape[1:])
        full[positions] = features
        return full

    if cache is None:
        return compute()
    root, images_key = cache
    key = {
        "images": images_key,
        "positions": digest(positions),
        "backbone": backbone_key(model),
        "views": views,
        "precision": context[0],
    }
    computed = []

    def build(building: Path) -> None:
        computed.append(compute())
        np.save(building / FEATURES, computed[0].numpy())

    folder = cached_entry(root, "features", key, build, off="data.feature_cache=false")
    if folder is None:  # no room on its file system (warned)
        return computed[0] if computed else compute()
    log.info("backbone features from the cache %s", folder)
    return torch.from_numpy(np.load(folder / FEATURES))


def embed_views(
    model, images, positions: list[int], views: int, image_size: int, batch_size: int, context=None
) -> torch.Tensor:
    """model.embed of the eval-transformed images at `positions` (and, for 2 views, their mirrors), in eval mode:
    (len(positions), views, F) float32 on the CPU. The model's train/eval modes are left as they were."""
    transform = eval_transform(image_size)
    modes = {module: module.training for module in model.modules()}
    model.eval()
    chunks = []
    try:
        with torch.inference_mode(), context or nullcontext():
            for start in range(0, len(positions), batch_size):
                batch = torch.stack([transform(images[p]) for p in positions[start : start + batch_size]])
                batch = batch.to(model.device)
                chunks.append(torch.stack([model.embed(b).float() for b in (batch, batch.flip(-1))[:views]], 1).cpu())
    finally:
        for module, training in modes.items():
            module.training = training
    return torch.cat(chunks)


def backbone_key(model) -> str:
    """What the features depend on besides the images: the backbone's class, normalisation and every weight and
    buffer (a CRC-32 of each tensor's bytes)."""
    tensors = {
        name: zlib.crc32(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().data)
        for name, tensor in model.backbone.state_dict().items()
    }
    return digest(
        {
            "class": type(model.backbone).__name__,
            "mean": model.mean.flatten().tolist(),
            "std": model.std.flatten().tolist(),
            "tensors": tensors,
        }
    )
