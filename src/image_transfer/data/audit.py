"""Data audit: every defect of a labelled image csv and its folder at once, as a dict (see `audit`).

Unlike `read_table`, which stops at the first kind of problem, the audit reads the rows leniently and
reports missing, unreadable and oddly encoded images, images turned by an EXIF orientation, bad
labels, repeated rows, exact and near duplicates (with conflicting labels) and test images that copy
training images. `clean_rows` then keeps the rows worth training on. `audit_report` renders the
dict as markdown; `python -m image_transfer.audit` runs it on the configured data.
"""

from __future__ import annotations

import logging
import statistics
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from image_transfer.data.decode import decode_all, displayed_size, orientation
from image_transfer.data.near_duplicates import near_duplicate_groups, perceptual_hash
from image_transfer.data.split import content_hash
from image_transfer.data.sources import IMAGE_SUFFIXES
from image_transfer.data.table import DataError, ImageTable, read_rows, row_label

log = logging.getLogger(__name__)

LARGE_SIDE = 4096  # px; such images cost decode time and memory, and are usually not what the csv meant


@dataclass(frozen=True)
class Row:
    line: int
    name: str
    label: int | tuple[int, ...]  # class index (multi-label: sorted indices); -1: not a label, or none in the csv
    raw_label: str
    fields: dict


@dataclass
class FileInfo:
    sha1: str
    error: str | None = None  # why the training decoder cannot read it
    format: str | None = None
    mode: str | None = None
    size: tuple[int, int] | None = None  # as displayed
    orientation: int = 1  # EXIF orientation, applied when read; 1: as stored
    phash: int | None = None


# ---- duplicate counting (also for training runs) ------------------------------------------------
def duplicate_summary(labels: list, hashes: list[str]) -> dict:
    """Byte-identical copies among images with these labels (class indices, or multi-label classes: tuples) and
    content hashes; cheap, no decoding.

    A training run passes its cached hashes; the one-line summary is logged (a warning when copies
    carry different labels, since one of them is then certainly mislabelled).
    """
    groups = _groups(hashes)
    summary = _counts(groups, labels, [len(g) - 1 for g in groups])
    level = logging.WARNING if summary["conflicting_groups"] else logging.INFO
    log.log(
        level,
        "exact duplicates: %(groups)d groups, %(extra_copies)d extra copies, "
        "%(conflicting_groups)d with conflicting labels",
        summary,
    )
    return summary


def _groups(keys: list) -> list[list[int]]:
    """Indices sharing a key, one list per key held more than once."""
    members: dict = defaultdict(list)
    for index, key in enumerate(keys):
        members[key].append(index)
    return [m for m in members.values() if len(m) > 1]


def _conflicting(labels: list[int]) -> bool:
    return len({label for label in labels if label != -1}) > 1


def _counts(groups: list[list[int]], labels: list[int], extra: list[int]) -> dict:
    return {
        "groups": len(groups),
        "extra_copies": sum(extra),
        "conflicting_groups": sum(_conflicting([labels[i] for i in g]) for g in groups),
    }


# ---- reading ------------------------------------------------------------------------------------
def _rows(
    csv_path: Path,
    name_column: str,
    label_column: str | None,
    class_names: list[str],
    label_delimiter: str | None = None,
    label_columns: list[str] | None = None,
) -> list[Row]:
    """Every row, good or bad; only a missing file or column (nothing to audit) raises DataError."""
    rows = []
    columns = label_columns or ([label_column] if label_column else [])
    for line, fields in read_rows(csv_path, [name_column] + columns):
        raw = ",".join(fields.get(c) or "" for c in columns)
        label = row_label(fields, label_column, class_names, label_delimiter, label_columns)[0] if columns else None
        rows.append(Row(line, (fields.get(name_column) or "").strip(), -1 if label is None else label, raw, fields))
    return rows


def _test_rows(test_csv: Path, name_column: str, class_names: list[str]) -> tuple[list[Row], str | None]:
    """The test csv's rows, or a note why there are none: other data sets may come without one."""
    try:
        return _rows(test_csv, name_column, None, class_names), None
    except DataError as error:
        return [], f"{error} Test checks skipped."


