"""Training-time augmentation, as the report's section 2.2 lists it, and corruption on the fly
(``RandomCorruption``, the report's proposed improvement, with ``CorruptThenGraham``).

Each step is applied with probability ``probability`` (the report: 50 %): an affine transform
(scale 90-110 %, translation, rotation -30..10 degrees, shear -10..10 degrees, about the image
centre; the uncovered border is filled with Graham's grey 128), brightness and contrast 85-115 %
(torchvision's ColorJitter definitions), and a horizontal flip (left and right eyes are mirror
images, so a flip keeps the grade).

It works on uint8 numpy images (H, W, 3) with OpenCV, and moves an optional lesion mask (H, W)
with the same geometry (nearest neighbour, border 0). Random draws use torch's generator, so
``torch.manual_seed`` (and the data loader's per-worker seeding) makes them reproducible. It is
several times faster than torchvision's tensor transforms on small images (see the loader
benchmark), which matters when the CPU both augments and trains.

Example::

    augment = Augmentation(AugmentConfig())
    image, mask = augment(image, mask)
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch

from fundus_lib.config import AugmentConfig
from fundus_lib.data.corruptions import CORRUPTIONS, corrupt
from fundus_lib.data.preprocess import graham

#: Graham preprocessing maps a flat region to 128: the neutral fill for uncovered borders.
GRAHAM_GREY = 128
#: ITU-R 601 luma weights, as torchvision's rgb_to_grayscale (for the contrast step).
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _uniform(low: float, high: float) -> float:
    return low + (high - low) * torch.rand(()).item()


def affine_matrix(
    size: tuple[int, int], angle_deg: float, translate_px: tuple[float, float], scale: float, shear_deg: float
) -> np.ndarray:
    """2 x 3 forward matrix: shear along x and scale, then rotation, about the centre; then shift.

    size: (width, height); angle counter-clockwise in degrees; translate in pixels.
    """
    cx, cy = (size[0] - 1) / 2, (size[1] - 1) / 2
    angle, shear = math.radians(angle_deg), math.radians(shear_deg)
    rotation = np.array([[math.cos(angle), math.sin(angle)], [-math.sin(angle), math.cos(angle)]])
    linear = rotation @ np.array([[1.0, math.tan(shear)], [0.0, 1.0]]) * scale
    offset = np.array([cx, cy]) + np.array(translate_px) - linear @ np.array([cx, cy])
    return np.hstack([linear, offset[:, None]])


class Augmentation:
    """The report's augmentation for uint8 images (H, W, 3), with an optional mask (H, W)."""

    def __init__(self, config: AugmentConfig):
        self.config = config

    def _happens(self) -> bool:
        return torch.rand(()).item() < self.config.probability

    def _affine(self, image: np.ndarray, mask: np.ndarray | None):
        config = self.config
        height, width = image.shape[:2]
        translate = (
            round(_uniform(-config.translate[0], config.translate[0]) * width),
            round(_uniform(-config.translate[1], config.translate[1]) * height),
        )
        matrix = affine_matrix(
            (width, height),
            _uniform(*config.rotate_deg),
            translate,
            _uniform(*config.scale),
            _uniform(*config.shear_deg),
        )
        image = cv2.warpAffine(
            image,
            matrix,
            (width, height),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=(GRAHAM_GREY,) * 3,
        )
        if mask is not None:
            mask = cv2.warpAffine(
                mask, matrix, (width, height), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0
            )
        return image, mask

    def _colour(self, image: np.ndarray) -> np.ndarray:
        """Brightness (x b), then contrast around the mean grey level (x c), as ColorJitter."""
        out = image.astype(np.float32) * _uniform(*self.config.brightness)
        np.clip(out, 0, 255, out=out)
        mean = float((out @ LUMA).mean())
        out = (out - mean) * _uniform(*self.config.contrast) + mean
        return np.rint(np.clip(out, 0, 255)).astype(np.uint8)

    def __call__(self, image: np.ndarray, mask: np.ndarray | None = None):
        if self._happens():
            image, mask = self._affine(image, mask)
        if self._happens():
            image = self._colour(image)
        if self.config.hflip and self._happens():
            image = image[:, ::-1]
            mask = mask[:, ::-1] if mask is not None else None
        image = np.ascontiguousarray(image)
        return image if mask is None else (image, np.ascontiguousarray(mask))


def build_augmentation(config: AugmentConfig) -> Augmentation:
    """The report's augmentation for a params file's ``augment`` section."""
    return Augmentation(config)


class RandomCorruption:
    """Corruption as augmentation (the report's proposed improvement): each call corrupts a fundus
    square with a random type and a random level in ``levels``, or leaves it clean with
    probability ``clean_share``. Draws its seed from torch's generator, so ``torch.manual_seed``
    and the data loader's worker seeding make it reproducible."""

    def __init__(self, levels: tuple[int, int], clean_share: float = 0.0):
        self.levels, self.clean_share = levels, clean_share

    def __call__(self, square: np.ndarray) -> np.ndarray:
        rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, ()).item()))
        if rng.random() < self.clean_share:
            return square
        kind = CORRUPTIONS[rng.integers(len(CORRUPTIONS))]
        return corrupt(square, kind, int(rng.integers(self.levels[0], self.levels[1] + 1)), rng)


class CorruptThenGraham:
    """Training transform for corruption on the fly: corrupt the fundus square, Graham-filter it,
    then the augmentation (if any)."""

    def __init__(self, corruption: RandomCorruption, circle: float, augment=None):
        self.corruption, self.circle, self.augment = corruption, circle, augment

    def __call__(self, square: np.ndarray) -> np.ndarray:
        image = graham(self.corruption(square), self.circle)
        return self.augment(image) if self.augment else image
