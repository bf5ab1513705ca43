"""Put the emergency-vehicle data set where the default config looks (data/emergency_vehicles/).

    python scripts/prepare_data.py                 # ../shared/data/emergency_vehicles, if it exists
    python scripts/prepare_data.py PATH            # a folder (linked) or a .zip (extracted)
    python scripts/prepare_data.py PATH --copy     # copy a folder instead of linking it

The result is validated: a labelled csv (train.csv or emergency_classification.csv) and an image
folder (images/ or train/) holding every listed image.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

from vehicle_transfer import PROJECT_ROOT
from vehicle_transfer.data.table import DataError, find_in_root, read_table

TARGET = PROJECT_ROOT / "data" / "emergency_vehicles"
SHARED = PROJECT_ROOT.parent / "shared" / "data" / "emergency_vehicles"
HOW_TO_GET = """No data given and none found at {shared}.
Get the public data set (Analytics Vidhya, "Emergency vs Non-Emergency Vehicle Classification",
JanataHack computer-vision hackathon: https://datahack.analyticsvidhya.com/contest/janatahack-computer-vision-hackathon/,
also mirrored on Kaggle as "emergency-vs-nonemergency-vehicle-classification"), then run
    python scripts/prepare_data.py PATH_TO_FOLDER_OR_ZIP"""


def dataset_root(folder: Path) -> Path:
    """The folder itself, or the single sub-folder a zip usually wraps the files in."""
    if any((folder / name).exists() for name in ("train.csv", "emergency_classification.csv")):
        return folder
    inner = [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))]
    return dataset_root(inner[0]) if len(inner) == 1 else folder


def validate(root: Path) -> str:
    csv_path = find_in_root(root, "auto", "data.csv_file")
    table = read_table(
        csv_path,
        find_in_root(root, "auto", "data.image_dir"),
        "image_names",
        "emergency_or_not",
        ["non_emergency", "emergency"],
    )
    return f"{len(table)} labelled images ({csv_path.name})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "source", nargs="?", type=Path, help="data folder or zip (default: ../shared/data/emergency_vehicles)"
    )
    parser.add_argument("--copy", action="store_true", help="copy a folder instead of symlinking it")
    args = parser.parse_args(argv)

    source = args.source or (SHARED if SHARED.is_dir() else None)
    if source is None:
        print(HOW_TO_GET.format(shared=SHARED), file=sys.stderr)
        return 1
    source = source.expanduser().resolve()
    if not source.exists():
        print(f"{source} does not exist.", file=sys.stderr)
        return 1
    try:
        if source.is_dir():
            print(f"validating {source}: {validate(dataset_root(source))}")
        if TARGET.is_symlink() or TARGET.exists():
            TARGET.unlink() if TARGET.is_symlink() else shutil.rmtree(TARGET)
        TARGET.parent.mkdir(parents=True, exist_ok=True)
        # Build next to the target, then rename: an interrupted run never leaves a half-filled folder.
        with tempfile.TemporaryDirectory(dir=TARGET.parent) as staging:
            staging = Path(staging)
            if source.is_file() and zipfile.is_zipfile(source):
                with zipfile.ZipFile(source) as archive:
                    archive.extractall(staging / "extracted")
                root = dataset_root(staging / "extracted")
                print(f"validating {source}: {validate(root)}")
                root.rename(TARGET)
            elif source.is_dir() and args.copy:
                shutil.copytree(dataset_root(source), staging / "copy")
                (staging / "copy").rename(TARGET)
            elif source.is_dir():
                (staging / "link").symlink_to(dataset_root(source), target_is_directory=True)
                (staging / "link").rename(TARGET)
            else:
                print(f"{source} is neither a folder nor a zip file.", file=sys.stderr)
                return 1
    except DataError as error:
        print(f"invalid data set: {error}", file=sys.stderr)
        return 1
    print(f"data ready at {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
