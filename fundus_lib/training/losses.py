"""Training losses: cross-entropy, focal loss and class-weighted cross-entropy (the report's §3).

- focal loss (Lin et al. 2017), multi-class: ``-(1 - p_t)^gamma * log(p_t)``, averaged; gamma = 0
  is cross-entropy exactly;
- class-balanced weights (Cui et al. 2019): ``w_c = (1 - beta) / (1 - beta^n_c)``, normalised to
  sum to the number of classes (as the paper does); beta -> 1 tends to inverse frequency;
- inverse-frequency weights ``w_c = 1 / n_c``, normalised the same way.

Example::

    loss_fn = build_loss("class_balanced", class_counts=[1030, 100, 220, 35, 28], beta=0.99)
    loss = loss_fn(model(images), labels)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

#: Weight of inception_v3's auxiliary head loss in training (torchvision's reference recipe).
AUX_LOSS_WEIGHT = 0.4
LOSSES = ("cross_entropy", "focal", "class_balanced", "inverse_frequency")


def focal_loss(
    logits: torch.Tensor, labels: torch.Tensor, gamma: float, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean multi-class focal loss of logits (N, C) against labels (N,); optional class weights (C,)."""
    cross_entropy = nn.functional.cross_entropy(logits, labels, reduction="none")  # -log(p_t)
    loss = (1 - torch.exp(-cross_entropy)) ** gamma * cross_entropy if gamma else cross_entropy
    if weights is not None:
        loss = loss * weights[labels]
    return loss.mean()


def class_balanced_weights(counts: Sequence[int], beta: float) -> np.ndarray:
    """Cui et al.'s weights ``(1 - beta) / (1 - beta^n_c)``, normalised to sum to the class count.

    Classes with no sample get weight 0. beta in [0, 1).
    """
    counts = np.asarray(counts, dtype=float)
    if not 0 <= beta < 1:
        raise ValueError(f"beta must be in [0, 1), got {beta}")
    effective = 1 - np.power(beta, counts)
    weights = np.divide(1 - beta, effective, out=np.zeros_like(counts), where=counts > 0)
    return weights * (counts > 0).sum() / weights.sum()


def inverse_frequency_weights(counts: Sequence[int]) -> np.ndarray:
    """``1 / n_c`` normalised to sum to the number of present classes (0 for absent classes)."""
    counts = np.asarray(counts, dtype=float)
    weights = np.divide(1.0, counts, out=np.zeros_like(counts), where=counts > 0)
    return weights * (counts > 0).sum() / weights.sum()


def default_beta(counts: Sequence[int]) -> float:
    """The original code's default beta = (N - 1) / N, N the number of training images."""
    total = int(np.sum(counts))
    return (total - 1) / total


def build_loss(
    kind: str, class_counts: Sequence[int] | None = None, gamma: float | None = None, beta: float | None = None
) -> Callable:
    """``loss_fn(outputs, labels)`` for a loss kind; inception's (logits, aux) outputs add 0.4 x the aux loss.

    class_counts: training images per class (for the weighted losses); beta None = (N - 1) / N.
    """
    if kind not in LOSSES:
        raise ValueError(f"unknown loss {kind!r}; losses: {', '.join(LOSSES)}")
    weights = None
    if kind in ("class_balanced", "inverse_frequency"):
        if class_counts is None:
            raise ValueError(f"the {kind} loss needs the training class counts")
        values = (
            class_balanced_weights(class_counts, default_beta(class_counts) if beta is None else beta)
            if kind == "class_balanced"
            else inverse_frequency_weights(class_counts)
        )
        weights = torch.tensor(values, dtype=torch.float32)
    focus = gamma if kind == "focal" else 0.0

    def loss_fn(outputs, labels: torch.Tensor) -> torch.Tensor:
        on_device = weights.to(labels.device) if weights is not None else None
        if isinstance(outputs, tuple):  # torchvision's InceptionOutputs(logits, aux_logits)
            logits, aux = outputs
            return focal_loss(logits, labels, focus, on_device) + AUX_LOSS_WEIGHT * focal_loss(
                aux, labels, focus, on_device
            )
        return focal_loss(outputs, labels, focus, on_device)

    return loss_fn


def cross_entropy(outputs, labels: torch.Tensor) -> torch.Tensor:
    """Plain cross-entropy (with inception's auxiliary term)."""
    return build_loss("cross_entropy")(outputs, labels)
