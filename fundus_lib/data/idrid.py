"""IDRiD photographs with clinicians' lesion masks (``../shared/data/idrid_lesions``), cached like
the training images so that each mask follows its photograph's crop and scale.

The folder holds ``images/IDRiD_NN.jpg`` (4288 x 2848) and, per image, two binary masks
``masks/IDRiD_NN_HE.png`` (haemorrhages) and ``masks/IDRiD_NN_EX.png`` (hard exudates), 255 =
lesion (Porwal et al. 2020, CC BY 4.0). The two masks are merged into one label map with the
synthetic generator's lesion codes (2 = haemorrhage, 3 = hard exudate; a pixel in both, a few
pixels an image, counts as exudate), then the cache builder crops and resizes photograph and map
together (nearest neighbour for the map) and applies Graham's filter to the photograph.

The set carries no DR grades: the cached ``level`` is -1 (ungraded), and attributions are
computed for each model's own predicted grade.

Example::

    cache = idrid_cache("../shared/data/idrid_lesions", image_size=128, circle=0.95)
    cache.masks.shape   # (20, 128, 128), values 0, 2, 3
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from fundus_lib.data.cache import Cache, CacheSettings, build_cache, cache_key
from fundus_lib.data.synthetic import LESION_CODES
from fundus_lib.errors import UserError
from fundus_lib.paths import data_dir

#: IDRiD's mask suffix -> the lesion code of the merged label map (exudate written last, so it wins).
MASK_CODES = {"HE": 2, "EX": 3}
UNGRADED = -1


class IdridError(UserError, FileNotFoundError):
    """The IDRiD folder is missing or incomplete; the message says what and where to get it."""


def _photographs(folder: Path) -> list[Path]:
    if not (folder / "images").is_dir():
        raise IdridError(
            f"no IDRiD lesion photographs at {folder} (expected images/IDRiD_NN.jpg and masks/IDRiD_NN_HE.png, "
            "_EX.png). Get the segmentation set of IDRiD (Porwal et al. 2020, IEEE DataPort, CC BY 4.0) or point "
            "attribution.lesion_photographs elsewhere"
        )
    found = sorted((folder / "images").glob("IDRiD_*.jpg"))
    if not found:
        raise IdridError(f"{folder / 'images'} holds no IDRiD_*.jpg photograph")
    return found


def merged_mask(folder: Path, stem: str) -> np.ndarray:
    """The label map (H, W) uint8 of one photograph: 0, 2 (haemorrhage), 3 (hard exudate)."""
    masks = {}
    for suffix, code in MASK_CODES.items():
        path = folder / "masks" / f"{stem}_{suffix}.png"
        masks[code] = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if masks[code] is None:
            raise IdridError(f"lesion mask missing or unreadable: {path}")
    if len({mask.shape for mask in masks.values()}) > 1:
        raise IdridError(f"the lesion masks of {stem} differ in size: {[mask.shape for mask in masks.values()]}")
    merged = np.zeros(next(iter(masks.values())).shape, np.uint8)
    for code, mask in masks.items():  # exudate last: it wins where both are marked
        merged[mask > 127] = code
    return merged


def idrid_items(folder: str | Path) -> pd.DataFrame:
    """The photographs as cache items, their merged label maps written once under the data folder."""
    folder = Path(folder)
    photographs = _photographs(folder)
    digest = hashlib.sha1("".join(f"{path.name}:{path.stat().st_size}" for path in photographs).encode()).hexdigest()
    masks_dir = data_dir() / "idrid" / digest[:12]
    masks_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for path in photographs:
        mask_path = masks_dir / f"{path.stem}.png"
        if not mask_path.exists():
            temporary = mask_path.with_name(f".{mask_path.name}.tmp.png")
            cv2.imwrite(str(temporary), merged_mask(folder, path.stem))
            temporary.replace(mask_path)
        rows.append(
            {
                "image": path.stem,
                "patient": path.stem,
                "side": "",
                "level": UNGRADED,
                "path": str(path),
                "mask_path": str(mask_path),
            }
        )
    return pd.DataFrame(rows)


def idrid_cache(folder: str | Path, image_size: int, circle: float, workers: int = 1, progress: bool = False) -> Cache:
    """The IDRiD photographs and label maps cached at ``image_size`` with Graham's filter."""
    items = idrid_items(folder)
    settings = CacheSettings(image_size, circle)
    return build_cache(items, data_dir() / "cache" / cache_key(items, settings), settings, workers, progress)


def lesion_masks(cache: Cache) -> dict[str, np.ndarray]:
    """Per lesion type ("haemorrhage", "hard exudate"), the boolean masks (N, S, S) of the cache."""
    labels = np.asarray(cache.masks)
    return {LESION_CODES[code]: labels == code for code in MASK_CODES.values()}
