"""Each attack of chapter 5: seconds per image through ``fundus_lib`` against the library's own call.

Ours: ``attacks.library.apgd_ce`` / ``apgd_t`` / ``square`` (eval mode, the global random state
restored, the output checked against the eps-ball) and ``attacks.pgd.pgd``. Theirs: pyautoattack's
attack object called directly on a model already in eval mode, and torchattacks' ports of the same
attacks (PGD, APGD, APGDT, Square). The model is small-cnn at 64 px with its initial weights, on
random pixels labelled with the model's own grades, batch 16; every call of a pair does the same
work (the APGD outputs are bit for bit torchattacks'). Ratios come from this one run: ours over
theirs, 1.00 = no overhead.

    python benchmarks/bench_attacks.py [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from fundus_lib.attacks.library import apgd_ce, apgd_t, square
from fundus_lib.attacks.pgd import pgd
from fundus_lib.models import create_model

EPS = 1 / 255
STEPS = 10
QUERIES = 200


def median_seconds(call, repeats: int) -> float:
    call()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def pairs(model, images, labels) -> dict[str, tuple]:
    """Per attack: (ours, pyautoattack's own call, torchattacks' port)."""
    import torchattacks
    from pyautoattack.autopgd_base import APGDAttack, APGDAttack_targeted
    from pyautoattack.square import SquareAttack

    device = images.device
    return {
        "APGD-CE": (
            lambda: apgd_ce(model, images, labels, EPS, STEPS),
            lambda: APGDAttack(model, n_iter=STEPS, eps=EPS, device=device).perturb(images, labels),
            lambda: torchattacks.APGD(model, eps=EPS, steps=STEPS)(images, labels),
        ),
        "APGD-T": (
            lambda: apgd_t(model, images, labels, EPS, STEPS),
            lambda: APGDAttack_targeted(model, n_iter=STEPS, eps=EPS, n_target_classes=4, device=device).perturb(
                images, labels
            ),
            lambda: torchattacks.APGDT(model, eps=EPS, steps=STEPS, n_classes=5)(images, labels),
        ),
        "Square": (
            lambda: square(model, images, labels, EPS, QUERIES),
            lambda: SquareAttack(model, n_queries=QUERIES, eps=EPS, device=device).perturb(images, labels),
            lambda: torchattacks.Square(model, eps=EPS, n_queries=QUERIES)(images, labels),
        ),
        "PGD 5 steps": (
            lambda: pgd(model, images, labels, EPS, steps=5),
            None,
            lambda: torchattacks.PGD(model, eps=EPS, alpha=2.5 * EPS / 5, steps=5)(images, labels),
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = create_model("small-cnn").eval()
    images = torch.rand(16, 3, 64, 64)
    with torch.no_grad():
        labels = model(images).argmax(dim=1)  # every image "correct", so every attack attacks all of them
    print(
        f"small-cnn at 64 px, batch {len(images)}, eps {EPS * 255:g}/255, APGD {STEPS} steps, Square {QUERIES} queries"
    )
    print(
        f"{'attack':<12} {'ours ms/img':>12} {'pyautoattack':>13} {'torchattacks':>13} {'ours/pyaa':>10} {'ours/ta':>8}"
    )
    for name, (ours, library, port) in pairs(model, images, labels).items():
        seconds = [
            median_seconds(call, args.repeats) / len(images) if call else float("nan") for call in (ours, library, port)
        ]
        print(
            f"{name:<12} {seconds[0] * 1e3:>12.2f} {seconds[1] * 1e3:>13.2f} {seconds[2] * 1e3:>13.2f} "
            f"{seconds[0] / seconds[1]:>10.2f} {seconds[0] / seconds[2]:>8.2f}"
        )


if __name__ == "__main__":
    main()
