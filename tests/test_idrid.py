"""IDRiD lesion photographs: both clinicians' masks merged into one label map that follows the
photograph's crop and scale; a missing folder or mask is a clear error."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from fundus_lib.data.idrid import IdridError, idrid_cache, lesion_masks, merged_mask
from fundus_lib.paths import project_root

IDRID = project_root().parent / "shared" / "data" / "idrid_lesions"


@pytest.fixture(scope="module")
def idrid():
    if not IDRID.is_dir():
        pytest.skip(f"{IDRID} is missing")
    return IDRID


def test_the_merged_map_holds_each_clinician_mask(idrid):
    merged = merged_mask(idrid, "IDRiD_01")
    haemorrhage = cv2.imread(str(idrid / "masks" / "IDRiD_01_HE.png"), cv2.IMREAD_GRAYSCALE) > 127
    exudate = cv2.imread(str(idrid / "masks" / "IDRiD_01_EX.png"), cv2.IMREAD_GRAYSCALE) > 127
    assert set(np.unique(merged)) <= {0, 2, 3}
    assert ((merged == 3) == exudate).all()
    assert ((merged == 2) == (haemorrhage & ~exudate)).all()


def test_cached_masks_keep_their_share_of_the_field(idrid):
    """Cropping and scaling keep each lesion type's share of the photograph's field of view (within
    what nearest-neighbour scaling of small lesions allows), and lesions lie inside the field."""
    cache = idrid_cache(idrid, image_size=128, circle=0.95, workers=1)
    assert (cache.manifest["status"] == "ok").all() and len(cache.manifest) == 20
    masks = lesion_masks(cache)
    for lesion, code in (("haemorrhage", "HE"), ("hard exudate", "EX")):
        full = cv2.imread(str(idrid / "masks" / f"IDRiD_03_{code}.png"), cv2.IMREAD_GRAYSCALE) > 127
        photograph = cv2.imread(str(idrid / "images" / "IDRiD_03.jpg"), cv2.IMREAD_GRAYSCALE)
        field_full = (photograph > 20).sum()
        cached = masks[lesion][2]
        field_cached = (np.asarray(cache.images[2]).max(axis=2) > 0).sum()
        assert cached.sum() > 0, lesion
        assert cached.sum() / field_cached == pytest.approx(full.sum() / field_full, rel=0.5), lesion
    # aligned: after Graham's filter exudates are brighter and haemorrhages darker than the field's
    # mean (128), which a map shifted by 6 px no longer shows
    brightness = np.asarray(cache.images).astype(float).mean(axis=-1)
    assert brightness[masks["hard exudate"]].mean() > 138
    assert brightness[masks["haemorrhage"]].mean() < 126
    assert abs(brightness[np.roll(masks["hard exudate"], 6, axis=2)].mean() - 128) < 3


def test_a_missing_folder_or_mask_names_it(tmp_path, idrid):
    with pytest.raises(IdridError, match="no IDRiD lesion photographs"):
        idrid_cache(tmp_path, 64, 0.95)
    (tmp_path / "masks").mkdir()
    with pytest.raises(IdridError, match="IDRiD_01_HE.png"):
        merged_mask(tmp_path, "IDRiD_01")
