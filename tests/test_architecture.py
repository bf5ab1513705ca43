"""docs/architecture.md names only files and modules that exist, and names enough of them to be a map."""

from __future__ import annotations

import importlib.util
import re

from image_transfer import PROJECT_ROOT

DOC = (PROJECT_ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
PATHS = re.findall(r"`((?:src|configs)/[^`\s]+)`", DOC)
MODULES = re.findall(r"`(image_transfer(?:\.\w+)*)`", DOC)


def test_every_path_it_names_exists():
    assert len(PATHS) >= 40, PATHS
    assert [p for p in PATHS if not (PROJECT_ROOT / p).exists()] == []


def test_every_module_it_names_exists():
    assert len(MODULES) >= 15, MODULES
    assert [m for m in MODULES if importlib.util.find_spec(m) is None] == []
