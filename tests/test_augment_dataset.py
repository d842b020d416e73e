"""Augmentation and the torch Dataset over the cache."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from fundus_lib.config import AugmentConfig, validate_params
from fundus_lib.data import pipeline
from fundus_lib.data.augment import GRAHAM_GREY, build_augmentation
from fundus_lib.data.dataset import FundusDataset
from fundus_lib.data.pipeline import prepare_data


def test_probability_zero_is_the_identity():
    image = np.random.default_rng(0).integers(0, 255, (32, 32, 3)).astype(np.uint8)
    assert np.array_equal(build_augmentation(AugmentConfig(probability=0))(image), image)


def test_probability_one_changes_the_image_and_fills_with_grey():
    torch.manual_seed(0)
    image = np.full((64, 64, 3), 200, np.uint8)
    config = AugmentConfig(probability=1, brightness=(1, 1), contrast=(1, 1), rotate_deg=(20, 20))
    out = build_augmentation(config)(image)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert not np.array_equal(out, image)
    assert (out == GRAHAM_GREY).all(axis=2).any()  # uncovered corners get Graham's grey


def test_identity_parameters_change_nothing():
    image = np.random.default_rng(1).integers(0, 255, (48, 48, 3)).astype(np.uint8)
    config = AugmentConfig(
        probability=1,
        hflip=False,
        scale=(1, 1),
        translate=(0, 0),
        rotate_deg=(0, 0),
        shear_deg=(0, 0),
        brightness=(1, 1),
        contrast=(1, 1),
    )
    assert np.array_equal(build_augmentation(config)(image), image)


def test_colour_steps_match_torchvision():
    """Brightness and contrast follow torchvision's ColorJitter definitions (within rounding)."""
    import torchvision.transforms.v2.functional as F

    image = np.random.default_rng(2).integers(30, 220, (40, 40, 3)).astype(np.uint8)
    config = AugmentConfig(
        probability=1,
        hflip=False,
        scale=(1, 1),
        translate=(0, 0),
        rotate_deg=(0, 0),
        shear_deg=(0, 0),
        brightness=(1.1, 1.1),
        contrast=(0.9, 0.9),
    )
    ours = build_augmentation(config)(image)
    tensor = torch.from_numpy(image).permute(2, 0, 1)
    reference = F.adjust_contrast(F.adjust_brightness(tensor, 1.1), 0.9).permute(1, 2, 0).numpy()
    assert np.abs(ours.astype(int) - reference.astype(int)).max() <= 2


def test_rotation_matches_torchvision_geometry():
    """A rotation about the centre moves a bright spot where torchvision's rotate moves it."""
    import torchvision.transforms.v2.functional as F

    image = np.full((65, 65, 3), 128, np.uint8)
    image[10:14, 40:44] = 250
    config = AugmentConfig(
        probability=1,
        hflip=False,
        scale=(1, 1),
        translate=(0, 0),
        rotate_deg=(25, 25),
        shear_deg=(0, 0),
        brightness=(1, 1),
        contrast=(1, 1),
    )
    ours = build_augmentation(config)(image)[..., 0]
    reference = F.rotate(torch.from_numpy(image).permute(2, 0, 1), 25, fill=128)[0].numpy()
    centre = lambda frame: np.argwhere(frame > 200).mean(axis=0)  # noqa: E731
    assert np.abs(centre(ours) - centre(reference)).max() < 1.0


def test_masks_follow_the_geometry_but_not_the_colour():
    torch.manual_seed(1)
    pattern = np.zeros((64, 64), np.uint8)
    pattern[10:30, 20:50] = 1
    image = np.repeat((pattern * 250)[..., None], 3, axis=2)
    augment = build_augmentation(AugmentConfig(probability=1, brightness=(1, 1), contrast=(1, 1)))
    for _ in range(5):
        out_image, out_mask = augment(image, pattern)
        assert set(np.unique(out_mask)) <= {0, 1}
        assert ((out_image[..., 0] > 200) == (out_mask == 1)).mean() > 0.97


def test_config_rejects_reversed_ranges():
    with pytest.raises(ValueError, match="low <= high"):
        AugmentConfig(scale=(1.1, 0.9))


@pytest.fixture(scope="module")
def real_data(real_sample):
    params = validate_params(
        {
            "name": "real",
            "data": {
                "source": "eyepacs",
                "image_size": 32,
                "workers": 1,
                "eyepacs": {"images_dir": str(real_sample / "images"), "labels_csv": str(real_sample / "labels.csv")},
            },
        }
    )
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
    pipeline._PREPARED.clear()  # as a second process would: list, hash and reopen the cache
    again = prepare_data(validate_params({"name": "real", "data": real_data.config.model_dump()}), progress=False)
    assert again.manifest_hash == real_data.manifest_hash
    assert np.array_equal(again.cache.images[:5], real_data.cache.images[:5])


def test_prepare_data_is_reused_in_a_process_until_its_listing_or_cache_changes(real_sample, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    photographs = sorted((real_sample / "images").iterdir())[:12]
    for photograph in photographs:
        (images / photograph.name).symlink_to(photograph)
    labels = pd.DataFrame({"image": [photograph.stem for photograph in photographs], "level": [0, 1, 2, 3] * 3})
    labels.to_csv(tmp_path / "labels.csv", index=False)
    params = validate_params(
        {
            "name": "reuse",
            "data": {
                "source": "eyepacs",
                "image_size": 32,
                "workers": 1,
                "eyepacs": {"images_dir": str(images), "labels_csv": str(tmp_path / "labels.csv")},
            },
        }
    )
    first = prepare_data(params, progress=False)
    assert prepare_data(params, progress=False) is first
    labels.head(10).to_csv(tmp_path / "labels.csv", index=False)
    os.utime(tmp_path / "labels.csv", ns=(1, 1))  # a rewrite may land within the clock's resolution
    with pytest.warns(UserWarning, match="2 image file"):
        fewer = prepare_data(params, progress=False)
    assert fewer is not first and len(fewer.manifest) == 10
    shutil.rmtree(fewer.cache.root)
    with pytest.warns(UserWarning, match="2 image file"):
        rebuilt = prepare_data(params, progress=False)
    assert rebuilt is not fewer and rebuilt.cache.root.is_dir()
    assert rebuilt.manifest_hash == fewer.manifest_hash
