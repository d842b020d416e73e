"""Attributions (the report's §5, Figures 7-8) and their scores against lesion masks.

Attribution methods are thin calls to captum; each takes a model (images in [0, 1] pixels) and
returns attributions shaped like the images, with the model left in the mode it was in:

- ``integrated_gradients``: the report's settings by default (100 steps, a uniform random
  baseline, trapezoid rule), captum's defaults (50 steps, Gauss-Legendre, black baseline)
  available, an adversarial example as baseline as the original code allowed;
- ``saliency`` (gradient magnitude), ``smoothgrad`` (saliency averaged over noisy copies,
  captum's NoiseTunnel) and ``grad_cam`` (on the last convolution, upsampled).

Scores compare a per-pixel map (attributions summed over colour channels, as the report's
figures) with a boolean lesion mask: ``relevance_mass`` (share of the positive attribution inside
the mask), ``pointing_game`` (is the most attributed pixel inside it), ``lesion_auc`` (the map as
a pixel-wise lesion detector) and ``deletion_auc`` (faithfulness: the class probability as the
most attributed pixels are removed first; lower = more faithful). ``reference_maps`` are the
model-free maps (random, Sobel edges, intensity) every method must beat at the same scores, and
``randomisation_check`` is Adebayo et al.'s cascading model-parameter randomisation.

Example::

    attributions, delta = integrated_gradients(model, x, target=y, return_delta=True)
    relevance_mass(pixel_map(attributions)[0], masks[0] > 0)
"""

from __future__ import annotations

import math

import numpy as np
import torch
from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam, NoiseTunnel, Saliency
from torch import nn
from torchvision.transforms.functional import gaussian_blur

from fundus_lib.models import IMAGENET_MEAN, IMAGENET_STD, eval_mode

#: The report's IG settings: 100 steps, trapezoid rule, uniform random baseline (anchors.md §1).
REPORT_IG = {"steps": 100, "method": "riemann_trapezoid", "baseline": "uniform"}


#: captum's defaults: 50 steps, Gauss-Legendre, a black (zero) baseline.
CAPTUM_IG = {"steps": 50, "method": "gausslegendre", "baseline": "zero"}


#: The IG baselines chapter 6 compares (the report's, its code's, black and blurred).
IG_BASELINES = ("uniform", "uniform-normalised", "zero", "blurred")


#: The blurred baseline's Gaussian sigma as a share of the image side (Sturmfels et al. 2020,
#: "Visualizing the impact of feature attribution baselines", blur away the fine structure).
BLUR_SIGMA_SHARE = 1 / 16


