"""Small synthetic images and labelled data sets, made inside the tests.

Each image is a random grid of coloured blocks drawn from its index: distinct content (and far-apart
perceptual hashes) per index, reproducible across runs, and no two rotations of it alike.
"""

from __future__ import annotations

import csv
import shutil
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

ORIENTATION_TAG = 0x0112  # EXIF Orientation
# How a viewer turns the stored pixels for each EXIF orientation, as numpy quarter turns (counter-clockwise).
QUARTER_TURNS = {1: 0, 3: 2, 6: -1, 8: 1}
CLASSES = ["non_emergency", "emergency"]


def blocks(index: int, size: tuple[int, int] = (48, 32), grid: tuple[int, int] = (6, 4)) -> Image.Image:
    """An RGB image of `size` (width, height): a `grid` (columns, rows) of random colours seeded by `index`."""
    colours = np.random.default_rng(index).integers(0, 256, (grid[1], grid[0], 3), dtype=np.uint8)
    return Image.fromarray(colours).resize(size, Image.NEAREST)


def save_oriented(image: Image.Image, path: Path, orientation: int, **save_args) -> Path:
    """Save `image`'s pixels as stored, with an EXIF orientation tag telling viewers how to turn them."""
    exif = Image.Exif()
    exif[ORIENTATION_TAG] = orientation
    image.save(path, exif=exif, **save_args)
    return path


def as_displayed(image: Image.Image, orientation: int) -> Image.Image:
    """The stored pixels turned the way a viewer shows them for `orientation` (1, 3, 6 or 8)."""
    return Image.fromarray(np.ascontiguousarray(np.rot90(np.asarray(image), QUARTER_TURNS[orientation])))


def make_dataset(
    root: Path,
    count: int = 8,
    size: tuple[int, int] = (48, 32),
    csv_name: str = "train.csv",
    image_dir: str = "images",
    counts: dict[int, int] | None = None,
    name: str = "img_{:03d}.jpg",
    columns: tuple[str, str] = ("image_names", "emergency_or_not"),
) -> Path:
    """`root` with a csv (`columns`: the image name and the label index; by default the first data set's) and
    distinct images named `name` by index (img_000.jpg ..., saved in the format of the suffix): `count` of them,
    classes alternating, or per `counts` ({label: n}) n images of each label, label by label."""
    labels = [label for label, n in counts.items() for _ in range(n)] if counts else [i % 2 for i in range(count)]
    (root / image_dir).mkdir(parents=True)
    rows = []
    for index, label in enumerate(labels):
        file_name = name.format(index)
        blocks(index, size).save(root / image_dir / file_name, quality=95)
        rows.append((file_name, label))
    with open(root / csv_name, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([columns, *rows])
    return root


# Three classes with names no code default knows: a space, an accent, a hyphen.
OTHER_CLASSES = ["cat", "grand piano", "épée-x"]
# What users' folders hold beside their photos: none of it is an image to train on.
JUNK_FILES = ("Thumbs.db", ".DS_Store", "._img_000.jpg", "README.md", ".ipynb_checkpoints/img_x.jpg")


def make_folder_dataset(
    root: Path,
    classes: list[str] = OTHER_CLASSES,
    per_class: int = 20,
    splits: dict[str, int] | None = None,
    junk: bool = True,
    size: tuple[int, int] = (48, 32),
) -> Path:
    """A folder per class under `root` (with `splits`, {folder: images per class}, under root/<folder>/ instead, e.g.
    {"train": 16, "val": 6, "test": 6}); every other class keeps some images in a nested folder; with `junk`, each
    class folder also holds JUNK_FILES. Image content is distinct across the whole set."""
    index = 0
    for split, count in (splits or {"": per_class}).items():
        for label, name in enumerate(classes):
            folder = root / split / name
            for i in range(count):
                where = folder / "nested" / "deeper" if label % 2 and i % 3 == 0 else folder
                where.mkdir(parents=True, exist_ok=True)
                blocks(1000 + index, size).save(where / f"img_{index:04d}.jpg", quality=95)
                index += 1
            for junk_name in JUNK_FILES if junk else ():
                (folder / junk_name).parent.mkdir(parents=True, exist_ok=True)
                (folder / junk_name).write_bytes(b"not an image")
    return root


def make_csv_dataset(
    root: Path,
    columns: tuple[str, str] = ("file", "species"),
    classes: list[str] = OTHER_CLASSES,
    per_class: int = 20,
    csv_name: str = "labels.csv",
    image_dir: str = "pictures",
) -> Path:
    """`root`/`csv_name` with the user's `columns` (image, label) and class names as labels, a third column the
    template must ignore, and the images in `root`/`image_dir`. Rows are shuffled: their order means nothing."""
    (root / image_dir).mkdir(parents=True)
    rows = []
    for label, name in enumerate(classes):
        for i in range(per_class):
            file_name = f"p{label}_{i:03d}.png"
            blocks(5000 + label * per_class + i).save(root / image_dir / file_name)
            rows.append((file_name, name, f"note {i}"))
    np.random.default_rng(0).shuffle(rows)
    with open(root / csv_name, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([(*columns, "comment"), *rows])
    return root


def make_zip(folder: Path, zip_path: Path, wrapper: str | None = "emergency_vehicles") -> Path:
    """`folder`'s files zipped, inside a `wrapper` folder as downloads usually are (None: at the top)."""
    with zipfile.ZipFile(zip_path, "w") as archive:
        for path in sorted(folder.rglob("*")):
            relative = path.relative_to(folder).as_posix()
            archive.write(path, f"{wrapper}/{relative}" if wrapper else relative)
    return zip_path


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (followed through a link) by relative path, with its bytes."""
    root = folder.resolve()
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def add_copies(root: Path, names: list[str], prefix: str, quality: int | None = None) -> list[str]:
    """Each of `names` (in root/images, listed in root/train.csv) once more as `prefix` + name with its label, appended
    to the csv: byte for byte, or re-encoded as a JPEG at `quality` (other bytes, the same picture). Returns the new
    names."""
    with open(root / "train.csv", newline="", encoding="utf-8") as handle:
        label_of = {row["image_names"]: row["emergency_or_not"] for row in csv.DictReader(handle)}
    copies = []
    for name in names:
        copy = prefix + name
        if quality is None:
            shutil.copyfile(root / "images" / name, root / "images" / copy)
        else:
            with Image.open(root / "images" / name) as image:
                image.convert("RGB").save(root / "images" / copy, format="JPEG", quality=quality)
        copies.append(copy)
    with open(root / "train.csv", "a", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows((copy, label_of[name]) for copy, name in zip(copies, names))
    return copies
