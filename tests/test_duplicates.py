"""Duplicates and conflicting labels, on IDRiD's grading set whose source lists six byte-identical
pairs (three with other DR grades), and the policy applied where the data is prepared."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fundus_lib.data.cache import CacheSettings, build_cache
from fundus_lib.data.duplicates import (
    CONFLICTING,
    DUPLICATE,
    conflicting_pairs,
    difference_hashes,
    duplicate_counts,
    exact_groups,
    exclude_seen,
    near_duplicates,
    resolve_duplicates,
)
from fundus_lib.data.layouts import read_folder

# SOURCES.md of idrid_grading: (first, second, same DR grade)
KNOWN_PAIRS = [
    ("train/IDRiD_021", "train/IDRiD_391", False),
    ("train/IDRiD_028", "train/IDRiD_327", False),
    ("train/IDRiD_045", "train/IDRiD_333", True),
    ("train/IDRiD_073", "train/IDRiD_375", True),
    ("train/IDRiD_079", "train/IDRiD_279", True),
    ("train/IDRiD_118", "test/IDRiD_064", False),
]


@pytest.fixture(scope="module")
def idrid_cache(idrid_grading, tmp_path_factory):
    items = read_folder(idrid_grading)
    return build_cache(items, tmp_path_factory.mktemp("idrid") / "cache", CacheSettings(32), workers=1, progress=False)


def test_the_known_pairs_are_found_and_their_conflicts_named(idrid_cache):
    groups = exact_groups(idrid_cache.manifest)
    found = {tuple(sorted(members)) for members in groups.groupby("group")["image"].apply(tuple)}
    assert found == {tuple(sorted(pair[:2])) for pair in KNOWN_PAIRS}
    conflicts = conflicting_pairs(groups)
    assert set(conflicts["images"]) == {f"{a} / {b}" for a, b, same in KNOWN_PAIRS if not same}
    assert conflicts.set_index("images").at["train/IDRiD_118 / test/IDRiD_064", "grades"] == "0 / 3"


def test_a_duplicate_is_kept_once_and_a_conflicting_pair_excluded(idrid_cache):
    resolved = resolve_duplicates(idrid_cache.manifest).set_index("image")
    for first, second, same in KNOWN_PAIRS:
        if same:
            assert resolved.at[first, "status"] == "ok"
            assert resolved.at[second, "reason"] == f"{DUPLICATE} of {first} (byte-identical, same grade)"
        else:
            assert (resolved.loc[[first, second], "status"] == "skipped").all()
            assert resolved.loc[[first, second], "reason"].str.startswith(CONFLICTING).all()
    assert duplicate_counts(resolved.reset_index()) == {
        "duplicates dropped": 3,
        "conflicting photographs excluded": 6,
        "conflicting groups": 3,
    }
    assert (resolved["status"] == "ok").sum() == 516 - 9


def test_a_test_photograph_seen_in_training_is_excluded(idrid_cache):
    manifest = idrid_cache.manifest
    train = manifest[manifest["image"].str.startswith("train/")]
    test = manifest[manifest["image"].str.startswith("test/")]
    checked = exclude_seen(test, train).set_index("image")
    assert checked.at["test/IDRiD_064", "reason"] == f"{DUPLICATE} of training image train/IDRiD_118"
    assert (checked["status"] == "skipped").sum() == 1


def test_near_duplicates_find_a_resized_reencoded_copy_and_not_the_others():
    rng = np.random.default_rng(0)
    smooth = [np.kron(rng.integers(0, 255, (8, 8, 3)), np.ones((8, 8, 1))).astype(np.uint8) for _ in range(20)]
    noisy_copy = np.clip(smooth[3].astype(int) + rng.integers(-6, 7, smooth[3].shape), 0, 255).astype(np.uint8)
    images = np.stack(smooth + [noisy_copy])
    pairs = near_duplicates(difference_hashes(images), [f"i{k}" for k in range(21)])
    assert pairs[["image_a", "image_b"]].values.tolist() == [["i3", "i20"]]
    between = near_duplicates(difference_hashes(images[:2]), ["a", "b"], difference_hashes(images[1:3]), ["b", "c"])
    assert between.values.tolist() == [["b", "b", 0]]


def test_prepared_data_never_splits_a_photograph_twice(real_sample, tmp_path, monkeypatch):
    """A copy of a sample photograph under another patient's name is dropped before the split."""
    import shutil

    from fundus_lib.config import EyepacsConfig, load_params
    from fundus_lib.data.pipeline import prepare_data

    images = tmp_path / "images"
    shutil.copytree(real_sample / "images", images)
    shutil.copy(images / "eyepacs256_1000_left.jpeg", images / "copy99_left.jpeg")
    labels = pd.read_csv(real_sample / "labels.csv")
    labels = pd.concat([labels, pd.DataFrame({"image": ["copy99_left"], "level": [labels.at[0, "level"]]})])
    labels[["image", "level"]].to_csv(tmp_path / "labels.csv", index=False)
    params = load_params("params/smoke.yaml")
    data_config = params.data.model_copy(
        update={
            "source": "eyepacs",
            "image_size": 32,
            "eyepacs": EyepacsConfig(images_dir=images, labels_csv=tmp_path / "labels.csv"),
        }
    )
    data = prepare_data(params.model_copy(update={"data": data_config}), progress=False)
    manifest = data.manifest.set_index("image")
    assert manifest.at["copy99_left", "status"] == "skipped" and manifest.at["copy99_left", "split"] == ""
    assert manifest.at["copy99_left", "reason"].startswith(DUPLICATE)
    assert manifest.loc[manifest["status"] == "ok", "sha1"].is_unique
