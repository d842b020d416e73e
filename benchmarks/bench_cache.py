"""Cache-building benchmark: this project's pipeline against the original code's, on full-size
EyePACS-like photographs (3888 x 2592 JPEGs).

- naive (the original ``resize_image.py``): full JPEG decode, rescale so the fundus radius is
  500 px, Graham at that scale, circle mask, resize to the output size, centre crop;
- ours (``fundus_lib.data``): DCT-scaled decode (1/2, 1/4 or 1/8), crop and scale to the output
  size, Graham at the output size.

Prints images per second and the ratio ours / naive, measured in this one run, at 512 and 256 px
output: per image on one core, then whole builds with 1 and 2 worker processes (ours through
``build_cache``, which also hashes files and writes the memory-mapped cache).

Then the scaling of our build with the workers: a build of ``--scaling-images`` photographs
(the generated ones repeated; default 1,000) at 512 px with 1 and with 2 workers, and the ratio
of their rates, from this one run.

    python benchmarks/bench_cache.py [--images 32] [--build-passes 4] [--scaling-images 1000]
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from fundus_lib.config import SyntheticConfig
from fundus_lib.data.cache import CacheSettings, build_cache
from fundus_lib.data.decode import decode_fundus
from fundus_lib.data.preprocess import preprocess
from fundus_lib.data.synthetic import render_eye, sample_specs

FULL_WIDTH = 3888  # EyePACS' most common size: 3888 x 2592


def naive_preprocess(path: str, size: int, scale: int = 500) -> np.ndarray:
    """The original pipeline, re-implemented for measurement (full decode first)."""
    image = cv2.imread(path)
    row = image[image.shape[0] // 2].sum(axis=1)
    radius = (row > row.mean() / 10).sum() / 2
    image = cv2.resize(image, (0, 0), fx=scale / radius, fy=scale / radius)
    image = cv2.addWeighted(image, 4, cv2.GaussianBlur(image, (0, 0), scale / 30), -4, 128)
    circle = np.zeros(image.shape)
    cv2.circle(circle, (image.shape[1] // 2, image.shape[0] // 2), int(scale * 0.9), (1, 1, 1), -1, 8, 0)
    image = image * circle + 128 * (1 - circle)
    factor = size / image.shape[0]
    image = cv2.resize(image, (0, 0), fx=factor, fy=factor)
    centre = image.shape[1] // 2
    return image[:, centre - size // 2 : centre + size // 2].astype(np.uint8)


def ours_preprocess(path: str, size: int) -> np.ndarray:
    decoded = decode_fundus(path, size / 2)
    return preprocess(decoded.rgb, decoded.fov, size)


def make_photographs(folder: Path, count: int) -> list[str]:
    """Full-size synthetic fundus JPEGs (quality 92), generated once."""
    folder.mkdir(parents=True, exist_ok=True)
    specs = sample_specs(SyntheticConfig(n_patients=(count + 1) // 2, raw_width=FULL_WIDTH, seed=7))[:count]
    paths = []
    for spec in specs:
        path = folder / f"{spec.image}.jpeg"
        if not path.exists():
            rgb, _ = render_eye(spec, FULL_WIDTH, 1.0)
            cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
        paths.append(str(path))
    return paths


def _single_thread() -> None:
    cv2.setNumThreads(1)


def _naive_job(job: tuple[str, int]) -> None:
    naive_preprocess(*job)


def per_image_rate(function, paths: list[str], size: int) -> float:
    """Images per second on this core (one warm-up image first)."""
    function(paths[0], size)
    start = time.perf_counter()
    for path in paths:
        function(path, size)
    return len(paths) / (time.perf_counter() - start)


def naive_build_rate(paths: list[str], size: int, workers: int) -> float:
    """Images per second of a whole build, worker start-up included (as for ours)."""
    start = time.perf_counter()
    if workers == 1:
        for path in paths:
            naive_preprocess(path, size)
    else:
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_single_thread) as pool:
            list(pool.map(_naive_job, [(path, size) for path in paths], chunksize=2))
    return len(paths) / (time.perf_counter() - start)


def ours_build_rate(paths: list[str], size: int, workers: int) -> float:
    items = pd.DataFrame(
        {
            "image": [f"{index}_left" for index in range(len(paths))],
            "patient": "p",
            "side": "left",
            "level": 0,
            "path": paths,
            "mask_path": "",
        }
    )
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        build_cache(items, Path(folder) / "cache", CacheSettings(size), workers=workers, progress=False)
        return len(paths) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=32, help="distinct photographs to generate")
    parser.add_argument(
        "--build-passes",
        type=int,
        default=4,
        help="builds process the photographs this many times, so worker start-up is amortised",
    )
    parser.add_argument(
        "--scaling-images",
        type=int,
        default=1000,
        help="photographs of the 1- against 2-worker scaling build (0: skip it)",
    )
    parser.add_argument("--folder", type=Path, default=Path(tempfile.gettempdir()) / "fundus-bench-photographs")
    args = parser.parse_args()
    paths = make_photographs(args.folder, args.images)
    cv2.setNumThreads(1)
    rows = []
    for size in (512, 256):
        naive, ours = per_image_rate(naive_preprocess, paths, size), per_image_rate(ours_preprocess, paths, size)
        rows.append({"output": size, "mode": "per image, 1 core", "naive img/s": naive, "ours img/s": ours})
        for workers in (1, 2):
            listing = paths * args.build_passes
            naive, ours = naive_build_rate(listing, size, workers), ours_build_rate(listing, size, workers)
            rows.append(
                {"output": size, "mode": f"build, {workers} worker(s)", "naive img/s": naive, "ours img/s": ours}
            )
    table = pd.DataFrame(rows)
    table["ratio"] = table["ours img/s"] / table["naive img/s"]
    print(
        f"{len(paths)} synthetic {FULL_WIDTH} x {FULL_WIDTH * 2 // 3} JPEGs (builds: {args.build_passes} passes, "
        "worker start-up included); ratios measured in this run"
    )
    print(table.to_string(index=False, float_format=lambda value: f"{value:.2f}"))
    if args.scaling_images:
        listing = (paths * math.ceil(args.scaling_images / len(paths)))[: args.scaling_images]
        one, two = ours_build_rate(listing, 512, 1), ours_build_rate(listing, 512, 2)
        print(
            f"\nscaling, ours at 512 px, {len(listing):,} photographs: 1 worker {one:.2f} img/s, "
            f"2 workers {two:.2f} img/s: {two / one:.2f}x"
        )


if __name__ == "__main__":
    main()
