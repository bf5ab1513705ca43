"""Read and validate a CSV of image names (and labels) against an image folder.

Labels come in three forms: one class per row (a class name or index), or multi-label: several in one cell
separated by `label_delimiter`, or a 0/1 column per class (`label_columns`).
"""

from __future__ import annotations

import csv
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from image_transfer.errors import UserError

log = logging.getLogger(__name__)


class DataError(UserError):
    """Bad input data; the message names the file, row or option and how to fix it."""


@dataclass(frozen=True)
class ImageTable:
    """Image paths with their class indices (-1 where the table carries no labels).

    Multi-label tables also hold each image's set of class indices; their `labels` are then the strata that splits
    and folds stratify by (see `strata`).
    """

    names: list[str]
    paths: list[Path]
    labels: list[int]
    label_sets: tuple[tuple[int, ...], ...] | None = None  # multi-label: each image's classes, sorted; () for none

    def __len__(self) -> int:
        return len(self.names)

    @property
    def multi_label(self) -> bool:
        return self.label_sets is not None

    def classes(self) -> list[tuple[int, ...]]:
        """Each image's classes: its label set, or its one label."""
        return list(self.label_sets) if self.multi_label else [(label,) for label in self.labels]

    def subset(self, indices) -> ImageTable:
        return ImageTable(
            [self.names[i] for i in indices],
            [self.paths[i] for i in indices],
            [self.labels[i] for i in indices],
            tuple(self.label_sets[i] for i in indices) if self.multi_label else None,
        )


def strata(label_sets: list[tuple[int, ...]], num_classes: int) -> list[int]:
    """The stratum of each multi-label image: its rarest class in these rows (ties: the lower index), so the rare
    classes, which a split most easily leaves out of a side, spread over the sides first; an image of no class
    is a stratum of its own (num_classes)."""
    counts = Counter(c for classes in label_sets for c in classes)
    return [min(classes, key=lambda c: (counts[c], c)) if classes else num_classes for classes in label_sets]


def read_table(
    csv_path: Path,
    image_dir: Path,
    name_column: str,
    label_column: str | None,
    class_names: list[str],
    label_delimiter: str | None = None,
    label_columns: list[str] | None = None,
) -> ImageTable:
    """Rows of `csv_path` as an ImageTable; every listed image must exist in `image_dir`.

    Labels may be class indices (0, 1, ...) or class names; several per cell separated by `label_delimiter`, or
    a 0/1 column per class (`label_columns`, in class order), make a multi-label table. `label_column=None` (and
    no `label_columns`) reads an unlabelled table.
    """
    labelled = bool(label_columns or label_column)
    rows = read_rows(csv_path, [name_column] + (label_columns or ([label_column] if label_column else [])))
    names, labels, bad_labels, conflicts, first_line = [], [], [], [], {}
    for line, row in rows:
        name = row[name_column].strip()
        label, why = row_label(row, label_column, class_names, label_delimiter, label_columns) if labelled else (-1, "")
        if label is None:
            bad_labels.append(f"line {line}: {why}")
        if name in first_line:  # a repeated row: the same image listed again
            earlier = first_line[name]
            if labels[earlier[1]] != label:
                conflicts.append(f"{name} (lines {earlier[0]} and {line})")
            log.warning("%s line %d repeats %s (line %d); the repeat is ignored", csv_path, line, name, earlier[0])
            continue
        first_line[name] = (line, len(names))
        names.append(name)
        labels.append(label)
    if bad_labels:
        if label_columns:
            raise DataError(
                f"{csv_path}: {len(bad_labels)} row(s) have a cell that is not 0 or 1 in data.label_columns "
                f"{label_columns}: {first_items(bad_labels)}. Write 0 or 1 (or false / true) in every label column."
            )
        how = f" or class names separated by {label_delimiter!r}; an empty cell: none" if label_delimiter else ""
        raise DataError(
            f"{csv_path}: {len(bad_labels)} row(s) have a label outside the classes {class_names} "
            f"(use an index 0..{len(class_names) - 1} or a class name{how}): {first_items(bad_labels)}"
        )
    if conflicts:
        raise DataError(
            f"{csv_path}: {len(conflicts)} image(s) listed twice with different labels: {first_items(conflicts)}. "
            "Keep one row per image."
        )
    paths = [image_dir / name for name in names]
    missing = [name for name, path in zip(names, paths) if not path.is_file()]
    if missing:
        raise DataError(
            f"{csv_path}: {len(missing)} listed image(s) are missing from {image_dir}: {first_items(missing)}. "
            "Fix the csv, or point data.image_dir at the folder that holds them (relative to the csv's folder)."
        )
    if label_delimiter or label_columns:
        return ImageTable(names, paths, strata(labels, len(class_names)), tuple(labels))
    return ImageTable(names, paths, labels)


