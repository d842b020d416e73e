"""Augmentation and the torch Dataset over the cache."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torchvision import tv_tensors

from fundus_lib.config import AugmentConfig, validate_params
from fundus_lib.data.augment import GRAHAM_GREY, build_augmentation
from fundus_lib.data.dataset import FundusDataset
from fundus_lib.data.pipeline import prepare_data


def test_probability_zero_is_the_identity():
    image = tv_tensors.Image(torch.randint(0, 255, (3, 32, 32), dtype=torch.uint8))
    assert torch.equal(build_augmentation(AugmentConfig(probability=0))(image), image)


def test_probability_one_changes_the_image_and_fills_with_grey():
    torch.manual_seed(0)
    image = tv_tensors.Image(torch.full((3, 64, 64), 200, dtype=torch.uint8))
    config = AugmentConfig(probability=1, brightness=(1, 1), contrast=(1, 1), rotate_deg=(20, 20))
    out = build_augmentation(config)(image)
    assert not torch.equal(out, image)
    assert (out == GRAHAM_GREY).any()  # uncovered corners get Graham's grey


def test_masks_follow_the_geometry_but_not_the_colour():
    torch.manual_seed(1)
    pattern = torch.zeros(64, 64, dtype=torch.uint8)
    pattern[10:30, 20:50] = 1
    image = tv_tensors.Image((pattern * 250).expand(3, 64, 64).clone())
    augment = build_augmentation(AugmentConfig(probability=1, brightness=(1, 1), contrast=(1, 1)))
    for _ in range(5):
        out_image, out_mask = augment(image, tv_tensors.Mask(pattern))
        bright = out_image[0] > 200
        assert set(out_mask.unique().tolist()) <= {0, 1}
        agreement = (bright == (out_mask == 1)).float().mean()
        assert agreement > 0.97


def test_config_rejects_reversed_ranges():
    with pytest.raises(ValueError, match="low <= high"):
        AugmentConfig(scale=(1.1, 0.9))


@pytest.fixture(scope="module")
def real_data(real_sample):
    params = validate_params({"name": "real", "data": {
        "source": "eyepacs", "image_size": 32, "workers": 1,
        "eyepacs": {"images_dir": str(real_sample / "images"), "labels_csv": str(real_sample / "labels.csv")}}})
    return prepare_data(params, progress=False)


def test_real_data_path_end_to_end(real_data):
    manifest = real_data.manifest
    assert len(manifest) == 503
    assert (manifest["status"] == "skipped").sum() == 10  # the ten grayscale originals
    assert manifest.groupby("patient")["split"].nunique().max() == 1
    assert set(manifest.loc[manifest["status"] == "ok", "split"]) == {"train", "valid", "test"}
    written = pd.read_csv(real_data.cache.root / f"manifest-{real_data.manifest_hash[:12]}.csv", keep_default_na=False)
    assert written["split"].tolist() == manifest["split"].tolist()


def test_dataset_items(real_data):
    dataset = FundusDataset(real_data, "valid")
    image, label = dataset[0]
    assert image.dtype == torch.float32 and image.shape == (3, 32, 32)
    assert 0 <= image.min() and image.max() <= 1
    assert label == real_data.manifest.loc[real_data.rows("valid")[0], "level"]
    assert len(dataset) == len(real_data.rows("valid"))
    with pytest.raises(ValueError, match="no lesion masks"):
        FundusDataset(real_data, "train", with_masks=True)


def test_dataset_with_augmentation_works_in_a_loader(real_data):
    dataset = FundusDataset(real_data, "train", transform=build_augmentation(AugmentConfig()))
    batch, labels = next(iter(torch.utils.data.DataLoader(dataset, batch_size=8, num_workers=2)))
    assert batch.shape == (8, 3, 32, 32) and labels.shape == (8,)


def test_prepare_data_twice_gives_the_same_manifest_hash(real_data):
    again = prepare_data(validate_params({"name": "real", "data": real_data.config.model_dump()}), progress=False)
    assert again.manifest_hash == real_data.manifest_hash
    assert np.array_equal(again.cache.images[:5], real_data.cache.images[:5])
