"""Training throughput on this machine, and whether the data loader keeps up.

1. For each model at its size (the report's Table 4 sizes and the demo's rows): images per
   second for a training step (forward, backward, Adam update) and for evaluation, measured on a
   few batches of random pixels.
2. For the demo's rows: images per second of the data loader with the full augmentation (the
   real cached data), against the model's training step rate. The ratio loader / step must stay
   at or above 1.5, or the loader would be the bottleneck.
3. With ``--cpu-options``, the CPU training step of the first row (or ``--model`` at ``--size``)
   under each option of the training path: intra-op threads (1 or all cores), channels-last
   memory format, bfloat16 autocast, ``torch.compile``, BatchNorm frozen (eval-mode statistics,
   no affine gradients) and the stem with the first blocks frozen (no gradients), each as a
   ratio to the default (all cores, channels-last, float32, eager); then the image sizes (the
   step at 128 / 192 / 256 px) and an adversarial-training step (the report's 5-step PGD against
   FGSM with a random start, Wong et al. 2020, one attack step) as ratios to a clean step. The
   project keeps what wins (``runtime`` section, ``adversarial.steps``).

Ratios are measured in this one run.

    python benchmarks/bench_training.py [--params params/demo.yaml] [--report-sizes] [--cpu-options]
    python benchmarks/bench_training.py --cpu-options --model efficientnet-lite0 --size 256 --batch 32
"""

from __future__ import annotations

import argparse
import time

import pandas as pd
import torch
from torch.utils.data import DataLoader

from fundus_lib.attacks.adversarial_training import adversarial_loss
from fundus_lib.config import load_params, run_config
from fundus_lib.data.augment import build_augmentation
from fundus_lib.data.dataset import FundusDataset
from fundus_lib.models import create_model, early_layers
from fundus_lib.report.numbers import report_table
from fundus_lib.runs import run_data
from fundus_lib.training.losses import cross_entropy


def freeze(model: torch.nn.Module, batchnorm: bool, first_blocks: int) -> None:
    """BatchNorm layers to eval mode without affine gradients; the stem and the first
    ``first_blocks`` MBConv blocks (efficientnets) without gradients."""
    if batchnorm:
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.eval()
                module.requires_grad_(False)
    for module in early_layers(model, first_blocks) if first_blocks else []:
        module.requires_grad_(False)


def step_rates(
    name: str,
    size: int,
    batch_size: int,
    steps: int = 3,
    channels_last: bool = False,
    bfloat16: bool = False,
    compiled: bool = False,
    warmup: int = 1,
    frozen_batchnorm: bool = False,
    frozen_blocks: int = 0,
    attack_steps: int = 0,
) -> tuple[float, float, float]:
    """(train img/s, eval img/s, seconds of the ``warmup`` steps before them) of one model on
    random pixels; the warm-up holds ``torch.compile``'s one-off compilation. ``attack_steps`` > 0
    trains adversarially (the report's mixture, PGD of that many steps at 0.5/255)."""
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
    freeze(model, frozen_batchnorm, frozen_blocks)
    begin = time.perf_counter()
    for step in range(steps + warmup):
        if step == warmup:
            start = time.perf_counter()
            warmup_seconds = start - begin
        with autocast:
            if attack_steps:
                alpha = 1.25 * 0.5 / 255 if attack_steps == 1 else None  # FGSM-RS: Wong et al.'s step
                loss = adversarial_loss(
                    forward,
                    images,
                    labels,
                    lambda out, y: cross_entropy(out.float(), y),
                    0.5 / 255,
                    alpha,
                    attack_steps,
                )
            else:
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
    "BatchNorm frozen": (None, {"channels_last": True, "frozen_batchnorm": True}),
    "stem + first 6 blocks frozen": (None, {"channels_last": True, "frozen_blocks": 6}),
}


def cpu_option_rates(name: str, size: int, batch_size: int, steps: int = 8) -> pd.DataFrame:
    """Training img/s of one model under each CPU option, its ratio to the default's, and the
    seconds of the first steps (one for eager, three for torch.compile, which compiles in them)."""
    cores = torch.get_num_threads()
    step_rates(name, size, batch_size, 1, channels_last=True)  # one-off kernel set-up, not the first option's
    rows = []
    for option, (threads, settings) in CPU_OPTIONS.items():
        torch.set_num_threads(threads or cores)
        train, _, warmup_seconds = step_rates(name, size, batch_size, steps, **settings)
        rows.append({"option": option, "train img/s": train, "warm-up s": warmup_seconds})
    torch.set_num_threads(cores)
    table = pd.DataFrame(rows)
    return table.assign(**{"ratio to default": table["train img/s"] / table["train img/s"].iloc[0]})


