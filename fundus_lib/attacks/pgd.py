"""L-inf PGD in [0, 1] pixel space (Madry et al.), its targeted form, and the report's success-rate
experiment (Figures 5-6).

Units: every eps, alpha and perturbation size is in [0, 1] pixel units, written k/255
(``eps_from_255(2) == 2/255``). The report's eps were in ImageNet-normalised units;
``report_eps_to_pixels`` converts them (2.5/255 normalised is about 0.57/255 in pixels).

Models take float images (N, 3, H, W) in [0, 1] and normalise inside (``fundus_lib.models``). Every
attack runs the model in eval mode (BatchNorm and dropout frozen) and puts back each module's mode
afterwards, also after an exception; gradients come from ``torch.autograd.grad``, so the
parameters' ``.grad`` is never touched. Nothing is printed.

Example::

    adversarials = pgd(model, images, labels, eps=eps_from_255(2), steps=5)
    attack_success(model, images, labels, [0, 1 / 255, 2 / 255], steps=5)  # one row per eps
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from fundus_lib.models import IMAGENET_STD, eval_mode

#: Per-image attack loss: loss(logits (N, K), labels (N,)) -> (N,).
AttackLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def eps_from_255(k: float) -> float:
    """k/255: a budget of k grey levels in [0, 1] pixel units. Example: ``eps_from_255(2) == 2/255``."""
    return k / 255


def report_eps_to_pixels(eps_normalised: float) -> float:
    """The report's eps (ImageNet-normalised units: its PGD ran on (x - mean) / std) in [0, 1]
    pixel units: eps_normalised x mean(std) = eps_normalised x 0.226, using the mean of the
    ImageNet std (0.229, 0.224, 0.225) for all three channels (anchors.md, section 1).

    Example: ``report_eps_to_pixels(2.5 / 255) * 255`` is about 0.565.
    """
    return eps_normalised * sum(IMAGENET_STD) / len(IMAGENET_STD)


def _cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(logits, labels, reduction="none")


def uniform_like(like: torch.Tensor, low: float, high: float, generator: torch.Generator | None) -> torch.Tensor:
    """Uniform noise shaped like ``like`` on its device, drawn from ``generator`` (on its own device)."""
    device = generator.device if generator is not None else like.device
    noise = torch.empty(like.shape, device=device, dtype=like.dtype).uniform_(low, high, generator=generator)
    return noise.to(like.device)


def normal_like(shape: tuple[int, ...], like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    device = generator.device if generator is not None else like.device
    return torch.randn(shape, generator=generator, device=device, dtype=like.dtype).to(like.device)


def _pgd_run(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    eps: float,
    alpha: float,
    steps: int,
    random_start: bool,
    loss: AttackLoss,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """One PGD run from one start, in the order of torchattacks' PGD: step, project onto the
    eps-ball, clamp to [0, 1]."""
    adversarials = images.clone()
    if random_start:
        adversarials = torch.clamp(adversarials + uniform_like(images, -eps, eps, generator), 0, 1)
    for _ in range(steps):
        adversarials.requires_grad_(True)
        value = loss(model(adversarials), labels).sum()
        (gradient,) = torch.autograd.grad(value, adversarials)
        adversarials = adversarials.detach() + alpha * gradient.sign()
        delta = torch.clamp(adversarials - images, -eps, eps)
        adversarials = torch.clamp(images + delta, 0, 1)
    return adversarials.detach()


def pgd(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    eps: float,
    alpha: float | None = None,
    steps: int = 10,
    restarts: int = 1,
    random_start: bool = True,
    loss: AttackLoss | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """L-inf PGD (Madry et al. 2018, https://arxiv.org/abs/1706.06083), untargeted.

    Each step adds alpha x sign(grad_x loss), projects onto the L-inf ball of radius eps around
    ``images`` and clamps to [0, 1] (torchattacks' PGD, step for step).

    Args:
        model: logits (N, K) from images in [0, 1]; run in eval mode, its modes restored after.
        images: float (N, C, H, W) in [0, 1], on the model's device (CPU or CUDA).
        labels: int64 (N,) true classes; the attack raises their loss.
        eps: L-inf radius in [0, 1] pixel units, e.g. 2/255. eps = 0 returns a copy of ``images``.
        alpha: step size in [0, 1] pixel units. Default: 2.5 x eps / steps (the report's code,
            after Madry et al.), so ``steps`` steps can cross the ball and back.
        steps: gradient steps per restart (>= 1).
        restarts: independent random starts; per image, the example with the highest loss is
            kept (a loss maximiser, so the kept loss never decreases with more restarts).
        random_start: start from ``images`` + uniform noise in [-eps, eps] (clamped to [0, 1]);
            False starts at ``images`` (BIM / I-FGSM).
        loss: per-image loss(logits (N, K), labels (N,)) -> (N,). Default: cross-entropy. The
            gradient is taken of the *sum* over the batch, so each image's step does not depend
            on the batch size or on the other images. (Mean would give the same signs.)
        generator: torch.Generator for the random starts (any device), for reproducible results.

    Returns:
        float (N, C, H, W) in [0, 1], detached, with |adversarials - images| <= eps everywhere.

    Example: ``pgd(model, images, labels, eps=2 / 255, steps=5)``.
    """
    if eps < 0 or steps < 1 or restarts < 1:
        raise ValueError(f"need eps >= 0, steps >= 1 and restarts >= 1; got {eps}, {steps}, {restarts}")
    images, labels = images.detach(), labels.detach()
    if eps == 0:
        return images.clone()
    alpha = 2.5 * eps / steps if alpha is None else alpha
    loss = _cross_entropy if loss is None else loss
    with eval_mode(model), torch.enable_grad():  # gradients also under a caller's torch.no_grad()
        best = _pgd_run(model, images, labels, eps, alpha, steps, random_start, loss, generator)
        if restarts == 1:
            return best
        with torch.no_grad():
            best_loss = loss(model(best), labels)
        for _ in range(restarts - 1):
            candidate = _pgd_run(model, images, labels, eps, alpha, steps, random_start, loss, generator)
            with torch.no_grad():
                candidate_loss = loss(model(candidate), labels)
            better = candidate_loss > best_loss
            best[better], best_loss[better] = candidate[better], candidate_loss[better]
    return best


def model_device(model: nn.Module) -> torch.device:
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def predict_labels(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Predicted classes int64 (N,) of images (N, C, H, W) in [0, 1], in eval mode, without gradients."""
    with eval_mode(model), torch.no_grad():
        return model(images).argmax(dim=1)


def attack_predictions(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    eps_list,
    steps: int = 5,
    batch_size: int = 16,
    alpha: float | None = None,
    restarts: int = 1,
    generator: torch.Generator | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """The report's PGD experiment per image: the clean and the attacked prediction of every image at each eps.

    Args: as ``attack_success``.

    Returns:
        DataFrame, one row per (eps, image) in eps-major order, columns ``eps`` ([0, 1] units),
        ``eps_255``, ``image`` (position in ``images``), ``label``, ``clean`` and ``attacked``
        (predicted classes).
    """
    device = model_device(model)
    eps_list = [float(eps) for eps in eps_list]
    clean_parts, attacked_parts = [], [[] for _ in eps_list]
    batches = list(zip(images.split(batch_size), labels.split(batch_size)))
    with tqdm(total=len(batches) * len(eps_list), desc="PGD", unit="attack", disable=not progress) as bar:
        for batch_images, batch_labels in batches:
            batch_images, batch_labels = batch_images.to(device), batch_labels.to(device)
            clean_parts.append(predict_labels(model, batch_images).cpu())
            for index, eps in enumerate(eps_list):
                adversarials = pgd(model, batch_images, batch_labels, eps, alpha, steps, restarts, generator=generator)
                attacked_parts[index].append(predict_labels(model, adversarials).cpu())
                bar.update()
    clean = torch.cat(clean_parts).numpy()
    return pd.DataFrame(
        {
            "eps": np.repeat(eps_list, len(images)),
            "eps_255": np.repeat([eps * 255 for eps in eps_list], len(images)),
            "image": np.tile(np.arange(len(images)), len(eps_list)),
            "label": np.tile(labels.cpu().numpy(), len(eps_list)),
            "clean": np.tile(clean, len(eps_list)),
            "attacked": torch.cat([torch.cat(parts) for parts in attacked_parts]).numpy(),
        }
    )


def success_table(outcomes: pd.DataFrame) -> pd.DataFrame:
    """Per eps, from ``attack_predictions``' rows: success_rate (share of images whose prediction
    changed: the report's eq. 11, on every image, not only the correct ones), robust_accuracy (share
    still predicted correctly) and clean_accuracy."""
    table = outcomes.assign(
        success_rate=outcomes["attacked"] != outcomes["clean"],
        robust_accuracy=outcomes["attacked"] == outcomes["label"],
        clean_accuracy=outcomes["clean"] == outcomes["label"],
    )
    return (
        table.groupby(["eps", "eps_255"], sort=False)[["success_rate", "robust_accuracy", "clean_accuracy"]]
        .mean()
        .reset_index()
    )


def attack_success(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    eps_list,
    steps: int = 5,
    batch_size: int = 16,
    alpha: float | None = None,
    restarts: int = 1,
    generator: torch.Generator | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """The report's PGD experiment (section 4, eq. 11): for each eps, the share of predictions that
    an attack changes, and the robust accuracy.

    Args:
        model: as in ``pgd``; its device is where the batches are attacked.
        images: float (N, C, H, W) in [0, 1], on any device; attacked ``batch_size`` at a time on
            the model's device (240 images of 512 px stay on the CPU).
        labels: int64 (N,) true classes; PGD raises their loss.
        eps_list: L-inf radii in [0, 1] pixel units, e.g. ``[eps_from_255(k) for k in (0, 1, 2)]``.
        steps, alpha, restarts, generator: as in ``pgd`` (alpha None: 2.5 x eps / steps per eps).
        progress: show a tqdm bar over (batch, eps) pairs.

    Returns:
        DataFrame, one row per eps in the given order, columns ``eps`` ([0, 1] units), ``eps_255``
        (eps x 255), ``success_rate``, ``robust_accuracy`` and ``clean_accuracy`` (``success_table``).

    Example: ``attack_success(model, x, y, [eps_from_255(k) for k in (0, 0.5, 1, 2)], steps=5)``.
    """
    return success_table(
        attack_predictions(model, images, labels, eps_list, steps, batch_size, alpha, restarts, generator, progress)
    )


def targeted_pgd(
    model: nn.Module,
    images: torch.Tensor,
    target: int,
    eps: float,
    steps: int = 20,
    restarts: int = 1,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """PGD (``attacks.pgd``) towards grade ``target``: it raises -cross-entropy to the target."""
    targets = torch.full((len(images),), target, dtype=torch.int64, device=images.device)

    def towards(logits, wanted):
        return -nn.functional.cross_entropy(logits, wanted, reduction="none")

    return pgd(model, images, targets, eps, steps=steps, restarts=restarts, loss=towards, generator=generator)
