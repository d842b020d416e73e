"""Adversarial attacks in [0, 1] pixel space: L-inf PGD (Madry et al.), the report's success-rate
experiment, its adversarial-training objective, and HopSkipJump, a decision-based attack.

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

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from fundus_lib.models import IMAGENET_STD

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


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """The model in eval mode; on exit every module gets its own previous mode back."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


def _cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(logits, labels, reduction="none")


def _uniform(like: torch.Tensor, low: float, high: float, generator: torch.Generator | None) -> torch.Tensor:
    """Uniform noise shaped like ``like`` on its device, drawn from ``generator`` (on its own device)."""
    device = generator.device if generator is not None else like.device
    noise = torch.empty(like.shape, device=device, dtype=like.dtype).uniform_(low, high, generator=generator)
    return noise.to(like.device)


def _normal(shape: tuple[int, ...], like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    device = generator.device if generator is not None else like.device
    return torch.randn(shape, generator=generator, device=device, dtype=like.dtype).to(like.device)


# --- PGD -----------------------------------------------------------------------------------------


def _pgd_run(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, eps: float, alpha: float, steps: int,
             random_start: bool, loss: AttackLoss, generator: torch.Generator | None) -> torch.Tensor:
    """One PGD run from one start, in the order of torchattacks' PGD: step, project onto the
    eps-ball, clamp to [0, 1]."""
    adversarials = images.clone()
    if random_start:
        adversarials = torch.clamp(adversarials + _uniform(images, -eps, eps, generator), 0, 1)
    for _ in range(steps):
        adversarials.requires_grad_(True)
        value = loss(model(adversarials), labels).sum()
        (gradient,) = torch.autograd.grad(value, adversarials)
        adversarials = adversarials.detach() + alpha * gradient.sign()
        delta = torch.clamp(adversarials - images, -eps, eps)
        adversarials = torch.clamp(images + delta, 0, 1)
    return adversarials.detach()


def pgd(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, eps: float, alpha: float | None = None,
        steps: int = 10, restarts: int = 1, random_start: bool = True, loss: AttackLoss | None = None,
        generator: torch.Generator | None = None) -> torch.Tensor:
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


def attack_predictions(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, eps_list, steps: int = 5,
                       batch_size: int = 16, alpha: float | None = None, restarts: int = 1,
                       generator: torch.Generator | None = None, progress: bool = True) -> pd.DataFrame:
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
    return pd.DataFrame({"eps": np.repeat(eps_list, len(images)), "eps_255": np.repeat([eps * 255 for eps in eps_list], len(images)),
                         "image": np.tile(np.arange(len(images)), len(eps_list)), "label": np.tile(labels.cpu().numpy(), len(eps_list)),
                         "clean": np.tile(clean, len(eps_list)),
                         "attacked": torch.cat([torch.cat(parts) for parts in attacked_parts]).numpy()})


def success_table(outcomes: pd.DataFrame) -> pd.DataFrame:
    """Per eps, from ``attack_predictions``' rows: success_rate (share of images whose prediction
    changed: the report's eq. 11, on every image, not only the correct ones), robust_accuracy (share
    still predicted correctly) and clean_accuracy."""
    table = outcomes.assign(success_rate=outcomes["attacked"] != outcomes["clean"],
                            robust_accuracy=outcomes["attacked"] == outcomes["label"],
                            clean_accuracy=outcomes["clean"] == outcomes["label"])
    return (table.groupby(["eps", "eps_255"], sort=False)[["success_rate", "robust_accuracy", "clean_accuracy"]]
            .mean().reset_index())


def attack_success(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, eps_list, steps: int = 5,
                   batch_size: int = 16, alpha: float | None = None, restarts: int = 1,
                   generator: torch.Generator | None = None, progress: bool = True) -> pd.DataFrame:
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
    return success_table(attack_predictions(model, images, labels, eps_list, steps, batch_size, alpha, restarts,
                                            generator, progress))


# --- adversarial training ------------------------------------------------------------------------


def adversarial_loss(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, loss_fn, eps: float,
                     alpha: float | None = None, steps: int = 5, weight: float = 0.5,
                     generator: torch.Generator | None = None, attack_model: nn.Module | None = None) -> torch.Tensor:
    """The report's adversarial-training objective for one batch (section 5):
    (1 - weight) x loss_fn(model(images)) + weight x loss_fn(model(pgd(images))).

    The clean forward pass comes first, in the model's current mode (the trainer: train mode, so
    BatchNorm uses and updates batch statistics, as for the adversarial pass after it). The
    adversarial examples are made by ``pgd`` in eval mode (BatchNorm and dropout frozen; the
    report's code attacked in train mode) with cross-entropy as the attack loss. For any loss
    that falls as the true-class probability rises (cross-entropy, class-weighted, focal) the
    per-image gradient sign, and so PGD's result, is the same as with cross-entropy.

    Args:
        images: float (N, C, H, W) in [0, 1]; labels: int64 (N,).
        loss_fn: loss_fn(outputs, labels) -> scalar; gets the model's outputs untouched
            (inception_v3 in train mode: a (logits, aux_logits) tuple).
        eps, alpha, steps, generator: as in ``pgd`` ([0, 1] pixel units; the report: 5 steps).
        weight: share of the adversarial loss in [0, 1]; the report: 0.5.
        attack_model: the model PGD attacks (default: ``model``); under data-parallel training pass
            the unwrapped module, so the attack's input gradients bypass the wrapper.

    Returns:
        Scalar tensor with a graph to the parameters. weight = 0 or eps = 0 gives the clean loss
        itself (one forward pass, no attack), so eps = 0 is exactly clean training.

    Example: ``adversarial_loss(model, x, y, classification_loss, eps=2 / 255, steps=5).backward()``.
    """
    if not 0 <= weight <= 1:
        raise ValueError(f"weight must be in [0, 1], got {weight}")
    clean = loss_fn(model(images), labels)
    if weight == 0 or eps == 0:
        return clean
    adversarials = pgd(attack_model or model, images, labels, eps, alpha, steps, generator=generator)
    return (1 - weight) * clean + weight * loss_fn(model(adversarials), labels)


# --- decision-based attack: HopSkipJump ----------------------------------------------------------


_HALVINGS = 10  # step-size halvings HopSkipJump tries per iteration before it stays put


class DecisionAttackResult(NamedTuple):
    """Output of ``hop_skip_jump``; unpacks as ``adversarials, success, queries = ...``."""

    adversarials: torch.Tensor  # float (N, C, H, W) in [0, 1]; the input image where not success
    success: torch.Tensor  # bool (N,): adversarials[i] is misclassified
    queries: torch.Tensor  # int64 (N,): model decisions asked for image i (<= max_queries)


class _Oracle:
    """The model's decisions only: is_adversarial(points (M, C, H, W), owners (M,)) -> bool (M,)
    (predicted class != label of the owning image), counting one query per point and image."""

    def __init__(self, model: nn.Module, labels: torch.Tensor, batch_size: int):
        self.model, self.labels, self.batch_size = model, labels, batch_size
        self.queries = torch.zeros(len(labels), dtype=torch.long, device=labels.device)

    def __call__(self, points: torch.Tensor, owners: torch.Tensor) -> torch.Tensor:
        predicted = torch.cat([self.model(chunk).argmax(dim=1) for chunk in points.split(self.batch_size)])
        self.queries.index_add_(0, owners, torch.ones_like(owners))
        return predicted != self.labels[owners]


def _blend(images: torch.Tensor, targets: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """(1 - t) x images + t x targets, t (M,) in [0, 1]; stays in [0, 1]."""
    t = t.view(-1, *[1] * (images.dim() - 1))
    return torch.clamp((1 - t) * images + t * targets, 0, 1)


def _bisect(oracle: _Oracle, images: torch.Tensor, adversarials: torch.Tensor, owners: torch.Tensor,
            rounds: int) -> torch.Tensor:
    """The boundary point on the segment images -> adversarials (adversarial end): ``rounds``
    bisections of the blend factor, returning the adversarial side (checked by the model)."""
    low, high = torch.zeros(len(owners), device=images.device), torch.ones(len(owners), device=images.device)
    for _ in range(rounds):
        middle = (low + high) / 2
        adversarial = oracle(_blend(images, adversarials, middle), owners)
        high, low = torch.where(adversarial, middle, high), torch.where(adversarial, low, middle)
    return _blend(images, adversarials, high)


def _l2(delta: torch.Tensor) -> torch.Tensor:
    return delta.flatten(1).norm(dim=1)


def _random_directions(shape: tuple[int, ...], like: torch.Tensor, grid_px: int | None,
                       generator: torch.Generator | None) -> torch.Tensor:
    """Gaussian directions shaped (M, S, C, H, W): drawn per pixel, or with ``grid_px`` on a
    grid_px x grid_px grid per channel and upsampled bilinearly to H x W (a low-frequency
    subspace of C x grid_px^2 dimensions; QEBA-S, Li et al. 2020, https://arxiv.org/abs/2005.14137)."""
    count, size, channels, height, width = shape
    if grid_px is None or grid_px >= min(height, width):
        return _normal(shape, like, generator)
    coarse = _normal((count * size, channels, grid_px, grid_px), like, generator)
    return nn.functional.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False).view(shape)


def _estimate_gradient(oracle: _Oracle, boundary: torch.Tensor, owners: torch.Tensor, delta: torch.Tensor,
                       evaluations: int, batch_size: int, grid_px: int | None,
                       generator: torch.Generator | None) -> torch.Tensor:
    """HopSkipJump's Monte-Carlo direction (unit L2 per image, shaped like ``boundary`` (M, C, H, W))
    towards the adversarial side: mean of (s_i - mean s) u_i over ``evaluations`` decisions
    s_i = +-1 at boundary + delta x u_i, u_i uniform on the unit sphere (of the full image, or
    of the ``grid_px`` subspace, see ``_random_directions``; clamped to [0, 1]; no baseline when
    all s_i agree). At most ``batch_size`` points are held at a time."""
    count, ones = len(owners), [1] * (boundary.dim() - 1)
    scale = delta.view(count, 1, *ones)
    weighted, plain = torch.zeros_like(boundary), torch.zeros_like(boundary)
    total = torch.zeros(count, device=boundary.device)
    chunk = max(1, batch_size // count)
    for size in (min(chunk, evaluations - first) for first in range(0, evaluations, chunk)):
        directions = _random_directions((count, size, *boundary.shape[1:]), boundary, grid_px, generator)
        directions /= directions.flatten(2).norm(dim=2).view(count, size, *ones)
        points = torch.clamp(boundary.unsqueeze(1) + scale * directions, 0, 1)
        directions = (points - boundary.unsqueeze(1)) / scale
        signs = oracle(points.flatten(0, 1), owners.repeat_interleave(size)).view(count, size).float() * 2 - 1
        weighted += (signs.view(count, size, *ones) * directions).sum(dim=1)
        plain += directions.sum(dim=1)
        total += signs.sum(dim=1)
    mean = total / evaluations
    gradient = weighted - torch.where(mean.abs() == 1, 0.0, mean).view(count, *ones) * plain
    return gradient / (_l2(gradient).view(count, *ones) + 1e-12)


def _geometric_step(oracle: _Oracle, boundary: torch.Tensor, direction: torch.Tensor, owners: torch.Tensor,
                    size: torch.Tensor) -> torch.Tensor:
    """boundary + size x direction (clamped to [0, 1]), size (M,) halved until misclassified; after
    ``_HALVINGS`` halvings without success, the boundary point itself (misclassified already)."""
    moved = boundary.clone()
    waiting = torch.arange(len(owners), device=boundary.device)
    for _ in range(_HALVINGS + 1):
        scale = size[waiting].view(-1, *[1] * (boundary.dim() - 1))
        trial = torch.clamp(boundary[waiting] + scale * direction[waiting], 0, 1)
        found = oracle(trial, owners[waiting])
        moved[waiting[found]] = trial[found]
        waiting, size = waiting[~found], size / 2
        if len(waiting) == 0:
            break
    return moved


def _starting_points(oracle: _Oracle, images: torch.Tensor, owners: torch.Tensor, starts: torch.Tensor | None,
                     trials: int, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Misclassified starting points for images[owners]: ``starts`` where misclassified, else the
    first of ``trials`` uniform-noise images that is. Returns (points shaped like images[owners],
    found bool (M,))."""
    points, found = images[owners].clone(), torch.zeros(len(owners), dtype=torch.bool, device=images.device)
    for candidate in ([starts] if starts is not None else []) + [None] * trials:
        waiting = (~found).nonzero().squeeze(1)
        if len(waiting) == 0:
            break
        trial = _uniform(points[waiting], 0, 1, generator) if candidate is None else candidate[owners[waiting]]
        adversarial = oracle(trial, owners[waiting])
        points[waiting[adversarial]] = trial[adversarial]
        found[waiting[adversarial]] = True
    return points, found


def hop_skip_jump(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, steps: int = 40,
                  max_queries: int = 10_000, initial_evals: int = 100, max_evals: int = 1_000,
                  init_trials: int = 100, starts: torch.Tensor | None = None, direction_grid_px: int | None = None,
                  batch_size: int = 256, generator: torch.Generator | None = None,
                  history: list[torch.Tensor] | None = None) -> DecisionAttackResult:
    """HopSkipJump (Chen, Jordan & Wainwright 2020, https://arxiv.org/abs/1904.02144), L2 version,
    untargeted: a decision-based attack that sees only the predicted labels. Chosen over the
    Boundary Attack (Brendel et al. 2018, the report's future work) for its query efficiency.

    Per image: find a misclassified start, bisect to the decision boundary on the segment from the
    image, then for t = 1..steps: estimate the boundary's normal from initial_evals x sqrt(t)
    (at most ``max_evals``) decisions at radius delta around the boundary point (delta = 0.1 at
    t = 1, then sqrt(d) x theta x distance, theta = d^-1.5, d = C x H x W); step along it by
    distance / sqrt(t), halving (at most 10 times) until misclassified; bisect back to the
    boundary (ceil(log2(1 / theta)) decisions per bisection). The point with the smallest L2
    distance so far is kept. As foolbox's ``HopSkipJumpAttack`` (geometric step search,
    gamma = 1), plus a query budget: an image stops before an iteration that could exceed it.

    Args:
        model: logits (N, K) from images in [0, 1]; only argmax is used. Eval mode, modes restored.
        images: float (N, C, H, W) in [0, 1]; meant for images the model classifies correctly.
            One already misclassified is returned unchanged with success True (distance 0).
        labels: int64 (N,) true classes; adversarial = any other predicted class.
        steps: HopSkipJump iterations per image.
        max_queries: model decisions per image, at most (one image in a forward batch = 1 query);
            must cover the start: 1 + init_trials (+1 with starts) + one bisection.
        initial_evals, max_evals: decisions per gradient estimate at t = 1, and at most.
        init_trials: uniform-noise draws tried per image for a misclassified start.
        starts: optional float (N, C, H, W) in [0, 1], tried first as starting points (e.g.
            images of another grade, as the report's code did, when noise is never misclassified).
        direction_grid_px: None: random directions per pixel (HopSkipJump). An int: directions
            drawn on a grid of that many px per side and upsampled bilinearly (QEBA-S, Li et al.
            2020): the search moves in a low-frequency subspace of C x grid^2 dimensions, which
            converges in far fewer queries to a larger (upper-bound) distance.
        batch_size: points per forward pass; a gradient estimate holds about 2 x batch_size x
            C x H x W floats at a time.
        generator: torch.Generator for noise and directions, for deterministic results.
        history: if a list, the best L2 distance so far per image (N,) is appended after the start
            and after every iteration (to see whether the budget converges; 0 = not attacked).

    Returns:
        DecisionAttackResult(adversarials (N, C, H, W) in [0, 1], success bool (N,), queries
        int64 (N,)); where success is False (no misclassified start found) the image itself.

    Example: ``adversarials, success, queries = hop_skip_jump(model, x, y, steps=20, max_queries=3000)``.
    """
    images, labels = images.detach(), labels.detach()
    dimension = images[0].numel()
    theta = 1 / (dimension * math.sqrt(dimension))
    rounds = math.ceil(math.log2(1 / theta))
    start_cost = 1 + init_trials + (starts is not None) + rounds
    if max_queries < start_cost:
        raise ValueError(f"max_queries={max_queries} does not cover the start: "
                         f"1 + init_trials + bisection = {start_cost}")
    with eval_mode(model), torch.no_grad():
        oracle = _Oracle(model, labels, batch_size)
        success = oracle(images, torch.arange(len(images), device=images.device))
        owners = (~success).nonzero().squeeze(1)
        points, found = _starting_points(oracle, images, owners, starts, init_trials, generator)
        owners, points = owners[found], points[found]
        success[owners] = True
        best = images.clone()
        best[owners] = _bisect(oracle, images[owners], points, owners, rounds)
        current, distance = best.clone(), _l2(best - images)
        best_distance = distance.clone()
        if history is not None:
            history.append(best_distance.clone())
        for step in range(1, steps + 1):
            evaluations = int(min(initial_evals * math.sqrt(step), max_evals))
            owners = owners[oracle.queries[owners] + evaluations + _HALVINGS + 1 + rounds <= max_queries]
            if len(owners) == 0:
                break
            radius = distance[owners]
            delta = math.sqrt(dimension) * theta * radius if step > 1 else torch.full_like(radius, 0.1)
            groups = torch.arange(len(owners), device=owners.device).split(max(1, batch_size // evaluations))
            direction = torch.cat([_estimate_gradient(oracle, current[owners[group]], owners[group], delta[group],
                                                      evaluations, batch_size, direction_grid_px, generator)
                                   for group in groups])
            moved = _geometric_step(oracle, current[owners], direction, owners, radius / math.sqrt(step))
            current[owners] = _bisect(oracle, images[owners], moved, owners, rounds)
            distance[owners] = _l2(current[owners] - images[owners])
            closer = owners[distance[owners] < best_distance[owners]]
            best[closer], best_distance[closer] = current[closer], distance[closer]
            if history is not None:
                history.append(best_distance.clone())
    return DecisionAttackResult(best, success, oracle.queries)


#: A HopSkipJump budget counts as converged when the best L2 fell by less than 5 % over the last
#: fifth of the iterations (median over images): a further fifth of the budget would then change
#: a ratio of two models' medians by a few per cent at most, well inside its bootstrap interval
#: over a few dozen images. Fixed here before any result is seen.
CONVERGED_FACTOR = 0.95


def last_fifth_factor(best_l2: np.ndarray) -> float:
    """Median over images of the best L2 after the last iteration over the best L2 a fifth of the
    iterations earlier (1.0 = flat, converged; < 1 still falling). best_l2: (N, iterations + 1)
    as ``hop_skip_jump``'s history (column 0: the start); images never attacked (0) are left out."""
    best_l2 = np.asarray(best_l2, dtype=float)
    last = best_l2.shape[1] - 1
    earlier = max(0, last - max(1, last // 5))
    attacked = best_l2[:, earlier] > 0
    if not attacked.any():
        return float("nan")
    return float(np.median(best_l2[attacked, last] / best_l2[attacked, earlier]))


@dataclass(frozen=True)
class PerturbationSizes:
    """Per-image perturbation sizes in [0, 1] pixel units and their medians over images."""

    per_image: pd.DataFrame  # columns l2 (over all pixels and channels) and linf; NaN where the attack failed
    median_l2: float  # median over the successful images
    median_linf: float


def perturbation_sizes(images: torch.Tensor, adversarials: torch.Tensor,
                       success: torch.Tensor | None = None) -> PerturbationSizes:
    """L2 and L-inf sizes of adversarials - images, both float (N, C, H, W) in [0, 1].

    success: bool (N,); failed images count as NaN and are left out of the medians. Multiply by
    255 for grey levels. Example: ``perturbation_sizes(x, *hop_skip_jump(model, x, y)[:2]).median_l2``.
    """
    delta = (adversarials - images).detach().flatten(1).double().cpu()
    sizes = pd.DataFrame({"l2": delta.norm(dim=1).numpy(), "linf": delta.abs().amax(dim=1).numpy()})
    if success is not None:
        sizes[~success.cpu().numpy()] = float("nan")
    return PerturbationSizes(sizes, float(sizes["l2"].median()), float(sizes["linf"].median()))
