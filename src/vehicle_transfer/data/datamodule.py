"""LightningDataModule for a CSV of image names and labels: validated table -> content split -> cache -> batches."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader

from vehicle_transfer.data.dataset import CachedImageDataset, SeededEpochSampler
from vehicle_transfer.data.decode import decode_all
from vehicle_transfer.data.near_duplicates import near_duplicate_groups, perceptual_hash
from vehicle_transfer.data.split import (
    content_hash,
    require_every_class,
    stratified_group_folds,
    stratified_group_split,
)
from vehicle_transfer.data.table import DataError, ImageTable, find_in_root, folder_table, read_table
from vehicle_transfer.data.transforms import eval_transform, train_transform
from vehicle_transfer.files import write_csv
from vehicle_transfer.paths import from_project_root

log = logging.getLogger(__name__)

VAL_SPLIT_FILE = "val_split.csv"


class CsvImageDataModule(L.LightningDataModule):
    def __init__(
        self,
        root: str,
        csv_file: str = "auto",
        image_dir: str = "auto",
        name_column: str = "image_names",
        label_column: str = "emergency_or_not",
        class_names: tuple[str, ...] = ("non_emergency", "emergency"),
        image_size: int = 224,
        batch_size: int = 32,
        num_workers: int = 0,
        val_fraction: float = 0.1,
        split_seed: int = 0,
        folds: int | None = None,
        fold: int | None = None,
        seed: int | None = None,
        augment: str = "light",
        on_bad_image: str = "error",
        near_duplicate_distance: int | None = None,
        subset: int | None = None,
        val_split_csv: str | None = None,
        test_csv: str | None = None,
        predict_source: str | None = None,
    ):
        super().__init__()
        class_names = list(class_names)  # plain types only: checkpoints are loaded with weights_only=True
        self.save_hyperparameters(logger=False)  # see runs/hparams.py
        self.class_names = class_names
        self.root = from_project_root(root)
        self.seed = seed if seed is not None else int(torch.randint(2**31, ()).item())
        train_transform(image_size, augment)  # fail now, not at the first batch, on an unknown preset
        if on_bad_image not in ("error", "skip"):
            raise DataError(f"data.on_bad_image={on_bad_image!r}: use error (stop with the list) or skip.")
        _check_options(val_fraction, folds, fold, subset, batch_size, len(class_names))
        self.skipped_images: list[str] = []  # "path: reason" of unreadable images left out (on_bad_image=skip)
        self._table: ImageTable | None = None
        self._hashes: dict[tuple[str, Path], object] = {}  # (kind, path) -> content or perceptual hash
        self.train_table = self.val_table = self.test_table = self.predict_table = None
        self._datasets: dict[str, CachedImageDataset] = {}

    # ---- tables -------------------------------------------------------------------------------
    @property
    def table(self) -> ImageTable:
        """The labelled training csv, validated, optionally reduced to a stratified subset."""
        if self._table is None:
            hp = self.hparams
            csv_path = find_in_root(self.root, hp.csv_file, "data.csv_file")
            table = read_table(csv_path, self._image_dir(), hp.name_column, hp.label_column, self.class_names)
            require_every_class(table.labels, self.class_names, str(csv_path))
            if hp.subset and hp.subset < len(table):
                fraction = hp.subset / len(table)
                _, keep = stratified_group_split(table.labels, self._groups(table), fraction, hp.split_seed)
                table = table.subset(keep)
            self._table = table
        return self._table

    @property
    def validates(self) -> bool:
        """False with data.val_fraction=0 (and no folds or saved split): every image trains, none validates."""
        hp = self.hparams
        return bool(hp.val_split_csv or hp.folds or hp.val_fraction > 0)

    def _image_dir(self) -> Path:
        return find_in_root(self.root, self.hparams.image_dir, "data.image_dir")

    def _csv_path(self, path: str, option: str) -> Path:
        """A csv (or folder) given relative to the data root (test.csv) or to the project root, or absolute."""
        for candidate in (self.root / path, from_project_root(path)):
            if candidate.exists():
                return candidate
        raise DataError(
            f"{option}={path}: found neither in data.root ({self.root}) nor from the project root "
            f"({from_project_root(path)}); give an existing csv (or folder), or an absolute path."
        )

    def _cached_hashes(self, table: ImageTable, hash_fn) -> list:
        """Each file is read once per kind of hash, however many subsets and splits ask."""
        for path in table.paths:
            if (hash_fn.__name__, path) not in self._hashes:
                self._hashes[hash_fn.__name__, path] = hash_fn(path)
        return [self._hashes[hash_fn.__name__, p] for p in table.paths]

    def content_hashes(self, table: ImageTable) -> list[str]:
        return self._cached_hashes(table, content_hash)

    def _groups(self, table: ImageTable) -> list[str]:
        """What must stay on one side of a split: identical bytes, or also near-duplicate pixels."""
        distance = self.hparams.near_duplicate_distance
        if distance is None:
            return self.content_hashes(table)
        return [str(g) for g in near_duplicate_groups(self._cached_hashes(table, perceptual_hash), distance)]

    def folds_of(self, table: ImageTable) -> list[int]:
        """The fold (0..data.folds-1) of each of the table's images: whole content groups, stratified."""
        return stratified_group_folds(table.labels, self._groups(table), self.hparams.folds, self.hparams.split_seed)

    def _split(self) -> None:
        if self.train_table is not None:
            return
        table, hp = self.table, self.hparams
        if hp.val_split_csv:
            val_names = set(_read_names(from_project_root(hp.val_split_csv), hp.name_column))
            unknown = val_names - set(table.names)
            if unknown:
                raise DataError(
                    f"{hp.val_split_csv}: {len(unknown)} name(s) not in the training csv, e.g. {sorted(unknown)[:5]}"
                )
            val = [i for i, n in enumerate(table.names) if n in val_names]
            train = [i for i, n in enumerate(table.names) if n not in val_names]
        elif hp.folds:
            fold_of = self.folds_of(table)
            train = [i for i, f in enumerate(fold_of) if f != hp.fold]
            val = [i for i, f in enumerate(fold_of) if f == hp.fold]
        elif hp.val_fraction == 0:
            train, val = list(range(len(table))), []
        else:
            train, val = stratified_group_split(table.labels, self._groups(table), hp.val_fraction, hp.split_seed)
        self.train_table, self.val_table = table.subset(train), table.subset(val)
        log.info("split %d images: %d train, %d validation", len(table), len(train), len(val))

    def _subset_note(self) -> str:
        return f" of the data.subset={self.hparams.subset}" if self.hparams.subset else ""

    def check_split(self) -> None:
        """Refuse, before training, a split that leaves a class out of training or (when validating) validation."""
        self._split()
        hp, labels = self.hparams, self.table.labels
        if hp.val_split_csv:
            what, fix = f"the saved split {hp.val_split_csv}", "use data.test_csv=FILE, a labelled csv, instead"
        elif hp.folds:
            return self.check_folds()
        else:
            what = f"data.val_fraction={hp.val_fraction}"
            fix = "raise data.val_fraction, use more images, or set data.val_fraction=0 to train on every image"
        sides = [("training", self.train_table.labels)] + [("validation", self.val_table.labels)] * self.validates
        for side, side_labels in sides:
            absent = [c for i, c in enumerate(self.class_names) if i not in side_labels]
            if absent:
                raise DataError(
                    f"{what} leaves the {side} images without class {', '.join(map(repr, absent))} "
                    f"({_class_counts(labels, self.class_names)}{self._subset_note()}): {fix}."
                )

    def check_folds(self) -> None:
        """Every fold must validate and train on every class: a class needs as many distinct images as folds."""
        hp = self.hparams
        if hp.fold is not None and not 0 <= hp.fold < hp.folds:
            raise DataError(f"data.fold={hp.fold}: data.folds={hp.folds} has folds 0..{hp.folds - 1}.")
        fold_of, labels, groups = self.folds_of(self.table), self.table.labels, self._groups(self.table)
        for index, name in enumerate(self.class_names):
            missing = sum(index not in {lbl for lbl, f in zip(labels, fold_of) if f == k} for k in range(hp.folds))
            if missing:
                distinct = len({g for g, lbl in zip(groups, labels) if lbl == index})
                raise DataError(
                    f"data.folds={hp.folds}: class {name!r} has only {distinct} distinct image(s){self._subset_note()} "
                    f"(copies count once), so {missing} fold(s) would validate without it. Use data.folds={distinct} "
                    "or fewer, or more images."
                )

    def _labelled_csv(self, path: str) -> ImageTable:
        hp = self.hparams
        csv_path = self._csv_path(path, "data.test_csv")
        return read_table(csv_path, self._image_dir(), hp.name_column, hp.label_column, self.class_names)

    def _predict_source(self) -> ImageTable:
        source = self._csv_path(self.hparams.predict_source, "source")
        if source.is_dir():
            return folder_table(source)
        return read_table(source, self._image_dir(), self.hparams.name_column, None, self.class_names)

    # ---- Lightning hooks ----------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        if stage in ("fit", "validate"):
            self._split()
        if stage == "test":
            if self.hparams.test_csv:
                self.test_table = self._labelled_csv(self.hparams.test_csv)
            else:  # the labelled hold-out we have: the validation split
                self._split()
                self.test_table = self.val_table
                if "val" in self._datasets:
                    self._datasets["test"] = self._datasets["val"]
        if stage == "predict":
            if not self.hparams.predict_source:
                raise DataError("nothing to predict: set data.predict_source to a csv of image names or a folder.")
            self.predict_table = self._predict_source()
        kinds = {"fit": ["train", "val"], "validate": ["val"], "test": ["test"], "predict": ["predict"]}[stage]
        self._decode([k for k in kinds if k not in self._datasets])

    def _decode(self, kinds: list[str]) -> None:
        """Decode the images of these tables now, before any training, and apply data.on_bad_image."""
        size, bad_lines = self.hparams.image_size, []
        decoded = {}
        for kind in kinds:
            table = getattr(self, f"{kind}_table")
            decoded[kind], bad = decode_all(table.paths, size)
            bad_lines += bad
        if bad_lines and self.hparams.on_bad_image == "error":
            raise DataError(
                f"{len(bad_lines)} image(s) could not be read:\n  "
                + "\n  ".join(bad_lines)
                + "\nReplace or remove them, or set data.on_bad_image=skip to train without them."
            )
        for line in bad_lines:
            log.warning("skipping unreadable image %s", line)
        self.skipped_images += bad_lines
        for kind, images in decoded.items():
            table = getattr(self, f"{kind}_table")
            keep = [i for i, image in enumerate(images) if image is not None]
            if len(keep) < len(table):
                table = table.subset(keep)
                setattr(self, f"{kind}_table", table)
            transform = train_transform(size, self.hparams.augment) if kind == "train" else eval_transform(size)
            self._datasets[kind] = CachedImageDataset([images[i] for i in keep], table.labels, transform)

    def _loader(self, kind: str) -> DataLoader:
        dataset, workers = self._datasets[kind], self.hparams.num_workers
        sampler = SeededEpochSampler(len(dataset), self.seed, self._current_epoch) if kind == "train" else None
        return DataLoader(
            dataset,
            batch_size=self.hparams.batch_size,
            sampler=sampler,
            # Its own generator: creating an iterator then never draws from the global RNG (dropout's).
            generator=torch.Generator().manual_seed(self.seed),
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def _current_epoch(self) -> int:
        return self.trainer.current_epoch if self.trainer is not None else 0

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict")

    # ---- outputs ------------------------------------------------------------------------------
    def save_split(self, directory: Path) -> Path:
        """Write the validation image names (and labels) so eval can reuse exactly this split."""
        self._split()
        path = Path(directory) / VAL_SPLIT_FILE
        write_csv(
            path,
            [self.hparams.name_column, self.hparams.label_column],
            zip(self.val_table.names, self.val_table.labels),
        )
        return path


def _check_options(val_fraction, folds, fold, subset, batch_size, classes: int) -> None:
    """Option values that cannot work, named with their fix (the data itself is checked by check_split)."""
    checks = [
        ("data.val_fraction", val_fraction, 0 <= val_fraction < 1, "use a fraction in [0, 1) (0: no validation)"),
        ("data.folds", folds, folds is None or folds >= 2, "use 2 or more folds, or null for one split"),
        ("data.fold", fold, fold is None or bool(folds), "set data.folds=K too (data.fold picks one of K folds)"),
        ("data.subset", subset, subset is None or subset >= 2 * classes, f"use {2 * classes} or more, or null"),
        ("data.batch_size", batch_size, batch_size >= 1, "use 1 or more"),
        ("data.class_names", f"<{classes} class(es)>", classes >= 2, "list two or more classes"),
    ]
    for option, value, ok, fix in checks:
        if not ok:
            raise DataError(f"{option}={value}: {fix}.")


def _class_counts(labels: list[int], class_names: list[str]) -> str:
    return ", ".join(f"{sum(lbl == i for lbl in labels)} {name}" for i, name in enumerate(class_names))


def _read_names(path: Path, name_column: str) -> list[str]:
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
        return [row[name_column] for row in reader]
