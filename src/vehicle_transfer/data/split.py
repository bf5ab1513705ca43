"""Stratified, seeded splits by image content.

Images are grouped by a hash of their bytes, so byte-identical copies always land on the same side,
and the shuffle order comes from those hashes and the seed: file names and their order (which
correlate with the label in the emergency-vehicle data) never influence a split.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np


def content_hash(path: Path) -> str:
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()


def stratified_group_split(
    labels: list[int], groups: list[str], fraction: float, seed: int
) -> tuple[list[int], list[int]]:
    """Indices (rest, held_out): about `fraction` of each class held out, whole groups at a time."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"split fraction must be between 0 and 1, got {fraction}")
    members: dict[str, list[int]] = defaultdict(list)
    for index, group in enumerate(groups):
        members[group].append(index)
    # A group's class is its most common label (copies with conflicting labels are rare).
    by_class: dict[int, list[str]] = defaultdict(list)
    for group in sorted(members):
        votes = Counter(labels[i] for i in members[group]).most_common()
        by_class[min(lbl for lbl, n in votes if n == votes[0][1])].append(group)

    rng = np.random.default_rng(seed)
    held_out: list[int] = []
    for label in sorted(by_class):
        class_groups = [by_class[label][i] for i in rng.permutation(len(by_class[label]))]
        target = round(fraction * sum(len(members[g]) for g in class_groups))
        taken = 0
        for group in class_groups:
            if taken >= target:
                break
            held_out.extend(members[group])
            taken += len(members[group])
    held = set(held_out)
    return [i for i in range(len(labels)) if i not in held], sorted(held)
