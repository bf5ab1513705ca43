"""Where a data set's table comes from: a folder per class (optionally inside train/ val/ test/ folders) or a csv of
image names and labels with the user's own columns. Whatever the layout, the result is one `LabelledData`, and
everything after it (content split, caches, transforms, loaders) is the same.

Class names: given (data.class_names), they are checked against the data and fix the label order; inferred, they
are the sorted class-folder names, the sorted label values of a csv whose labels are names, or class_0 .. class_K-1
for index labels; for a multi-label csv, the same over the labels of its cells (data.label_delimiter), or its 0/1
columns' names (data.label_columns).
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from image_transfer.data.table import (
    DataError,
    ImageTable,
    first_items,
    label_number,
    read_header,
    read_rows,
    read_table,
    split_labels,
)

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
TRAIN_DIRS, VAL_DIRS, TEST_DIRS = ("train",), ("val", "valid", "validation"), ("test",)
# A csv layout's "auto": the hackathon-style train.csv, else the folder's only csv; images in images/ or train/,
# else beside the csv.
CSV_DEFAULT, IMAGE_DIR_CANDIDATES = "train.csv", ("images", "train")
DEFAULT_COLUMNS = ("image", "label")  # prediction columns where no csv names them


@dataclass(frozen=True)
class LabelledData:
    table: ImageTable  # every labelled image a run may train or validate on
    class_names: list[str]
    val_names: frozenset[str] | None = None  # a given validation set (a val/ folder); None: the template splits
    test: ImageTable | None = None  # a given test set (a test/ folder)
    name_column: str = DEFAULT_COLUMNS[0]  # the columns prediction files use for the image and its label
    label_column: str = DEFAULT_COLUMNS[1]

    @property
    def multi_label(self) -> bool:
        """Several classes per image (or none): a csv with data.label_delimiter or data.label_columns."""
        return self.table.multi_label


# ---- paths ---------------------------------------------------------------------------------------
def require_dir(path: Path, option: str) -> Path:
    """`path` as a readable folder, or one message saying what it is instead."""
    if not path.exists():
        hint = " or put a data set in place with `python scripts/prepare_data.py PATH`" if option == "data.root" else ""
        raise DataError(
            f"{option}={path}: no such folder. Give an existing folder (relative paths start at the project root){hint}."
        )
    if not path.is_dir():
        raise DataError(f"{option}={path} is a file, not a folder: give the folder that holds the images.")
    if not os.access(path, os.R_OK | os.X_OK):
        raise DataError(f"{option}={path}: the folder is not readable by this user; fix its permissions.")
    return path


def require_file(path: Path, option: str) -> Path:
    if not path.exists():
        raise DataError(f"{option}={path}: no such file.")
    if path.is_dir():
        raise DataError(f"{option}={path} is a folder, not a file: give the csv file itself.")
    if not os.access(path, os.R_OK):
        raise DataError(f"{option}={path}: the file is not readable by this user; fix its permissions.")
    return path


def _hidden(name: str) -> bool:
    """.DS_Store, the ._ side files macOS leaves beside each photo, .ipynb_checkpoints, .git ..."""
    return name.startswith(".")


def image_files(folder: Path) -> tuple[list[Path], list[Path]]:
    """(image files, other files) under `folder`, nested folders included, hidden ones left out; sorted by path only
    for a stable listing (nothing downstream reads order as information: splits go by content)."""
    images, others = [], []
    for directory, subdirs, files in os.walk(folder, followlinks=True):
        subdirs[:] = sorted(d for d in subdirs if not _hidden(d))
        for name in sorted(files):
            path = Path(directory) / name
            is_image = not _hidden(name) and path.suffix.lower() in IMAGE_SUFFIXES
            (images if is_image else others).append(path)
    return images, others


def _log_skipped(folder: Path, others: list[Path]) -> None:
    if others:
        shown = first_items([p.relative_to(folder).as_posix() for p in others], 5)
        log.info("%s: %d file(s) that are not images left out (%s)", folder, len(others), shown)


def folder_table(folder: Path, option: str = "source") -> ImageTable:
    """Every image under `folder` (nested folders too), unlabelled, named by its path relative to `folder`."""
    require_dir(folder, option)
    paths, others = image_files(folder)
    _log_skipped(folder, others)
    if not paths:
        raise DataError(f"{option}={folder} holds no image files ({', '.join(IMAGE_SUFFIXES)}).")
    return ImageTable([p.relative_to(folder).as_posix() for p in paths], paths, [-1] * len(paths))


# ---- a folder per class ------------------------------------------------------------------------
def _subdir(root: Path, names: tuple[str, ...]) -> Path | None:
    by_name = {p.name.lower(): p for p in root.iterdir() if p.is_dir()}
    return next((by_name[n] for n in names if n in by_name), None)


def _class_folders(folder: Path, root: Path) -> dict[str, tuple[list[Path], list[Path]]]:
    """class name -> (its images, its other files), for each visible subfolder of `folder`."""
    classes = {}
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not _hidden(p.name)):
        require_dir(sub, "data.root")
        classes[sub.name] = image_files(sub)
    loose = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    if loose:
        log.warning(
            "%s: %d image(s) directly in the folder belong to no class folder and are left out (%s)",
            folder,
            len(loose),
            first_items([p.name for p in loose], 5),
        )
    if not classes:
        raise DataError(
            f"data.root={root}: {folder} has no class folders. data=image_folder expects DIR/<class>/*.jpg, or "
            "DIR/train/<class>/ with DIR/val/<class>/ (or valid/) and optionally DIR/test/<class>/."
        )
    empty = [name for name, (images, _) in classes.items() if not images]
    if empty:
        raise DataError(
            f"data.root={root}: class folder(s) {first_items([str(folder / n) for n in empty])} hold no images "
            f"({', '.join(IMAGE_SUFFIXES)}); add images or remove the folder."
        )
    return classes


def folder_data(root: Path, class_names: list[str] | None) -> LabelledData:
    """data=image_folder: `root`/<class>/..., or `root`/train/<class>/ with val/ (or valid/) and test/ beside it."""
    require_dir(root, "data.root")
    train_dir = _subdir(root, TRAIN_DIRS)
    val_dir, test_dir = (_subdir(root, VAL_DIRS), _subdir(root, TEST_DIRS)) if train_dir else (None, None)
    pool = train_dir or root
    classes = _class_folders(pool, root)
    class_names = check_class_names(class_names, list(classes), f"the class folders of {pool}")
    train = _folder_side(pool, root, class_names, classes)
    val = _folder_side(val_dir, root, class_names) if val_dir else None
    test = _folder_side(test_dir, root, class_names) if test_dir else None
    table = train if val is None else ImageTable(train.names + val.names, train.paths + val.paths, train.labels + val.labels)
    log.info(
        "%s: %d class folders, %d training images%s%s",
        root,
        len(class_names),
        len(train),
        f", {len(val)} in {val_dir.name}/ (the validation set)" if val else "",
        f", {len(test)} in {test_dir.name}/ (the test set)" if test else "",
    )
    return LabelledData(table, class_names, frozenset(val.names) if val else None, test)


def _folder_side(folder: Path, root: Path, class_names: list[str], classes=None) -> ImageTable:
    """The labelled images of `folder`'s class folders (`classes`: already listed), named relative to `root`."""
    classes = classes or _class_folders(folder, root)
    unknown = sorted(set(classes) - set(class_names))
    if unknown:
        raise DataError(
            f"data.root={root}: {folder} has class folder(s) {unknown} that the classes {class_names} do not list; "
            "rename or remove them."
        )
    paths, labels = [], []
    for name, (images, others) in classes.items():
        _log_skipped(folder / name, others)
        paths += images
        labels += [class_names.index(name)] * len(images)
    return ImageTable([p.relative_to(root).as_posix() for p in paths], paths, labels)


