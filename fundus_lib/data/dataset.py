"""A torch Dataset over one split of the cache: float images in [0, 1] pixels, labels 0-4.

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
from torchvision import tv_tensors

from fundus_lib.data.pipeline import FundusData


class FundusDataset(Dataset):
    """Images of one split; with ``with_masks`` also the lesion masks (uint8 (S, S) codes).

    transform: applied to the uint8 image (and mask) before scaling to [0, 1], e.g.
    :func:`fundus_lib.data.augment.build_augmentation`.
    """

    def __init__(self, data: FundusData, split: str, transform=None, with_masks: bool = False):
        if with_masks and data.cache.masks is None:
            raise ValueError("this dataset has no lesion masks (only the synthetic data has them)")
        self.rows = data.rows(split)
        self.labels = data.manifest.loc[self.rows, "level"].to_numpy()
        self.images = data.cache.images
        self.masks = data.cache.masks if with_masks else None
        self.transform = transform

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, position: int):
        row = self.rows[position]
        image = tv_tensors.Image(torch.from_numpy(np.array(self.images[row])).permute(2, 0, 1))
        label = int(self.labels[position])
        if self.masks is None:
            if self.transform is not None:
                image = self.transform(image)
            return image.float().div(255).as_subclass(torch.Tensor), label
        mask = tv_tensors.Mask(torch.from_numpy(np.array(self.masks[row])))
        if self.transform is not None:
            image, mask = self.transform(image, mask)
        return image.float().div(255).as_subclass(torch.Tensor), label, mask.as_subclass(torch.Tensor)
