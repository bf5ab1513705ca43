"""Markdown tables: the one renderer for the audit, the sweep summary, the reproduction tables and the probe."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def cell(value: object) -> str:
    """One table cell: a single line, pipes escaped so they do not split the row; None is empty."""
    return "" if value is None else " ".join(str(value).split()).replace("|", r"\|")


def table(header: Sequence[object], rows: Iterable[Sequence[object]], align: str | None = None) -> str:
    """A table (no trailing newline); `align` has one letter per column: l (left, default) or r (right)."""
    rule = ["---:" if a == "r" else "---" for a in (align or "l" * len(header))]
    lines = ["| " + " | ".join(cell(v) for v in line) + " |" for line in [header, *rows]]
    return "\n".join([lines[0], "| " + " | ".join(rule) + " |", *lines[1:]])
