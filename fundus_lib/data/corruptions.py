"""The report's four acquisition corruptions (section 4), re-implemented openly with numpy + OpenCV.

The report's corruption code was proprietary (Zeiss, ~50 s per image). This module follows the
published parameters collected in ``anchors.md`` section 5: ImageNet-C (Hendrycks & Dietterich
2019, as generalised by ``imagecorruptions``) for motion blur and brightness, and the halo of
the fundus degradation model of Shen et al. 2020 (IEEE TMI 40(3), arXiv 2005.05594) for light
leakage. Nothing is copied from their code.

A corruption is applied to the cropped fundus square, uint8 RGB (S, S, 3) with the field of
view the centred circle of radius R = S / 2 (black outside), before Graham preprocessing: it
models the acquisition. Lengths are in units of R, so a corruption looks the same at every S.

Levels 1-4 (0 = identity). The report draws "random parameters that conform to the level", so
a level l is turned into a continuous severity ``s = l + U(-0.5, 0.5)`` and each parameter is
interpolated linearly in a table whose entry at integer severity k is the published value for
severity k (k = 0: no corruption; k = 5: the published fifth severity, so that s up to 4.5 has
a value). Levels thus cover adjacent, non-overlapping parameter bands centred on the published
values. Published values at the band centres:

====================  ===========================================  ===== ===== ===== =====
corruption            parameter                                    l = 1 l = 2 l = 3 l = 4
====================  ===========================================  ===== ===== ===== =====
light leakage         halo weight (Shen's ``weight_hal0``)          1     1.5   2     2.5
motion blur           trail radius, px at S = 224 (x S / 224)       10    15    15    15
motion blur           trail sigma, px at S = 224 (x S / 224)        3     5     8     12
over exposure         c added to HSV V (ImageNet-C ``brightness``)  .1    .2    .3    .4
under exposure        c subtracted from HSV V (the mirror)          .1    .2    .3    .4
====================  ===========================================  ===== ===== ===== =====

Formulas (x in [0, 1], per pixel; see each function for the deviations):

- light leakage: ``clip(x + w * mean(square) * halo * tint, 0, 1)``, halo = a blurred bright
  ring outside an off-centre inner circle, tint = one of Shen's three halo colours
  (:func:`light_leakage`);
- motion blur: correlation with a one-sided Gaussian trail along a line (:func:`motion_kernel`,
  :func:`motion_blur`) at an angle U(0, 360) degrees. Deviation: ImageNet-C draws U(-45, 45),
  a trail always pointing to the same side; the eye moves in any direction;
- over / under exposure: HSV ``V' = clip(V +- c, 0, 1)``, hue and saturation kept
  (:func:`exposure`).

Everything outside the field of view, and the black segments of fields cut by the sensor, is
left as it was (:func:`photographed`).

Example::

    kind, level, rng = corruption_for(image_index, level_range=(1, 2), seed=0)
    cached = graham(corrupt(crop_to_fundus(rgb, fov, 512), kind, level, rng))
"""

from __future__ import annotations

import functools
import math

import cv2
import numpy as np

from fundus_lib.data.preprocess import circle_mask

CORRUPTIONS = ("light leakage", "motion blur", "under exposure", "over exposure")
MAX_LEVEL = 4
#: A level l means a severity drawn uniformly from [l - JITTER, l + JITTER].
JITTER = 0.5

#: Parameter tables at severities 0..5 (index = severity), see the module docstring.
HALO_WEIGHT = (0.0, 1.0, 1.5, 2.0, 2.5, 3.0)
BLUR_RADIUS_224 = (0.0, 10.0, 15.0, 15.0, 15.0, 20.0)
BLUR_SIGMA_224 = (0.0, 3.0, 5.0, 8.0, 12.0, 15.0)
BRIGHTNESS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)
#: ImageNet-C's blur parameters are in pixels of a 224 px image: scale them by S / 224.
IMAGENET_SIZE = 224

#: Shen et al.'s three halo colours (RGB in [0, 1]): near white, cyan, pale olive.
HALO_TINTS = np.array([[251, 249, 246], [141, 238, 238], [177, 195, 147]], np.float32) / 255
#: The halo is drawn on a grid of at most this many pixels a side, then resized (it is smooth).
HALO_GRID = 128
#: Values up to this are black: JPEG noise on the black outside the photograph.
BLACK_LEVEL = 10


@functools.lru_cache(maxsize=8)
def field_of_view(size: int) -> np.ndarray:
    """Read-only boolean (size, size) disc of radius size / 2: the fundus' field of view."""
    mask = circle_mask(size, 1.0)
    mask.flags.writeable = False
    return mask