def row_label(
    row: dict,
    label_column: str | None,
    class_names: list[str],
    label_delimiter: str | None = None,
    label_columns: list[str] | None = None,
) -> tuple[int | tuple[int, ...] | None, str]:
    """(label, what is wrong): a row's class index, or (multi-label) the sorted tuple of its class indices; None
    and the offending cell(s) where it is no label."""
    if label_columns:
        bad = [f"column {c!r} has {row[c]!r}" for c in label_columns if flag(row[c]) is None]
        return (None, ", ".join(bad)) if bad else (tuple(i for i, c in enumerate(label_columns) if flag(row[c])), "")
    value = row[label_column]
    if not label_delimiter:
        return class_index(value, class_names), repr(value)
    indices = {part: class_index(part, class_names) for part in split_labels(value, label_delimiter)}
    unknown = [part for part, index in indices.items() if index is None]
    if unknown:
        return None, f"{', '.join(map(repr, unknown))} in {value!r}"
    return tuple(sorted(set(indices.values()))), ""


def split_labels(value: str | None, delimiter: str) -> list[str]:
    """The labels of a multi-label cell (empty: none)."""
    return [part.strip() for part in (value or "").split(delimiter) if part.strip()]


def flag(value: str | None) -> bool | None:
    """A 0/1 label cell: 0 or 1 (also 0.0 / 1.0, as spreadsheets and pandas write them), false or true; else None."""
    value = (value or "").strip().lower()
    if value in ("true", "false"):
        return value == "true"
    number = label_number(value)
    return bool(number) if number in (0, 1) else None


def read_header(csv_path: Path) -> list[str]:
    """The csv's column names."""
    return _reader(csv_path).fieldnames


def read_rows(csv_path: Path, columns: list[str]) -> list[tuple[int, dict]]:
    """(line number, row) of every data row, which must have `columns`."""
    reader = _reader(csv_path)
    absent = [c for c in columns if c not in reader.fieldnames]
    if absent:
        raise DataError(
            f"{csv_path}: column(s) {absent} not found; its header is {reader.fieldnames}. "
            "Set data.name_column / data.label_column (or data.label_columns) to the right names."
        )
    rows = [
        (line, row)
        for line, row in enumerate(reader, start=2)
        if any(isinstance(v, str) and v.strip() for v in row.values())
    ]
    if not rows:
        raise DataError(f"{csv_path} has a header but no rows.")
    return rows


def _reader(csv_path: Path) -> csv.DictReader:
    """Spreadsheet exports are read as they come: a byte-order mark, Windows line ends, ";" or tab as the separator,
    spaces around header names."""
    if not csv_path.is_file():
        raise DataError(f"csv file {csv_path} does not exist.")
    try:
        text = csv_path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise DataError(
            f"{csv_path} is not UTF-8 text (byte {error.start}: {error.reason}); save it as a UTF-8 csv "
            '(in a spreadsheet: "CSV UTF-8").'
        ) from None
    lines = text.splitlines()
    if not lines or not lines[0].strip():
        raise DataError(f"{csv_path} is empty; expected a header line with the image name and label columns.")
    header = lines[0]
    # Not csv.Sniffer: it guesses from quoting patterns and fails on a one-column header; the header is the witness.
    delimiter = max(",;\t", key=header.count) if any(d in header for d in ",;\t") else ","
    reader = csv.DictReader(lines, delimiter=delimiter)
    reader.fieldnames = [name.strip() for name in reader.fieldnames]
    return reader


def class_index(value: str | None, class_names: list[str]) -> int | None:
    value = (value or "").strip()
    if value in class_names:
        return class_names.index(value)
    number = label_number(value)
    return number if number is not None and number < len(class_names) else None


def label_number(value: str) -> int | None:
    """A label written as a class index: 1, or 1.0 as spreadsheets and pandas write it."""
    try:
        number = float(value)
    except ValueError:
        return None
    return int(number) if number.is_integer() and number >= 0 else None


def first_items(items: list[str], n: int = 10) -> str:
    shown = ", ".join(items[:n])
    return shown + (f" ... and {len(items) - n} more" if len(items) > n else "")
