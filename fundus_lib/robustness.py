"""Robustness measured as a robustness reviewer measures it: APGD-CE, APGD-T and the black-box
Square attack (the AutoAttack authors' code, ``pyautoattack``), per-eps robust accuracy and
robust quadratic kappa, the checks that catch gradient masking, the report's attack as its code
ran it, and the clinical view (targeted 0 -> 4 and 4 -> 0, referable-DR sensitivity).

Units: every eps is in [0, 1] pixel units (k/255), except ``report_code_pgd``'s, which is in the
ImageNet-normalised units of the report's code. Every attack runs the model in eval mode and puts
back each module's mode afterwards; the library's global seeding is confined to the call
(``torch.random.fork_rng``), so an attack leaves the caller's random streams untouched.

Example::

    adversarials = apgd_ce(model, images, labels, eps=2 / 255, steps=100)
    outcomes = attack_outcomes(model, images, labels, [0, 1 / 255, 2 / 255], library_attacks(steps=20))
    robustness_table(outcomes)   # robust accuracy and kappa per attack and eps, and their worst case
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from fundus_lib.attacks import eval_mode, model_device, pgd, predict_labels
from fundus_lib.metrics import N_CLASSES, confusion, quadratic_kappa
from fundus_lib.models import IMAGENET_MEAN, IMAGENET_STD

#: attack(model, images, labels, eps) -> adversarials, all in [0, 1] pixel units.
Attack = Callable[[nn.Module, torch.Tensor, torch.Tensor, float], torch.Tensor]

#: The name of the per-image worst case over the white-box attacks of a sweep (AutoAttack's rule:
#: an image counts as robust only if every attack fails on it).
WORST_CASE = "worst case"
WHITE_BOX = ("apgd-ce", "apgd-t")

#: Gradient-masking tolerance: a check fails when the white-box robust accuracy exceeds a weaker
#: attack's by more than 1 point (the issue's threshold; AutoAttack's own check flags 0.2 points).
MASKING_TOLERANCE = 0.01
#: The sweep check: at the largest eps the worst-case robust accuracy must be at most this.
ZERO_AT_LARGEST = 0.05


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


def apgd_ce(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, eps: float, steps: int = 100,
            restarts: int = 1, seed: int = 0) -> torch.Tensor:
    """APGD with cross-entropy (Croce & Hein 2020, https://arxiv.org/abs/2003.01690), L-inf,
    untargeted: pyautoattack's ``APGDAttack``. eps in [0, 1] pixel units; images (N, C, H, W) in
    [0, 1]; returns adversarials (the image itself where the attack failed)."""
    from pyautoattack.autopgd_base import APGDAttack

    if eps == 0:
        return images.detach().clone()
    with _library_call(model) as device:
        attack = APGDAttack(model, n_iter=steps, norm="Linf", n_restarts=restarts, eps=eps, seed=seed,
                            loss="ce", device=device)
        return _checked(attack.perturb(images, labels), images, eps)


def apgd_t(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, eps: float, steps: int = 100,
           restarts: int = 1, seed: int = 0, target_classes: int = N_CLASSES - 1) -> torch.Tensor:
    """APGD-T: APGD with the targeted DLR loss, run once towards each of the ``target_classes``
    most likely other classes (pyautoattack's ``APGDAttack_targeted``; its default of 9 targets is
    for 10 classes, so 4 for the 5 grades)."""
    from pyautoattack.autopgd_base import APGDAttack_targeted

    if eps == 0:
        return images.detach().clone()
    with _library_call(model) as device:
        attack = APGDAttack_targeted(model, n_iter=steps, norm="Linf", n_restarts=restarts, eps=eps, seed=seed,
                                     n_target_classes=target_classes, device=device)
        return _checked(attack.perturb(images, labels), images, eps)


def square(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, eps: float, queries: int = 5000,
           seed: int = 0) -> torch.Tensor:
    """The Square attack (Andriushchenko et al. 2020, https://arxiv.org/abs/1912.00049), L-inf,
    margin loss: a black-box random search with at most ``queries`` model queries per image
    (pyautoattack's ``SquareAttack``; AutoAttack-standard uses 5,000). It needs no gradients, so
    gradient masking cannot stop it."""
    from pyautoattack.square import SquareAttack

    if eps == 0:
        return images.detach().clone()
    with _library_call(model) as device, torch.no_grad():
        attack = SquareAttack(model, norm="Linf", n_queries=queries, eps=eps, p_init=0.8, n_restarts=1, seed=seed,
                              loss="margin", device=device)
        return _checked(attack.perturb(images, labels), images, eps)


def pgd_attack(steps: int, restarts: int = 1, seed: int = 0) -> Attack:
    """This project's PGD (``attacks.pgd``, step 2.5 eps / steps) as an ``Attack``, seeded per call."""
    def attack(model, images, labels, eps):
        return pgd(model, images, labels, eps, steps=steps, restarts=restarts,
                   generator=torch.Generator(images.device).manual_seed(seed))
    return attack


def library_attacks(steps: int = 100, restarts: int = 1, square_queries: int | None = 1000,
                    seed: int = 0) -> dict[str, Attack]:
    """The sweep's attacks by name: APGD-CE, APGD-T and (unless ``square_queries`` is None) Square."""
    attacks: dict[str, Attack] = {
        "apgd-ce": lambda model, x, y, eps: apgd_ce(model, x, y, eps, steps, restarts, seed),
        "apgd-t": lambda model, x, y, eps: apgd_t(model, x, y, eps, steps, restarts, seed)}
    if square_queries is not None:
        attacks["square"] = lambda model, x, y, eps: square(model, x, y, eps, square_queries, seed)
    return attacks


def attack_outcomes(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, eps_list: Sequence[float],
                    attacks: dict[str, Attack], batch_size: int = 32, progress: bool = True,
                    source: nn.Module | None = None) -> pd.DataFrame:
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
    with tqdm(total=len(attacks) * len(eps_list) * len(batches), desc="attacks", unit="batch",
              disable=not progress) as bar:
        for name, attack in attacks.items():
            for eps in eps_list:
                bar.set_postfix_str(f"{name} eps {eps * 255:g}/255")
                attacked = []
                for batch_images, batch_labels in batches:
                    batch_images = batch_images.to(device)
                    adversarials = batch_images if eps == 0 else attack(source, batch_images, batch_labels.to(device),
                                                                        float(eps))
                    attacked.append(predict_labels(model, adversarials).cpu())
                    bar.update()
                records.append(pd.DataFrame({"attack": name, "eps": float(eps), "eps_255": float(eps) * 255,
                                             "image": np.arange(len(images)), "label": labels.numpy(),
                                             "clean": clean.numpy(), "attacked": torch.cat(attacked).numpy()}))
    return pd.concat(records, ignore_index=True)


def worst_case(outcomes: pd.DataFrame, attacks: Sequence[str] = WHITE_BOX) -> pd.DataFrame:
    """Per (eps, image) the worst case over ``attacks``: the first of them (in the given order) that
    misgrades the image, else the correct grade; rows as ``attack_outcomes``' with attack ``WORST_CASE``."""
    chosen = outcomes[outcomes["attack"].isin(attacks)]
    if chosen.empty:
        raise ValueError(f"none of the attacks {list(attacks)} is in the outcomes ({sorted(outcomes['attack'].unique())})")
    order = {name: position for position, name in enumerate(attacks)}
    ranked = chosen.assign(wrong=chosen["attacked"] != chosen["label"], order=chosen["attack"].map(order))
    ranked = ranked.sort_values(["eps", "image", "wrong", "order"], ascending=[True, True, False, True], kind="stable")
    return ranked.drop_duplicates(["eps", "image"]).drop(columns=["wrong", "order"]).assign(attack=WORST_CASE)


def robustness_table(outcomes: pd.DataFrame, with_worst_case: bool = True) -> pd.DataFrame:
    """Per attack and eps: robust_accuracy (share graded correctly under attack), robust_kappa
    (quadratic kappa of the attacked grades), success_rate (the report's: share whose grade changed)
    and n (images); with ``with_worst_case``, also the per-image worst case over the white-box attacks."""
    if with_worst_case and outcomes["attack"].isin(WHITE_BOX).any():
        outcomes = pd.concat([outcomes, worst_case(outcomes, [a for a in WHITE_BOX if a in set(outcomes["attack"])])])
    rows = []
    for (name, eps), group in outcomes.groupby(["attack", "eps"], sort=False):
        rows.append({"attack": name, "eps": eps, "eps_255": eps * 255,
                     "robust_accuracy": float((group["attacked"] == group["label"]).mean()),
                     "robust_kappa": quadratic_kappa(confusion(group["label"], group["attacked"])),
                     "success_rate": float((group["attacked"] != group["clean"]).mean()), "n": len(group)})
    return pd.DataFrame(rows)


# --- checks ----------------------------------------------------------------------------------------


def sweep_failures(table: pd.DataFrame, zero_at_largest: float = ZERO_AT_LARGEST) -> list[str]:
    """What is wrong with an eps sweep (``robustness_table`` rows), per attack: robust accuracy that
    rises with eps by more than one image, or a worst case above ``zero_at_largest`` at the largest
    eps (an attack that works drives it to about 0). Empty: the sweep proves the attacks work."""
    failures = []
    for name, curve in table.sort_values("eps").groupby("attack", sort=False):
        accuracy, eps = curve["robust_accuracy"].to_numpy(), curve["eps_255"].to_numpy()
        rises = np.flatnonzero(np.diff(accuracy) > 1 / curve["n"].max() + 1e-9)
        failures += [f"{name}: robust accuracy rises from {accuracy[i]:.1%} at {eps[i]:g}/255 to "
                     f"{accuracy[i + 1]:.1%} at {eps[i + 1]:g}/255" for i in rises]
        if name == WORST_CASE and accuracy[-1] > zero_at_largest:
            failures.append(f"{name}: robust accuracy {accuracy[-1]:.1%} at the largest eps {eps[-1]:g}/255, "
                            f"above {zero_at_largest:.0%}")
    return failures


def masking_check(name: str, strong: float, weak: float, tolerance: float = MASKING_TOLERANCE) -> dict:
    """One gradient-masking check: the white-box (``strong``) robust accuracy must not exceed the
    ``weak`` attack's by more than ``tolerance``. Returns a row: check, white_box, other, gap, passed."""
    gap = strong - weak
    return {"check": name, "white_box": strong, "other": weak, "gap": gap, "passed": bool(gap <= tolerance + 1e-9)}


def steps_ladder_failures(accuracies: Sequence[float], tolerance: float = MASKING_TOLERANCE) -> list[int]:
    """Positions in a ladder of ever stronger attacks (more steps, more restarts) where the robust
    accuracy rises by more than ``tolerance`` over the rung before: more effort must never help the model."""
    values = np.asarray(accuracies, dtype=float)
    return [int(i) + 1 for i in np.flatnonzero(np.diff(values) > tolerance + 1e-9)]


# --- the report's attack as its code ran it ------------------------------------------------------------


def report_code_pgd(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, eps_normalised: float,
                    steps: int = 5, train_mode: bool = False,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """The report's PGD as its code ran it (``fgsm_k_image`` with ``rand=True``, anchors.md section 1):
    on ImageNet-normalised tensors z = (x - mean) / std, eps and step 2.5 eps / steps in those
    units, a random start z + U(-eps, eps) without a clamp, sign steps of the batch-mean
    cross-entropy, projection onto the eps-box around z and then ``clamp(0, 1)`` *of the normalised
    tensor*, which cuts every normalised value below 0 (pixels darker than the channel mean) and
    above 1. The success-rate script ran it in eval mode; ``train_mode=True`` runs it as the
    adversarial training did (BatchNorm on batch statistics, dropout on), on a copy of the model, so
    the caller's running statistics are not changed.

    Returns the adversarials in [0, 1] pixel units (x = z x std + mean), so the model, which
    normalises inside, grades them as the report's code did.
    """
    mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(1, -1, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device).view(1, -1, 1, 1)
    normalised = ((images - mean) / std).detach()
    alpha = 2.5 * eps_normalised / steps
    attacked = copy.deepcopy(model).train() if train_mode else model
    noise = torch.empty(images.shape, dtype=images.dtype).uniform_(-eps_normalised, eps_normalised, generator=generator)
    adversarial = normalised + noise.to(images.device)
    with (nullcontext() if train_mode else eval_mode(attacked)), torch.enable_grad():
        for _ in range(steps):
            adversarial.requires_grad_(True)
            loss = nn.functional.cross_entropy(attacked(adversarial * std + mean), labels)
            (gradient,) = torch.autograd.grad(loss, adversarial)
            adversarial = adversarial.detach() + alpha * gradient.sign()
            adversarial = torch.min(torch.max(adversarial, normalised - eps_normalised), normalised + eps_normalised)
            adversarial = torch.clamp(adversarial, 0, 1)
    return (adversarial * std + mean).detach()


# --- the clinical view ---------------------------------------------------------------------------------


def targeted_pgd(model: nn.Module, images: torch.Tensor, target: int, eps: float, steps: int = 20,
                 restarts: int = 1, generator: torch.Generator | None = None) -> torch.Tensor:
    """PGD (``attacks.pgd``) towards grade ``target``: it raises -cross-entropy to the target."""
    targets = torch.full((len(images),), target, dtype=torch.int64, device=images.device)

    def towards(logits, wanted):
        return -nn.functional.cross_entropy(logits, wanted, reduction="none")

    return pgd(model, images, targets, eps, steps=steps, restarts=restarts, loss=towards, generator=generator)


def referable(grades) -> np.ndarray:
    """Referable diabetic retinopathy: grade 2 (moderate) or more."""
    return np.asarray(grades) >= 2
