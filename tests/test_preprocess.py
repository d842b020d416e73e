"""Graham preprocessing: field-of-view estimation, geometry and the filter itself."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fundus_lib.data.preprocess import (
    FieldOfView,
    circle_mask,
    crop_to_fundus,
    estimate_field_of_view,
    graham,
    preprocess,
)


def fundus(width, height, cx, cy, radius, value=(180, 80, 40)):
    image = np.zeros((height, width, 3), np.uint8)
    cv2.circle(image, (round(cx), round(cy)), round(radius), value, -1)
    return image


@settings(max_examples=60, deadline=None)
@given(
    radius=st.integers(30, 200),
    dx=st.integers(-20, 20),
    dy=st.integers(-20, 20),
    cut=st.one_of(st.none(), st.floats(0.7, 0.98)),
)
def test_field_of_view_is_recovered(radius, dx, dy, cut):
    """Full fields anywhere in the frame, and fields cut at top and bottom: within 2 px."""
    width = 2 * radius + 100
    if cut is None:
        height, cx, cy = 2 * radius + 60, width / 2 + dx, radius + 30 + dy
    else:  # the circle is taller than the photo and centred in it
        height = round(2 * radius * cut)
        cx, cy = width / 2 + dx, height / 2
    fov = estimate_field_of_view(fundus(width, height, cx, cy, radius))
    assert fov is not None
    assert abs(fov.radius - radius) <= 2
    assert abs(fov.cx - cx) <= 2
    assert abs(fov.cy - cy) <= 2


def test_no_fundus_in_dark_images():
    assert estimate_field_of_view(np.zeros((100, 150, 3), np.uint8)) is None
    assert estimate_field_of_view(np.full((100, 150, 3), 5, np.uint8)) is None


def test_crop_centres_and_scales_the_fundus():
    image = fundus(400, 300, 220, 140, 100)
    square = crop_to_fundus(image, FieldOfView(220, 140, 100), 64)
    assert square.shape == (64, 64, 3)
    fov = estimate_field_of_view(square)
    assert fov.radius == pytest.approx(32, abs=1.5)
    assert fov.cx == pytest.approx(31.5, abs=1.5) and fov.cy == pytest.approx(31.5, abs=1.5)


def test_crop_pads_black_outside_the_photo():
    image = np.full((100, 100, 3), 200, np.uint8)
    square = crop_to_fundus(image, FieldOfView(10, 50, 40), 80)  # window sticks out on the left
    assert square[:, :20].max() == 0 and square[:, 60:].min() > 150


def test_crop_of_a_mask_keeps_codes():
    mask = np.zeros((300, 400), np.uint8)
    mask[140:150, 200:210] = 3
    out = crop_to_fundus(mask, FieldOfView(200, 150, 100), 50, interpolation=cv2.INTER_NEAREST)
    assert set(np.unique(out)) == {0, 3}


def test_graham_flat_image_is_grey_and_outside_circle_is_grey():
    flat = np.full((64, 64, 3), 77, np.uint8)
    out = graham(flat, circle=0.9)
    assert np.all(out == 128)


def test_graham_amplifies_a_dark_spot_and_masks_the_rim():
    square = np.full((128, 128, 3), 120, np.uint8)
    square[60:64, 60:64] = 100  # a small dark lesion
    out = graham(square, circle=0.95)
    assert out[62, 62, 0] < 128 - 2 * 20  # the 20-level dip is amplified (about 4x minus the blur's share)
    assert out[~circle_mask(128, 0.95)].min() == 128 == out[~circle_mask(128, 0.95)].max()


def test_graham_matches_the_formula():
    rng = np.random.default_rng(1)
    square = rng.integers(60, 200, (64, 64, 3)).astype(np.uint8)
    out = graham(square, circle=1.0)
    blur = cv2.GaussianBlur(square, (0, 0), 32 / 30).astype(np.float64)
    expected = np.clip(4 * square.astype(np.float64) - 4 * blur + 128, 0, 255)
    inside = circle_mask(64, 1.0)
    assert np.abs(out[inside].astype(float) - expected[inside]).max() <= 4.5  # uint8 blur rounding x 4


def test_circle_mask_area():
    assert circle_mask(200, 0.95).mean() == pytest.approx(np.pi * 0.95**2 / 4, rel=0.01)


def test_preprocess_shape_and_type():
    image = fundus(600, 400, 300, 200, 190)
    out = preprocess(image, estimate_field_of_view(image), 96)
    assert out.shape == (96, 96, 3) and out.dtype == np.uint8
