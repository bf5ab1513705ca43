"""The scripts in scripts/ as modules (they are files, not a package): their functions can run in the test's
process."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from image_transfer import PROJECT_ROOT

SCRIPTS = sorted((PROJECT_ROOT / "scripts").glob("*.py"))


def load_script(name: str) -> ModuleType:
    """scripts/<name>.py, imported (its `if __name__ == "__main__"` block does not run)."""
    path = PROJECT_ROOT / "scripts" / f"{Path(name).stem}.py"
    spec = importlib.util.spec_from_file_location(f"script_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module
