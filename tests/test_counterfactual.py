"""Counterfactual re-rendering: the same eye with the cue or the distractor on or off, through the cache's path."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from fundus_lib.config import load_params, validate_params
from fundus_lib.data.counterfactual import rerender
from fundus_lib.data.pipeline import prepare_data
from fundus_lib.data.synthetic import CUE_CODE, DISTRACTOR_CODE, load_specs
from fundus_lib.paths import project_root


@pytest.fixture(scope="module")
def data():
    params = load_params(
        project_root() / "params" / "smoke.yaml",
        {"data": {"synthetic": {"spurious_cue": 1.0, "distractor": 0.5, "n_patients": 12}}},
    )
    return prepare_data(params, progress=False)


def test_rerendering_with_the_same_cue_reproduces_the_cache_exactly(data):
    rows = data.manifest.index[data.manifest["status"] == "ok"][:6]
    specs = {spec.image: spec for spec in load_specs(data.images_dir.parent)}
    chosen = [specs[image] for image in data.manifest.loc[rows, "image"]]
    cues, distractors = np.array([spec.cue for spec in chosen]), np.array([spec.distractor for spec in chosen])
    assert np.array_equal(rerender(data, rows, cues), np.asarray(data.cache.images[rows]))
    assert np.array_equal(rerender(data, rows, distractor=distractors), np.asarray(data.cache.images[rows]))
    assert np.array_equal(rerender(data, rows), np.asarray(data.cache.images[rows])), "None keeps each eye's own"


@pytest.mark.parametrize(("patch", "code"), [("cue", CUE_CODE), ("distractor", DISTRACTOR_CODE)])
def test_switching_a_patch_off_changes_only_its_region(data, patch, code):
    manifest = data.manifest
    specs = {spec.image: spec for spec in load_specs(data.images_dir.parent)}
    carrying = [row for row in manifest.index if getattr(specs[manifest.at[row, "image"]], patch)][:3]
    assert carrying, f"the smoke data has images with the {patch}"
    removed = rerender(data, carrying, **{patch: False}).astype(int)
    original = np.asarray(data.cache.images[carrying]).astype(int)
    changed = np.abs(removed - original).max(axis=3) > 0
    region = np.asarray(data.cache.masks[carrying]) == code
    assert changed.any()
    # JPEG blocks and the Graham blur spread the change a few pixels around the patch, nowhere far
    kernel = np.ones((11, 11), np.uint8)
    near = np.stack([cv2.dilate(area.astype(np.uint8), kernel) > 0 for area in region])
    assert changed[~near].mean() < 0.01


def test_real_data_has_no_counterfactuals(real_sample):
    smoke = load_params(project_root() / "params" / "smoke.yaml").model_dump()
    real = {
        "images_dir": str(real_sample / "images"),
        "labels_csv": str(real_sample / "labels.csv"),
        "max_images": 16,
    }  # the first 10 are grayscale (skipped): 6 usable images
    smoke["data"].update(source="eyepacs", synthetic={}, eyepacs=real)  # synthetic settings under eyepacs are an error
    params = validate_params(smoke)
    with pytest.raises(ValueError, match="synthetic"):
        rerender(prepare_data(params, progress=False), [0], cue=False)
