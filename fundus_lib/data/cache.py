"""The preprocessed cache: Graham-preprocessed uint8 arrays (memory-mapped) plus a manifest.

Decoding and preprocessing a 3888 x 2592 photograph costs tens of milliseconds; training reads
each image 20 times or more. So every image is decoded (DCT-scaled), preprocessed and stored
once. A cache folder holds:

- ``cache.json``: the settings it was built with and the item list's hash; ``"complete": true``
  once finished. Opening a folder with other settings is an error, never a silent reuse.
- ``images.npy``: uint8 (N, S, S, 3), row i = manifest row i (zeros for skipped rows).
- ``masks.npy``: uint8 (N, S, S) lesion codes, when the items have masks (synthetic data).
- ``records.jsonl``: one line per processed image, appended as workers finish: what makes an
  interrupted build resume without redoing finished images.
- ``manifest.csv``: the items with status (ok / skipped), reason, content hash, file size,
  the JPEG reduction used and any conversion note.

Example::

    cache = build_cache(items, Path("data/cache/x"), CacheSettings(image_size=512))
    cache.images[cache.manifest.index[cache.manifest.status == "ok"]]
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from numpy.lib.format import open_memmap
from tqdm import tqdm

from fundus_lib.data.corruptions import corrupt, corruption_for
from fundus_lib.data.decode import UnusableImage, decode_fundus
from fundus_lib.data.preprocess import circle_mask, crop_to_fundus, graham
from fundus_lib.errors import UserError
from fundus_lib.files import exclusive, fsync_file, require_free_space, sweep_temporaries, write_atomic
from fundus_lib.workers import exit_with_parent

#: Bump when decoding or preprocessing changes what a cache holds (2: the non-fundus check), so no cache
#: built before is reused with stale verdicts (run keys hash the manifest's content, not this).
CACHE_VERSION = 2
ITEM_COLUMNS = ["image", "patient", "side", "level", "path", "mask_path"]
RECORD_COLUMNS = ["status", "reason", "sha1", "width", "height", "reduction", "note", "corruption", "corruption_level"]


class CacheMismatchError(UserError, RuntimeError):
    """A cache folder exists but was built with other settings or other items."""


@dataclass(frozen=True)
class CacheSettings:
    """How each image is turned into a cache row.

    image_size: side S of the cached square (px); circle: share of the radius Graham keeps;
    allow_grayscale: use grayscale files (replicated) instead of skipping them;
    graham: False stores the fundus square before Graham preprocessing (for corruption on the fly);
    corruption_levels: (low, high) to corrupt each image with a random type and level in that
    range before Graham (the report's corrupted datasets), reproducibly from corruption_seed;
    clean_share: the share of images left clean in such a cache (a mixed dataset).
    """

    image_size: int
    circle: float = 0.95
    allow_grayscale: bool = False
    graham: bool = True
    corruption_levels: tuple[int, int] | None = None
    corruption_seed: int = 0
    clean_share: float = 0.0


def items_hash(items: pd.DataFrame) -> str:
    """Hash of the item list: names, labels, file paths, sizes and modification times (not contents:
    too slow). A replaced image changes it even at the same size, so the cache is built again and
    the image's content hash (the manifest's sha1, which keys the runs) is recomputed."""
    stats = [os.stat(path) if path and os.path.isfile(path) else None for path in items["path"]]
    listing = items[ITEM_COLUMNS].assign(
        size=[stat.st_size if stat else -1 for stat in stats],
        mtime_ns=[stat.st_mtime_ns if stat else -1 for stat in stats],
    )
    return hashlib.sha1(listing.to_csv(index=False).encode()).hexdigest()


def cache_key(items: pd.DataFrame, settings: CacheSettings) -> str:
    """Short key for the folder name: changes whenever the items or the settings change."""
    text = json.dumps({"version": CACHE_VERSION, "settings": asdict(settings), "items": items_hash(items)})
    return hashlib.sha1(text.encode()).hexdigest()[:16]


class Cache:
    """A finished cache folder, opened read-only (arrays are memory-mapped)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        info = _read_json(self.root / "cache.json")
        if not info.get("complete"):
            raise CacheMismatchError(f"{self.root} is not a finished cache (build it with build_cache)")
        self.info = info
        settings = info["build"]["settings"]
        if settings.get("corruption_levels") is not None:
            settings["corruption_levels"] = tuple(settings["corruption_levels"])
        self.settings = CacheSettings(**settings)
        self.manifest = pd.read_csv(
            self.root / "manifest.csv",
            index_col="index",
            keep_default_na=False,
            dtype={
                "patient": str,
                "path": str,
                "mask_path": str,
                "reason": str,
                "note": str,
                "sha1": str,
                "corruption": str,
            },
        )
        for column in ("width", "height", "reduction", "corruption_level"):
            self.manifest[column] = pd.to_numeric(self.manifest[column], errors="coerce").astype("Int64")
        self.images = np.load(self.root / "images.npy", mmap_mode="r")
        masks = self.root / "masks.npy"
        self.masks = np.load(masks, mmap_mode="r") if masks.exists() else None

    def __repr__(self) -> str:
        counts = self.manifest["status"].value_counts().to_dict()
        return f"Cache({self.root}, size={self.settings.image_size}, {counts})"


