"""Put a data set in place under data/: a folder or zip of either layout, a csv with its images (any columns) or a
folder per class (optionally inside train/ val/ test/).

    python scripts/prepare_data.py                 # ../shared/data/emergency_vehicles -> data/emergency_vehicles
    python scripts/prepare_data.py PATH            # a folder (linked) or a .zip (extracted) -> data/<its name>
    python scripts/prepare_data.py PATH --copy     # copy a folder instead of linking it
    python scripts/prepare_data.py PATH --target DIR   # somewhere else
    python scripts/prepare_data.py PATH --name-column file --label-column species   # a csv's own columns

The new data set is built beside the target and validated as `data=csv` / `data=image_folder` would read it (a csv
whose every listed image exists, or class folders with images); only then does it replace what is at the target.
Any failure leaves the target as it was.
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
from image_transfer.data.sources import csv_data, folder_data
from image_transfer.data.table import DataError
from image_transfer.errors import UserError
from image_transfer.files import free_space, require_writable

DATA_DIR = PROJECT_ROOT / "data"
SHARED = PROJECT_ROOT.parent / "shared" / "data" / "emergency_vehicles"
HOW_TO_GET = """No data given and none found at {shared}.
Get the public data set (Analytics Vidhya, "Emergency vs Non-Emergency Vehicle Classification",
JanataHack computer-vision hackathon: https://datahack.analyticsvidhya.com/contest/janatahack-computer-vision-hackathon/,
also mirrored on Kaggle as "emergency-vs-nonemergency-vehicle-classification"), then run
    python scripts/prepare_data.py PATH_TO_FOLDER_OR_ZIP"""


def dataset_root(folder: Path) -> Path:
    """The folder itself, or the single sub-folder a zip usually wraps the files in."""
    entries = [p for p in folder.iterdir() if not p.name.startswith(("_", "."))]
    if len(entries) == 1 and entries[0].is_dir():
        inner = dataset_root(entries[0])
        # A wrapper holds the data set; a single class folder or images/ alone is the data set's own content.
        if (
            any(p.suffix.lower() == ".csv" for p in inner.iterdir())
            or len([p for p in inner.iterdir() if p.is_dir()]) > 1
        ):
            return inner
    return folder


def validate(root: Path, shown: Path, columns: tuple[str | None, str | None] = (None, None)) -> str:
    """What the data set at `root` holds, in a few words; a UserError naming `shown` (the user's path) if unusable."""
    try:
        if any(p.suffix.lower() == ".csv" for p in root.iterdir()):
            data = csv_data(root, "auto", "auto", *columns, None)
            what = f"a csv of {len(data.table)} labelled images"
        else:
            data = folder_data(root, None)
            what = f"class folders: {len(data.table)} images"
            if len(data.class_names) < 2:
                raise UserError(
                    f"{shown} holds no csv of labels and only one folder ({data.class_names[0]}/): give a folder (or "
                    "zip) with a labelled csv and its images, or one folder per class (two or more)."
                )
    except DataError as error:  # its paths are in the staging folder; the user knows them by `shown`
        raise UserError(str(error).replace(str(root), str(shown))) from None
    return f"{what}, {len(data.class_names)} classes {data.class_names}"


def stage(source: Path, staging: Path, copy: bool, columns=(None, None)) -> Path:
    """The new data set, built (extracted, copied or linked) and validated inside `staging`."""
    if source.is_dir():
        root = dataset_root(source)
        validate(root, root, columns)  # before copying: a wrong folder fails at once, not after copying all of it
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
    print(f"validating {shown}: {validate(staged, shown, columns)}")
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


def prepare(source: Path, target: Path, copy: bool, columns=(None, None)) -> None:
    if not source.exists():
        raise UserError(f"{source} does not exist: give the path of the data set's folder or zip.")
    # The old target is deleted at the end, and the staging folder is made beside it.
    if not target.is_symlink() and source.is_relative_to(target.resolve()):
        raise UserError(f"{source} is (or lies inside) {target}, which would be replaced: move the data set out of it.")
    if source.is_dir() and target.parent.resolve().is_relative_to(source):
        raise UserError(f"--target {target} lies inside {source}: choose a target outside the data set.")
    require_writable(target.parent, "--target DIR puts the data set elsewhere")
    # Same parent as the target: the final renames stay on one file system, hence atomic.
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.new-", dir=target.parent))
    aside = staging / "old"
    try:
        swap_in(stage(source, staging, copy, columns), target, aside)
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
    parser.add_argument("--target", type=Path, help=f"where the data set goes (default: {DATA_DIR}/<its name>)")
    parser.add_argument("--name-column", help="a csv's image name column (default: its first)")
    parser.add_argument("--label-column", help="a csv's label column (default: its second)")
    args = parser.parse_args(argv)

    source = args.source or (SHARED if SHARED.is_dir() else None)
    if source is None:
        print(HOW_TO_GET.format(shared=SHARED), file=sys.stderr)
        return 1
    source = source.expanduser().resolve()
    target = args.target or DATA_DIR / source.name.removesuffix(".zip")
    target = Path(os.path.abspath(target.expanduser()))  # not resolved: a linked target is replaced, not followed
    try:
        prepare(source, target, args.copy, (args.name_column, args.label_column))
    except UserError as error:
        print(f"{error} Nothing changed at {target}.", file=sys.stderr)
        return 1
    except OSError as error:
        # copytree's error lists every file that failed: the first one says why
        reason = error.args[0][0][2] if isinstance(error, shutil.Error) and error.args[0] else error
        print(
            f"preparing {target} from {source} failed: {reason} ({free_space(target.parent)} there). Nothing changed "
            f"at {target}; make room there (or choose another --target DIR), then run again.",
            file=sys.stderr,
        )
        return 1
    print(f"data ready at {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
