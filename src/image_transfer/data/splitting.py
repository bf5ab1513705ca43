"""How a data module's labelled table is split into training and validation images: a given validation folder, a
saved split (eval), one of K folds, or a stratified fraction; always by content groups (identical bytes, or also
near-duplicate pixels), so neither file names nor row order influence it. Refuses splits that cannot mean anything.
"""

from __future__ import annotations

import csv
from pathlib import Path

from image_transfer.data.near_duplicates import near_duplicate_groups, perceptual_hash
from image_transfer.data.split import content_hash, stratified_group_folds, stratified_group_split
from image_transfer.data.table import DataError, ImageTable


class Splitter:
    def __init__(
        self,
        val_fraction: float,
        split_seed: int,
        folds: int | None,
        fold: int | None,
        near_duplicate_distance: int | None,
        subset: int | None,
    ):
        self.val_fraction, self.split_seed, self.folds, self.fold = val_fraction, split_seed, folds, fold
        self.distance, self.subset = near_duplicate_distance, subset
        self._hashes: dict[tuple[str, Path], object] = {}  # (kind, path) -> content or perceptual hash

    def _cached_hashes(self, table: ImageTable, hash_fn) -> list:
        """Each file is read once per kind of hash, however many subsets and splits ask."""
        for path in table.paths:
            if (hash_fn.__name__, path) not in self._hashes:
                self._hashes[hash_fn.__name__, path] = hash_fn(path)
        return [self._hashes[hash_fn.__name__, p] for p in table.paths]

    def content_hashes(self, table: ImageTable) -> list[str]:
        return self._cached_hashes(table, content_hash)

    def groups(self, table: ImageTable) -> list[str]:
        """What must stay on one side of a split: identical bytes, or also near-duplicate pixels."""
        if self.distance is None:
            return self.content_hashes(table)
        return [str(g) for g in near_duplicate_groups(self._cached_hashes(table, perceptual_hash), self.distance)]

    def reduced(self, table: ImageTable) -> ImageTable:
        """data.subset: a stratified subset of whole content groups."""
        if not self.subset or self.subset >= len(table):
            return table
        _, keep = stratified_group_split(table.labels, self.groups(table), self.subset / len(table), self.split_seed)
        return table.subset(keep)

    def folds_of(self, table: ImageTable) -> list[int]:
        """The fold (0..data.folds-1) of each of the table's images: whole content groups, stratified."""
        return stratified_group_folds(table.labels, self.groups(table), self.folds, self.split_seed)

    def split(self, table: ImageTable, given_val: frozenset[str] | None, saved: set[str] | None):
        """(training rows, validation rows): the saved split's names, the given validation folder's, fold
        data.fold's, none (val_fraction=0) or a stratified fraction."""
        if self.folds and given_val is not None:
            raise DataError(
                f"data.folds={self.folds}: the data has a validation folder, which is the validation set; "
                "cross-validation folds one pool of images. Move its images into the training folder, or drop "
                "data.folds."
            )
        names = saved if saved is not None else given_val
        if names is not None:
            return [i for i, n in enumerate(table.names) if n not in names], [
                i for i, n in enumerate(table.names) if n in names
            ]
        if self.folds:
            fold_of = self.folds_of(table)
            return [i for i, f in enumerate(fold_of) if f != self.fold], [
                i for i, f in enumerate(fold_of) if f == self.fold
            ]
        if self.val_fraction == 0:
            return list(range(len(table))), []
        return stratified_group_split(table.labels, self.groups(table), self.val_fraction, self.split_seed)

    def _subset_note(self) -> str:
        return f" of the data.subset={self.subset}" if self.subset else ""

    def check_sides(
        self, table: ImageTable, sides: dict[str, ImageTable], class_names: list[str], what: str, fix: str
    ) -> None:
        """Refuse a split that leaves a side ({"training": its rows, ...}) without some class."""
        for side, rows in sides.items():
            present = {c for classes in rows.classes() for c in classes}
            absent = [c for i, c in enumerate(class_names) if i not in present]
            if absent:
                raise DataError(
                    f"{what} leaves the {side} images without class {', '.join(map(repr, absent))} "
                    f"({class_counts(table, class_names)}{self._subset_note()}): {fix}."
                )

    def check_folds(self, table: ImageTable, class_names: list[str]) -> None:
        """Every fold must validate and train on every class: a class needs as many distinct images as folds."""
        if self.fold is not None and not 0 <= self.fold < self.folds:
            raise DataError(f"data.fold={self.fold}: data.folds={self.folds} has folds 0..{self.folds - 1}.")
        fold_of, classes, groups = self.folds_of(table), table.classes(), self.groups(table)
        for index, name in enumerate(class_names):
            in_fold = {f for cs, f in zip(classes, fold_of) if index in cs}
            missing = self.folds - len(in_fold)
            if not missing:
                continue
            distinct = len({g for g, cs in zip(groups, classes) if index in cs})
            if distinct < self.folds:
                raise DataError(
                    f"data.folds={self.folds}: class {name!r} has only {distinct} distinct image(s)"
                    f"{self._subset_note()} (copies count once), so {missing} fold(s) would validate without it. "
                    f"Use data.folds={distinct} or fewer, or more images."
                )
            # Multi-label folds are stratified by each image's rarest class: a class that comes with rarer ones
            # follows them, and may miss a fold however many images it has.
            raise DataError(
                f"data.folds={self.folds}: class {name!r} has {distinct} distinct image(s){self._subset_note()}, but "
                "the folds, stratified by one class per image (a multi-label image's rarest), leave "
                f"{missing} fold(s) without it. Use fewer folds, or more images of {name!r}."
            )


def class_counts(table: ImageTable, class_names: list[str]) -> str:
    """Images per class (a multi-label image counts for each of its classes)."""
    classes = table.classes()
    return ", ".join(f"{sum(i in cs for cs in classes)} {name}" for i, name in enumerate(class_names))


def read_split_names(path: Path, name_column: str) -> set[str]:
    """The image names of a saved split (a run's val_split.csv)."""
    if not path.is_file():
        raise DataError(
            f"split file {path} does not exist (eval reads the val_split.csv beside a run's checkpoints/): "
            "set data.val_split_csv=FILE, or data.test_csv=FILE to evaluate on a labelled csv."
        )
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if name_column not in (reader.fieldnames or []):
            raise DataError(
                f"split file {path} has no {name_column!r} column (data.name_column); its header is "
                f"{reader.fieldnames}."
            )
        return {row[name_column] for row in reader}