def _read_json(path: Path) -> dict:
    if not path.exists():
        raise CacheMismatchError(f"no cache at {path.parent} ({path.name} missing)")
    return json.loads(path.read_text())


# --- one image: runs in worker processes ---------------------------------------------------

_WORKER: dict = {}


def _init_worker(root: str, items: list[dict], settings: CacheSettings, has_masks: bool) -> None:
    cv2.setNumThreads(1)
    _WORKER.update(
        items=items,
        settings=settings,
        images=np.load(Path(root) / "images.npy", mmap_mode="r+"),
        masks=np.load(Path(root) / "masks.npy", mmap_mode="r+") if has_masks else None,
    )


def _init_pool_worker(parent_pid: int, *init_args) -> None:
    exit_with_parent(parent_pid)
    _init_worker(*init_args)


def _cached_mask(mask_path: str, decoded_shape: tuple[int, ...], fov, size: int, circle: float) -> np.ndarray:
    mask = cv2.imread(mask_path, cv2.IMREAD_UNCHANGED)
    if mask is None:
        raise UnusableImage(f"lesion mask missing or unreadable: {mask_path}")
    factor = mask.shape[1] / decoded_shape[1]
    cropped = crop_to_fundus(mask, fov.scaled(factor), size, interpolation=cv2.INTER_NEAREST)
    cropped[~circle_mask(size, circle)] = 0
    return cropped


def _corrupted(square, index: int, settings: CacheSettings) -> tuple:
    """The square with this image's corruption (or clean): (square, corruption name, level)."""
    kind, level, rng = corruption_for(index, settings.corruption_levels, settings.corruption_seed)
    if rng.random() < settings.clean_share:
        return square, "", 0
    return corrupt(square, kind, level, rng), kind, level


def _process(index: int) -> dict:
    item, settings = _WORKER["items"][index], _WORKER["settings"]
    size = settings.image_size
    try:
        decoded = decode_fundus(item["path"], size / 2, settings.allow_grayscale)
        if _WORKER["masks"] is not None:
            _WORKER["masks"][index] = _cached_mask(
                item["mask_path"], decoded.rgb.shape, decoded.fov, size, settings.circle
            )
    except UnusableImage as exc:
        return {"index": index, "status": "skipped", "reason": str(exc)}
    except Exception as exc:  # a bug, not a bad file: fail loudly, naming the file
        raise RuntimeError(f"preprocessing {item['path']} failed: {exc!r}") from exc
    square, kind, level = crop_to_fundus(decoded.rgb, decoded.fov, size), "", 0
    if settings.corruption_levels is not None:
        square, kind, level = _corrupted(square, index, settings)
    _WORKER["images"][index] = graham(square, settings.circle) if settings.graham else square
    return {
        "index": index,
        "status": "ok",
        "reason": "",
        "sha1": decoded.sha1,
        "width": decoded.width,
        "height": decoded.height,
        "reduction": decoded.reduction,
        "note": decoded.note,
        "corruption": kind,
        "corruption_level": level,
    }


# --- the build ---------------------------------------------------------------------------------


