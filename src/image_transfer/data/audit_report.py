"""The data audit (see `data.audit`) as markdown: counts first, then each check with the names it found."""

from __future__ import annotations

from image_transfer.data.audit import LARGE_SIDE
from image_transfer.data.table import first_items
from image_transfer.markdown import table

SHOWN = 20  # items per list in audit.md (audit.json has them all)


def markdown(report: dict) -> str:
    total = max(sum(report["class_balance"].values()), 1)
    balance = [(c, n, f"{n / total:.1%}") for c, n in report["class_balance"].items()]
    sizes = report["sizes"]
    lines = [
        f"# Data audit of {report['csv']}",
        "",
        f"Images in {report['image_dir']}.",
        "",
        table(["check", "count"], report["summary"].items(), "lr"),
        "",
        "## Class balance",
        "",
        table(["class", "rows", "share"], balance, "lrr"),
        "",
        "## Images (readable training images)",
        "",
        "- formats: " + ", ".join(f"{k} {v}" for k, v in report["formats"].items()),
        "- colour modes: " + ", ".join(f"{k} {v}" for k, v in report["modes"].items()),
        f"- sizes as displayed: {sizes['distinct']} distinct; width {sizes['width']['min']}-{sizes['width']['max']} "
        f"(median {sizes['width']['median']}), height {sizes['height']['min']}-{sizes['height']['max']} "
        f"(median {sizes['height']['median']}); most common: "
        + ", ".join(f"{k} ({v})" for k, v in sizes["most_common"].items()),
        f"- large (> {LARGE_SIDE} px): "
        + _names([f"{i['name']} {i['size'][0]}x{i['size'][1]}" for i in report["large_images"]]),
        "- EXIF orientation other than 1 (turned when read): "
        + _names([f"{i['name']} ({i['orientation']})" for i in report["oriented_images"]]),
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


def _bullets(items: list[str]) -> list[str]:
    lines = [f"- {item}" for item in items[:SHOWN]]
    return lines + ([f"- ... and {len(items) - SHOWN} more (see audit.json)"] if len(items) > SHOWN else [])


def _names(names: list[str]) -> str:
    return first_items(names, SHOWN) if names else "none"


def _group_lines(section: dict) -> list[str]:
    conflicting = [
        ", ".join(f"{n} ({lbl})" for n, lbl in zip(c["names"], c["labels"], strict=True))
        for c in section["conflicting"]
    ]
    groups = [", ".join(g) for g in section["group_names"]]
    return [
        "Conflicting labels:",
        *(_bullets(conflicting) or ["- none"]),
        "",
        "All groups:",
        *(_bullets(groups) or ["- none"]),
    ]


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
