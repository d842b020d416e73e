"""Counterfactual re-rendering: the same eye with the cue on or off, through the cache's path."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from fundus_lib.config import load_params, validate_params
from fundus_lib.data.counterfactual import rerender
from fundus_lib.data.pipeline import prepare_data
from fundus_lib.data.synthetic import load_specs
from fundus_lib.paths import project_root


@pytest.fixture(scope="module")
def data():
    params = load_params(project_root() / "params" / "smoke.yaml",
                         {"data": {"synthetic": {"spurious_cue": 1.0, "n_patients": 12}}})
    return prepare_data(params, progress=False)


def test_rerendering_with_the_same_cue_reproduces_the_cache_exactly(data):
    rows = data.manifest.index[data.manifest["status"] == "ok"][:6]
    specs = {spec.image: spec for spec in load_specs(data.images_dir.parent)}
    cues = np.array([specs[image].cue for image in data.manifest.loc[rows, "image"]])
    assert np.array_equal(rerender(data, rows, cues), np.asarray(data.cache.images[rows]))


def test_switching_the_cue_changes_only_the_cue_region(data):
    manifest = data.manifest
    specs = {spec.image: spec for spec in load_specs(data.images_dir.parent)}
    with_cue = [row for row in manifest.index if specs[manifest.at[row, "image"]].cue][:3]
    assert with_cue, "the smoke data with spurious_cue 1.0 has images with the cue"
    removed = rerender(data, with_cue, cue=False).astype(int)
    original = np.asarray(data.cache.images[with_cue]).astype(int)
    changed = np.abs(removed - original).max(axis=3) > 0
    cue_region = np.asarray(data.cache.masks[with_cue]) == 6
    assert changed.any()
    # JPEG blocks and the Graham blur spread the change a few pixels around the patch, nowhere far
    kernel = np.ones((11, 11), np.uint8)
    near = np.stack([cv2.dilate(region.astype(np.uint8), kernel) > 0 for region in cue_region])
    assert changed[~near].mean() < 0.01


def test_real_data_has_no_counterfactuals(real_sample):
    smoke = load_params(project_root() / "params" / "smoke.yaml").model_dump()
    real = {"images_dir": str(real_sample / "images"), "labels_csv": str(real_sample / "labels.csv"),
            "max_images": 16}  # the first 10 are grayscale (skipped): 6 usable images
    smoke["data"].update(source="eyepacs", synthetic={}, eyepacs=real)  # synthetic settings under eyepacs are an error
    params = validate_params(smoke)
    with pytest.raises(ValueError, match="synthetic"):
        rerender(prepare_data(params, progress=False), [0], cue=False)