def check_class_names(given: list[str] | None, found: list[str], where: str) -> list[str]:
    """The given class names when they are exactly the classes found (their order is the label order), else the
    sorted found ones."""
    if not given:
        return sorted(found)
    given = [str(c) for c in given]
    if sorted(given) != sorted(found) or len(set(given)) != len(given):
        raise DataError(
            f"data.class_names={given} does not match {where}: {sorted(found)}. Set data.class_names to those names "
            "(in the label order you want), or null to use them sorted."
        )
    return given


# ---- a csv with the user's columns ---------------------------------------------------------------
def csv_location(root: Path, csv_file: str, image_dir: str) -> tuple[Path, Path]:
    """(the csv, the image folder) of data.root (a folder, or the csv itself), data.csv_file and data.image_dir."""
    if root.is_file():
        csv_path, folder = root, root.parent
    else:
        require_dir(root, "data.root")
        folder = root
        if csv_file == "auto":
            csvs = sorted(p for p in root.glob("*.csv") if not _hidden(p.name))
            default = root / CSV_DEFAULT
            if default.is_file():
                csv_path = default
            elif len(csvs) == 1:
                csv_path = csvs[0]
            else:
                listed = [p.name for p in csvs] or "none"
                raise DataError(
                    f"data.root={root}: no {CSV_DEFAULT} and {len(csvs)} other csv files ({listed}); set "
                    "data.csv_file=NAME (or data.root=PATH/TO/FILE.csv)."
                )
        else:
            csv_path = root / csv_file
        require_file(csv_path, "data.csv_file")
    if image_dir == "auto":
        images = next((folder / n for n in IMAGE_DIR_CANDIDATES if (folder / n).is_dir()), folder)
    else:
        images = require_dir(folder / Path(image_dir).expanduser(), "data.image_dir")
    return csv_path, images