def _inspect(image_dir: Path, names: set[str], perceptual: bool) -> dict[str, FileInfo]:
    """Hash, readability, header and (optionally) perceptual hash of each listed file that exists."""
    paths = {name: image_dir / name for name in sorted(names) if name and (image_dir / name).is_file()}
    infos = {name: FileInfo(content_hash(path)) for name, path in paths.items()}
    # The training decoder itself says what it cannot read; a tiny target size keeps memory small.
    _, failed = decode_all(list(paths.values()), image_size=8, threads=2)
    decoded_names = list(paths)  # in decode order: `failed` is by position
    for position, line in failed.items():
        name = decoded_names[position]
        infos[name].error = line.removeprefix(f"{paths[name]}: ")

    def describe(name: str) -> None:
        info = infos[name]
        with Image.open(paths[name]) as image:
            info.format, info.mode = image.format, image.mode
            info.size, info.orientation = displayed_size(image), orientation(image)
        if perceptual:
            info.phash = perceptual_hash(paths[name])

    with ThreadPoolExecutor(2) as pool:  # PIL releases the GIL while decoding
        list(pool.map(describe, [name for name in paths if infos[name].error is None]))
    return infos


# ---- the audit ----------------------------------------------------------------------------------
def audit(
    csv_path: Path,
    image_dir: Path,
    name_column: str,
    label_column: str,
    class_names: list[str],
    test_csv: Path | None = None,
    near_duplicates: bool = True,
    max_distance: int = 4,
    label_delimiter: str | None = None,
    label_columns: list[str] | None = None,
) -> dict:
    """The report of a csv layout as a dict (names listed in full); see the module docstring for what it checks.
    Multi-label csv files (label_delimiter, label_columns as read_table takes them) compare label sets."""
    class_names = list(class_names)
    rows = _rows(csv_path, name_column, label_column, class_names, label_delimiter, label_columns)
    test_rows, test_note = _test_rows(test_csv, name_column, class_names) if test_csv else ([], None)
    test = (str(test_csv), test_rows, test_note) if test_csv else None
    return audit_rows(str(csv_path), rows, image_dir, class_names, test, near_duplicates, max_distance)


def table_rows(table: ImageTable, class_names: list[str]) -> list[Row]:
    """A layout without a csv (class folders) as rows: one per image, its position for a line number."""
    return [
        Row(i + 1, name, label, class_names[label] if label >= 0 else "", {})
        for i, (name, label) in enumerate(zip(table.names, table.labels))
    ]


def audit_rows(
    source: str,
    rows: list[Row],
    image_dir: Path,
    class_names: list[str],
    test: tuple[str, list[Row], str | None] | None = None,
    near_duplicates: bool = True,
    max_distance: int = 4,
) -> dict:
    """The report of any layout's rows (names relative to `image_dir`); `test`: (its source, its rows, a note why
    it has none)."""
    class_names = list(class_names)
    test_source, test_rows, test_note = test or (None, [], None)
    listed = {row.name for row in rows + test_rows}
    files = _inspect(image_dir, listed, near_duplicates)

    # One entry per distinct image that exists, labelled by its first row.
    first_row = {}
    for row in rows:
        first_row.setdefault(row.name, row)
    names = [name for name in first_row if name in files]
    labels = [first_row[name].label for name in names]
    readable = [name for name in names if files[name].error is None]

    report = {
        "csv": source,
        "image_dir": str(image_dir),
        "class_names": class_names,
        "rows": len(rows),
        "missing_files": [row.name for row in rows if row.name not in files],
        "bad_labels": [{"line": row.line, "name": row.name, "label": row.raw_label} for row in rows if row.label == -1],
        "repeated_rows": _repeated_rows(rows),
        "unreadable": [{"name": name, "reason": files[name].error} for name in names if files[name].error],
        "class_balance": {c: sum(i in _classes(row.label) for row in rows) for i, c in enumerate(class_names)},
        **_image_stats([files[name] for name in readable], readable),
        "exact_duplicates": _exact_duplicates(names, labels, [files[n].sha1 for n in names], class_names),
        "unlisted_files": sorted(
            p.name
            for p in image_dir.iterdir()
            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and p.name not in listed
        ),
    }
    if near_duplicates:
        near_ids = near_duplicate_groups([files[n].phash for n in readable], max_distance)
        report["near_duplicates"] = _near_duplicates(
            readable, [first_row[n].label for n in readable], near_ids, [files[n].sha1 for n in readable], class_names
        )
    if test_source is not None:
        report["test"] = {"csv": test_source} | (
            {"note": test_note}
            if test_note
            else _test_report(test_rows, files, names, readable, near_duplicates, max_distance)
        )
    report["summary"] = _summary(report)
    return report