def photographed(square: np.ndarray) -> np.ndarray:
    """Boolean (S, S): the field of view less the black rows and columns (all <= BLACK_LEVEL).

    Photographs whose field is cut at the top and bottom by the sensor leave black segments
    inside the circle; no light reached them, so no corruption may brighten or smear them.
    """
    size = square.shape[0]
    rows = square.reshape(size, -1).max(axis=1) > BLACK_LEVEL
    columns = square.max(axis=0).max(axis=1) > BLACK_LEVEL
    return field_of_view(size) & rows[:, None] & columns[None, :]


def _parameter(table: tuple[float, ...], severity: float) -> float:
    """Linear interpolation of a per-severity table (index = severity 0..5) at ``severity``."""
    return float(np.interp(severity, np.arange(len(table)), table))


def _to_uint8(image: np.ndarray) -> np.ndarray:
    """Round and saturate a non-negative float image (H, W, C) in [0, 255] units to uint8."""
    return cv2.convertScaleAbs(image)


def light_leakage(square: np.ndarray, weight: float, rng: np.random.Generator) -> np.ndarray:
    """Shen et al.'s ring-shaped halo (``DE_HALO``) added to a fundus square, uint8 (S, S, 3).

    With R = S / 2, drawn from ``rng``: the inner circle's centre is the square's centre
    jittered by U(-R/4, R/4) on each axis, its radius ``a = R * U(0.75, 1)``; the tint is one
    of :data:`HALO_TINTS`, uniformly. The ring between the inner circle and Shen's outer circle
    (diameter >= 1.5 S, so it always contains the field of view: the ring is simply the outside
    of the inner circle) is blurred with Shen's Gaussian, kernel ``k = |d - 2a|`` (d = twice the
    centre's largest distance to a side) and sigma ``2k / 3``, which makes it a soft band at the
    rim, thicker on the side the circle moved away from. Then, in [0, 1] units::

        out = clip(x + weight * mean(square) * ring * tint, 0, 1)

    mean(square) is over all pixels and channels, black corners included, as in Shen's code.
    Deviations: all three tints occur (Shen's code only draws the white one when its colour
    jitter's brightness factor is < 0.2, which its range 0.7-1.2 never gives); the ring is
    drawn with an anti-aliased edge on a grid of at most :data:`HALO_GRID` px and resized.
    """
    size = square.shape[0]
    centre = size / 2 + rng.uniform(-size / 8, size / 8, size=2)
    inner = size / 2 * rng.uniform(0.75, 1.0)
    tint = HALO_TINTS[rng.integers(len(HALO_TINTS))]
    grid = min(size, HALO_GRID)
    scale = grid / size
    coords = (np.arange(grid, dtype=np.float32) + 0.5) / scale
    ring = np.clip((np.hypot(coords[None, :] - centre[0], coords[:, None] - centre[1]) - inner) * scale + 0.5, 0, 1)
    kernel = abs(2 * max(*centre, *(size - centre)) - 2 * inner) * scale
    ksize = max(1, int(kernel)) | 1
    ring = cv2.GaussianBlur(ring.astype(np.float32), (ksize, ksize), 2 * kernel / 3 + 1e-3)
    halo = cv2.resize(ring, (size, size), interpolation=cv2.INTER_LINEAR)
    amplitude = weight * float(square.mean()) * tint
    return _to_uint8(square + halo[..., None] * amplitude)


