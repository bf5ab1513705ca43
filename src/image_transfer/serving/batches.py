"""The images of one request or of several concurrent ones, as one tensor the model predicts at once.

A request holds one image (a raw body) or several (multipart files); LitServe batches requests, not images. So each
request becomes a Batch of its own (decode_request), batches of concurrent requests are concatenated into one
(LitAPI.batch), predicted together, and split back into one Batch per request (LitAPI.unbatch), each with its own
images' probabilities. A request whose images could not be decoded travels as Rejected, with no images: it never
reaches the model and never fails the requests batched with it.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class Accepted(NamedTuple):
    count: int  # how many of the batch's images are this request's
    listed: bool  # answered with a list (multipart files), else with one object (an image as the body)


class Rejected(NamedTuple):
    status: int  # the HTTP status it is answered with
    reason: str


class Batch(NamedTuple):
    images: torch.Tensor  # (N, 3, S, S) uint8: every accepted request's images, request after request
    requests: tuple[Accepted | Rejected, ...]
    probabilities: torch.Tensor | None = None  # (N, classes), once predicted

    @classmethod
    def accepted(cls, images: list[torch.Tensor], listed: bool) -> Batch:
        return cls(torch.stack(images), (Accepted(len(images), listed),))

    @classmethod
    def rejected(cls, image_size: int, status: int, reason: str) -> Batch:
        return cls(torch.empty(0, 3, image_size, image_size, dtype=torch.uint8), (Rejected(status, reason),))

    @classmethod
    def concat(cls, batches: list[Batch]) -> Batch:
        return cls(torch.cat([b.images for b in batches]), tuple(r for b in batches for r in b.requests))

    def split(self) -> list[Batch]:
        """One batch per request, with its images and their probabilities."""
        counts = [r.count if isinstance(r, Accepted) else 0 for r in self.requests]
        images, probabilities = self.images.split(counts), self.probabilities.split(counts)
        return [Batch(i, (r,), p) for r, i, p in zip(self.requests, images, probabilities)]
