"""The cost of an adversarial-training step over a clean training step.

A clean step is forward, backward and an Adam update in train mode. An adversarial step is
``adversarial_loss`` with PGD of 5 steps (clean forward, 5 attack steps in eval mode, adversarial
forward) plus the backward through both losses and the update. Counting one unit per attack step
and one for the training step gives the theory steps + 1 = 6. Two effects pull against it: the
objective does two training forward/backward passes (clean and adversarial, as the report), which
would make it steps + 2, while an attack step's backward skips the weight gradients and has no
optimizer update. The attack alone (``pgd``) is timed as well, in clean steps.

Random pixels, batch 32: small-cnn at 128 px and resnet18 at 96 px. Clean and adversarial steps
alternate, after one warm-up each, and the medians are compared; ratios come from this one run.

    python benchmarks/bench_adversarial.py [--repeats 3] [--threads 1]

On a shared machine, pass --threads 1: with a busy second core, two threads wait on each other
and the small model's timings become noise.
"""

from __future__ import annotations

import argparse
import statistics
import time

import pandas as pd
import torch
from torch import nn

from fundus_lib.attacks.adversarial_training import adversarial_loss
from fundus_lib.attacks.pgd import eps_from_255, pgd
from fundus_lib.models import create_model

PGD_STEPS = 5
EPS = eps_from_255(2)


def timed(step) -> float:
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def step_costs(name: str, size: int, batch_size: int, repeats: int) -> dict:
    """Median seconds per clean step, adversarial step and attack alone, on random pixels."""
    model = create_model(name).train()
    optimizer = torch.optim.Adam(model.parameters())
    images, labels = torch.rand(batch_size, 3, size, size), torch.randint(0, 5, (batch_size,))
    generator = torch.Generator().manual_seed(0)

    def update(loss: torch.Tensor) -> None:
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    def clean() -> None:
        update(nn.functional.cross_entropy(model(images), labels))

    def adversarial() -> None:
        update(
            adversarial_loss(
                model,
                images,
                labels,
                nn.functional.cross_entropy,
                eps=EPS,
                steps=PGD_STEPS,
                weight=0.5,
                generator=generator,
            )
        )

    def attack() -> None:
        pgd(model, images, labels, EPS, steps=PGD_STEPS, generator=generator)

    times = {"clean": [], "adversarial": [], "attack": []}
    for repeat in range(repeats + 1):
        for kind, step in (("clean", clean), ("adversarial", adversarial), ("attack", attack)):
            seconds = timed(step)
            if repeat > 0:  # the first round warms up
                times[kind].append(seconds)
    clean_s, adversarial_s, attack_s = (statistics.median(times[kind]) for kind in ("clean", "adversarial", "attack"))
    ratio = adversarial_s / clean_s
    return {
        "model": name,
        "size": size,
        "batch": batch_size,
        "clean step s": clean_s,
        "adversarial step s": adversarial_s,
        "ratio": ratio,
        "theory": PGD_STEPS + 1,
        "overhead beyond theory %": 100 * (ratio / (PGD_STEPS + 1) - 1),
        "attack alone / clean step": attack_s / clean_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="timed steps of each kind, after one warm-up")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = [step_costs("small-cnn", 128, 32, args.repeats), step_costs("resnet18", 96, 32, args.repeats)]
    print(
        f"Adversarial training step (PGD {PGD_STEPS} steps, eps 2/255) against a clean step, "
        f"{torch.get_num_threads()} threads:"
    )
    print(pd.DataFrame(rows).to_string(index=False, float_format=lambda value: f"{value:.2f}"))


if __name__ == "__main__":
    main()
