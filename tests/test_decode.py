"""Images are read as displayed (EXIF orientation) and in 8 bits by one rule, in the decoder and the hash alike."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from image_transfer.data.decode import decode_image, displayed_size, orientation, to_8bit
from image_transfer.data.near_duplicates import perceptual_hash
from tests.helpers.images import as_displayed, blocks, save_oriented


def _distance(a: int, b: int) -> int:
    return bin(a ^ b).count("1")


@pytest.mark.parametrize("orientation_tag", [3, 6, 8])
def test_tagged_png_decodes_exactly_as_the_physically_turned_image(tmp_path, orientation_tag):
    stored = blocks(1)  # 48 x 32: a quarter turn shows 32 x 48
    tagged = save_oriented(stored, tmp_path / "tagged.png", orientation_tag)
    turned = as_displayed(stored, orientation_tag)
    turned.save(tmp_path / "turned.png")

    decoded = decode_image(tagged, 1000)
    assert torch.equal(decoded, decode_image(tmp_path / "turned.png", 1000))
    assert torch.equal(decoded, torch.from_numpy(np.array(turned)).permute(2, 0, 1))
    with Image.open(tagged) as image:
        assert orientation(image) == orientation_tag and displayed_size(image) == turned.size


@pytest.mark.parametrize("orientation_tag", [3, 6, 8])
def test_tagged_jpeg_decodes_upright_also_in_draft_mode(tmp_path, orientation_tag):
    stored = blocks(2, size=(600, 400))
    tagged = save_oriented(stored, tmp_path / "tagged.jpg", orientation_tag, quality=95)
    as_displayed(stored, orientation_tag).save(tmp_path / "turned.jpg", quality=95)

    for short_side in (1000, 100):  # 100: JPEG draft mode decodes at 1/4 scale, then the image is turned
        decoded, reference = (decode_image(path, short_side) for path in (tagged, tmp_path / "turned.jpg"))
        assert decoded.shape == reference.shape
        assert min(decoded.shape[1:]) == min(short_side, 400)
        assert (decoded.shape[1] > decoded.shape[2]) == (orientation_tag in (6, 8))  # portrait when turned
        assert (decoded.float() - reference.float()).abs().mean() < 3


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_bytes_and_opened_files_decode_as_the_path_does(tmp_path, suffix):
    tagged = save_oriented(blocks(7, size=(600, 400)), tmp_path / f"tagged{suffix}", 6)
    for short_side in (1000, 100):  # 100: JPEG draft mode
        reference = decode_image(tagged, short_side)
        assert reference.shape[1] > reference.shape[2]  # turned: the check can fail
        with open(tagged, "rb") as opened:
            assert torch.equal(decode_image(opened, short_side), reference)
        assert torch.equal(decode_image(tagged.read_bytes(), short_side), reference)


def test_images_over_max_pixels_are_refused_from_the_header_before_decoding(tmp_path, monkeypatch):
    path = tmp_path / "wide.png"
    blocks(8, size=(300, 200)).save(path)
    assert decode_image(path, 1000, max_pixels=300 * 200).shape == (3, 200, 300)

    def no_decoding(*args, **kwargs):
        raise AssertionError("pixels decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    with pytest.raises(AssertionError, match="pixels decoded"):  # within the limit: decoding starts
        decode_image(path, 1000, max_pixels=300 * 200)
    with pytest.raises(Image.DecompressionBombError, match="300 x 200 pixels, more than the 59999 allowed"):
        decode_image(path.read_bytes(), 1000, max_pixels=300 * 200 - 1)


def test_draft_mode_decodes_a_turned_jpeg_at_the_reduced_scale(tmp_path, monkeypatch):
    tagged = save_oriented(blocks(6, size=(800, 400)), tmp_path / "tagged.jpg", 6, quality=95)

    def no_resizing(*args, **kwargs):
        raise AssertionError("decoded at full size and resized: draft mode was not used")

    monkeypatch.setattr(Image.Image, "resize", no_resizing)  # 1/4 scale: stored 200 x 100, shown 100 x 200
    assert decode_image(tagged, 100).shape == (3, 200, 100)


@pytest.mark.parametrize("orientation_tag", [3, 6, 8])
def test_perceptual_hash_of_a_tagged_image_is_that_of_the_turned_one(tmp_path, orientation_tag):
    stored = blocks(3, size=(64, 48))
    for suffix in (".png", ".jpg"):
        tagged = save_oriented(stored, tmp_path / f"tagged{suffix}", orientation_tag)
        as_displayed(stored, orientation_tag).save(tmp_path / f"turned{suffix}")
        assert _distance(perceptual_hash(tagged), perceptual_hash(tmp_path / f"turned{suffix}")) <= 2
    stored.save(tmp_path / "stored.png")  # the pixels as stored hash far apart: the check can fail
    assert _distance(perceptual_hash(tmp_path / "tagged.png"), perceptual_hash(tmp_path / "stored.png")) > 10


def test_high_bit_depth_images_give_the_same_8_bits_in_decoder_and_hash(tmp_path):
    grey = np.asarray(blocks(4, size=(64, 48), grid=(16, 12)).convert("L"))
    Image.fromarray(grey).save(tmp_path / "L.png")
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "I16.png")  # reopens as "I;16"
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "I16.pgm")  # reopens as "I"
    Image.fromarray(grey.astype(np.int32) * 257).save(tmp_path / "I32.tif")
    Image.fromarray((grey / 255).astype(np.float32)).save(tmp_path / "F.tif")
    modes = {}
    for name in ("I16.png", "I16.pgm", "I32.tif", "F.tif"):
        with Image.open(tmp_path / name) as image:
            modes[name] = image.mode
    assert modes == {"I16.png": "I;16", "I16.pgm": "I", "I32.tif": "I", "F.tif": "F"}

    reference, reference_hash = decode_image(tmp_path / "L.png", 1000), perceptual_hash(tmp_path / "L.png")
    for name in modes:
        assert torch.equal(decode_image(tmp_path / name, 1000), reference), name
        assert perceptual_hash(tmp_path / name) == reference_hash, name


def test_the_scale_comes_from_the_mode_not_the_pixel_values():
    dark = Image.fromarray(np.full((4, 4), 255, dtype=np.uint16))  # dark in 16 bits, not white in 8
    assert np.asarray(to_8bit(dark)).max() == 1
    full = Image.fromarray(np.array([[0, 65535]], dtype=np.uint16))
    assert np.asarray(to_8bit(full)).tolist() == [[0, 255]]
    floats = Image.fromarray(np.array([[-0.5, 0.5, 1.0, 2.0]], dtype=np.float32))  # clipped to 0..1
    assert np.asarray(to_8bit(floats)).tolist() == [[0, 128, 255, 255]]
    assert to_8bit(blocks(5)).mode == "RGB"  # 8-bit modes pass through
