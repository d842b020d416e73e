"""Speed of the four acquisition corruptions (``fundus_lib.data.corruptions``) on one core.

Milliseconds per 512 px fundus square for each corruption and level 1-4, the mean over
``--runs`` calls cycling over real photographs (the full-resolution ``eyepacs_*`` photographs of
../shared/data/fundus_real, decoded and cropped to 512 px squares) and seeds, with OpenCV on one
thread. The worst case is compared with the 50 ms target and with the report's ~50 s per image
for the proprietary corruption code (the ratio); all numbers come from this one run.

    python benchmarks/bench_corruptions.py [--runs 20] [--size 512]
"""

from __future__ import annotations

import argparse
import time

import cv2
import numpy as np
import pandas as pd

from fundus_lib.data.corruptions import CORRUPTIONS, MAX_LEVEL, corrupt
from fundus_lib.data.decode import decode_fundus
from fundus_lib.data.preprocess import crop_to_fundus
from fundus_lib.paths import project_root

TARGET_MS = 50
REPORT_S = 50  # the report: "the lengthy image processing which takes around 50 seconds per image"


def real_squares(size: int) -> list[np.ndarray]:
    """The full-resolution real photographs as uint8 (size, size, 3) fundus squares."""
    folder = project_root().parent / "shared" / "data" / "fundus_real" / "images"
    squares = []
    for path in sorted(folder.glob("eyepacs_*.jpeg")):
        decoded = decode_fundus(path, target_radius=size / 2, allow_grayscale=True)
        squares.append(crop_to_fundus(decoded.rgb, decoded.fov, size))
    return squares


def time_ms(squares: list[np.ndarray], kind: str, level: int, runs: int) -> float:
    """Mean milliseconds of one ``corrupt`` call over ``runs`` calls (after one warm-up)."""
    corrupt(squares[0], kind, level, np.random.default_rng(0))
    total = 0.0
    for run in range(runs):
        square, rng = squares[run % len(squares)], np.random.default_rng(run)
        start = time.perf_counter()
        corrupt(square, kind, level, rng)
        total += time.perf_counter() - start
    return total / runs * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args()
    cv2.setNumThreads(1)
    squares = real_squares(args.size)
    table = pd.DataFrame(
        {
            f"level {level}": [time_ms(squares, kind, level, args.runs) for kind in CORRUPTIONS]
            for level in range(1, MAX_LEVEL + 1)
        },
        index=pd.Index(CORRUPTIONS, name="ms per image"),
    )
    print(f"{len(squares)} real photographs as {args.size} px squares, mean of {args.runs} calls, one OpenCV thread")
    print(table.to_string(float_format=lambda value: f"{value:.1f}"))
    kind, level = table.stack().idxmax()
    worst = table.loc[kind, level]
    print(
        f"worst case: {kind}, {level}: {worst:.1f} ms = {worst / TARGET_MS:.2f} x the {TARGET_MS} ms target; "
        f"{REPORT_S * 1e3 / worst:.0f} x faster than the report's ~{REPORT_S} s per image"
    )


if __name__ == "__main__":
    main()
