"""The cache builder: skips with reasons, masks aligned with images, identical results in
parallel, resume after kill -9, and no silent reuse of a cache built with other settings."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

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
    rows = [
        ("1_left", "1", "left"),
        ("1_right", "1", "right"),
        ("2_left", "2", "left"),
        ("2_right", "2", "right"),
        ("3_left", "3", "left"),
    ]
    return pd.DataFrame(
        [
            {
                "image": image,
                "patient": patient,
                "side": side,
                "level": 0,
                "path": str(folder / f"{image}.jpeg") if image != "3_left" else "",
                "mask_path": "",
            }
            for image, patient, side in rows
        ]
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
    items = pd.DataFrame(
        [
            {
                "image": "1_left",
                "patient": "1",
                "side": "left",
                "level": 2,
                "path": str(tmp_path / "1_left.jpeg"),
                "mask_path": str(tmp_path / "1_left.png"),
            }
        ]
    )
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
    mixed = build_cache(
        items,
        tmp_path / "mixed",
        CacheSettings(32, corruption_levels=(1, 4), clean_share=0.5),
        workers=1,
        progress=False,
    )
    clean = build_cache(items, tmp_path / "clean", CacheSettings(32), workers=1, progress=False)
    untouched = mixed.manifest["corruption"] == ""
    assert 0.25 < untouched.mean() < 0.75
    rows = mixed.manifest.index[untouched]
    assert np.array_equal(mixed.images[rows], clean.images[rows])


def test_squares_before_graham(tmp_path, real_sample):
    squares = build_cache(
        real_items(real_sample, 4), tmp_path / "s", CacheSettings(32, graham=False), workers=1, progress=False
    )
    corner = squares.images[:, 0, 0]
    assert corner.max() < 30  # black outside the fundus, not Graham's grey 128


def test_a_cut_last_record_is_redone_on_a_line_of_its_own(tmp_path, real_sample):
    """A full disk or a power cut leaves half a line; the redone record was appended to it, and the
    image ended with an empty status."""
    items = real_items(real_sample, 12)
    fresh = build_cache(items, tmp_path / "fresh", CacheSettings(32), workers=1, progress=False)
    folder = tmp_path / "cut"
    build_cache(items, folder, CacheSettings(32), workers=1, progress=False)
    records = folder / "records.jsonl"
    lines = records.read_text().splitlines(keepends=True)
    records.write_text("".join(lines[:8]) + lines[8][: len(lines[8]) // 2])  # image 8's record cut, 9-11 not done
    info = json.loads((folder / "cache.json").read_text())
    (folder / "cache.json").write_text(json.dumps({"build": info["build"], "complete": False}))
    resumed = build_cache(items, folder, CacheSettings(32), workers=1, progress=False)
    pd.testing.assert_frame_equal(resumed.manifest, fresh.manifest)
    assert (resumed.manifest["status"] == "ok").all()
    assert [json.loads(line)["index"] for line in records.read_text().splitlines()] == list(range(12))


def test_a_build_checks_free_space_first(tmp_path, real_sample, monkeypatch):
    """A full disk made the memory-mapped write die with a bare Bus error."""
    import shutil

    from fundus_lib.files import DiskFullError

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=90_000))
    with pytest.raises(
        DiskFullError, match=r"the cache of 8 images at 64 px needs 98,304 bytes in .*/c but only 90,000"
    ):
        build_cache(real_items(real_sample, 8), tmp_path / "c", CacheSettings(64), workers=1, progress=False)


def test_a_same_size_replacement_image_is_seen(tmp_path, real_sample):
    """The cache key looked at file sizes only: an image replaced by one of the same size kept its old
    pixels and hash."""
    images = tmp_path / "images"
    images.mkdir()
    first, second = sorted((real_sample / "images").glob("eyepacs256_*.jpeg"))[:2]
    small, large = sorted((first, second), key=lambda path: path.stat().st_size)
    (images / "1_left.jpeg").write_bytes(large.read_bytes())
    (images / "1_right.jpeg").write_bytes(large.read_bytes())
    labels = tmp_path / "labels.csv"
    labels.write_text("image,level\n1_left,0\n1_right,0\n")
    items = list_images(images, labels).assign(mask_path="")
    before = build_cache(items, tmp_path / "a", CacheSettings(32), workers=1, progress=False)
    padded = small.read_bytes().ljust(large.stat().st_size, b"\0")  # trailing bytes: still the small JPEG
    (images / "1_left.jpeg").write_bytes(padded)
    os.utime(images / "1_left.jpeg", ns=(time.time_ns(), time.time_ns() + 10**9))
    assert (images / "1_left.jpeg").stat().st_size == large.stat().st_size
    from fundus_lib.data.cache import cache_key

    assert cache_key(items, CacheSettings(32)) != before.root.name
    after = build_cache(
        items, tmp_path / cache_key(items, CacheSettings(32)), CacheSettings(32), workers=1, progress=False
    )
    assert after.manifest.at[0, "sha1"] == hashlib.sha1(padded).hexdigest() != before.manifest.at[0, "sha1"]
    assert not np.array_equal(after.images[0], before.images[0])


def test_the_complete_marker_is_fsynced_before_its_rename(tmp_path, real_sample, monkeypatch):
    import fundus_lib.files as files

    events = []
    monkeypatch.setattr(files.os, "fsync", lambda fd: events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"))))
    replace = files.os.replace
    monkeypatch.setattr(files.os, "replace", lambda src, dst: (events.append(("replace", str(dst))), replace(src, dst)))
    build_cache(real_items(real_sample, 4), tmp_path / "c", CacheSettings(32), workers=1, progress=False)
    marker = events.index(("replace", str(tmp_path / "c" / "cache.json")), -4)
    assert events[marker - 1][0] == "fsync" and events[marker - 1][1].endswith(".tmp")
    assert ("fsync", str(tmp_path / "c" / "images.npy")) in events[:marker]


_HELD_PARENT = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import pandas as pd
    import fundus_lib.data.cache as cache

    items, folder = pd.read_pickle(sys.argv[1]), Path(sys.argv[2])

    class HeldBar(cache.tqdm):  # the pool and its workers are up: the parent waits here for its signal
        def update(self, n=1):
            (folder.parent / "holding").touch()
            while True:
                time.sleep(1)

    cache.tqdm = HeldBar
    cache.build_cache(items, folder, cache.CacheSettings(32), workers=2, progress=False)
    """
)


def _children(pid: int) -> list[int]:
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            children.append(int(stat.parent.name))
    return children


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has exited


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc to find the workers")
@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM], ids=["kill -9", "SIGTERM"])
def test_workers_die_with_their_parent(tmp_path, real_sample, how):
    """Killing `fundus data` left the pool workers and the resource tracker blocked forever."""
    real_items(real_sample, 40).to_pickle(tmp_path / "items.pkl")
    parent = subprocess.Popen([sys.executable, "-c", _HELD_PARENT, str(tmp_path / "items.pkl"), str(tmp_path / "c")])
    while not (tmp_path / "holding").exists():
        assert parent.poll() is None, "the build ended before it held"
        time.sleep(0.05)
    children = _children(parent.pid)
    assert len(children) >= 2  # two workers (and the resource tracker)
    parent.send_signal(how)
    parent.wait()
    deadline = time.monotonic() + 30  # a safety net only: they exit within a second
    while any(map(_alive, children)) and time.monotonic() < deadline:
        time.sleep(0.1)
    leaked = [pid for pid in children if _alive(pid)]
    for pid in leaked:
        os.kill(pid, signal.SIGKILL)
    assert not leaked, "processes outlived their parent"
