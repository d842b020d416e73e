"""Torch Datasets over cached uint8 images: float images in [0, 1] pixels, labels 0-4.

Normalisation is not done here: it lives inside the model, so attacks and attributions work on
[0, 1] pixels.

Example::

    train = FundusDataset(data, "train", transform=build_augmentation(params.augment))
    image, label = train[0]          # float32 (3, S, S) in [0, 1], int
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from fundus_lib.data.pipeline import FundusData


class ImageDataset(Dataset):
    """Rows of a uint8 image array (N, S, S, 3) (e.g. a memory-mapped cache) with their labels.

    rows: which array rows, in order (default: all); labels: one per row; masks: an optional
    uint8 (N, S, S) array of lesion codes, returned third (as a tensor). transform: applied to the
    uint8 (H, W, 3) numpy image (and mask) before scaling to [0, 1], e.g.
    :func:`fundus_lib.data.augment.build_augmentation`.
    """

    def __init__(self, images: np.ndarray, labels, rows=None, transform=None, masks: np.ndarray | None = None):
        self.images = images
        self.rows = np.arange(len(images)) if rows is None else np.asarray(rows)
        self.labels = np.asarray(labels, dtype=np.int64)
        if len(self.labels) != len(self.rows):
            raise ValueError(f"{len(self.labels)} labels for {len(self.rows)} images")
        self.transform = transform
        self.masks = masks

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, position: int):
        row = self.rows[position]
        image = np.array(self.images[row])
        label = int(self.labels[position])
        if self.masks is None:
            if self.transform is not None:
                image = self.transform(image)
            return to_tensor(image), label
        mask = np.array(self.masks[row])
        if self.transform is not None:
            image, mask = self.transform(image, mask)
        return to_tensor(image), label, torch.from_numpy(mask)


def permuted_labels(labels: np.ndarray, seed: int) -> np.ndarray:
    """``labels`` in a seeded random order: the same grades, no longer belonging to their images
    (the data-randomisation sanity check's training labels)."""
    return np.random.default_rng([seed, 0x5EED]).permutation(np.asarray(labels))


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) -> float32 (3, H, W) in [0, 1]."""
    return torch.from_numpy(image).permute(2, 0, 1).float().div(255).contiguous()


class FundusDataset(ImageDataset):
    """The images of one split of a prepared dataset; ``with_masks`` adds the lesion masks."""

    def __init__(self, data: FundusData, split: str, transform=None, with_masks: bool = False):
        if with_masks and data.cache.masks is None:
            raise ValueError("this dataset has no lesion masks (only the synthetic data has them)")
        rows = data.rows(split)
        super().__init__(
            data.cache.images,
            data.manifest.loc[rows, "level"].to_numpy(),
            rows,
            transform,
            data.cache.masks if with_masks else None,
        )
