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
from collections.abc import Iterator
from contextlib import contextmanager
from copy import deepcopy

import cv2
import numpy as np
import pandas as pd
import torch
from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam, NoiseTunnel, Saliency
from scipy.stats import spearmanr
from skimage.metrics import structural_similarity
from sklearn.metrics import roc_auc_score
from torch import nn
from torchvision.transforms.functional import gaussian_blur

from fundus_lib.models import IMAGENET_MEAN, IMAGENET_STD
from fundus_lib.statistics import mean_interval, wholly_above

#: The report's IG settings: 100 steps, trapezoid rule, uniform random baseline (anchors.md §1).
REPORT_IG = {"steps": 100, "method": "riemann_trapezoid", "baseline": "uniform"}
#: captum's defaults: 50 steps, Gauss-Legendre, a black (zero) baseline.
CAPTUM_IG = {"steps": 50, "method": "gausslegendre", "baseline": "zero"}


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    modes = [module.training for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, mode in zip(model.modules(), modes):
            module.train(mode)


#: The IG baselines chapter 6 compares (the report's, its code's, black and blurred).
IG_BASELINES = ("uniform", "uniform-normalised", "zero", "blurred")
#: The blurred baseline's Gaussian sigma as a share of the image side (Sturmfels et al. 2020,
#: "Visualizing the impact of feature attribution baselines", blur away the fine structure).
BLUR_SIGMA_SHARE = 1 / 16


def ig_baseline(images: torch.Tensor, kind: str | torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
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


def integrated_gradients(model: nn.Module, images: torch.Tensor, target: torch.Tensor, baseline="uniform",
                         steps: int = 100, method: str = "riemann_trapezoid", internal_batch_size: int = 64,
                         generator: torch.Generator | None = None, return_delta: bool = False):
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
            images, baselines=start, target=target, n_steps=steps + 1 if trapezoid else steps, method=method,
            internal_batch_size=internal_batch_size)
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


def smoothgrad(model: nn.Module, images: torch.Tensor, target: torch.Tensor, samples: int = 16,
               noise: float = 0.1, seed: int = 0) -> torch.Tensor:
    """SmoothGrad: saliency averaged over ``samples`` copies with Gaussian noise (std ``noise`` in
    pixels). The noise is seeded (captum draws it from torch's global generator, which is left as it was)."""
    devices = [images.device.index or 0] if images.is_cuda else []
    with eval_mode(model), torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        return NoiseTunnel(Saliency(model)).attribute(images.detach().clone().requires_grad_(True), nt_type="smoothgrad",
                                                      nt_samples=samples, nt_samples_batch_size=samples, stdevs=noise,
                                                      target=target)


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


#: The reference maps every attribution must beat (model-free, scored exactly like the methods):
#: a random map, the Sobel edge magnitude and the intensity of the input (Graham-filtered, as the
#: model sees it). Vessels and exudates are salient edges and bright, so a method that lands on
#: lesions no more than these do has not shown that the model looks at lesions.
REFERENCES = ("reference: random", "reference: Sobel edges", "reference: intensity")


def reference_maps(images: torch.Tensor, seed: int = 0) -> dict[str, np.ndarray]:
    """The ``REFERENCES`` for images (N, 3, H, W) in [0, 1]: float (N, H, W) each. random: U[0, 1)
    per pixel (seeded); Sobel edges: the magnitude of the 3 x 3 Sobel gradient of the channel
    mean; intensity: the channel mean."""
    grey = images.detach().mean(dim=1).cpu().numpy().astype(np.float32)
    edges = np.stack([np.hypot(cv2.Sobel(picture, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(picture, cv2.CV_32F, 0, 1, ksize=3))
                      for picture in grey])
    random = np.random.default_rng(seed).random(grey.shape, dtype=np.float32)
    return dict(zip(REFERENCES, (random, edges, grey)))


#: A method passes the randomisation check when, with every layer of the model re-initialised, its
#: maps keep a median rank correlation (of absolute values, per image) below this with the
#: trained model's maps: most of their ordering then came from what the model learned. Fixed here
#: before any result is seen; Adebayo et al. (2018) read correlations near 0 as passing and
#: near 1 as "independent of the model".
RANDOMISATION_PASS = 0.5


def _layers_with_weights(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The modules that hold their own parameters and can re-initialise them, input first."""
    return [(name, module) for name, module in model.named_modules()
            if hasattr(module, "reset_parameters") and any(True for _ in module.parameters(recurse=False))]


def map_similarity(first: np.ndarray, second: np.ndarray) -> tuple[float, float]:
    """(Spearman rank correlation, SSIM) of the absolute values of two maps (H, W), as Adebayo et
    al. compare saliency maps (SSIM on maps scaled to [0, 1] by their maximum)."""
    a, b = np.abs(first).ravel(), np.abs(second).ravel()
    rank = float(spearmanr(a, b).statistic) if a.std() > 0 and b.std() > 0 else float("nan")
    scaled = [np.abs(picture) / (np.abs(picture).max() or 1.0) for picture in (first, second)]
    return rank, float(structural_similarity(*scaled, data_range=1.0))


def randomisation_check(model: nn.Module, images: torch.Tensor, target: torch.Tensor, method, seed: int = 0,
                        max_layers: int | None = None) -> pd.DataFrame:
    """Cascading model-parameter randomisation (Adebayo et al. 2018, https://arxiv.org/abs/1810.03292).

    The layers with weights are re-initialised one after another from the output down to the
    input (cumulatively; each under ``torch.manual_seed(seed)``), and after each the maps ``method(model, images, target)``
    (a function returning attributions shaped like images, e.g. ``saliency``) are compared with
    the trained model's: per image, the rank correlation and SSIM of absolute values
    (``map_similarity``). ``model`` itself is left untouched. ``max_layers`` stops the cascade
    after that many layers (a rehearsal's shortcut: the check then cannot judge the method).

    Returns one row per step: ``layer`` (the last re-initialised; "none" first), ``layers``
    re-initialised so far, and the medians over images ``rank_correlation`` and ``ssim``.
    """
    trained = pixel_map(method(model, images, target))
    copy = deepcopy(model)
    layers = _layers_with_weights(copy)[::-1][:max_layers]
    rows = [{"layer": "none", "layers": 0, "rank_correlation": 1.0, "ssim": 1.0}]
    with torch.random.fork_rng(devices=[]):
        for count, (name, layer) in enumerate(layers, start=1):
            torch.manual_seed(seed)  # per layer, as Quantus's MPRT (which seeds with its seed + 1)
            layer.reset_parameters()
            maps = pixel_map(method(copy, images, target))
            similarity = np.array([map_similarity(first, second) for first, second in zip(trained, maps)])
            rows.append({"layer": name, "layers": count, "rank_correlation": float(np.nanmedian(similarity[:, 0])),
                         "ssim": float(np.nanmedian(similarity[:, 1]))})
    return pd.DataFrame(rows)


def label_randomisation_check(model: nn.Module, shuffled: nn.Module, images: torch.Tensor, target: torch.Tensor,
                              method) -> dict[str, float]:
    """Data randomisation (Adebayo et al. 2018): the maps of ``model`` against those of
    ``shuffled``, the same architecture trained on permuted labels, for the same images and
    ``target``: medians over images of ``rank_correlation`` and ``ssim`` (``map_similarity``),
    and ``passes`` (rank correlation below ``RANDOMISATION_PASS``)."""
    pairs = zip(pixel_map(method(model, images, target)), pixel_map(method(shuffled, images, target)))
    similarity = np.array([map_similarity(first, second) for first, second in pairs])
    rank = float(np.nanmedian(similarity[:, 0]))
    return {"rank_correlation": rank, "ssim": float(np.nanmedian(similarity[:, 1])), "passes": rank < RANDOMISATION_PASS}


def passes_randomisation(check: pd.DataFrame) -> bool:
    """Whether a method's ``randomisation_check`` ends (every layer re-initialised) below
    ``RANDOMISATION_PASS`` rank correlation with the trained model's maps."""
    return bool(check["rank_correlation"].iloc[-1] < RANDOMISATION_PASS)


def pixel_map(attributions: torch.Tensor) -> np.ndarray:
    """Attributions (N, C, H, W) summed over colour channels (the report's figures): float (N, H, W)."""
    return attributions.detach().sum(dim=1).cpu().numpy()


# --- pictures ------------------------------------------------------------------------------------------


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


# --- scores against lesion masks ------------------------------------------------------------------------


def relevance_mass(attribution_map: np.ndarray, mask: np.ndarray) -> float:
    """Share of the positive attribution that lies inside the mask (nan without positive attribution)."""
    positive = np.clip(attribution_map, 0, None)
    total = positive.sum()
    return float(positive[mask].sum() / total) if total > 0 else float("nan")


def pointing_game(attribution_map: np.ndarray, mask: np.ndarray, tolerance_px: int = 0) -> bool:
    """Is the most attributed pixel inside the mask (grown by ``tolerance_px`` pixels)?"""
    y, x = np.unravel_index(np.argmax(attribution_map), attribution_map.shape)
    if tolerance_px == 0:
        return bool(mask[y, x])
    window = mask[max(0, y - tolerance_px): y + tolerance_px + 1, max(0, x - tolerance_px): x + tolerance_px + 1]
    return bool(window.any())


def lesion_auc(attribution_map: np.ndarray, mask: np.ndarray, region: np.ndarray | None = None) -> float:
    """ROC AUC of the map as a pixel-wise lesion detector (inside ``region``, e.g. the field of view);
    0.5 = chance, 1 = every lesion pixel outranks every other pixel; nan when the mask is empty or full."""
    region = np.ones_like(mask, dtype=bool) if region is None else region
    truth, score = mask[region].ravel(), attribution_map[region].ravel()
    if truth.all() or not truth.any():
        return float("nan")
    return float(roc_auc_score(truth, score))


@torch.no_grad()
def deletion_curve(model: nn.Module, image: torch.Tensor, target: int, attribution_map: np.ndarray,
                   fractions: np.ndarray = np.linspace(0, 0.5, 11), fill: float = 0.5) -> np.ndarray:
    """The target's probability as the most attributed pixels (a fraction of all) are set to
    ``fill`` (Graham's grey), most attributed first. image: (3, H, W). Returns (len(fractions),)."""
    order = np.argsort(-attribution_map.ravel())
    copies = image.repeat(len(fractions), 1, 1, 1)
    for index, fraction in enumerate(fractions):
        removed = torch.as_tensor(order[: int(round(fraction * order.size))])
        flat = copies[index].view(copies.shape[1], -1)
        flat[:, removed] = fill
    with eval_mode(model):
        return torch.softmax(model(copies), dim=1)[:, target].cpu().numpy()


def deletion_auc(curve: np.ndarray, fractions: np.ndarray = np.linspace(0, 0.5, 11)) -> float:
    """Mean probability over the deletion curve (trapezoid area / width); lower = more faithful."""
    return float(np.trapezoid(curve, fractions) / (fractions[-1] - fractions[0]))


def reference_margin(scores: pd.DataFrame, method: str, measure: str = "relevance_mass", on: str = "row") -> pd.DataFrame:
    """Does ``method`` beat the model-free references? Per model of a score table (columns model,
    method, ``on`` (the image), ``measure``; higher = better): the method's mean, the best
    reference by mean, and the paired difference method - that reference over the same images
    with its 95 % bootstrap interval (``statistics.mean_interval``); ``beats`` when the interval lies
    wholly above 0 (``statistics.wholly_above``)."""
    rows = []
    for model, group in scores.groupby("model", sort=False):
        table = group.pivot_table(index=on, columns="method", values=measure, aggfunc="first")
        best = max(REFERENCES, key=lambda reference: table[reference].mean())
        mean, low, high = mean_interval(table[method] - table[best])
        rows.append({"model": model, "method": table[method].mean(), "best reference": best,
                     "reference": table[best].mean(), "difference": mean, "low": low, "high": high,
                     "beats": wholly_above(low), "images": int(table[method].notna().sum())})
    return pd.DataFrame(rows)