def ig_baseline(
    images: torch.Tensor, kind: str | torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """The IG starting point in [0, 1] pixels: "uniform" (U[0, 1] per pixel, the report's text),
    "uniform-normalised" (U[0, 1] in ImageNet-normalised units, as the report's code drew it:
    pixels u x std + mean, so within [mean, mean + std] per channel), "zero" (black), "grey" (0.5),
    "blurred" (the image under a Gaussian blur of sigma ``BLUR_SIGMA_SHARE`` x its side) or a
    tensor shaped like images (e.g. a PGD example)."""
    if isinstance(kind, torch.Tensor):
        return kind
    if kind in ("uniform", "uniform-normalised"):
        noise = torch.rand(images.shape, generator=generator).to(images.device)
        if kind == "uniform":
            return noise
        mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(1, -1, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=images.device).view(1, -1, 1, 1)
        return noise * std + mean
    if kind in ("zero", "grey"):
        return torch.full_like(images, 0.0 if kind == "zero" else 0.5)
    if kind == "blurred":
        sigma = BLUR_SIGMA_SHARE * images.shape[-1]
        kernel = 2 * math.ceil(3 * sigma) + 1
        return gaussian_blur(images, [kernel, kernel], [sigma, sigma])
    raise ValueError(f"unknown IG baseline {kind!r}: uniform, uniform-normalised, zero, grey, blurred or a tensor")


def integrated_gradients(
    model: nn.Module,
    images: torch.Tensor,
    target: torch.Tensor,
    baseline="uniform",
    steps: int = 100,
    method: str = "riemann_trapezoid",
    internal_batch_size: int = 64,
    generator: torch.Generator | None = None,
    return_delta: bool = False,
):
    """IG of ``target`` (int64 (N,)) for images float (N, 3, H, W) in [0, 1], via captum.

    method "riemann_trapezoid" is the original code's rule: ``steps`` intervals, so steps + 1
    points on the path. captum's trapezoid weights sum to (n - 1) / n for n points, so this
    function asks captum for steps + 1 points and rescales by (steps + 1) / steps, which makes the
    weights sum to 1 (a test checks it against the original formula). Other methods (e.g.
    captum's default "gausslegendre") use ``steps`` points as captum does.

    Returns attributions shaped like images; with ``return_delta`` also the completeness gap (N,):
    sum of attributions - (f(x)[target] - f(baseline)[target]). internal_batch_size bounds
    memory (images x steps are evaluated in chunks of this many).
    """
    start = ig_baseline(images, baseline, generator)
    trapezoid = method == "riemann_trapezoid"
    with eval_mode(model):
        attributions = IntegratedGradients(model).attribute(
            images,
            baselines=start,
            target=target,
            n_steps=steps + 1 if trapezoid else steps,
            method=method,
            internal_batch_size=internal_batch_size,
        )
        if trapezoid:
            attributions = attributions * ((steps + 1) / steps)
        if not return_delta:
            return attributions
        with torch.no_grad():
            rows = torch.arange(len(images))
            gap = model(images)[rows, target] - model(start)[rows, target]
    return attributions, attributions.sum(dim=(1, 2, 3)) - gap


def saliency(model: nn.Module, images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Absolute input gradient of the target's logit (Simonyan et al.), shaped like images."""
    with eval_mode(model):
        return Saliency(model).attribute(images.detach().clone().requires_grad_(True), target=target)


def smoothgrad(
    model: nn.Module, images: torch.Tensor, target: torch.Tensor, samples: int = 16, noise: float = 0.1, seed: int = 0
) -> torch.Tensor:
    """SmoothGrad: saliency averaged over ``samples`` copies with Gaussian noise (std ``noise`` in
    pixels). The noise is seeded (captum draws it from torch's global generator, which is left as it was)."""
    devices = [images.device.index or 0] if images.is_cuda else []
    with eval_mode(model), torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        return NoiseTunnel(Saliency(model)).attribute(
            images.detach().clone().requires_grad_(True),
            nt_type="smoothgrad",
            nt_samples=samples,
            nt_samples_batch_size=samples,
            stdevs=noise,
            target=target,
        )


def last_convolution(model: nn.Module) -> nn.Module:
    """The last nn.Conv2d of a model (Grad-CAM's layer)."""
    convolutions = [module for module in model.modules() if isinstance(module, nn.Conv2d)]
    if not convolutions:
        raise ValueError("the model has no convolution for Grad-CAM")
    return convolutions[-1]


def grad_cam(model: nn.Module, images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Grad-CAM on the last convolution, upsampled (bilinear) to the image and repeated over the
    3 channels (divided by 3, so its channel sum is the map), shaped like images."""
    with eval_mode(model):
        cam = LayerGradCam(model, last_convolution(model)).attribute(images, target=target)
    upsampled = LayerAttribution.interpolate(cam, images.shape[-2:], interpolate_mode="bilinear")
    return upsampled.expand_as(images) / images.shape[1]


def pixel_map(attributions: torch.Tensor) -> np.ndarray:
    """Attributions (N, C, H, W) summed over colour channels (the report's figures): float (N, H, W)."""
    return attributions.detach().sum(dim=1).cpu().numpy()


def overlay(image: np.ndarray, attribution_map: np.ndarray, fade: float = 0.35, percentile: float = 99.0) -> np.ndarray:
    """The report's overlay: the faded image with positive attribution in green and negative in red.

    image: float (H, W, 3) in [0, 1], shown as its grey level times ``fade``; attribution_map:
    (H, W). Magnitudes are scaled by their
    ``percentile`` so a few extreme pixels do not wash out the rest. Returns float (H, W, 3).
    """
    grey = image.mean(axis=2, keepdims=True) * fade  # a dim, grey version of the image
    scale = np.percentile(np.abs(attribution_map), percentile) or 1.0
    strength = np.clip(attribution_map / scale, -1, 1)
    out = np.repeat(grey, 3, axis=2)
    out[..., 1] += np.clip(strength, 0, 1) * (1 - out[..., 1])
    out[..., 0] += np.clip(-strength, 0, 1) * (1 - out[..., 0])
    return out.clip(0, 1)