def _classes(label: int | tuple[int, ...]) -> tuple[int, ...]:
    return label if isinstance(label, tuple) else (label,)


def _repeated_rows(rows: list[Row]) -> list[dict]:
    repeated = []
    for group in _groups([row.name for row in rows]):
        labels = [rows[i].label for i in group]
        repeated.append(
            {
                "name": rows[group[0]].name,
                "lines": [rows[i].line for i in group],
                "labels": [rows[i].raw_label for i in group],
                "conflicting": _conflicting(labels),
            }
        )
    return repeated


def _image_stats(infos: list[FileInfo], names: list[str]) -> dict:
    """Formats, colour modes, EXIF orientations and displayed sizes of the readable training images."""
    sizes = Counter(f"{info.size[0]}x{info.size[1]}" for info in infos)
    spread = {}
    for axis, side in (("width", 0), ("height", 1)):
        values = [info.size[side] for info in infos] or [0]
        spread[axis] = {"min": min(values), "median": statistics.median(values), "max": max(values)}
    return {
        "formats": dict(Counter(info.format for info in infos).most_common()),
        "modes": dict(Counter(info.mode for info in infos).most_common()),
        "sizes": {"distinct": len(sizes), "most_common": dict(sizes.most_common(10)), **spread},
        "large_images": [
            {"name": name, "size": list(info.size)}
            for name, info in zip(names, infos, strict=True)
            if max(info.size) > LARGE_SIDE
        ],
        "oriented_images": [
            {"name": name, "orientation": info.orientation}
            for name, info in zip(names, infos, strict=True)
            if info.orientation != 1
        ],
    }


def _group_list(groups: list[list[int]], names: list[str], labels: list[int], class_names: list[str]) -> dict:
    """Member names of every group, and names with labels of the groups whose labels conflict."""

    def label_name(i: int) -> str | None:
        return None if labels[i] == -1 else "|".join(class_names[c] for c in _classes(labels[i]))

    return {
        "group_names": [[names[i] for i in g] for g in groups],
        "conflicting": [
            {"names": [names[i] for i in g], "labels": [label_name(i) for i in g]}
            for g in groups
            if _conflicting([labels[i] for i in g])
        ],
    }


def _exact_duplicates(names: list[str], labels: list[int], hashes: list[str], class_names: list[str]) -> dict:
    groups = _groups(hashes)
    return duplicate_summary(labels, hashes) | _group_list(groups, names, labels, class_names)


def _near_duplicates(
    names: list[str], labels: list[int], near_ids: list[int], hashes: list[str], class_names: list[str]
) -> dict:
    """Perceptual-hash groups holding more than one distinct content: what exact hashing misses.

    Extra copies count distinct contents beyond the first, so they add to the exact extra copies.
    """
    groups = [g for g in _groups(near_ids) if len({hashes[i] for i in g}) > 1]
    extra = [len({hashes[i] for i in g}) - 1 for g in groups]
    return _counts(groups, labels, extra) | _group_list(groups, names, labels, class_names)


def _test_report(
    test_rows: list[Row],
    files: dict[str, FileInfo],
    train_names: list[str],
    train_readable: list[str],
    near_duplicates: bool,
    max_distance: int,
) -> dict:
    """Test images that are exact (or, beyond those, near) copies of training images: they leak."""
    names = list(dict.fromkeys(row.name for row in test_rows))
    train_hashes = {files[n].sha1 for n in train_names}
    exact = [n for n in names if n in files and files[n].sha1 in train_hashes]
    report = {
        "rows": len(test_rows),
        "missing_files": [n for n in names if n not in files],
        "unreadable": [{"name": n, "reason": files[n].error} for n in names if n in files and files[n].error],
        "exact_copies_of_train": exact,
    }
    if near_duplicates:
        # Joint groups: a test image is a near copy when it groups with some training image.
        readable = [n for n in names if n in files and files[n].error is None]
        ids = near_duplicate_groups([files[n].phash for n in train_readable + readable], max_distance)
        train_ids = set(ids[: len(train_readable)])
        report["near_copies_of_train"] = [
            n for n, i in zip(readable, ids[len(train_readable) :], strict=True) if i in train_ids and n not in exact
        ]
    return report


