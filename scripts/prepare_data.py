"""Put the emergency-vehicle data set where the default config looks (data/emergency_vehicles/).

    python scripts/prepare_data.py                 # ../shared/data/emergency_vehicles, if it exists
    python scripts/prepare_data.py PATH            # a folder (linked) or a .zip (extracted)
    python scripts/prepare_data.py PATH --copy     # copy a folder instead of linking it
    python scripts/prepare_data.py PATH --target DIR   # somewhere else than data/emergency_vehicles

The new data set is built beside the target and validated (a labelled csv, train.csv or
emergency_classification.csv, and an image folder, images/ or train/, holding every listed image);
only then does it replace what is at the target. Any failure leaves the target as it was.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

from image_transfer import PROJECT_ROOT
from image_transfer.data.table import CSV_CANDIDATES, IMAGE_DIR_CANDIDATES, DataError, read_table
from image_transfer.errors import UserError

TARGET = PROJECT_ROOT / "data" / "emergency_vehicles"
SHARED = PROJECT_ROOT.parent / "shared" / "data" / "emergency_vehicles"
HOW_TO_GET = """No data given and none found at {shared}.
Get the public data set (Analytics Vidhya, "Emergency vs Non-Emergency Vehicle Classification",
JanataHack computer-vision hackathon: https://datahack.analyticsvidhya.com/contest/janatahack-computer-vision-hackathon/,
also mirrored on Kaggle as "emergency-vs-nonemergency-vehicle-classification"), then run
    python scripts/prepare_data.py PATH_TO_FOLDER_OR_ZIP"""


def dataset_root(folder: Path) -> Path:
    """The folder itself, or the single sub-folder a zip usually wraps the files in."""
    if any((folder / name).exists() for name in CSV_CANDIDATES + IMAGE_DIR_CANDIDATES):
        return folder  # an image folder alone is no wrapper: the csv is missing here
    inner = [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))]
    return dataset_root(inner[0]) if len(inner) == 1 else folder


def validate(root: Path, shown: Path) -> str:
    """What the data set at `root` holds, in a few words; a UserError naming `shown` (the user's path) if unusable."""
    csv_path = next((root / name for name in CSV_CANDIDATES if (root / name).is_file()), None)
    image_dir = next((root / name for name in IMAGE_DIR_CANDIDATES if (root / name).is_dir()), None)
    if csv_path is None or image_dir is None:
        lacking = (
            " or ".join(CSV_CANDIDATES) if csv_path is None else " or ".join(f"{n}/" for n in IMAGE_DIR_CANDIDATES)
        )
        raise UserError(
            f"{shown} holds no {lacking}: give the data set's folder (or a zip of it) with its labelled csv "
            "and image folder."
        )
    try:
        table = read_table(csv_path, image_dir, "image_names", "emergency_or_not", ["non_emergency", "emergency"])
    except DataError as error:  # its paths are in the staging folder; the user knows them by `shown`
        raise UserError(str(error).replace(str(root), str(shown))) from None
    return f"{len(table)} labelled images ({csv_path.name})"


def stage(source: Path, staging: Path, copy: bool) -> Path:
    """The new data set, built (extracted, copied or linked) and validated inside `staging`."""
    if source.is_dir():
        root = dataset_root(source)
        validate(root, root)  # before copying: a wrong folder fails at once, not after copying all of it
        staged, shown = staging / "data", root
        if copy:
            shutil.copytree(root, staged)
        else:
            staged.symlink_to(root, target_is_directory=True)
    elif zipfile.is_zipfile(source):
        try:
            with zipfile.ZipFile(source) as archive:
                archive.extractall(staging / "zip")
        except zipfile.BadZipFile as error:
            raise UserError(f"{source} is a damaged zip file ({error}): download it again.") from None
        staged = dataset_root(staging / "zip")
        shown = source / staged.relative_to(staging / "zip")
    else:
        raise UserError(f"{source} is neither a folder nor a zip file: give the data set's folder or its .zip.")
    print(f"validating {shown}: {validate(staged, shown)}")
    return staged


def present(path: Path) -> bool:
    """Something is at `path`: a file, a folder, or a link (even a broken one)."""
    return path.is_symlink() or path.exists()


def swap_in(new: Path, target: Path, aside: Path) -> None:
    """Rename `new` to `target`; an old target goes to `aside` first and comes back if the rename fails."""
    had_old = present(target)
    if had_old:
        os.rename(target, aside)
    try:
        os.rename(new, target)
    except OSError:
        if had_old:
            os.rename(aside, target)
        raise


def prepare(source: Path, target: Path, copy: bool) -> None:
    if not source.exists():
        raise UserError(f"{source} does not exist: give the path of the data set's folder or zip.")
    # The old target is deleted at the end, and the staging folder is made beside it.
    if not target.is_symlink() and source.is_relative_to(target.resolve()):
        raise UserError(f"{source} is (or lies inside) {target}, which would be replaced: move the data set out of it.")
    if source.is_dir() and target.parent.resolve().is_relative_to(source):
        raise UserError(f"--target {target} lies inside {source}: choose a target outside the data set.")
    target.parent.mkdir(parents=True, exist_ok=True)
    # Same parent as the target: the final renames stay on one file system, hence atomic.
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.new-", dir=target.parent))
    aside = staging / "old"
    try:
        swap_in(stage(source, staging, copy), target, aside)
    finally:
        if present(aside) and not present(target):  # stopped between the two renames: keep the old data
            print(f"the previous data set is at {aside}: rename it back to {target}.", file=sys.stderr)
        else:
            shutil.rmtree(staging, ignore_errors=True)  # after a swap, this removes the old data
            if staging.exists():
                print(f"warning: could not remove all of {staging}; delete it by hand.", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "source", nargs="?", type=Path, help="data folder or zip (default: ../shared/data/emergency_vehicles)"
    )
    parser.add_argument("--copy", action="store_true", help="copy a folder instead of symlinking it")
    parser.add_argument("--target", type=Path, default=TARGET, help=f"where the data set goes (default: {TARGET})")
    args = parser.parse_args(argv)

    source = args.source or (SHARED if SHARED.is_dir() else None)
    if source is None:
        print(HOW_TO_GET.format(shared=SHARED), file=sys.stderr)
        return 1
    source = source.expanduser().resolve()
    target = Path(os.path.abspath(args.target.expanduser()))  # not resolved: a linked target is replaced, not followed
    try:
        prepare(source, target, args.copy)
    except UserError as error:
        print(f"{error} Nothing changed at {target}.", file=sys.stderr)
        return 1
    except OSError as error:
        print(
            f"preparing {target} from {source} failed: {error}. Nothing changed at {target}; "
            f"check that {target.parent} is writable and has room, then run again.",
            file=sys.stderr,
        )
        return 1
    print(f"data ready at {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
