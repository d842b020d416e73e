"""Training throughput on this machine, and whether the data loader keeps up.

1. For each model at its size (the report's Table 4 sizes and the demo's rows): images per
   second for a training step (forward, backward, Adam update) and for evaluation, measured on a
   few batches of random pixels.
2. For the demo's rows: images per second of the data loader with the full augmentation (the
   real cached data), against the model's training step rate. The ratio loader / step must stay
   at or above 1.5, or the loader would be the bottleneck.

Ratios are measured in this one run.

    python benchmarks/bench_training.py [--params params/demo.yaml] [--report-sizes]
"""

from __future__ import annotations

import argparse
import time

import pandas as pd
import torch
from torch.utils.data import DataLoader

from fundus_lib.config import load_params, run_config
from fundus_lib.data.augment import build_augmentation
from fundus_lib.data.dataset import FundusDataset
from fundus_lib.models import create_model
from fundus_lib.report import report_table
from fundus_lib.runs import run_data
from fundus_lib.losses import cross_entropy


def step_rates(name: str, size: int, batch_size: int, steps: int = 3) -> tuple[float, float]:
    """(train img/s, eval img/s) of one model on random pixels, after one warm-up step."""
    model = create_model(name)
    optimizer = torch.optim.Adam(model.parameters())
    images, labels = torch.rand(batch_size, 3, size, size), torch.randint(0, 5, (batch_size,))
    model.train()
    for step in range(steps + 1):
        if step == 1:
            start = time.perf_counter()
        loss = cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    train = steps * batch_size / (time.perf_counter() - start)
    model.eval()
    with torch.no_grad():
        model(images)
        start = time.perf_counter()
        for _ in range(steps):
            model(images)
    return train, steps * batch_size / (time.perf_counter() - start)


def loader_rate(dataset, batch_size: int, workers: int, batches: int = 30) -> float:
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers)
    count, start = 0, time.perf_counter()
    for index, (images, _) in enumerate(loader):
        count += len(images)
        if index + 1 == batches:
            break
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params/demo.yaml")
    parser.add_argument("--report-sizes", action="store_true", help="also every model at the report's sizes (slow on a CPU)")
    args = parser.parse_args()
    params = load_params(args.params)
    rows = []
    for row in params.baselines:
        config = run_config(params, row)
        train, evaluate = step_rates(row.model, row.image_size, row.batch_size)
        dataset = FundusDataset(run_data(params, config, progress=False), "train", transform=build_augmentation(params.augment))
        loader = loader_rate(dataset, row.batch_size, params.runtime.loader_workers)
        rows.append({"model": row.model, "size": row.image_size, "batch": row.batch_size, "train img/s": train,
                     "eval img/s": evaluate, "loader img/s": loader, "loader / train step": loader / train})
    print(f"Demo rows of {args.params} (loader: {params.runtime.loader_workers} worker processes, full augmentation):")
    print(pd.DataFrame(rows).to_string(index=False, float_format=lambda value: f"{value:.1f}"))
    if args.report_sizes:
        report = report_table("table4")
        sizes = report.groupby(["model", "image_size"]).size().index
        rates = [{"model": name, "size": size, **dict(zip(("train img/s", "eval img/s"), step_rates(name, size, 4, steps=2)))}
                 for name, size in sizes]
        print("\nThe report's models at its sizes (batch 4, random pixels):")
        print(pd.DataFrame(rates).to_string(index=False, float_format=lambda value: f"{value:.2f}"))


if __name__ == "__main__":
    main()
