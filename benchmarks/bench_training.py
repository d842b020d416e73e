"""Training throughput on this machine, and whether the data loader keeps up.

1. For each model at its size (the report's Table 4 sizes and the demo's rows): images per
   second for a training step (forward, backward, Adam update) and for evaluation, measured on a
   few batches of random pixels.
2. For the demo's rows: images per second of the data loader with the full augmentation (the
   real cached data), against the model's training step rate. The ratio loader / step must stay
   at or above 1.5, or the loader would be the bottleneck.
3. With ``--cpu-options``, the CPU training step of the first row under each option of the
   training path: intra-op threads (1 or all cores), channels-last memory format, bfloat16
   autocast and ``torch.compile``, each as a ratio to the default (all cores, channels-last,
   float32, eager). The project keeps what wins (``runtime`` section).

Ratios are measured in this one run.

    python benchmarks/bench_training.py [--params params/demo.yaml] [--report-sizes] [--cpu-options]
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


def step_rates(name: str, size: int, batch_size: int, steps: int = 3, channels_last: bool = False,
               bfloat16: bool = False, compiled: bool = False, warmup: int = 1) -> tuple[float, float, float]:
    """(train img/s, eval img/s, seconds of the ``warmup`` steps before them) of one model on
    random pixels; the warm-up holds ``torch.compile``'s one-off compilation."""
    torch.manual_seed(0)
    model = create_model(name)
    memory = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=memory)
    optimizer = torch.optim.Adam(model.parameters())
    images = torch.rand(batch_size, 3, size, size).contiguous(memory_format=memory)
    labels = torch.randint(0, 5, (batch_size,))
    forward = torch.compile(model) if compiled else model
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=bfloat16)
    model.train()
    begin = time.perf_counter()
    for step in range(steps + warmup):
        if step == warmup:
            start = time.perf_counter()
            warmup_seconds = start - begin
        with autocast:
            loss = cross_entropy(forward(images).float(), labels)
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
    return train, steps * batch_size / (time.perf_counter() - start), warmup_seconds


#: The CPU options of the training path: name -> (threads: None = all cores, step_rates options).
CPU_OPTIONS = {
    "default: all cores, channels-last, float32, eager": (None, {"channels_last": True}),
    "1 thread": (1, {"channels_last": True}),
    "contiguous (not channels-last)": (None, {}),
    "bfloat16 autocast": (None, {"channels_last": True, "bfloat16": True}),
    "torch.compile": (None, {"channels_last": True, "compiled": True, "warmup": 3}),
}


def cpu_option_rates(name: str, size: int, batch_size: int, steps: int = 8) -> pd.DataFrame:
    """Training img/s of one model under each CPU option, its ratio to the default's, and the
    seconds of the first steps (one for eager, three for torch.compile, which compiles in them)."""
    cores = torch.get_num_threads()
    rows = []
    for option, (threads, settings) in CPU_OPTIONS.items():
        torch.set_num_threads(threads or cores)
        train, _, warmup_seconds = step_rates(name, size, batch_size, steps, **settings)
        rows.append({"option": option, "train img/s": train, "warm-up s": warmup_seconds})
    torch.set_num_threads(cores)
    table = pd.DataFrame(rows)
    return table.assign(**{"ratio to default": table["train img/s"] / table["train img/s"].iloc[0]})


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
    parser.add_argument("--cpu-options", action="store_true", help="the first row's training step under each CPU option")
    args = parser.parse_args()
    params = load_params(args.params)
    rows = []
    for row in params.baselines:
        config = run_config(params, row)
        train, evaluate, _ = step_rates(row.model, row.image_size, row.batch_size)
        dataset = FundusDataset(run_data(params, config, progress=False), "train", transform=build_augmentation(params.augment))
        loader = loader_rate(dataset, row.batch_size, params.runtime.loader_workers)
        rows.append({"model": row.model, "size": row.image_size, "batch": row.batch_size, "train img/s": train,
                     "eval img/s": evaluate, "loader img/s": loader, "loader / train step": loader / train})
    print(f"Demo rows of {args.params} (loader: {params.runtime.loader_workers} worker processes, full augmentation):")
    print(pd.DataFrame(rows).to_string(index=False, float_format=lambda value: f"{value:.1f}"))
    if args.cpu_options:
        first = params.baselines[0]
        print(f"\nCPU options, {first.model} at {first.image_size} px, batch {first.batch_size} (ratios from this run):")
        print(cpu_option_rates(first.model, first.image_size, first.batch_size).to_string(
            index=False, float_format=lambda value: f"{value:.2f}"))
    if args.report_sizes:
        report = report_table("table4")
        sizes = report.groupby(["model", "image_size"]).size().index
        rates = [{"model": name, "size": size, **dict(zip(("train img/s", "eval img/s"), step_rates(name, size, 4, steps=2)))}
                 for name, size in sizes]
        print("\nThe report's models at its sizes (batch 4, random pixels):")
        print(pd.DataFrame(rates).to_string(index=False, float_format=lambda value: f"{value:.2f}"))


if __name__ == "__main__":
    main()
