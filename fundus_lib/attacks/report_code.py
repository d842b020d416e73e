"""The report's PGD as its original code ran it (anchors.md): eps in ImageNet-normalised units, the
model optionally left in train mode, the clamp applied to normalised tensors. Chapter 5 runs it
beside the corrected attack, so the deviation is measured rather than asserted.
"""

from __future__ import annotations

import copy
from contextlib import nullcontext

import torch
from torch import nn

from fundus_lib.models import IMAGENET_MEAN, IMAGENET_STD, eval_mode


def report_code_pgd(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    eps_normalised: float,
    steps: int = 5,
    train_mode: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
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
    with nullcontext() if train_mode else eval_mode(attacked), torch.enable_grad():
        for _ in range(steps):
            adversarial.requires_grad_(True)
            loss = nn.functional.cross_entropy(attacked(adversarial * std + mean), labels)
            (gradient,) = torch.autograd.grad(loss, adversarial)
            adversarial = adversarial.detach() + alpha * gradient.sign()
            adversarial = torch.min(torch.max(adversarial, normalised - eps_normalised), normalised + eps_normalised)
            adversarial = torch.clamp(adversarial, 0, 1)
    return (adversarial * std + mean).detach()
