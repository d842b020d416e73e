"""The cache builder: skips with reasons, masks aligned with images, identical results in
parallel, resume after kill -9, and no silent reuse of a cache built with other settings."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fundus_lib.data.cache import Cache, CacheMismatchError, CacheSettings, build_cache
from fundus_lib.data.eyepacs import list_images


def real_items(real_sample, n=None):
    items = list_images(real_sample / "images", real_sample / "labels.csv")
    items = items[items["image"].str.startswith("eyepacs256_")].head(n)
    return items.assign(mask_path="").reset_index(drop=True)


def bad_items(folder):
    """One file of each bad kind, labelled."""
    folder.mkdir()
    (folder / "1_left.jpeg").write_bytes(b"")
    (folder / "1_right.jpeg").write_text("not an image")
    Image.fromarray(np.zeros((300, 400, 3), np.uint8)).save(folder / "2_left.jpeg")
    Image.fromarray(np.full((300, 400), 120, np.uint8)).save(folder / "2_right.jpeg")
    rows = [("1_left", "1", "left"), ("1_right", "1", "right"), ("2_left", "2", "left"),
            ("2_right", "2", "right"), ("3_left", "3", "left")]
    return pd.DataFrame(
        [{"image": image, "patient": patient, "side": side, "level": 0,
          "path": str(folder / f"{image}.jpeg") if image != "3_left" else "", "mask_path": ""}
         for image, patient, side in rows]
    )


def test_bad_files_are_skipped_with_reasons(tmp_path, real_sample):
    items = pd.concat([real_items(real_sample, 6), bad_items(tmp_path / "bad")], ignore_index=True)
    cache = build_cache(items, tmp_path / "cache", CacheSettings(image_size=32), workers=1, progress=False)
    manifest = cache.manifest
    assert len(manifest) == len(items) == 11  # nothing dropped
    assert (manifest["status"] == "ok").sum() == 6
    reasons = dict(zip(manifest["image"], manifest["reason"]))
    assert reasons["1_left"] == "empty file (0 bytes)"
    assert reasons["1_right"].startswith("not an image file")
    assert reasons["2_left"].startswith("no fundus found")
    assert reasons["2_right"].startswith("grayscale image")
    assert reasons["3_left"] == "file not found"
    ok = manifest.index[manifest["status"] == "ok"]
    skipped = manifest.index[manifest["status"] == "skipped"]
    assert cache.images[ok].reshape(len(ok), -1).std(axis=1).min() > 5
    assert cache.images[skipped].max() == 0
    assert manifest.loc[ok, "sha1"].str.len().eq(40).all()


def test_parallel_build_equals_serial_build(tmp_path, real_sample):
    items = real_items(real_sample, 40)
    serial = build_cache(items, tmp_path / "serial", CacheSettings(48), workers=1, progress=False)
    parallel = build_cache(items, tmp_path / "parallel", CacheSettings(48), workers=2, progress=False)
    assert np.array_equal(serial.images, parallel.images)
    pd.testing.assert_frame_equal(serial.manifest, parallel.manifest)


def test_complete_cache_is_reused_and_other_settings_are_refused(tmp_path, real_sample):
    items = real_items(real_sample, 8)
    build_cache(items, tmp_path / "c", CacheSettings(32), workers=1, progress=False)
    stamp = os.stat(tmp_path / "c" / "images.npy").st_mtime_ns
    again = build_cache(items, tmp_path / "c", CacheSettings(32), workers=1, progress=False)
    assert os.stat(tmp_path / "c" / "images.npy").st_mtime_ns == stamp
    assert len(again.manifest) == 8
    with pytest.raises(CacheMismatchError, match="built with"):
        build_cache(items, tmp_path / "c", CacheSettings(32, circle=0.9), workers=1, progress=False)
    with pytest.raises(CacheMismatchError, match="built with"):
        build_cache(items.head(7), tmp_path / "c", CacheSettings(32), workers=1, progress=False)


def test_unfinished_cache_cannot_be_opened(tmp_path):
    with pytest.raises(CacheMismatchError, match="no cache"):
        Cache(tmp_path)


def test_masks_are_aligned_with_images(tmp_path):
    """A dark 'lesion' and its mask code land on the same cached pixels, through DCT scaling."""
    height, width = 1200, 1800
    image = np.zeros((height, width, 3), np.uint8)
    cv2.circle(image, (900, 600), 560, (190, 90, 50), -1)
    mask = np.zeros((height, width), np.uint8)
    for code, (x, y) in enumerate([(700, 450), (1100, 700), (850, 900)], start=1):
        cv2.circle(image, (x, y), 40, (60, 20, 10), -1)
        cv2.circle(mask, (x, y), 40, code, -1)
    Image.fromarray(image).save(tmp_path / "1_left.jpeg", quality=95)
    cv2.imwrite(str(tmp_path / "1_left.png"), mask)
    items = pd.DataFrame([{"image": "1_left", "patient": "1", "side": "left", "level": 2,
                           "path": str(tmp_path / "1_left.jpeg"), "mask_path": str(tmp_path / "1_left.png")}])
    cache = build_cache(items, tmp_path / "cache", CacheSettings(128), workers=1, progress=False)
    assert cache.manifest.at[0, "reduction"] == 8  # radius 560 / 8 = 70 >= 64
    cached_mask, cached = cache.masks[0], cache.images[0].astype(int)
    assert set(np.unique(cached_mask)) == {0, 1, 2, 3}
    for code in (1, 2, 3):
        ys, xs = np.nonzero(cached_mask == code)
        y, x = round(ys.mean()), round(xs.mean())
        assert cached[y, x].mean() < 90  # Graham turns the dark spot far below the grey 128


_INTERRUPTED_BUILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import pandas as pd
    import fundus_lib.data.cache as cache

    items, folder, process = pd.read_pickle(sys.argv[1]), Path(sys.argv[2]), cache._process

    def held_at_image_60(index):  # images 0-59 are logged: wait here for kill -9
        if index == 60:
            (folder / "holding").touch()
            while True:
                time.sleep(1)
        return process(index)

    cache._process = held_at_image_60
    cache.build_cache(items, folder, cache.CacheSettings(64), workers=1, progress=False)
    """
)


