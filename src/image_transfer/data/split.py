"""Stratified, seeded splits by image content.

Images are grouped by a hash of their bytes, so byte-identical copies always land on the same side,
and the shuffle order comes from those hashes and the seed: file names and their order (which
correlate with the label in the emergency-vehicle data) never influence a split.

Written here, not scikit-learn's StratifiedGroupKFold: the held-out split has no stratified group counterpart there
(GroupShuffleSplit ignores classes), and another algorithm would change every recorded split and published figure.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from image_transfer.data.table import DataError


def content_hash(path: Path) -> str:
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()


def _groups_by_class(labels: list[int], groups: list[str], seed: int) -> tuple[dict[str, list[int]], list[list[str]]]:
    """Members of each group, and per class its groups in a seeded random order.

    A group's class is its most common label (copies with conflicting labels are rare)."""
    members: dict[str, list[int]] = defaultdict(list)
    for index, group in enumerate(groups):
        members[group].append(index)
    by_class: dict[int, list[str]] = defaultdict(list)
    for group in sorted(members):
        votes = Counter(labels[i] for i in members[group]).most_common()
        by_class[min(lbl for lbl, n in votes if n == votes[0][1])].append(group)
    rng = np.random.default_rng(seed)
    shuffled = [[by_class[label][i] for i in rng.permutation(len(by_class[label]))] for label in sorted(by_class)]
    return members, shuffled


def stratified_group_split(
    labels: list[int], groups: list[str], fraction: float, seed: int
) -> tuple[list[int], list[int]]:
    """Indices (rest, held_out): about `fraction` of each class held out, whole groups at a time."""
    if not 0.0 < fraction < 1.0:
        raise DataError(f"split fraction must be between 0 and 1, got {fraction}")
    members, class_groups = _groups_by_class(labels, groups, seed)
    held_out: list[int] = []
    for shuffled in class_groups:
        target = round(fraction * sum(len(members[g]) for g in shuffled))
        taken = 0
        for group in shuffled:
            if taken >= target:
                break
            held_out.extend(members[group])
            taken += len(members[group])
    held = set(held_out)
    return [i for i in range(len(labels)) if i not in held], sorted(held)


def stratified_group_folds(labels: list[int], groups: list[str], folds: int, seed: int) -> list[int]:
    """The fold (0..folds-1) of every index: each class spread evenly over the folds, whole groups at a time."""
    if folds < 2 or folds > len(labels):
        raise DataError(f"data.folds={folds}: use 2..{len(labels)} folds (null: a single validation split)")
    members, class_groups = _groups_by_class(labels, groups, seed)
    fold_of = [0] * len(labels)
    for shuffled in class_groups:
        sizes = [0] * folds
        for group in shuffled:  # each group joins the fold that has the fewest images of this class so far
            fold = sizes.index(min(sizes))
            sizes[fold] += len(members[group])
            for index in members[group]:
                fold_of[index] = fold
    return fold_of


def require_every_class(labels: list[int], class_names: list[str], source: str) -> None:
    """A class without images makes a head that can never be right about it, and metrics (AUROC, F1) that
    mean nothing: refuse it, naming the classes present."""
    counts = Counter(labels)
    absent = [name for i, name in enumerate(class_names) if not counts[i]]
    if absent:
        present = ", ".join(f"{name} ({counts[i]})" for i, name in enumerate(class_names) if counts[i]) or "none"
        raise DataError(
            f"{source}: data.class_names lists {list(class_names)} but no image is labelled "
            f"{', '.join(map(repr, absent))} (images per class: {present}). Set data.class_names to the classes of "
            "the csv, in label order (two or more), or add images of the missing class."
        )
