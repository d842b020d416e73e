"""From a params file's ``data`` section to a split, cached dataset: the whole data path.

``prepare_data`` generates the synthetic default (or lists the real Kaggle-layout data), builds
or reopens the preprocessed cache, resolves byte-identical photographs
(:mod:`fundus_lib.data.duplicates`: a duplicate kept once, a conflicting group excluded, both
recorded as skips) and assigns the patient-level split. Every step is keyed by
its settings, so a second call with the same params returns at once.

Example::

    data = prepare_data(load_params("params/demo.yaml"))
    data.manifest.groupby(["split", "level"]).size()
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from fundus_lib.config import DataConfig, Params, resolve_path
from fundus_lib.data import synthetic
from fundus_lib.data.cache import ITEM_COLUMNS, Cache, CacheSettings, build_cache, cache_key
from fundus_lib.data.duplicates import resolve_duplicates
from fundus_lib.data.eyepacs import list_images, list_subset
from fundus_lib.data.split import assign_split
from fundus_lib.errors import UserError
from fundus_lib.files import write_atomic
from fundus_lib.paths import data_dir

MANIFEST_HASH_COLUMNS = ["image", "patient", "side", "level", "split", "status", "sha1"]


@dataclass
class FundusData:
    """A cached dataset with its split.

    cache: the preprocessed arrays; manifest: the cache manifest plus a ``split`` column
    (index = array row; also written as ``manifest-<hash>.csv`` in the cache folder);
    manifest_hash: identifies the data for the run store;
    images_dir: where the raw photographs are (for figures);
    not_in_subset: labelled rows without a file in a declared subset (``data.eyepacs.subset``),
    excluded from the data set (0 otherwise).
    """

    config: DataConfig
    cache: Cache
    manifest: pd.DataFrame
    manifest_hash: str
    images_dir: Path
    not_in_subset: int = 0

    def rows(self, split: str) -> np.ndarray:
        """Array rows (= manifest index) of one split, in manifest order."""
        if split not in ("train", "valid", "test"):
            raise ValueError(f"split must be train, valid or test, not {split!r}")
        return self.manifest.index[self.manifest["split"] == split].to_numpy()

    @property
    def skipped(self) -> pd.DataFrame:
        """Images that could not be used, with the reason."""
        return self.manifest.loc[self.manifest["status"] != "ok", ["image", "path", "reason"]]


def _settings_key(settings: dict) -> str:
    return hashlib.sha1(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def synthetic_dir(config: DataConfig) -> Path:
    """Folder of the generated dataset for these generator settings."""
    settings = {"generator": synthetic.GENERATOR_VERSION, **config.synthetic.model_dump()}
    return data_dir() / "synthetic" / _settings_key(settings)


def list_items(config: DataConfig, progress: bool = True) -> tuple[pd.DataFrame, Path, int]:
    """The labelled images (generating the synthetic default first), their folder, and the number
    of labelled rows excluded because a declared subset has no file for them."""
    if config.source == "synthetic":
        folder = synthetic_dir(config)
        synthetic.generate_dataset(folder, config.synthetic, config.workers, progress)
        items = list_images(folder / "images", folder / "trainLabels.csv")
        masks = str(folder / "masks")
        items["mask_path"] = [os.path.join(masks, f"{image}.png") for image in items["image"]]
        return items, folder / "images", 0
    real = config.eyepacs
    images_dir, labels_csv = resolve_path(real.images_dir), resolve_path(real.labels_csv)
    if real.subset:
        items, not_in_subset = list_subset(images_dir, labels_csv, real.max_images)
    else:
        items, not_in_subset = list_images(images_dir, labels_csv, real.max_images), 0
    items["mask_path"] = ""
    return items, images_dir, not_in_subset


def generate_synthetic(configs: Sequence[DataConfig], progress: bool = True) -> None:
    """Generate the synthetic data sets of ``configs`` (before ``prepare_data`` lists them), those
    that differ only in their patches together (``synthetic.generate_datasets``: each eye is rendered
    once, e.g. for chapter 6's cue data beside the plain data)."""
    groups: dict = {}
    for config in configs:
        if config.source == "synthetic":
            base = config.synthetic.model_copy(update=synthetic.PATCH_SETTINGS)
            groups.setdefault(base, {})[synthetic_dir(config)] = config
    for group in groups.values():
        targets = [(folder, config.synthetic) for folder, config in group.items()]
        synthetic.generate_datasets(targets, next(iter(group.values())).workers, progress)


def manifest_hash(manifest: pd.DataFrame) -> str:
    """Content hash of the dataset as used: names, labels, split, status and image hashes."""
    return hashlib.sha1(manifest[MANIFEST_HASH_COLUMNS].to_csv(index=False).encode()).hexdigest()


def data_variant(data: FundusData, progress: bool = True, **settings) -> FundusData:
    """The same images and split cached with other settings, e.g. corrupted
    (``corruption_levels=(1, 4)``) or before Graham (``graham=False``); see CacheSettings."""
    cache_settings = replace(data.cache.settings, **settings)
    items = data.cache.manifest[ITEM_COLUMNS].reset_index(drop=True)
    cache = build_cache(
        items, data_dir() / "cache" / cache_key(items, cache_settings), cache_settings, data.config.workers, progress
    )
    manifest = resolve_duplicates(cache.manifest).assign(split=data.manifest["split"].to_numpy())
    return FundusData(data.config, cache, manifest, data.manifest_hash, data.images_dir, data.not_in_subset)


def _require_usable_images(manifest: pd.DataFrame, images_dir: Path) -> None:
    """A data set whose every image was skipped is an error with the reasons, not a split of nothing."""
    if (manifest["status"] == "ok").any():
        return
    reasons = manifest["reason"].value_counts().head(3)
    listed = "; ".join(f"{count} x {reason}" for reason, count in reasons.items())
    raise UserError(
        f"none of the {len(manifest)} listed images in {images_dir} is usable ({listed}): "
        "check data.eyepacs.images_dir and the image files"
    )


def _listing_stamp(config: DataConfig) -> tuple:
    """Modification times (ns; None if missing) of the image folder and labels file that
    ``list_items`` reads: a file added or removed, or a rewritten labels file, changes it."""
    if config.source == "synthetic":
        folder = synthetic_dir(config)
        paths = (folder / "images", folder / "trainLabels.csv")
    else:
        paths = (resolve_path(config.eyepacs.images_dir), resolve_path(config.eyepacs.labels_csv))
    return tuple(path.stat().st_mtime_ns if path.exists() else None for path in paths)


#: prepare_data's results in this process: (data section as JSON, data folder) ->
#: (listing stamp, cache folder's mtime, FundusData).
_PREPARED: dict[tuple[str, str], tuple[tuple, int, FundusData]] = {}


def prepare_data(params: Params, progress: bool = True) -> FundusData:
    """Generate or list, cache and split the data of ``params.data``.

    Within one process (a chapter's kernel, a CLI call) the same data section is prepared once and
    then returned at once (about 0.2 s saved per call on the demo's 5,000 images, which a chapter
    pays for each of its runs), until its listing changes (an image added or removed, the labels
    file rewritten) or its cache folder is removed; an image edited in place is seen by the next
    process, whose cache check hashes every file's size and time.
    """
    config = params.data
    key = (config.model_dump_json(), str(data_dir()))
    if key in _PREPARED:
        stamp, cache_mtime, data = _PREPARED[key]
        root = data.cache.root
        if stamp == _listing_stamp(config) and root.exists() and root.stat().st_mtime_ns == cache_mtime:
            return data
    data = _prepare(config, progress)
    _PREPARED[key] = (_listing_stamp(config), data.cache.root.stat().st_mtime_ns, data)
    return data


def _prepare(config: DataConfig, progress: bool) -> FundusData:
    items, images_dir, not_in_subset = list_items(config, progress)
    settings = CacheSettings(config.image_size, config.graham_circle, config.allow_grayscale)
    cache = build_cache(items, data_dir() / "cache" / cache_key(items, settings), settings, config.workers, progress)
    manifest = resolve_duplicates(cache.manifest)  # a duplicate kept once, a conflicting one excluded
    _require_usable_images(manifest, images_dir)
    manifest = manifest.assign(split=assign_split(manifest, config.split))
    digest = manifest_hash(manifest)
    split_manifest = cache.root / f"manifest-{digest[:12]}.csv"  # the dataset as used, for provenance
    if not split_manifest.exists():
        write_atomic(split_manifest, manifest.to_csv())
    return FundusData(config, cache, manifest, digest, images_dir, not_in_subset)