def _read_records(path: Path) -> dict[int, dict]:
    """Finished records. A last line cut by an interruption (a kill, a full disk, a power cut) is
    removed from the file, so that image is redone and its new record starts on a line of its own."""
    records: dict[int, dict] = {}
    if not path.exists():
        return records
    text = path.read_bytes()
    complete = text[: text.rfind(b"\n") + 1]
    if len(complete) < len(text):
        with path.open("r+b") as log:
            log.truncate(len(complete))
    for number, line in enumerate(complete.decode().splitlines(), start=1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            raise CacheMismatchError(
                f"{path} line {number} is corrupt: delete {path.parent} to build the cache again"
            ) from None
        records[record["index"]] = record
    return records


def _prepare_folder(root: Path, items: pd.DataFrame, settings: CacheSettings, has_masks: bool) -> None:
    build = json.loads(
        json.dumps(  # as stored: tuples become lists
            {"version": CACHE_VERSION, "settings": asdict(settings), "items": items_hash(items), "n": len(items)}
        )
    )
    info_path = root / "cache.json"
    if info_path.exists():
        stored = _read_json(info_path)
        if stored["build"] != build:
            raise CacheMismatchError(
                f"{root} holds a cache built with {stored['build']}, not {build}; use another folder or delete this one"
            )
        return
    root.mkdir(parents=True, exist_ok=True)
    size = settings.image_size
    open_memmap(root / "images.npy", mode="w+", dtype=np.uint8, shape=(len(items), size, size, 3)).flush()
    if has_masks:
        open_memmap(root / "masks.npy", mode="w+", dtype=np.uint8, shape=(len(items), size, size)).flush()
    (root / "records.jsonl").unlink(missing_ok=True)
    write_atomic(info_path, json.dumps({"build": build, "complete": False}, indent=2))


def _run(todo: list[int], init_args: tuple, workers: int, progress: bool, log) -> None:
    """Process ``todo`` (inline, or in spawned worker processes), logging each record as it ends."""
    bar = tqdm(total=len(todo), desc="preprocessing", unit="img", disable=not progress)
    executor = None
    if workers == 1 or len(todo) < 2 * workers:
        _init_worker(*init_args)
        results = map(_process, todo)
    else:
        context = multiprocessing.get_context("spawn")
        executor = ProcessPoolExecutor(
            workers, mp_context=context, initializer=_init_pool_worker, initargs=(os.getpid(), *init_args)
        )
        results = executor.map(_process, todo, chunksize=8)
    try:
        for record in results:
            log.write(json.dumps(record) + "\n")
            log.flush()
            bar.update()
    finally:
        bar.close()
        if executor is not None:
            executor.shutdown(cancel_futures=True)
        _WORKER.clear()


def build_cache(
    items: pd.DataFrame,
    root: str | Path,
    settings: CacheSettings,
    workers: int = 0,
    progress: bool = True,
) -> Cache:
    """Preprocess every item into the cache at ``root`` (resuming a partial build) and open it.

    items: frame with columns image, patient, side, level, path and mask_path ("" when there is
    no mask), e.g. from :func:`fundus_lib.data.eyepacs.list_images`. Unusable files become
    ``skipped`` rows with their reason; nothing is dropped. workers: processes (0 = all cores).
    """
    root = Path(root)
    items = items.reset_index(drop=True)
    with exclusive(root.parent / f".{root.name}.lock"):  # a second process building the same cache waits
        if not ((root / "cache.json").exists() and _read_json(root / "cache.json").get("complete")):
            _build(items, root, settings, workers, progress)
        _prepare_folder(root, items, settings, has_masks=False)  # only checks that settings match
    return Cache(root)


def _build(items: pd.DataFrame, root: Path, settings: CacheSettings, workers: int, progress: bool) -> None:
    """Process the items not yet in ``root``'s records, then write the manifest and, last, the
    durable complete marker (after the arrays and the manifest are on disk)."""
    has_masks = bool((items["mask_path"] != "").any())
    _prepare_folder(root, items, settings, has_masks)
    records_path = root / "records.jsonl"
    done = _read_records(records_path)
    todo = [index for index in range(len(items)) if index not in done]
    sweep_temporaries(root)
    row_bytes = settings.image_size**2 * (4 if has_masks else 3)
    require_free_space(root, len(todo) * row_bytes, f"the cache of {len(todo):,} images at {settings.image_size} px")
    workers = workers or os.cpu_count() or 1
    init_args = (str(root), items[ITEM_COLUMNS].to_dict("records"), settings, has_masks)
    with records_path.open("a") as log:
        _run(todo, init_args, workers, progress, log)
    records = pd.DataFrame.from_records(list(_read_records(records_path).values())).set_index("index")
    records = records.reindex(columns=RECORD_COLUMNS).astype(
        {"width": "Int64", "height": "Int64", "reduction": "Int64", "corruption_level": "Int64"}
    )
    text_columns = ["reason", "note", "sha1", "corruption"]
    records[text_columns] = records[text_columns].astype(object).fillna("")
    manifest = items.join(records)
    manifest.index.name = "index"
    for array in ("images.npy", "masks.npy") if has_masks else ("images.npy",):
        fsync_file(root / array)
    write_atomic(root / "manifest.csv", manifest.to_csv(), durable=True)
    info = _read_json(root / "cache.json")
    info.update(complete=True, counts=manifest["status"].value_counts().to_dict())
    write_atomic(root / "cache.json", json.dumps(info, indent=2), durable=True)
