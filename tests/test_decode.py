"""Decoding: every kind of bad file becomes UnusableImage with a clear reason; DCT scaling is
chosen so that the fundus never falls below the radius the cache needs."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from PIL import Image

from fundus_lib.data.decode import UnusableImage, choose_reduction, decode_fundus, load_thumbnail


def disc_image(width=600, height=400, radius=180, colour=(200, 90, 40)):
    """A flat 'fundus': a coloured disc on black."""
    image = np.zeros((height, width, 3), np.uint8)
    cv2.circle(image, (width // 2, height // 2), radius, colour, -1)
    return image


def save(image: Image.Image, path, **kwargs):
    image.save(path, **kwargs)
    return path


@pytest.fixture
def jpeg(tmp_path):
    return save(Image.fromarray(disc_image()), tmp_path / "1_left.jpeg", quality=92)


def test_good_jpeg(jpeg):
    decoded = decode_fundus(jpeg, target_radius=40)
    assert decoded.rgb.dtype == np.uint8 and decoded.rgb.ndim == 3
    assert decoded.reduction == 4  # 180 / 4 = 45 >= 40, 180 / 8 < 40
    assert decoded.fov.radius == pytest.approx(180 / 4, rel=0.05)
    assert decoded.note == "" and len(decoded.sha1) == 40
    assert (decoded.width, decoded.height) == (600, 400)


@pytest.mark.parametrize("target", [20, 45, 90, 180])
def test_reduction_keeps_radius_at_or_above_target(jpeg, target):
    decoded = decode_fundus(jpeg, target_radius=target)
    assert decoded.fov.radius >= target * 0.97 or decoded.reduction == 1
    if decoded.reduction < 8:  # the next larger reduction would have gone below the target
        assert 180 / (decoded.reduction * 2) < target


def test_small_fundus_in_large_frame_triggers_a_second_decode(tmp_path):
    path = save(Image.fromarray(disc_image(800, 600, radius=100)), tmp_path / "2_left.jpeg")
    assert choose_reduction(800, 600, 50) == 4  # guessed radius 270 / 4 >= 50
    decoded = decode_fundus(path, target_radius=50)
    assert decoded.reduction == 2 and decoded.fov.radius >= 49


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(UnusableImage, match="file not found"):
        decode_fundus(tmp_path / "nope.jpeg", 40)
    empty = tmp_path / "empty.jpeg"
    empty.write_bytes(b"")
    with pytest.raises(UnusableImage, match="empty file"):
        decode_fundus(empty, 40)


def test_non_image_with_jpeg_name(tmp_path):
    path = tmp_path / "text.jpeg"
    path.write_text("this is not a photograph\n")
    with pytest.raises(UnusableImage, match="not an image file"):
        decode_fundus(path, 40)


def test_truncated_jpeg(tmp_path, jpeg):
    data = jpeg.read_bytes()
    cut = tmp_path / "cut.jpeg"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(UnusableImage, match="truncated"):
        decode_fundus(cut, 40)


def test_grayscale_is_skipped_unless_allowed(tmp_path):
    path = save(Image.fromarray(disc_image()).convert("L"), tmp_path / "gray.jpeg")
    with pytest.raises(UnusableImage, match="grayscale"):
        decode_fundus(path, 40)
    decoded = decode_fundus(path, 40, allow_grayscale=True)
    assert "grayscale" in decoded.note
    assert np.array_equal(decoded.rgb[..., 0], decoded.rgb[..., 1])


def test_cmyk_is_converted_with_a_note(tmp_path):
    path = save(Image.fromarray(disc_image()).convert("CMYK"), tmp_path / "cmyk.jpeg")
    decoded = decode_fundus(path, 40)
    assert decoded.note == "converted from CMYK"
    centre = decoded.rgb[decoded.rgb.shape[0] // 2, decoded.rgb.shape[1] // 2].astype(int)
    assert abs(centre - np.array([200, 90, 40])).max() < 25


def test_16_bit_image_is_skipped(tmp_path):
    deep = Image.fromarray(disc_image()[..., 0].astype(np.uint16) * 256)
    assert deep.mode.startswith("I;16")
    path = tmp_path / "deep.jpeg"  # a 16-bit PNG under a .jpeg name
    buffer = io.BytesIO()
    deep.save(buffer, format="PNG")
    path.write_bytes(buffer.getvalue())
    with pytest.raises(UnusableImage, match="16-bit"):
        decode_fundus(path, 40)


@pytest.mark.parametrize("noise", [0, 3])
def test_black_image_has_no_fundus(tmp_path, noise):
    rng = np.random.default_rng(0)
    black = rng.integers(0, noise + 1, (400, 600, 3)).astype(np.uint8)
    path = save(Image.fromarray(black), tmp_path / "black.jpeg")
    with pytest.raises(UnusableImage, match="no fundus"):
        decode_fundus(path, 40)


def test_a_strip_is_not_a_fundus_photograph(tmp_path):
    """A 2000 x 40 bright strip was cached as ok and trained on."""
    strip = np.full((40, 2000, 3), (200, 90, 40), np.uint8)
    with pytest.raises(UnusableImage, match="not a fundus photograph: its bright field is 0.02 times as high"):
        decode_fundus(save(Image.fromarray(strip), tmp_path / "strip.jpeg"), 16)


def test_a_field_cut_at_top_and_bottom_is_a_fundus(tmp_path):
    cut = disc_image(width=600, height=400, radius=260)  # 400 of 520 px high: cut as in many EyePACS photographs
    decoded = decode_fundus(save(Image.fromarray(cut), tmp_path / "cut.jpeg"), 40)
    assert decoded.fov.radius * decoded.reduction > 250


def test_a_tiny_image_is_too_small_not_blank(tmp_path):
    """An 8 x 8 image was skipped as "black or blank"."""
    tiny = np.full((8, 8, 3), 180, np.uint8)
    with pytest.raises(UnusableImage, match=r"image too small \(8 x 8 px; at least 32 px a side\)"):
        decode_fundus(save(Image.fromarray(tiny), tmp_path / "tiny.png"), 4)


def test_png_is_decoded_in_full(tmp_path):
    path = save(Image.fromarray(disc_image()), tmp_path / "1_left.png")
    decoded = decode_fundus(path, 20)
    assert decoded.reduction == 1 and decoded.rgb.shape == (400, 600, 3)


def test_dct_scaled_decode_is_close_to_full_decode_and_resize(real_sample):
    path = real_sample / "images" / "eyepacs_16_left.jpeg"
    decoded = decode_fundus(path, 128, allow_grayscale=True)
    assert decoded.reduction == 8
    full = np.asarray(Image.open(path).convert("RGB"))
    reference = cv2.resize(full, decoded.rgb.shape[1::-1], interpolation=cv2.INTER_AREA)
    assert np.abs(decoded.rgb.astype(int) - reference.astype(int)).mean() < 2.0


def test_thumbnail_fits(jpeg):
    thumbnail = load_thumbnail(jpeg, 100)
    assert max(thumbnail.shape[:2]) <= 100 and thumbnail.shape[2] == 3
