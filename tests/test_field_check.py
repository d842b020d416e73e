"""The non-fundus check: ordinary photographs named as Kaggle eyes are skipped with their reason,
and no real EyePACS photograph is lost (the whole measurement: benchmarks/check_fundus_filter.py)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import skimage.data
from matplotlib import cbook
from PIL import Image

from fundus_lib.data.cache import CacheSettings, build_cache
from fundus_lib.data.decode import UnusableImage, decode_fundus, decode_fundus_bytes
from fundus_lib.data.eyepacs import list_images
from fundus_lib.data.field_check import MAX_CORNER_SHARE, NOT_A_FUNDUS, corner_brightness

ORDINARY = ("chelsea", "coffee", "astronaut", "grace_hopper")


def ordinary(name: str) -> np.ndarray:
    if name == "grace_hopper":
        with Image.open(cbook.get_sample_data("grace_hopper.jpg")) as image:
            return np.asarray(image.convert("RGB"))
    return getattr(skimage.data, name)()


@pytest.fixture(scope="module")
def wrong_folder(tmp_path_factory):
    """The four ordinary photographs as JPEGs named like Kaggle eyes, with a labels file."""
    folder = tmp_path_factory.mktemp("wrong")
    (folder / "images").mkdir()
    for number, name in enumerate(ORDINARY, start=1):
        Image.fromarray(ordinary(name)).save(folder / "images" / f"{number}_left.jpeg", quality=90)
    (folder / "labels.csv").write_text("image,level\n" + "".join(f"{n}_left,{n % 5}\n" for n in range(1, 5)))
    return folder


@pytest.mark.parametrize("name", ORDINARY)
def test_an_ordinary_photograph_is_not_a_fundus(name):
    buffer = io.BytesIO()
    Image.fromarray(ordinary(name)).save(buffer, "JPEG", quality=90)
    with pytest.raises(UnusableImage, match=f"{NOT_A_FUNDUS}: no dark border"):
        decode_fundus_bytes(buffer.getvalue(), 64)


def test_ordinary_photographs_are_cached_as_skipped_with_the_reason(wrong_folder, tmp_path):
    items = list_images(wrong_folder / "images", wrong_folder / "labels.csv").assign(mask_path="")
    manifest = build_cache(items, tmp_path / "cache", CacheSettings(64), workers=1, progress=False).manifest
    assert (manifest["status"] == "skipped").all()
    assert manifest["reason"].str.startswith(f"{NOT_A_FUNDUS}: no dark border").all()


def test_every_real_photograph_of_the_sample_passes_with_a_margin(real_sample):
    shares = []
    for path in sorted((real_sample / "images").glob("*.jpeg")):
        decoded = decode_fundus(path, 32, allow_grayscale=True)  # raises for a rejected photograph
        shares.append(corner_brightness(decoded.rgb, decoded.fov)[1])
    assert len(shares) == 503
    assert max(shares) < MAX_CORNER_SHARE * 0.75
