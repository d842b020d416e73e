"""Training runs side by side against one after another, on this machine's cores.

Trains the same runs (default: the first 6 of chapter 3, two methods x 3 seeds of the params'
balancing row) twice into two empty temporary run stores: one after another in this process with
all cores (``runtime.side_by_side: 1``), then side by side in worker processes
(``training.side_by_side``, 2 workers with half the cores each). Prints both wall times and their
ratio, measured in this one run. The data comes from the params' data store (generated first where
missing). The runs' numbers differ between the two ways: a different thread count sums in a
different order, and these short runs amplify rounding into a different model (as another seed would).

    python benchmarks/bench_side_by_side.py [--params params/demo.yaml] [--runs 6] [--processes 2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from fundus_lib.config import load_params
from fundus_lib.data.pipeline import generate_synthetic, prepare_data
from fundus_lib.experiments import all_runs, data_sections
from fundus_lib.runs import get_run, run_data
from fundus_lib.training.side_by_side import RunTrainer


def timed(train) -> float:
    with tempfile.TemporaryDirectory() as store:
        os.environ["FUNDUS_RUNS_DIR"] = store
        started = time.monotonic()
        train()
        return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params/demo.yaml")
    parser.add_argument("--runs", type=int, default=6, help="how many of chapter 3's runs to train")
    parser.add_argument("--processes", type=int, default=2, help="workers side by side")
    args = parser.parse_args()
    params = load_params(args.params)
    generate_synthetic(data_sections(params))
    prepare_data(params)
    runs = {label: pair for label, pair in all_runs(params).items() if label.startswith("03")}
    runs = dict(sorted(runs.items(), key=lambda item: item[0])[: args.runs])
    for run_params, config in runs.values():
        run_data(run_params, config, progress=False)

    def one_after_another() -> None:
        for run_params, config in runs.values():
            get_run(run_params, config, progress=False)

    def side_by_side() -> None:
        with RunTrainer(args.processes) as trainer:
            list(trainer.train(runs))

    sequential = timed(one_after_another)
    parallel = timed(side_by_side)
    print(f"{len(runs)} runs of {args.params} on {os.cpu_count()} cores:")
    print(f"  one after another, all cores: {sequential:.1f} s")
    print(f"  side by side, {args.processes} workers: {parallel:.1f} s (starting the workers included)")
    print(f"  ratio: {sequential / parallel:.2f}x")


if __name__ == "__main__":
    main()
