"""Robustness measured as a robustness reviewer measures it: APGD-CE, APGD-T and the black-box
Square attack through the AutoAttack authors' code (``pyautoattack``), each checked to stay in its
eps-ball, and their outcomes per image and eps.

Units: every eps is in [0, 1] pixel units (k/255). Every attack runs the model in eval mode and puts
back each module's mode afterwards; the library's global seeding is confined to the call
(``torch.random.fork_rng``), so an attack leaves the caller's random streams untouched.

Example::

    adversarials = apgd_ce(model, images, labels, eps=2 / 255, steps=100)
    outcomes = attack_outcomes(model, images, labels, [0, 1 / 255, 2 / 255], library_attacks(steps=20))
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from fundus_lib.attacks.pgd import model_device, pgd, predict_labels
from fundus_lib.metrics import N_CLASSES
from fundus_lib.models import eval_mode

#: attack(model, images, labels, eps) -> adversarials, all in [0, 1] pixel units.
Attack = Callable[[nn.Module, torch.Tensor, torch.Tensor, float], torch.Tensor]


@contextmanager
def _library_call(model: nn.Module) -> Iterator[torch.device]:
    """Eval mode, gradients on, and the global random state restored after (pyautoattack seeds it)."""
    device = model_device(model)
    devices = [device] if device.type == "cuda" else []
    with eval_mode(model), torch.enable_grad(), torch.random.fork_rng(devices=devices):
        yield device


def _checked(adversarials: torch.Tensor, images: torch.Tensor, eps: float) -> torch.Tensor:
    """The library's output, checked: in [0, 1] and within eps of ``images`` (else a bug, not a result)."""
    adversarials = adversarials.detach()
    excess = float((adversarials - images).abs().max()) - eps
    if excess > 1e-5 or adversarials.min() < 0 or adversarials.max() > 1:
        raise RuntimeError(f"the attack left the eps-ball or [0, 1] (L-inf excess {excess:.2e}); units mixed up?")
    return adversarials


def apgd_ce(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    eps: float,
    steps: int = 100,
    restarts: int = 1,
    seed: int = 0,
) -> torch.Tensor:
    """APGD with cross-entropy (Croce & Hein 2020, https://arxiv.org/abs/2003.01690), L-inf,
    untargeted: pyautoattack's ``APGDAttack``. eps in [0, 1] pixel units; images (N, C, H, W) in
    [0, 1]; returns adversarials (the image itself where the attack failed)."""
    from pyautoattack.autopgd_base import APGDAttack

    if eps == 0:
        return images.detach().clone()
    with _library_call(model) as device:
        attack = APGDAttack(
            model, n_iter=steps, norm="Linf", n_restarts=restarts, eps=eps, seed=seed, loss="ce", device=device
        )
        return _checked(attack.perturb(images, labels), images, eps)


def apgd_t(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    eps: float,
    steps: int = 100,
    restarts: int = 1,
    seed: int = 0,
    target_classes: int = N_CLASSES - 1,
) -> torch.Tensor:
    """APGD-T: APGD with the targeted DLR loss, run once towards each of the ``target_classes``
    most likely other classes (pyautoattack's ``APGDAttack_targeted``; its default of 9 targets is
    for 10 classes, so 4 for the 5 grades)."""
    from pyautoattack.autopgd_base import APGDAttack_targeted

    if eps == 0:
        return images.detach().clone()
    with _library_call(model) as device:
        attack = APGDAttack_targeted(
            model,
            n_iter=steps,
            norm="Linf",
            n_restarts=restarts,
            eps=eps,
            seed=seed,
            n_target_classes=target_classes,
            device=device,
        )
        return _checked(attack.perturb(images, labels), images, eps)


def square(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, eps: float, queries: int = 5000, seed: int = 0
) -> torch.Tensor:
    """The Square attack (Andriushchenko et al. 2020, https://arxiv.org/abs/1912.00049), L-inf,
    margin loss: a black-box random search with at most ``queries`` model queries per image
    (pyautoattack's ``SquareAttack``; AutoAttack-standard uses 5,000). It needs no gradients, so
    gradient masking cannot stop it."""
    from pyautoattack.square import SquareAttack

    if eps == 0:
        return images.detach().clone()
    with _library_call(model) as device, torch.no_grad():
        attack = SquareAttack(
            model,
            norm="Linf",
            n_queries=queries,
            eps=eps,
            p_init=0.8,
            n_restarts=1,
            seed=seed,
            loss="margin",
            device=device,
        )
        return _checked(attack.perturb(images, labels), images, eps)


def pgd_attack(steps: int, restarts: int = 1, seed: int = 0) -> Attack:
    """This project's PGD (``attacks.pgd``, step 2.5 eps / steps) as an ``Attack``, seeded per call."""

    def attack(model, images, labels, eps):
        return pgd(
            model,
            images,
            labels,
            eps,
            steps=steps,
            restarts=restarts,
            generator=torch.Generator(images.device).manual_seed(seed),
        )

    return attack


def library_attacks(
    steps: int = 100, restarts: int = 1, square_queries: int | None = 1000, seed: int = 0
) -> dict[str, Attack]:
    """The sweep's attacks by name: APGD-CE, APGD-T and (unless ``square_queries`` is None) Square."""
    attacks: dict[str, Attack] = {
        "apgd-ce": lambda model, x, y, eps: apgd_ce(model, x, y, eps, steps, restarts, seed),
        "apgd-t": lambda model, x, y, eps: apgd_t(model, x, y, eps, steps, restarts, seed),
    }
    if square_queries is not None:
        attacks["square"] = lambda model, x, y, eps: square(model, x, y, eps, square_queries, seed)
    return attacks


def attack_outcomes(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    eps_list: Sequence[float],
    attacks: dict[str, Attack],
    batch_size: int = 32,
    progress: bool = True,
    source: nn.Module | None = None,
) -> pd.DataFrame:
    """Every attack at every eps on every image: one row per (attack, eps, image) with columns
    ``attack``, ``eps`` ([0, 1] units), ``eps_255``, ``image`` (position), ``label``, ``clean`` and
    ``attacked`` (predicted grades of ``model``). At eps 0 the only point of the ball is the image
    itself, so no attack runs.

    source: craft the adversarials on this model instead (a transfer attack) and grade them with
    ``model``. Images (on any device) are attacked ``batch_size`` at a time on the model's device.
    """
    device = model_device(model)
    source = model if source is None else source
    clean = torch.cat([predict_labels(model, batch.to(device)).cpu() for batch in images.split(batch_size)])
    records = []
    batches = list(zip(images.split(batch_size), labels.split(batch_size)))
    with tqdm(
        total=len(attacks) * len(eps_list) * len(batches), desc="attacks", unit="batch", disable=not progress
    ) as bar:
        for name, attack in attacks.items():
            for eps in eps_list:
                bar.set_postfix_str(f"{name} eps {eps * 255:g}/255")
                attacked = []
                for batch_images, batch_labels in batches:
                    batch_images = batch_images.to(device)
                    adversarials = (
                        batch_images if eps == 0 else attack(source, batch_images, batch_labels.to(device), float(eps))
                    )
                    attacked.append(predict_labels(model, adversarials).cpu())
                    bar.update()
                records.append(
                    pd.DataFrame(
                        {
                            "attack": name,
                            "eps": float(eps),
                            "eps_255": float(eps) * 255,
                            "image": np.arange(len(images)),
                            "label": labels.numpy(),
                            "clean": clean.numpy(),
                            "attacked": torch.cat(attacked).numpy(),
                        }
                    )
                )
    return pd.concat(records, ignore_index=True)
