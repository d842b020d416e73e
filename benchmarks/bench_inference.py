"""Inference with ``inference_model`` (BatchNorm folded into the convolutions, channels-last
weights) against the model as trained (eval mode, contiguous weights).

Timed per model and image size, on random pixels: a no-grad forward of 256 images (evaluation,
HopSkipJump's decisions) and a forward-backward with respect to the input of 160 images (a PGD
or integrated-gradients step). The two variants alternate after one warm-up each and the medians
are compared; ratios come from this one run. The largest logit difference between the two is
printed too (float rounding only).

    python benchmarks/bench_inference.py [--repeats 5] [--threads 0]
"""

from __future__ import annotations

import argparse
import statistics
import time

import pandas as pd
import torch

from fundus_lib.models import create_model, inference_model

CASES = (("small-cnn", 64), ("small-cnn", 128), ("resnet18", 64))


def median_seconds(step, repeats: int) -> float:
    step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def forward(model, images: torch.Tensor):
    def step():
        with torch.no_grad():
            model(images)

    return step


def input_gradient(model, images: torch.Tensor, labels: torch.Tensor):
    def step():
        points = images.clone().requires_grad_(True)
        torch.nn.functional.cross_entropy(model(points), labels).backward()

    return step


def compare(name: str, size: int, repeats: int) -> dict:
    torch.manual_seed(0)
    trained = create_model(name).eval()
    folded = inference_model(trained)
    images, labels = torch.rand(256, 3, size, size), torch.randint(0, 5, (256,))
    with torch.no_grad():
        difference = float((folded(images) - trained(images)).abs().max())
    row = {"model": name, "px": size, "max |logit difference|": difference}
    for label, make in (
        ("forward", lambda m: forward(m, images)),
        ("input gradient", lambda m: input_gradient(m, images[:160], labels[:160])),
    ):
        plain, fast = median_seconds(make(trained), repeats), median_seconds(make(folded), repeats)
        row[f"{label}: as trained / inference_model"] = round(plain / fast, 2)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    table = pd.DataFrame([compare(name, size, args.repeats) for name, size in CASES])
    print(table.to_string(index=False))


if __name__ == "__main__":
    main()
