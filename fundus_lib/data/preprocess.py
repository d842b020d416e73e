"""Graham preprocessing (Kaggle DR 2015 winner), as the report's section 2.2 describes it.

1. estimate the fundus' field of view (centre and radius) from the bright pixels,
2. crop the square around it and scale it so the radius is ``size / 2`` (black outside the photo),
3. subtract the local Gaussian mean: ``4 * image - 4 * blur(image, sigma = radius / 30) + 128``,
4. keep a circle of ``circle * radius`` (the report: 95 %; its code: 90 %) and set the rest to 128.

All functions take and return uint8 arrays (H, W, 3) in RGB order.

Example::

    fov = estimate_field_of_view(rgb)
    cached = graham(crop_to_fundus(rgb, fov, size=512), circle=0.95)
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

#: A row/column pixel belongs to the fundus when its channel sum exceeds max(this, mean / 10).
#: The mean / 10 rule is the original code's; the floor keeps JPEG noise on black from counting.
MIN_FUNDUS_SUM = 30
#: Fields narrower than this (in px, after any decoding reduction) are "no fundus found".
MIN_RADIUS_PX = 8


@dataclass(frozen=True)
class FieldOfView:
    """The fundus circle in image pixels: centre (cx, cy) and radius."""

    cx: float
    cy: float
    radius: float

    def scaled(self, factor: float) -> FieldOfView:
        """The same circle in an image resized by ``factor``."""
        return FieldOfView(self.cx * factor, self.cy * factor, self.radius * factor)


def _bright_span(profile: np.ndarray) -> tuple[float, float]:
    """Mean position and half the count of the bright entries of a 1-D channel-sum profile."""
    bright = np.flatnonzero(profile > max(MIN_FUNDUS_SUM, profile.mean() / 10))
    if bright.size == 0:
        return 0.0, 0.0
    return float(bright.mean()), bright.size / 2


def _band(image: np.ndarray, centre: float, axis: int) -> np.ndarray:
    """Channel sums along a band of 1 % of the image around row (axis 0) or column (axis 1) ``centre``."""
    length = image.shape[axis]
    half = max(1, length // 200)
    start, stop = max(0, int(centre) - half), min(length, int(centre) + half + 1)
    band = image[start:stop] if axis == 0 else image[:, start:stop].transpose(1, 0, 2)
    return band.astype(np.float32).sum(axis=2).mean(axis=0)


def estimate_field_of_view(rgb: np.ndarray) -> FieldOfView | None:
    """Centre and radius of the fundus, or None when no fundus is found (a black or blank image).

    The radius is half the bright chord through the centre row (the original code's estimate,
    robust to fields cut at top and bottom); the centre is the mean bright position along that
    row and along the centre column. The row is re-measured once through the found centre.
    """
    height, width = rgb.shape[:2]
    cx, radius = _bright_span(_band(rgb, height / 2, axis=0))
    if radius < MIN_RADIUS_PX:
        return None
    cy, _ = _bright_span(_band(rgb, cx, axis=1))
    cx, radius = _bright_span(_band(rgb, cy, axis=0))
    if radius < MIN_RADIUS_PX:
        return None
    return FieldOfView(cx, cy, radius)


def field_aspect(rgb: np.ndarray, fov: FieldOfView) -> float:
    """Height / width of the bright field through its centre: about 1 for a round field, 0.7-0.9 for
    one cut at top and bottom, far below for a strip or banner that is not a fundus photograph."""
    _, half_height = _bright_span(_band(rgb, fov.cx, axis=1))
    return half_height / fov.radius


def crop_to_fundus(image: np.ndarray, fov: FieldOfView, size: int, interpolation: int = cv2.INTER_AREA) -> np.ndarray:
    """The square of side ``2 * radius`` around the fundus, resized to ``size`` x ``size``.

    Parts of the square outside the photograph are black (0). Works for (H, W, C) images and
    (H, W) masks (pass ``cv2.INTER_NEAREST`` for masks). Upscaling uses bilinear interpolation.
    """
    side = max(1, round(2 * fov.radius))
    x0, y0 = round(fov.cx - fov.radius), round(fov.cy - fov.radius)
    window = np.zeros((side, side, *image.shape[2:]), dtype=image.dtype)
    src_x0, src_y0 = max(0, x0), max(0, y0)
    src_x1, src_y1 = min(image.shape[1], x0 + side), min(image.shape[0], y0 + side)
    if src_x1 > src_x0 and src_y1 > src_y0:
        window[src_y0 - y0 : src_y1 - y0, src_x0 - x0 : src_x1 - x0] = image[src_y0:src_y1, src_x0:src_x1]
    if side < size and interpolation == cv2.INTER_AREA:
        interpolation = cv2.INTER_LINEAR
    return cv2.resize(window, (size, size), interpolation=interpolation)


def circle_mask(size: int, circle: float) -> np.ndarray:
    """Boolean (size, size) disc of radius ``circle * size / 2`` at the centre."""
    centre = (size - 1) / 2
    yy, xx = np.ogrid[:size, :size]
    return (xx - centre) ** 2 + (yy - centre) ** 2 <= (circle * size / 2) ** 2


def graham(square: np.ndarray, circle: float = 0.95) -> np.ndarray:
    """Graham's local-mean subtraction on a fundus square whose radius is half its side.

    ``out = 4 * x - 4 * GaussianBlur(x, sigma = radius / 30) + 128`` (saturated to uint8), then
    pixels outside ``circle * radius`` are set to 128.
    """
    size = square.shape[0]
    blurred = cv2.GaussianBlur(square, (0, 0), sigmaX=size / 2 / 30)
    out = cv2.addWeighted(square, 4, blurred, -4, 128)
    out[~circle_mask(size, circle)] = 128
    return out


def preprocess(rgb: np.ndarray, fov: FieldOfView, size: int, circle: float = 0.95) -> np.ndarray:
    """Crop, scale and Graham-filter a fundus photograph: uint8 (size, size, 3)."""
    return graham(crop_to_fundus(rgb, fov, size), circle)