@pytest.mark.slow
def test_build_resumes_after_kill_9_with_identical_result(tmp_path, real_sample):
    items = real_items(real_sample)
    items.to_pickle(tmp_path / "items.pkl")
    folder = tmp_path / "interrupted"
    process = subprocess.Popen([sys.executable, "-c", _INTERRUPTED_BUILD, str(tmp_path / "items.pkl"), str(folder)])
    records = folder / "records.jsonl"
    while not (folder / "holding").exists():  # the build holds at image 60 until killed: no race with the clock
        assert process.poll() is None, "the build ended before it reached image 60"
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert len(records.read_text().splitlines()) == 60
    resumed = build_cache(items, folder, CacheSettings(64), workers=2, progress=False)
    fresh = build_cache(items, tmp_path / "fresh", CacheSettings(64), workers=1, progress=False)
    assert np.array_equal(resumed.images, fresh.images)
    pd.testing.assert_frame_equal(resumed.manifest, fresh.manifest)
    assert len(records.read_text().splitlines()) <= len(items) + 1  # finished work was not redone


def test_corrupted_caches_are_reproducible_and_recorded(tmp_path, real_sample):
    items = real_items(real_sample, 24)
    settings = CacheSettings(64, corruption_levels=(1, 2), corruption_seed=3)
    first = build_cache(items, tmp_path / "a", settings, workers=1, progress=False)
    second = build_cache(items, tmp_path / "b", settings, workers=2, progress=False)
    clean = build_cache(items, tmp_path / "clean", CacheSettings(64), workers=1, progress=False)
    assert np.array_equal(first.images, second.images)
    assert not np.array_equal(first.images, clean.images)
    assert first.manifest["corruption_level"].between(1, 2).all()
    assert set(first.manifest["corruption"]) <= {"light leakage", "motion blur", "under exposure", "over exposure"}
    assert (clean.manifest["corruption"] == "").all()


def test_clean_share_leaves_some_images_clean(tmp_path, real_sample):
    items = real_items(real_sample, 40)
    mixed = build_cache(items, tmp_path / "mixed", CacheSettings(32, corruption_levels=(1, 4), clean_share=0.5),
                        workers=1, progress=False)
    clean = build_cache(items, tmp_path / "clean", CacheSettings(32), workers=1, progress=False)
    untouched = mixed.manifest["corruption"] == ""
    assert 0.25 < untouched.mean() < 0.75
    rows = mixed.manifest.index[untouched]
    assert np.array_equal(mixed.images[rows], clean.images[rows])


def test_squares_before_graham(tmp_path, real_sample):
    squares = build_cache(real_items(real_sample, 4), tmp_path / "s", CacheSettings(32, graham=False), workers=1,
                          progress=False)
    corner = squares.images[:, 0, 0]
    assert corner.max() < 30  # black outside the fundus, not Graham's grey 128
