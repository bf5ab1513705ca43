"""Read and validate a CSV of image names (and labels) against an image folder."""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path

from image_transfer.errors import UserError

log = logging.getLogger(__name__)


class DataError(UserError):
    """Bad input data; the message names the file, row or option and how to fix it."""


@dataclass(frozen=True)
class ImageTable:
    """Image paths with their class indices (-1 where the table carries no labels)."""

    names: list[str]
    paths: list[Path]
    labels: list[int]

    def __len__(self) -> int:
        return len(self.names)

    def subset(self, indices) -> ImageTable:
        return ImageTable(
            [self.names[i] for i in indices], [self.paths[i] for i in indices], [self.labels[i] for i in indices]
        )


def read_table(
    csv_path: Path,
    image_dir: Path,
    name_column: str,
    label_column: str | None,
    class_names: list[str],
) -> ImageTable:
    """Rows of `csv_path` as an ImageTable; every listed image must exist in `image_dir`.

    Labels may be class indices (0, 1, ...) or class names. `label_column=None` reads an unlabelled table.
    """
    rows = read_rows(csv_path, [name_column] + ([label_column] if label_column else []))
    names, labels, bad_labels, conflicts, first_line = [], [], [], [], {}
    for line, row in rows:
        name = row[name_column].strip()
        label = -1 if label_column is None else class_index(row[label_column], class_names)
        if label is None:
            bad_labels.append(f"line {line}: {row[label_column]!r}")
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
        raise DataError(
            f"{csv_path}: {len(bad_labels)} row(s) have a label outside the classes {class_names} "
            f"(use an index 0..{len(class_names) - 1} or a class name): {first_items(bad_labels)}"
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
    return ImageTable(names, paths, labels)


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
            "Set data.name_column / data.label_column to the right names."
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
