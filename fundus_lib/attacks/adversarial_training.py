"""The report's adversarial-training objective: a weighted sum of the loss on the clean batch and on
its PGD examples (one step from a random start is FGSM-RS, Wong et al. 2020), eps in [0, 1] pixel
units.
"""

from __future__ import annotations

import torch
from torch import nn

from fundus_lib.attacks.pgd import pgd


def adversarial_loss(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    loss_fn,
    eps: float,
    alpha: float | None = None,
    steps: int = 5,
    weight: float = 0.5,
    generator: torch.Generator | None = None,
    attack_model: nn.Module | None = None,
) -> torch.Tensor:
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