def csv_columns(
    csv_path: Path, name_column: str | None, label_column: str | None, label_columns: list[str] | None = None
) -> tuple[str, str]:
    """The name and label columns: as given, or (null) the csv's first and second columns. With a 0/1 column per
    class (label_columns) the label column is only the one prediction files write the predicted classes in."""
    header = read_header(csv_path)
    if label_columns:
        return name_column or header[0], DEFAULT_COLUMNS[1]
    if name_column is None or label_column is None:
        if len(header) < 2:
            raise DataError(
                f"{csv_path}: its header {header} has fewer than two columns; a labelled csv needs an image name "
                "column and a label column (data.name_column, data.label_column)."
            )
    return name_column or header[0], label_column or header[1]


def csv_class_names(
    csv_path: Path,
    label_column: str,
    given: list[str] | None,
    label_delimiter: str | None = None,
    label_columns: list[str] | None = None,
) -> list[str]:
    """Given names are checked row by row by read_table; inferred: sorted label values, or class_<i> for indices.
    With label_columns: the given names (one per column, in their order) or the columns' names."""
    given = [str(c) for c in given] if given else None
    if label_columns:
        if given and len(given) != len(label_columns):
            raise DataError(
                f"data.class_names={given} names {len(given)} classes but data.label_columns={label_columns} has "
                f"{len(label_columns)} columns: give one name per column, in their order, or null to use the column "
                "names."
            )
        return given or list(label_columns)
    if given and label_delimiter:
        joined = [c for c in given if label_delimiter in c]
        if joined:
            raise DataError(
                f"data.class_names: {joined} contain data.label_delimiter={label_delimiter!r}, which separates "
                "the labels of a cell; rename those classes or pick another delimiter."
            )
    if given:
        return given
    rows = read_rows(csv_path, [label_column])
    if label_delimiter:
        values = Counter(part for _, row in rows for part in split_labels(row[label_column], label_delimiter))
    else:
        values = Counter(row[label_column].strip() for _, row in rows)
    values.pop("", None)
    numbers = [label_number(v) for v in values]
    if values and all(n is not None for n in numbers):
        names = [f"class_{i}" for i in range(max(numbers) + 1)]
        log.warning(
            "%s: labels are indices 0..%d; naming the classes %s. Set data.class_names=[...] (in label order) to "
            "name them.",
            csv_path,
            len(names) - 1,
            names,
        )
        return names
    return sorted(values)


def csv_data(
    root: Path,
    csv_file: str,
    image_dir: str,
    name_column: str | None,
    label_column: str | None,
    class_names: list[str] | None,
    label_delimiter: str | None = None,
    label_columns: list[str] | None = None,
) -> LabelledData:
    """data=csv: the user's csv (columns data.name_column / data.label_column, or data.label_columns), images in
    data.image_dir."""
    csv_path, images = csv_location(root, csv_file, image_dir)
    name_column, label_column = csv_columns(csv_path, name_column, label_column, label_columns)
    class_names = csv_class_names(csv_path, label_column, class_names, label_delimiter, label_columns)
    table = read_table(csv_path, images, name_column, label_column, class_names, label_delimiter, label_columns)
    return LabelledData(table, class_names, name_column=name_column, label_column=label_column)
