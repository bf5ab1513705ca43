"""Data audit: every defect of a labelled image csv and its folder at once, as audit.json and audit.md.

    python -m vehicle_transfer.audit [test_csv=null] [near_duplicates=false] [clean_csv=true]

Unlike `read_table`, which stops at the first kind of problem, the audit reads the rows leniently and
reports missing, unreadable and oddly encoded images, bad labels, repeated rows, exact and near
duplicates (with conflicting labels) and test images that copy training images.
"""

from __future__ import annotations

import csv
import io
import logging
import statistics
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import hydra
from omegaconf import DictConfig
from PIL import Image

from vehicle_transfer import CONFIG_DIR
from vehicle_transfer.data.dataset import decode_all
from vehicle_transfer.data.near_duplicates import near_duplicate_groups, perceptual_hash
from vehicle_transfer.data.split import content_hash
from vehicle_transfer.data.table import IMAGE_SUFFIXES, DataError, class_index, find_in_root, first_items, read_rows
from vehicle_transfer.files import write_atomically, write_json
from vehicle_transfer.paths import from_project_root

log = logging.getLogger(__name__)

LARGE_SIDE = 4096  # px; such images cost decode time and memory, and are usually not what the csv meant
SHOWN = 20  # items per list in audit.md (audit.json has them all)


@dataclass(frozen=True)
class Row:
    line: int
    name: str
    label: int  # class index; -1 where empty, outside the classes, or the csv has no labels
    raw_label: str
    fields: dict


@dataclass
class FileInfo:
    sha1: str
    error: str | None = None  # why the training decoder cannot read it
    format: str | None = None
    mode: str | None = None
    size: tuple[int, int] | None = None
    phash: int | None = None


