"""Training-time augmentation, as the report's section 2.2 lists it.

Each step is applied with probability ``probability`` (the report: 50 %): an affine transform
(scale 90-110 %, translation, rotation -30..10 degrees, shear -10..10 degrees; the uncovered
border is filled with Graham's grey 128), brightness and contrast 85-115 %, and a horizontal
flip (left and right eyes are mirror images, so a flip keeps the grade).

Works on uint8 or float image tensors (C, H, W) and, jointly, on lesion masks wrapped as
``torchvision.tv_tensors.Mask`` (geometry only; colour steps leave masks alone).

Example::

    augment = build_augmentation(AugmentConfig())
    image, mask = augment(tv_tensors.Image(image), tv_tensors.Mask(mask))
"""

from __future__ import annotations

from torchvision import tv_tensors
from torchvision.transforms import v2

from fundus_lib.config import AugmentConfig

#: Graham preprocessing maps a flat region to 128: the neutral fill for uncovered borders.
GRAHAM_GREY = 128


def build_augmentation(config: AugmentConfig) -> v2.Compose:
    """The report's augmentation as a torchvision v2 pipeline."""
    affine = v2.RandomAffine(
        degrees=config.rotate_deg,
        translate=config.translate,
        scale=config.scale,
        shear=config.shear_deg,
        fill={tv_tensors.Image: GRAHAM_GREY, tv_tensors.Mask: 0},
    )
    colour = v2.ColorJitter(brightness=config.brightness, contrast=config.contrast)
    steps = [v2.RandomApply([affine], p=config.probability), v2.RandomApply([colour], p=config.probability)]
    if config.hflip:
        steps.append(v2.RandomHorizontalFlip(p=config.probability))
    return v2.Compose(steps)
