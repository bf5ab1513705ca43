"""The LightningDataModule: a labelled table from any layout (data/sources.py) -> content split -> decoded-image cache
-> transforms (on the CPU, or on the GPU) -> batches; or cached backbone features in place of images (frozen).

What the rest of the package calls on it: `class_names`, `table` (every labelled image), `train_table` / `val_table`
/ `test_table` / `predict_table` after setup, `check_split()` (refuse a split that cannot mean anything, before
training), `content_hashes(table)`, `folds_of(table)`, `save_split(dir)`, `serve_features(views, model)`,
`name_column` / `label_column` (the columns prediction files use), `multi_label` / `label_delimiter` (several classes
per image: batches then carry float multi-hot targets (N, C), not class indices (N,)), and Lightning's hooks and
loaders. Every loader gives data/batch.py's Batch."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader

from image_transfer.data.batch import collate as collate_samples
from image_transfer.data.dataset import (
    FeatureDataset,
    ImageDataset,
    SeededEpochSampler,
    ShardSampler,
    balancing_weights,
)
from image_transfer.data.device_augment import DeviceAugment, padded_collate
from image_transfer.data.disk_cache import cache_root
from image_transfer.data.feature_cache import cached_features
from image_transfer.data.image_store import DiskImages, load_images
from image_transfer.data.split import require_every_class
from image_transfer.data.sources import LabelledData, csv_data, csv_location, folder_data, folder_table
from image_transfer.data.splitting import Splitter, read_split_names
from image_transfer.data.table import DataError, ImageTable, read_header, read_table
from image_transfer.data.transforms import eval_transform, train_transform
from image_transfer.files import write_csv
from image_transfer.paths import from_project_root

log = logging.getLogger(__name__)

VAL_SPLIT_FILE = "val_split.csv"


LAYOUTS = ("csv", "folder")
SAMPLERS = ("random", "balanced")


class ImageDataModule(L.LightningDataModule):
    def __init__(
        self,
        root: str,
        layout: str = "csv",
        csv_file: str = "auto",
        image_dir: str = "auto",
        name_column: str | None = None,
        label_column: str | None = None,
        class_names: list[str] | None = None,
        label_delimiter: str | None = None,
        label_columns: list[str] | None = None,
        image_size: int = 224,
        batch_size: int = 32,
        num_workers: int | str = "auto",
        val_fraction: float = 0.1,
        split_seed: int = 0,
        folds: int | None = None,
        fold: int | None = None,
        seed: int | None = None,
        augment: str = "light",
        sampler: str = "random",
        augment_on: str = "auto",
        image_cache: bool = True,
        cache_dir: str | None = None,
        feature_cache: bool | str = "auto",  # read by runs/feature_mode.py, which calls serve_features
        on_bad_image: str = "error",
        near_duplicate_distance: int | None = None,
        subset: int | None = None,
        val_split_csv: str | None = None,
        test_csv: str | None = None,
        predict_source: str | None = None,
    ):
        super().__init__()
        # Plain types only: checkpoints are loaded with weights_only=True.
        class_names = [str(c) for c in class_names] if class_names else None
        label_columns = [str(c) for c in label_columns] if label_columns else None
        self.save_hyperparameters(logger=False)  # see runs/hparams.py
        if layout not in LAYOUTS:
            raise DataError(f"data.layout={layout!r}: use csv (a csv of names and labels) or folder (a folder per class).")
        _check_label_options(layout, label_column, label_delimiter, label_columns)
        self.root = from_project_root(root)
        self.seed = seed if seed is not None else int(torch.randint(2**31, ()).item())
        train_transform(image_size, augment)  # fail now, not at the first batch, on an unknown preset
        if on_bad_image not in ("error", "skip"):
            raise DataError(f"data.on_bad_image={on_bad_image!r}: use error (stop with the list) or skip.")
        _check_options(val_fraction, folds, fold, subset, batch_size, class_names, num_workers, augment_on, sampler)
        self.skipped_images: list[str] = []  # "path: reason" of unreadable images left out (on_bad_image=skip)
        self._data: LabelledData | None = None
        self._table: ImageTable | None = None
        self.splitter = Splitter(val_fraction, split_seed, folds, fold, near_duplicate_distance, subset)
        self.train_table = self.val_table = self.test_table = self.predict_table = None
        self._images: dict[str, tuple] = {}  # source -> (its decoded images by position, {position: failure})
        self._datasets: dict[str, tuple[str, ImageDataset]] = {}  # kind -> (its source, the dataset)
        self._features: dict[str, torch.Tensor] = {}  # source -> cached backbone features by position
        self.feature_views = 0  # 1 or 2: batches carry cached backbone features, not images (serve_features)
        self._embedder = None  # the model whose frozen backbone makes those features
        self._device_augment: DeviceAugment | None = None
        self._seed_shared = False  # under DDP, once rank 0's seed is every rank's

    # ---- tables -------------------------------------------------------------------------------
    @property
    def data(self) -> LabelledData:
        """The labelled images of data.root as its layout gives them, with their class names."""
        if self._data is None:
            hp = self.hparams
            if hp.layout == "folder":
                self._data = folder_data(self.root, hp.class_names)
            else:
                self._data = csv_data(
                    self.root,
                    hp.csv_file,
                    hp.image_dir,
                    hp.name_column,
                    hp.label_column,
                    hp.class_names,
                    hp.label_delimiter,
                    hp.label_columns,
                )
        return self._data

    @property
    def class_names(self) -> list[str]:
        """Given ones need no data read (predicting); the data's are checked against them when it is read."""
        return self.hparams.class_names or self.data.class_names

    @property
    def multi_label(self) -> bool:
        """Several classes per image, or none (data.label_delimiter or data.label_columns); known without reading
        the data (predicting)."""
        return bool(self.hparams.label_delimiter or self.hparams.label_columns)

    @property
    def label_delimiter(self) -> str:
        """What joins an image's classes where a file lists them (val_split.csv, predictions): data.label_delimiter,
        else | (for data.label_columns)."""
        return self.hparams.label_delimiter or "|"

    @property
    def name_column(self) -> str:
        return self.hparams.name_column or self.data.name_column

    @property
    def label_column(self) -> str:
        return self.hparams.label_column or self.data.label_column

    @property
    def table(self) -> ImageTable:
        """Every labelled image (a given val/ folder's too), optionally reduced to a stratified subset."""
        if self._table is None:
            labels = [c for classes in self.data.table.classes() for c in classes]
            require_every_class(labels, self.class_names, str(self.root))
            self._table = self.splitter.reduced(self.data.table)
        return self._table

    @property
    def validates(self) -> bool:
        """False with data.val_fraction=0 (and no folds, saved split or validation folder): none validates."""
        hp = self.hparams
        return bool(hp.val_split_csv or hp.folds or hp.val_fraction > 0 or self.data.val_names is not None)

    def _csv_path(self, path: str, option: str) -> Path:
        """A csv (or folder) given relative to the data root (test.csv) or to the project root, or absolute."""
        for candidate in (self.root / path, from_project_root(path)):
            if candidate.exists():
                return candidate
        raise DataError(
            f"{option}={path}: found neither in data.root ({self.root}) nor from the project root "
            f"({from_project_root(path)}); give an existing csv (or folder), or an absolute path."
        )

    def content_hashes(self, table: ImageTable) -> list[str]:
        return self.splitter.content_hashes(table)

    def folds_of(self, table: ImageTable) -> list[int]:
        return self.splitter.folds_of(table)

    def _split(self) -> None:
        if self.train_table is not None:
            return
        table, hp = self.table, self.hparams
        saved = None
        if hp.val_split_csv:
            saved = read_split_names(from_project_root(hp.val_split_csv), self.name_column)
            unknown = saved - set(table.names)
            if unknown:
                raise DataError(
                    f"{hp.val_split_csv}: {len(unknown)} name(s) not among the images of {self.root}, e.g. "
                    f"{sorted(unknown)[:5]}. To evaluate on other images, set data.test_csv=FILE.csv or FOLDER."
                )
        train, val = self.splitter.split(table, self.data.val_names, saved)
        self.train_table, self.val_table = table.subset(train), table.subset(val)
        log.info("split %d images: %d train, %d validation", len(table), len(train), len(val))

    def check_split(self) -> None:
        """Refuse, before training, a split that leaves a class out of training or (when validating) validation."""
        self._split()
        hp = self.hparams
        if hp.folds:
            return self.check_folds()
        if hp.val_split_csv:
            what, fix = f"the saved split {hp.val_split_csv}", "use data.test_csv=FILE, a labelled csv, instead"
        elif self.data.val_names is not None:
            what, fix = "the training folder", "add images of that class to it"
        else:
            what = f"data.val_fraction={hp.val_fraction}"
            fix = "raise data.val_fraction, use more images, or set data.val_fraction=0 to train on every image"
        sides = {"training": self.train_table}
        if self.validates and self.data.val_names is None:  # a given validation folder may lack a class
            sides["validation"] = self.val_table
        self.splitter.check_sides(self.table, sides, self.class_names, what, fix)

    def check_folds(self) -> None:
        self.splitter.check_folds(self.table, self.class_names)

    def _labelled_csv(self, path: str) -> ImageTable:
        hp = self.hparams
        csv_path = self._csv_path(path, "data.test_csv")
        if csv_path.is_dir():
            if self.multi_label:
                raise DataError(
                    f"data.test_csv={path} is a folder, whose class folders give one class per image; multi-label "
                    "data tests on a csv in the training csv's form (data.label_delimiter / data.label_columns)."
                )
            return folder_data(csv_path, self.class_names).table
        return read_table(
            csv_path,
            self._images_of_csv(csv_path),
            self.name_column,
            self.label_column,
            self.class_names,
            hp.label_delimiter,
            hp.label_columns,
        )

    def _predict_source(self) -> ImageTable:
        source = self._csv_path(self.hparams.predict_source, "source")
        if source.is_dir():
            return folder_table(source)
        name_column = self.hparams.name_column or read_header(source)[0]
        return read_table(source, self._images_of_csv(source), name_column, None, self.class_names)

    def _images_of_csv(self, csv_path: Path) -> Path:
        """Where the images a test or predict csv lists are: the data's image folder (a csv layout), else beside the
        csv (images/, train/ or its own folder)."""
        hp = self.hparams
        if hp.layout == "csv":
            try:
                return csv_location(self.root, hp.csv_file, hp.image_dir)[1]
            except DataError:  # no labelled csv at data.root (predicting with an ONNX file)
                pass
        return csv_location(csv_path, "auto", hp.image_dir)[1]

    @property
    def has_own_test_set(self) -> bool:
        """A test set of its own (data.test_csv, or the layout's test/ folder); else the validation split tests."""
        return bool(self.hparams.test_csv) or self.data.test is not None

    # ---- Lightning hooks ----------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        if stage in ("fit", "validate"):
            self._split()
        if stage == "test":
            if self.hparams.test_csv:
                self.test_table = self._labelled_csv(self.hparams.test_csv)
            elif self.data.test is not None:
                self.test_table = self.data.test
            else:  # the labelled hold-out we have: the validation split
                self._split()
                self.test_table = self.val_table
                if "val" in self._datasets:  # fit decoded it
                    self._datasets["test"] = self._datasets["val"]
        if stage == "predict":
            if not self.hparams.predict_source:
                raise DataError("nothing to predict: set data.predict_source to a csv of image names or a folder.")
            self.predict_table = self._predict_source()
        kinds = {"fit": ["train", "val"], "validate": ["val"], "test": ["test"], "predict": ["predict"]}[stage]
        self._decode([k for k in kinds if k not in self._datasets])

    def _source(self, kind: str) -> tuple[str, ImageTable]:
        """Whose images a kind's rows are. With the disk cache, the whole labelled csv's for training, validation and
        testing on the validation split (one cache entry every split, fold and sweep job reuses); in memory, just
        the kind's own rows (nothing decoded that this run does not use)."""
        if self.hparams.image_cache and (kind in ("train", "val") or (kind == "test" and not self.has_own_test_set)):
            return "labelled", self.table
        return kind, getattr(self, f"{kind}_table")

    def _images_of(self, source: str, table: ImageTable) -> tuple:
        if source not in self._images:
            root = cache_root(self.hparams.cache_dir) if self.hparams.image_cache else None
            hashes = self.content_hashes(table) if root else None
            self._images[source] = load_images(table.paths, table.names, hashes, self.hparams.image_size, root)
        return self._images[source]

    def _decode(self, kinds: list[str]) -> None:
        """Decode (or find in the cache) the images of these tables now, before any training; apply
        data.on_bad_image."""
        rows_of, bad_lines = {}, []
        for kind in kinds:
            source, source_table = self._source(kind)
            _, failed = self._images_of(source, source_table)
            position = {name: i for i, name in enumerate(source_table.names)}
            rows_of[kind] = [position[name] for name in getattr(self, f"{kind}_table").names]
            bad_lines += [failed[row] for row in rows_of[kind] if row in failed]
        if bad_lines and self.hparams.on_bad_image == "error":
            raise DataError(
                f"{len(bad_lines)} image(s) could not be read:\n  "
                + "\n  ".join(bad_lines)
                + "\nReplace or remove them, or set data.on_bad_image=skip to train without them."
            )
        for line in bad_lines:
            log.warning("skipping unreadable image %s", line)
        self.skipped_images += bad_lines
        size = self.hparams.image_size
        for kind, rows in rows_of.items():
            source, _ = self._source(kind)
            images, failed = self._images[source]
            keep = [i for i, row in enumerate(rows) if row not in failed]
            table = getattr(self, f"{kind}_table")
            if len(keep) < len(table):
                table = table.subset(keep)
                setattr(self, f"{kind}_table", table)
            transform = train_transform(size, self.hparams.augment) if kind == "train" else eval_transform(size)
            targets = self._targets(table) if kind != "predict" else None  # predicting: unlabelled images
            self._datasets[kind] = source, ImageDataset(images, [rows[i] for i in keep], targets, transform)

    def _targets(self, table: ImageTable) -> list[int] | torch.Tensor:
        """What batches carry per image: its class index; multi-label, a float multi-hot row (C,) as BCE takes it,
        which the default collate stacks to (N, C)."""
        if not table.multi_label:
            return table.labels
        targets = torch.zeros(len(table), len(self.class_names))
        for row, classes in enumerate(table.label_sets):
            targets[row, list(classes)] = 1.0
        return targets

    def dataset(self, kind: str) -> ImageDataset:
        """The images of a kind (train, val, test, predict) after setup, as the CPU path serves them."""
        return self._datasets[kind][1]

    def serve_features(self, views: int, model) -> None:
        """Serve features of `model`'s frozen backbone (model.embed; views: 1, the image; 2, also its mirror) instead
        of images from now on: only for a backbone that never trains (runs/feature_mode.py decides)."""
        self.feature_views, self._embedder = views, model

    def _feature_dataset(self, kind: str) -> FeatureDataset:
        source, images = self._datasets[kind]
        if source not in self._features:
            stored, failed = self._images[source]
            cache = (cache_root(self.hparams.cache_dir), stored.folder.name) if isinstance(stored, DiskImages) else None
            trainer = self.trainer
            self._features[source] = cached_features(
                self._embedder,
                stored,
                [p for p in range(len(stored)) if p not in failed],
                self.feature_views,
                self.hparams.image_size,
                self.hparams.batch_size,
                cache,
                (str(trainer.precision), trainer.precision_plugin.forward_context()),
            )
        features = self._features[source][images.positions]
        if kind == "train":
            return FeatureDataset(features, images.labels, flip=self.hparams.augment == "flip")
        return FeatureDataset(features, images.labels, images=images)

    def _loader(self, kind: str) -> DataLoader:
        dataset, collate, device = self.dataset(kind), collate_samples, self._device()
        if self.feature_views and kind != "predict":
            dataset = self._feature_dataset(kind)
        elif kind == "train" and self._augments_on_device(device):
            # Untransformed images with their seeds; on_after_batch_transfer augments them on the device.
            self._device_augment = DeviceAugment(dataset.transform)
            dataset, collate = ImageDataset(dataset.images, dataset.positions, dataset.labels), padded_collate
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer is not None else (0, 1)
        if kind == "train":
            if world > 1 and not self._seed_shared:  # one shuffle for all ranks, each taking its share
                self.seed, self._seed_shared = self.trainer.strategy.broadcast(self.seed), True
            # By class; for multi-label data by stratum (the rarest class of the image: ImageTable.labels).
            weights = balancing_weights(self.train_table.labels) if self.hparams.sampler == "balanced" else None
            sampler = SeededEpochSampler(len(dataset), self.seed, self._current_epoch, rank, world, weights)
        else:
            sampler = ShardSampler(len(dataset), rank, world) if world > 1 else None
        workers = self._workers(device)
        return DataLoader(
            dataset,
            batch_size=self.hparams.batch_size,
            sampler=sampler,
            collate_fn=collate,
            # Its own generator: creating an iterator then never draws from the global RNG (dropout's).
            generator=torch.Generator().manual_seed(self.seed),
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=device.type == "cuda",
        )

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        if self._device_augment is not None and self.trainer is not None and self.trainer.training:
            return self._device_augment(batch)
        return batch

    def _device(self) -> torch.device:
        trainer = self.trainer
        return trainer.strategy.root_device if trainer is not None else torch.device("cpu")

    def _augments_on_device(self, device: torch.device) -> bool:
        return self.hparams.augment_on == "device" or (self.hparams.augment_on == "auto" and device.type != "cpu")

    def _workers(self, device: torch.device) -> int:
        """data.num_workers; auto: none on a CPU (the model uses every core) or for cached features (nothing to
        load), else up to 8 per device, within this process's CPUs."""
        workers = self.hparams.num_workers
        if workers != "auto":
            return workers
        if device.type == "cpu" or self.feature_views:
            return 0
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        return max(0, min(8, cpus // max(1, self.trainer.num_devices) - 1))

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
        """Write the validation image names (and classes; multi-label, joined by label_delimiter) so eval can reuse
        exactly this split."""
        self._split()
        path = Path(directory) / VAL_SPLIT_FILE
        if self.multi_label:
            names = self.class_names
            classes = [self.label_delimiter.join(names[c] for c in cs) for cs in self.val_table.label_sets]
        else:
            classes = [self.class_names[label] for label in self.val_table.labels]
        write_csv(path, [self.name_column, self.label_column], zip(self.val_table.names, classes))
        return path


def _check_label_options(layout, label_column, label_delimiter, label_columns) -> None:
    """The multi-label options: one form at a time, for a csv."""
    if label_delimiter is not None and not (isinstance(label_delimiter, str) and label_delimiter):
        raise DataError(
            f"data.label_delimiter={label_delimiter!r}: give the text between a cell's labels, e.g. '|' or ' ' "
            "(null: one label per image)."
        )
    if label_delimiter and label_columns:
        raise DataError(
            "data.label_delimiter and data.label_columns are two forms of multi-label csv (a cell of labels joined "
            "by the delimiter; a 0/1 column per class): set one of them, and the other to null."
        )
    if label_columns and label_column:
        raise DataError(
            f"data.label_columns={label_columns} replace the one label column: set data.label_column=null (it is "
            f"{label_column!r})."
        )
    if label_columns and (len(label_columns) < 2 or len(set(label_columns)) < len(label_columns)):
        raise DataError(f"data.label_columns={label_columns}: list two or more distinct 0/1 columns, one per class.")
    if layout == "folder" and (label_delimiter or label_columns):
        raise DataError(
            "data.label_delimiter / data.label_columns read a multi-label csv; a folder per class (data=image_folder) "
            "gives each image one class. Use data=csv with such a csv, or set them to null."
        )


def _check_options(val_fraction, folds, fold, subset, batch_size, class_names, workers, augment_on, sampler) -> None:
    """Option values that cannot work, named with their fix (the data itself is checked by check_split)."""
    classes = len(class_names) if class_names else 2
    checks = [
        ("data.val_fraction", val_fraction, 0 <= val_fraction < 1, "use a fraction in [0, 1) (0: no validation)"),
        ("data.folds", folds, folds is None or folds >= 2, "use 2 or more folds, or null for one split"),
        ("data.fold", fold, fold is None or bool(folds), "set data.folds=K too (data.fold picks one of K folds)"),
        ("data.subset", subset, subset is None or subset >= 2 * classes, f"use {2 * classes} or more, or null"),
        ("data.batch_size", batch_size, batch_size >= 1, "use 1 or more"),
        ("data.class_names", class_names, classes >= 2, "list two or more classes, or null to infer them"),
        ("data.num_workers", workers, workers == "auto" or (isinstance(workers, int) and workers >= 0), "use auto or 0+"),
        ("data.augment_on", augment_on, augment_on in ("auto", "cpu", "device"), "use auto, cpu or device"),
        ("data.sampler", sampler, sampler in SAMPLERS, f"use {' or '.join(SAMPLERS)}"),
    ]
    for option, value, ok, fix in checks:
        if not ok:
            raise DataError(f"{option}={value}: {fix}.")
