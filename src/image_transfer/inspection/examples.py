"""What one validation (or test) epoch leaves for the pictures: every probability and label (small), and a bounded
number of images: the most confidently wrong ones, and the most confidently right ones of each class (multi-label:
for each class, the images whose yes/no for it is most confidently wrong)."""

from __future__ import annotations

import math

import torch


class Kept:
    """At most `capacity` images with their label and probabilities: those of the highest scores offered, highest
    first. Only images that stay are copied (one at a time: concatenating batches of 224 px images cost more than
    the rest of the pictures together)."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.items: list[tuple[float, torch.Tensor, int, torch.Tensor]] = []  # (score, image, label, probs)

    def offer(self, images: torch.Tensor, where: torch.Tensor, labels: torch.Tensor, probs, scores) -> None:
        """Offers images[where] (a batch on any device; the rest on the CPU)."""
        if not self.capacity or not len(where):
            return
        top = where[scores[where].topk(min(self.capacity, len(where))).indices].tolist()
        floor = self.items[-1][0] if len(self.items) == self.capacity else -math.inf
        new = [(float(scores[i]), images[i].cpu().clone(), int(labels[i]), probs[i]) for i in top if scores[i] > floor]
        self.items = sorted(self.items + new, key=lambda item: -item[0])[: self.capacity]

    def examples(self) -> list[tuple[torch.Tensor, int, torch.Tensor]]:
        """(image, label, probs), highest score first."""
        return [(image, label, probs) for _, image, label, probs in self.items]


class EpochExamples:
    def __init__(self, num_classes: int, wrong: int, right_per_class: int):
        self.num_classes = num_classes
        self.wrong = Kept(wrong)
        self.right = [Kept(right_per_class) for _ in range(num_classes)]
        self._probs: list[torch.Tensor] = []
        self._labels: list[torch.Tensor] = []

    def add(self, images: torch.Tensor, labels: torch.Tensor, probs: torch.Tensor) -> None:
        probs, labels = probs.detach().float().cpu(), labels.cpu()
        self._probs.append(probs)
        self._labels.append(labels)
        confidence, predicted = probs.max(dim=1)
        wrong = predicted != labels
        groups = [(self.wrong, wrong)] + [(kept, ~wrong & (labels == label)) for label, kept in enumerate(self.right)]
        for kept, chosen in groups:  # each image goes to one group
            kept.offer(images, chosen.nonzero().squeeze(1), labels, probs, confidence)

    @property
    def probs(self) -> torch.Tensor:
        return torch.cat(self._probs) if self._probs else torch.empty(0, self.num_classes)

    @property
    def labels(self) -> torch.Tensor:
        return torch.cat(self._labels) if self._labels else torch.empty(0, dtype=torch.long)

    def right_ones(self, count: int) -> list[tuple[torch.Tensor, int, torch.Tensor]]:
        """Up to `count` (image, label, probs) right ones, the classes taking turns."""
        ranked = [kept.examples() for kept in self.right]
        turns = [kept[i] for i in range(max(map(len, ranked), default=0)) for kept in ranked if i < len(kept)]
        return turns[:count]

    def wrong_ones(self, count: int) -> list[tuple[torch.Tensor, int, torch.Tensor]]:
        return self.wrong.examples()[:count]


class LabelSetExamples:
    """A multi-label epoch: every probability and multi-hot target, and per class the `wrong` images whose decision
    for that class (predicted, N x C) was wrong with the largest error |probability - truth|."""

    def __init__(self, num_classes: int, wrong: int):
        self.num_classes = num_classes
        self.wrong = [Kept(wrong) for _ in range(num_classes)]
        self._probs: list[torch.Tensor] = []
        self._targets: list[torch.Tensor] = []

    def add(self, images: torch.Tensor, targets: torch.Tensor, probs: torch.Tensor, predicted: torch.Tensor) -> None:
        probs, targets, predicted = probs.detach().float().cpu(), targets.cpu().float(), predicted.cpu().bool()
        self._probs.append(probs)
        self._targets.append(targets)
        error, wrong = (probs - targets).abs(), predicted != targets.bool()
        for label, kept in enumerate(self.wrong):
            where = wrong[:, label].nonzero().squeeze(1)
            kept.offer(images, where, targets[:, label].long(), probs, error[:, label])  # kept as: its truth

    @property
    def probs(self) -> torch.Tensor:
        return torch.cat(self._probs) if self._probs else torch.empty(0, self.num_classes)

    @property
    def targets(self) -> torch.Tensor:
        return torch.cat(self._targets) if self._targets else torch.empty(0, self.num_classes)

    def wrong_ones(self, count: int) -> list[tuple[torch.Tensor, int, bool, torch.Tensor]]:
        """Up to `count` (image, the class it was wrong about, whether the image has that class, probs), the classes
        taking turns."""
        ranked = [
            [(image, c, bool(truth), probs) for image, truth, probs in kept.examples()]
            for c, kept in enumerate(self.wrong)
        ]
        turns = [kept[i] for i in range(max(map(len, ranked), default=0)) for kept in ranked if i < len(kept)]
        return turns[:count]
