"""Reading image files as they are displayed, in 8 bits: the one decoder of training, eval, predict,
the data audit and the perceptual hash.

Two things a plain `Image.open` gets wrong for photos and scans:

- orientation: cameras store pixels as the sensor saw them and an EXIF orientation tag saying how
  to turn them; viewers apply it, so the labeller saw the turned image and so must the model;
- bit depth: Pillow's convert() clips 16-bit and float values at 255 (a white image).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError
from torchvision.transforms.v2 import functional as F

# Cached images keep at most this multiple of the training size on their shorter side: enough room
# for crops, bounded memory for data sets of large photos.
CACHE_SCALE = 1.25
# Bumped whenever decoding changes the pixels it gives: images cached on disk are then decoded again.
DECODER_VERSION = 1

# An image file by path, its bytes, or an opened binary file.
ImageSource = Path | bytes | BinaryIO

# EXIF orientations that turn the image by 90 degrees (width and height swap when displayed).
_QUARTER_TURNS = (5, 6, 7, 8)


def stored_side(image_size: int) -> int:
    """The shorter side that images for a model of `image_size` are decoded (and cached) at."""
    return round(image_size * CACHE_SCALE)


def orientation(image: Image.Image) -> int:
    """The EXIF orientation that decoding applies: 2..8, or 1 where there is none (or an invalid one)."""
    value = image.getexif().get(ExifTags.Base.Orientation, 1)
    return value if value in range(2, 9) else 1


def displayed_size(image: Image.Image) -> tuple[int, int]:
    """(width, height) as displayed, read from the header of an opened (not yet decoded) image."""
    width, height = image.size
    # Pillow's TIFF reader already reports (and decodes) TIFFs upright; other readers give the stored size.
    if orientation(image) in _QUARTER_TURNS and image.format != "TIFF":
        return height, width
    return width, height


def to_8bit(image: Image.Image) -> Image.Image:
    """A high-bit-depth grey image as 8-bit "L"; other modes unchanged.

    The scale comes from the mode, never from the pixel values, so a dark image stays dark:
    - "I;16*" (16-bit) and "I" (32-bit integers, which Pillow uses for 16-bit PGM/PPM and some
      TIFFs) hold 0..65535: divided by 257, so 65535 -> 255 exactly and k * 257 -> k;
    - "F" (32-bit float) holds 0..1 by convention: multiplied by 255.
    Values outside the range are clipped, and results rounded, so k / 255 as a float gives k back.
    """
    if image.mode.startswith("I;16") or image.mode == "I":
        scale = 1 / 257
    elif image.mode == "F":
        scale = 255.0
    else:
        return image
    values = np.asarray(image, dtype=np.float32) * scale
    return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8))


def read_upright(source: ImageSource, draft_side: int | None = None, max_pixels: int | None = None) -> Image.Image:
    """The decoded image in `source`, turned as displayed and in 8 bits (colour mode otherwise as stored).

    `draft_side` lets JPEGs decode at a reduced scale (1/2, 1/4 or 1/8) whose shorter side is still at
    least that many pixels; the box is square, so the bound holds whichever way the image is turned.
    `max_pixels` refuses an image of more pixels from its header, before any pixel is decoded (a PNG of
    20,000 x 20,000 can take 50 kB on disk and 1.2 GB decoded), with Pillow's DecompressionBombError; Pillow's own
    check refuses images over twice its MAX_IMAGE_PIXELS whatever this says.
    """
    with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
        if max_pixels is not None and image.width * image.height > max_pixels:
            raise Image.DecompressionBombError(
                f"{image.width} x {image.height} pixels, more than the {max_pixels} allowed"
            )
        if draft_side is not None:
            image.draft("RGB", (draft_side, draft_side))
        # exif_transpose loads the pixels (at the draft scale) into a copy, which outlives the file.
        return to_8bit(ImageOps.exif_transpose(image))


def decode_image(source: ImageSource, max_short_side: int, max_pixels: int | None = None) -> torch.Tensor:
    """An image (a file's path, its bytes or an opened file) as a uint8 RGB tensor (C, H, W), upright; a view of
    the decoder's (H, W, C) pixels.

    Grey, palette, RGBA (alpha dropped), CMYK, 16-bit and float images become 8-bit RGB; large images
    are downscaled (JPEGs already while decoding, via draft mode) to `max_short_side`. `max_pixels`: see
    read_upright.
    """
    image = read_upright(source, max_short_side, max_pixels).convert("RGB")
    if min(image.size) > max_short_side:
        scale = max_short_side / min(image.size)
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.BICUBIC)
    return F.pil_to_tensor(image)


def decode_each(paths: list[Path], image_size: int, threads: int = 4, chunk: int = 256) -> Iterator[torch.Tensor | str]:
    """Each image decoded (PIL releases the GIL, so threads help), in order, `chunk` at a time so memory stays
    bounded: its uint8 tensor, or "path: reason" where decoding failed."""
    max_side = stored_side(image_size)

    def load(path: Path):
        try:
            return decode_image(path, max_side)
        except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as error:
            reason = "empty file" if path.stat().st_size == 0 else f"{type(error).__name__}: {error}"
            return f"{path}: {reason}"

    with ThreadPoolExecutor(threads) as pool:
        for start in range(0, len(paths), chunk):
            yield from pool.map(load, paths[start : start + chunk])


def decode_all(
    paths: list[Path], image_size: int, threads: int = 4
) -> tuple[list[torch.Tensor | None], dict[int, str]]:
    """Every image decoded into memory: the images (None where decoding failed) and {position: "path: reason"} of
    the failures."""
    results = list(decode_each(paths, image_size, threads))
    failed = {i: r for i, r in enumerate(results) if isinstance(r, str)}
    return [None if isinstance(r, str) else r for r in results], failed