def _summary(report: dict) -> dict:
    """The counts of every check, in reading order (audit.md's first table)."""
    exact = report["exact_duplicates"]
    summary = {
        "rows": report["rows"],
        "missing files": len(report["missing_files"]),
        "bad labels": len(report["bad_labels"]),
        "repeated names": len(report["repeated_rows"]),
        "repeated names with conflicting labels": sum(r["conflicting"] for r in report["repeated_rows"]),
        "unreadable images": len(report["unreadable"]),
        f"large images (> {LARGE_SIDE} px)": len(report["large_images"]),
        "images with an EXIF orientation (read turned)": len(report["oriented_images"]),
        "exact duplicate groups": exact["groups"],
        "exact extra copies": exact["extra_copies"],
        "exact groups with conflicting labels": exact["conflicting_groups"],
    }
    if "near_duplicates" in report:
        near = report["near_duplicates"]
        summary |= {
            "near duplicate groups (beyond exact)": near["groups"],
            "near extra copies": near["extra_copies"],
            "near groups with conflicting labels": near["conflicting_groups"],
        }
    test = report.get("test", {})
    if "rows" in test:
        summary |= {
            "test rows": test["rows"],
            "test missing files": len(test["missing_files"]),
            "test unreadable images": len(test["unreadable"]),
            "test exact copies of train images": len(test["exact_copies_of_train"]),
        }
        if "near_copies_of_train" in test:
            summary["test near copies of train images"] = len(test["near_copies_of_train"])
    summary["unlisted image files (informational)"] = len(report["unlisted_files"])
    return summary


# ---- cleaning -----------------------------------------------------------------------------------
def clean_rows(
    csv_path: Path,
    report: dict,
    name_column: str,
    label_column: str,
    label_delimiter: str | None = None,
    label_columns: list[str] | None = None,
) -> tuple[list[str], list[list[str]], dict]:
    """The csv header, its rows worth training on (as read), and the names dropped per reason.

    Rows with a bad label or a missing or unreadable file go. Then rows repeating a name, exact
    copies and (if audited) near copies collapse to their first row in csv order (any copy of
    identical content will do), or all go where their labels conflict: which one is right is unknown.
    """
    rows = _rows(csv_path, name_column, label_column, report["class_names"], label_delimiter, label_columns)
    header = [column for column in rows[0].fields if column is not None]  # None: cells beyond the header
    broken = set(report["missing_files"]) | {u["name"] for u in report["unreadable"]}
    dropped = {
        "bad_label": [r.name for r in rows if r.label == -1],
        "missing_or_unreadable": [r.name for r in rows if r.label != -1 and r.name in broken],
    }
    rows = [r for r in rows if r.label != -1 and r.name not in broken]
    steps = [("repeated_row", {})]
    for kind in ("exact_duplicates", "near_duplicates"):
        if kind in report:
            steps.append((kind.removesuffix("s"), {n: i for i, g in enumerate(report[kind]["group_names"]) for n in g}))
    for reason, group_of in steps:
        rows, copies, conflicts = _collapse(rows, [group_of.get(r.name, r.name) for r in rows])
        dropped[reason] = copies
        dropped[f"conflicting_{reason}"] = conflicts
    return header, [[r.fields[column] for column in header] for r in rows], dropped


def _collapse(rows: list[Row], keys: list) -> tuple[list[Row], list[str], list[str]]:
    """Keep the first row per key; drop the others (copies), or all of them where labels conflict."""
    drop, copies, conflicts = set(), [], []
    for group in _groups(keys):
        conflicting = _conflicting([rows[i].label for i in group])
        gone = group if conflicting else group[1:]
        drop.update(gone)
        (conflicts if conflicting else copies).extend(rows[i].name for i in gone)
    return [r for i, r in enumerate(rows) if i not in drop], copies, conflicts