def size_and_attack_rates(name: str, size: int, batch_size: int, bfloat16: bool, steps: int = 4) -> pd.DataFrame:
    """Training img/s at smaller images and with adversarial training, each as a ratio to a clean step
    at ``size`` (channels-last, ``bfloat16`` autocast or not, as the runtime would run it)."""
    settings = {"channels_last": True, "bfloat16": bfloat16}
    cases = {
        f"clean, {size} px": (size, 0),
        **{f"clean, {smaller} px": (smaller, 0) for smaller in (192, 128) if smaller < size},
        f"FGSM with random start (1 attack step), {size} px": (size, 1),
        f"the report's PGD (5 attack steps), {size} px": (size, 5),
    }
    rows = [
        {"step": case, "train img/s": step_rates(name, side, batch_size, steps, attack_steps=attack, **settings)[0]}
        for case, (side, attack) in cases.items()
    ]
    table = pd.DataFrame(rows)
    return table.assign(**{"ratio to clean": table["train img/s"] / table["train img/s"].iloc[0]})


def loader_rate(dataset, batch_size: int, workers: int, batches: int = 30) -> float:
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers)
    count, start = 0, time.perf_counter()
    for index, (images, _) in enumerate(loader):
        count += len(images)
        if index + 1 == batches:
            break
    return count / (time.perf_counter() - start)


def options_table(name: str, size: int, batch_size: int) -> None:
    def show(table: pd.DataFrame) -> None:
        print(table.to_string(index=False, float_format=lambda value: f"{value:.2f}"))

    print(f"\nCPU options, {name} at {size} px, batch {batch_size} (ratios from this run):")
    options = cpu_option_rates(name, size, batch_size)
    show(options)
    bfloat16 = bool(options.set_index("option").loc["bfloat16 autocast", "ratio to default"] > 1)
    print(
        f"\nImage size and adversarial training, {name}, batch {batch_size}, "
        f"{'bfloat16 autocast' if bfloat16 else 'float32'} (ratios from this run):"
    )
    show(size_and_attack_rates(name, size, batch_size, bfloat16))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params/demo.yaml")
    parser.add_argument(
        "--report-sizes", action="store_true", help="also every model at the report's sizes (slow on a CPU)"
    )
    parser.add_argument(
        "--cpu-options", action="store_true", help="the first row's training step under each CPU option"
    )
    parser.add_argument(
        "--model", help="with --cpu-options: this model instead of the first row's (e.g. efficientnet-lite0)"
    )
    parser.add_argument("--size", type=int, help="with --model: image side in px")
    parser.add_argument("--batch", type=int, default=32, help="with --model: batch size")
    args = parser.parse_args()
    if args.model:
        options_table(args.model, args.size or 256, args.batch)
        return
    params = load_params(args.params)
    rows = []
    for row in params.baselines:
        config = run_config(params, row)
        train, evaluate, _ = step_rates(row.model, row.image_size, row.batch_size)
        dataset = FundusDataset(
            run_data(params, config, progress=False), "train", transform=build_augmentation(params.augment)
        )
        loader = loader_rate(dataset, row.batch_size, params.runtime.loader_workers)
        rows.append(
            {
                "model": row.model,
                "size": row.image_size,
                "batch": row.batch_size,
                "train img/s": train,
                "eval img/s": evaluate,
                "loader img/s": loader,
                "loader / train step": loader / train,
            }
        )
    print(f"Demo rows of {args.params} (loader: {params.runtime.loader_workers} worker processes, full augmentation):")
    print(pd.DataFrame(rows).to_string(index=False, float_format=lambda value: f"{value:.1f}"))
    if args.cpu_options:
        first = params.baselines[0]
        options_table(first.model, first.image_size, first.batch_size)
    if args.report_sizes:
        report = report_table("table4")
        sizes = report.groupby(["model", "image_size"]).size().index
        rates = [
            {
                "model": name,
                "size": size,
                **dict(zip(("train img/s", "eval img/s"), step_rates(name, size, 4, steps=2))),
            }
            for name, size in sizes
        ]
        print("\nThe report's models at its sizes (batch 4, random pixels):")
        print(pd.DataFrame(rates).to_string(index=False, float_format=lambda value: f"{value:.2f}"))


if __name__ == "__main__":
    main()