# ---- duplicate counting (also for training runs) ------------------------------------------------
def duplicate_summary(labels: list[int], hashes: list[str]) -> dict:
    """Byte-identical copies among images with these labels and content hashes; cheap, no decoding.

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
    return len({label for label in labels if label >= 0}) > 1


def _counts(groups: list[list[int]], labels: list[int], extra: list[int]) -> dict:
    return {
        "groups": len(groups),
        "extra_copies": sum(extra),
        "conflicting_groups": sum(_conflicting([labels[i] for i in g]) for g in groups),
    }


# ---- reading ------------------------------------------------------------------------------------
def _rows(csv_path: Path, name_column: str, label_column: str | None, class_names: list[str]) -> list[Row]:
    """Every row, good or bad; only a missing file or column (nothing to audit) raises DataError."""
    rows = []
    for line, fields in read_rows(csv_path, [name_column] + ([label_column] if label_column else [])):
        raw = (fields.get(label_column) or "") if label_column else ""
        label = class_index(raw, class_names) if label_column else None
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
    images, errors = decode_all(list(paths.values()), image_size=8, threads=2)
    failed = [name for name, image in zip(paths, images) if image is None]
    for name, line in zip(failed, errors):
        infos[name].error = line.removeprefix(f"{paths[name]}: ")

    def describe(name: str) -> None:
        info = infos[name]
        with Image.open(paths[name]) as image:
            info.format, info.mode, info.size = image.format, image.mode, image.size
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
) -> dict:
    """The report as a dict (names listed in full); see the module docstring for what it checks."""
    class_names = list(class_names)
    rows = _rows(csv_path, name_column, label_column, class_names)
    test_rows, test_note = _test_rows(test_csv, name_column, class_names) if test_csv else ([], None)
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
        "csv": str(csv_path),
        "image_dir": str(image_dir),
        "class_names": class_names,
        "rows": len(rows),
        "missing_files": [row.name for row in rows if row.name not in files],
        "bad_labels": [{"line": row.line, "name": row.name, "label": row.raw_label} for row in rows if row.label < 0],
        "repeated_rows": _repeated_rows(rows),
        "unreadable": [{"name": name, "reason": files[name].error} for name in names if files[name].error],
        "class_balance": {c: sum(row.label == i for row in rows) for i, c in enumerate(class_names)},
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
    if test_csv is not None:
        report["test"] = {"csv": str(test_csv)} | (
            {"note": test_note}
            if test_note
            else _test_report(test_rows, files, names, readable, near_duplicates, max_distance)
        )
    report["summary"] = _summary(report)
    return report


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
    """Formats, colour modes and sizes of the readable training images."""
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
            {"name": name, "size": list(info.size)} for name, info in zip(names, infos) if max(info.size) > LARGE_SIDE
        ],
    }


def _group_list(groups: list[list[int]], names: list[str], labels: list[int], class_names: list[str]) -> dict:
    """Member names of every group, and names with labels of the groups whose labels conflict."""

    def label_name(i: int) -> str | None:
        return class_names[labels[i]] if labels[i] >= 0 else None

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
            n for n, i in zip(readable, ids[len(train_readable) :]) if i in train_ids and n not in exact
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
def clean_rows(csv_path: Path, report: dict, name_column: str, label_column: str) -> tuple[list[dict], dict]:
    """The csv rows worth training on, and the names dropped per reason.

    Rows with a bad label or a missing or unreadable file go. Then rows repeating a name, exact
    copies and (if audited) near copies collapse to their first row in csv order (any copy of
    identical content will do), or all go where their labels conflict: which one is right is unknown.
    """
    rows = _rows(csv_path, name_column, label_column, report["class_names"])
    broken = set(report["missing_files"]) | {u["name"] for u in report["unreadable"]}
    dropped = {
        "bad_label": [r.name for r in rows if r.label < 0],
        "missing_or_unreadable": [r.name for r in rows if r.label >= 0 and r.name in broken],
    }
    rows = [r for r in rows if r.label >= 0 and r.name not in broken]
    steps = [("repeated_row", {})]
    for kind in ("exact_duplicates", "near_duplicates"):
        if kind in report:
            steps.append((kind.removesuffix("s"), {n: i for i, g in enumerate(report[kind]["group_names"]) for n in g}))
    for reason, group_of in steps:
        rows, copies, conflicts = _collapse(rows, [group_of.get(r.name, r.name) for r in rows])
        dropped[reason] = copies
        dropped[f"conflicting_{reason}"] = conflicts
    return [r.fields for r in rows], dropped


def _collapse(rows: list[Row], keys: list) -> tuple[list[Row], list[str], list[str]]:
    """Keep the first row per key; drop the others (copies), or all of them where labels conflict."""
    drop, copies, conflicts = set(), [], []
    for group in _groups(keys):
        conflicting = _conflicting([rows[i].label for i in group])
        gone = group if conflicting else group[1:]
        drop.update(gone)
        (conflicts if conflicting else copies).extend(rows[i].name for i in gone)
    return [r for i, r in enumerate(rows) if i not in drop], copies, conflicts


def _csv_text(rows: list[dict]) -> str:
    buffer = io.StringIO()
    fields = [key for key in rows[0] if key is not None] if rows else []
    writer = csv.DictWriter(buffer, fields, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


# ---- markdown -----------------------------------------------------------------------------------
def _bullets(items: list[str]) -> list[str]:
    lines = [f"- {item}" for item in items[:SHOWN]]
    return lines + ([f"- ... and {len(items) - SHOWN} more (see audit.json)"] if len(items) > SHOWN else [])


def _names(names: list[str]) -> str:
    return first_items(names, SHOWN) if names else "none"


def _group_lines(section: dict) -> list[str]:
    lines = ["Conflicting labels:"] + (
        _bullets([", ".join(f"{n} ({lbl})" for n, lbl in zip(c["names"], c["labels"])) for c in section["conflicting"]])
        or ["- none"]
    )
    return lines + ["", "All groups:"] + (_bullets([", ".join(g) for g in section["group_names"]]) or ["- none"])


def markdown(report: dict) -> str:
    total = max(sum(report["class_balance"].values()), 1)
    sizes = report["sizes"]
    lines = [
        f"# Data audit of {report['csv']}",
        "",
        f"Images in {report['image_dir']}.",
        "",
        "| check | count |",
        "| --- | ---: |",
    ]
    lines += [f"| {key} | {value} |" for key, value in report["summary"].items()]
    lines += ["", "## Class balance", "", "| class | rows | share |", "| --- | ---: | ---: |"]
    lines += [f"| {c} | {n} | {n / total:.1%} |" for c, n in report["class_balance"].items()]
    lines += [
        "",
        "## Images (readable training images)",
        "",
        "- formats: " + ", ".join(f"{k} {v}" for k, v in report["formats"].items()),
        "- colour modes: " + ", ".join(f"{k} {v}" for k, v in report["modes"].items()),
        f"- sizes: {sizes['distinct']} distinct; width {sizes['width']['min']}-{sizes['width']['max']} "
        f"(median {sizes['width']['median']}), height {sizes['height']['min']}-{sizes['height']['max']} "
        f"(median {sizes['height']['median']}); most common: "
        + ", ".join(f"{k} ({v})" for k, v in sizes["most_common"].items()),
        f"- large (> {LARGE_SIDE} px): "
        + _names([f"{i['name']} {i['size'][0]}x{i['size'][1]}" for i in report["large_images"]]),
        "",
        "## Rows",
        "",
        f"- missing files: {_names(report['missing_files'])}",
        "- bad labels: " + _names([f"line {b['line']} {b['name']} {b['label']!r}" for b in report["bad_labels"]]),
        "- repeated names: "
        + _names([f"{r['name']} (lines {r['lines']}, labels {r['labels']})" for r in report["repeated_rows"]]),
        "",
        "## Unreadable images",
        "",
    ]
    lines += _bullets([f"{u['name']}: {u['reason']}" for u in report["unreadable"]]) or ["none"]
    lines += ["", "## Exact duplicates (identical bytes)", ""] + _group_lines(report["exact_duplicates"])
    lines += ["", "## Near duplicates beyond exact ones (perceptual hash)", ""]
    lines += _group_lines(report["near_duplicates"]) if "near_duplicates" in report else ["not checked"]
    lines += ["", "## Test csv", ""] + _test_lines(report.get("test"))
    lines += ["", "## Image files listed in no csv", "", _names(report["unlisted_files"])]
    if "clean" in report:
        clean = report["clean"]
        lines += ["", "## Clean csv", "", f"{clean['csv']}: {clean['rows_kept']} rows kept, dropped:"]
        lines += [f"- {reason}: {len(names)} ({_names(names)})" for reason, names in clean["dropped"].items()]
    return "\n".join(lines) + "\n"


def _test_lines(test: dict | None) -> list[str]:
    if test is None:
        return ["not checked"]
    if "note" in test:
        return [test["note"]]
    lines = [
        f"{test['csv']}: {test['rows']} rows",
        "",
        f"- missing files: {_names(test['missing_files'])}",
        "- unreadable: " + _names([f"{u['name']} ({u['reason']})" for u in test["unreadable"]]),
        f"- exact copies of training images: {_names(test['exact_copies_of_train'])}",
    ]
    if "near_copies_of_train" in test:
        lines.append(f"- near copies of training images: {_names(test['near_copies_of_train'])}")
    return lines


# ---- entry point --------------------------------------------------------------------------------
def run_audit(cfg: DictConfig) -> dict:
    """Audit the data the DataModule would read; write audit.json, audit.md (and train_clean.csv)."""
    root, data = from_project_root(cfg.data.root), cfg.data
    csv_path = find_in_root(root, data.csv_file, "data.csv_file")
    report = audit(
        csv_path,
        find_in_root(root, data.image_dir, "data.image_dir"),
        data.name_column,
        data.label_column,
        list(data.class_names),
        root / cfg.test_csv if cfg.test_csv else None,
        cfg.near_duplicates,
        cfg.max_distance,
    )
    output = Path(cfg.paths.output_dir)
    if cfg.clean_csv:
        rows, dropped = clean_rows(csv_path, report, data.name_column, data.label_column)
        write_atomically(output / "train_clean.csv", _csv_text(rows))
        report["clean"] = {"csv": str(output / "train_clean.csv"), "rows_kept": len(rows), "dropped": dropped}
        log.info(
            "train_clean.csv: %d of %d rows kept; dropped %s",
            len(rows),
            report["rows"],
            ", ".join(f"{len(v)} {k}" for k, v in dropped.items() if v) or "none",
        )
    write_json(output / "audit.json", report)
    write_atomically(output / "audit.md", markdown(report))
    log.info("audit written to %s: %s", output, ", ".join(f"{k} {v}" for k, v in report["summary"].items()))
    return report


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="audit")
def main(cfg: DictConfig) -> None:
    run_audit(cfg)


if __name__ == "__main__":
    main()
