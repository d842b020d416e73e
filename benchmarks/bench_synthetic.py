"""Speed of generating the synthetic data: chapter 6's cue data set beside the plain one, each eye
rendered once (``generate_datasets``) against generating each data set alone (``generate_dataset``
twice), and the three counterfactual variants of chapter 6 (``render_variants``) against rendering
each variant alone (``render_eye`` three times). Both write or return bit-identical images (tests);
the ratios come from this one run, in one process (``--workers 1``: the cores are not shared).

    python benchmarks/bench_synthetic.py [--patients 100] [--width 576]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import cv2

from fundus_lib.config import SyntheticConfig
from fundus_lib.data.synthetic import generate_dataset, generate_datasets, render_eye, render_variants, sample_specs


def seconds(work) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patients", type=int, default=100, help="patients per data set (two eyes each)")
    parser.add_argument("--width", type=int, default=576, help="rendered width in px (the demo's)")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    plain = SyntheticConfig(n_patients=args.patients, raw_width=args.width, difficulty=0.6)
    cue = plain.model_copy(update={"spurious_cue": 0.8, "distractor": 0.5})
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        alone = seconds(
            lambda: [generate_dataset(root / name, cfg, 1, False) for name, cfg in (("a", plain), ("b", cue))]
        )
        together = seconds(lambda: generate_datasets([(root / "c", plain), (root / "d", cue)], 1, False))
    eyes = 2 * args.patients
    print(f"plain + cue data sets, {eyes} eyes each at {args.width} px, 1 process:")
    print(f"  each alone {alone:.1f} s, together {together:.1f} s: {alone / together:.2f}x faster")
    specs = sample_specs(cue)[:60]
    variants = [
        [replace(s, cue=False), replace(s, cue=not s.cue), replace(s, distractor=not s.distractor)] for s in specs
    ]
    separately = seconds(lambda: [render_eye(v, args.width, 0.6) for group in variants for v in group])
    at_once = seconds(lambda: [render_variants(group, args.width, 0.6) for group in variants])
    print(f"chapter 6's three counterfactual variants of {len(specs)} eyes (rendering only):")
    print(f"  each alone {separately:.1f} s, at once {at_once:.1f} s: {separately / at_once:.2f}x faster")


if __name__ == "__main__":
    main()