def motion_kernel(radius: float, sigma: float, angle: float) -> tuple[np.ndarray, tuple[int, int]]:
    """ImageNet-C's motion-blur kernel: float32 (h, w) summing to 1, and its anchor (x, y).

    ``n = floor(2 * radius) + 1`` samples at unit steps t = 0..n-1 from the anchor along the
    direction ``angle`` (radians, x right, y down), weighted ``exp(-t^2 / (2 sigma^2))``: a
    one-sided trail whose sharp end is the pixel itself. radius, sigma in px. Deviation: each
    sample is spread bilinearly over its 4 neighbouring pixels (ImageNet-C rounds it to the
    nearest), so short trails at small sizes keep their exact length and angle.
    """
    steps = np.arange(int(2 * radius) + 1, dtype=np.float64)
    weights = np.exp(-(steps**2) / (2 * max(sigma, 1e-3) ** 2))
    x, y = steps * math.cos(angle), steps * math.sin(angle)
    x0, y0 = np.floor(x), np.floor(y)
    fx, fy = x - x0, y - y0
    xs = np.concatenate([x0, x0 + 1, x0, x0 + 1]).astype(int)
    ys = np.concatenate([y0, y0, y0 + 1, y0 + 1]).astype(int)
    spread = np.concatenate([(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy]) * np.tile(weights, 4)
    keep = spread > 1e-9
    xs, ys, spread = xs[keep], ys[keep], spread[keep]
    kernel = np.zeros((ys.max() - ys.min() + 1, xs.max() - xs.min() + 1), np.float64)
    np.add.at(kernel, (ys - ys.min(), xs - xs.min()), spread)
    return (kernel / kernel.sum()).astype(np.float32), (int(-xs.min()), int(-ys.min()))


def motion_blur(square: np.ndarray, inside: np.ndarray, radius: float, sigma: float, angle: float) -> np.ndarray:
    """ImageNet-C motion blur of a fundus square, uint8 (S, S, 3), within the mask ``inside``.

    The image is correlated with :func:`motion_kernel` (radius, sigma in px of this image;
    :func:`corrupt` scales the 224 px values by S / 224), so each pixel averages the pixels
    ahead of it along ``angle`` (radians). Deviation: only pixels of ``inside`` (bool (S, S),
    the photographed field) are averaged (normalised convolution), so the black outside is not
    smeared into the rim: the camera's field stop does not move with the eye, only the retina.
    """
    kernel, anchor = motion_kernel(radius, sigma, angle)
    rgba = cv2.cvtColor(square, cv2.COLOR_RGB2RGBA).astype(np.float32)  # alpha 255: the mask
    rgba[~inside] = 0
    blurred = cv2.filter2D(rgba, -1, kernel, anchor=anchor, borderType=cv2.BORDER_CONSTANT)
    return _to_uint8(blurred[..., :3] * (255 / np.maximum(blurred[..., 3:], 1e-3)))


def exposure(square: np.ndarray, shift: float) -> np.ndarray:
    """ImageNet-C brightness (shift > 0) or its mirror (shift < 0) on a uint8 (S, S, 3) square.

    HSV ``V' = clip(V + shift, 0, 1)`` with hue and saturation kept, which is exactly scaling
    the RGB pixel by ``V' / V`` (V = the largest channel): one gain per V value, a 256-entry
    table. Deviation: the shift is multiplied by ``min(1, V / BLACK_LEVEL)`` (V in 0-255), so
    near-black pixels (JPEG noise at the rim) stay dark instead of turning into coloured speckle.
    """
    values = np.arange(256, dtype=np.float32) / 255
    target = np.clip(values + shift * np.minimum(1, values * 255 / BLACK_LEVEL), 0, 1)
    gain = target / np.maximum(values, 1 / 255)
    value = np.maximum(np.maximum(square[..., 0], square[..., 1]), square[..., 2])
    return _to_uint8(np.multiply(square, gain[value][..., None], dtype=np.float32))


def corrupt(square: np.ndarray, kind: str, level: int, rng: np.random.Generator) -> np.ndarray:
    """The fundus square ``square`` (uint8 (S, S, 3), fundus radius S / 2) under a corruption.

    kind: one of :data:`CORRUPTIONS`; level: 0 (a copy) to 4; rng: the only source of
    randomness (the severity jitter, the blur angle, the halo's geometry and tint). Returns
    uint8 (S, S, 3); pixels outside the field of view, and black rows and columns of fields
    cut by the sensor (:func:`photographed`), keep their value.
    """
    if kind not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {kind!r}; expected one of {CORRUPTIONS}")
    if not 0 <= level <= MAX_LEVEL:
        raise ValueError(f"corruption level {level} is outside 0..{MAX_LEVEL}")
    if square.dtype != np.uint8 or square.ndim != 3 or square.shape[2] != 3 or square.shape[0] != square.shape[1]:
        raise ValueError(f"expected a uint8 (S, S, 3) square, got {square.dtype} {square.shape}")
    if level == 0:
        return square.copy()
    severity = level + rng.uniform(-JITTER, JITTER)
    size, inside = square.shape[0], photographed(square)
    if kind == "light leakage":
        out = light_leakage(square, _parameter(HALO_WEIGHT, severity), rng)
    elif kind == "motion blur":
        scale = size / IMAGENET_SIZE
        radius, sigma = _parameter(BLUR_RADIUS_224, severity) * scale, _parameter(BLUR_SIGMA_224, severity) * scale
        out = motion_blur(square, inside, radius, sigma, rng.uniform(0, 2 * math.pi))
    else:
        sign = 1 if kind == "over exposure" else -1
        out = exposure(square, sign * _parameter(BRIGHTNESS, severity))
    out[~inside] = square[~inside]
    return out


def corruption_for(image_index: int, level_range: tuple[int, int], seed: int) -> tuple[str, int, np.random.Generator]:
    """The report's corrupted datasets: a random corruption at a random level for each image.

    Returns (kind, level, rng): kind uniform over :data:`CORRUPTIONS`, level uniform over the
    integers of ``level_range`` (inclusive, within 0..4), and the generator, seeded with
    ``[seed, image_index]``, to pass on to :func:`corrupt`. seed, image_index: >= 0.
    """
    low, high = level_range
    if not 0 <= low <= high <= MAX_LEVEL:
        raise ValueError(f"level range {level_range} is not within 0..{MAX_LEVEL}")
    rng = np.random.default_rng([seed, image_index])
    kind = CORRUPTIONS[rng.integers(len(CORRUPTIONS))]
    return kind, int(rng.integers(low, high + 1)), rng
