"""Attribution maps scored against boolean lesion masks: relevance mass, the pointing game, the map
as a lesion detector (AUC), deletion (faithfulness), and the model-free reference maps (random,
Sobel edges, intensity) that every method must beat at the same scores.

Example::

    relevance_mass(pixel_map(attributions)[0], masks[0] > 0)
"""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from fundus_lib.models import eval_mode
from fundus_lib.statistics import mean_interval, wholly_above

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
    edges = np.stack(
        [
            np.hypot(cv2.Sobel(picture, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(picture, cv2.CV_32F, 0, 1, ksize=3))
            for picture in grey
        ]
    )
    random = np.random.default_rng(seed).random(grey.shape, dtype=np.float32)
    return dict(zip(REFERENCES, (random, edges, grey)))


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
    window = mask[max(0, y - tolerance_px) : y + tolerance_px + 1, max(0, x - tolerance_px) : x + tolerance_px + 1]
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
def deletion_curve(
    model: nn.Module,
    image: torch.Tensor,
    target: int,
    attribution_map: np.ndarray,
    fractions: np.ndarray = np.linspace(0, 0.5, 11),
    fill: float = 0.5,
) -> np.ndarray:
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


def reference_margin(
    scores: pd.DataFrame, method: str, measure: str = "relevance_mass", on: str = "row"
) -> pd.DataFrame:
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
        rows.append(
            {
                "model": model,
                "method": table[method].mean(),
                "best reference": best,
                "reference": table[best].mean(),
                "difference": mean,
                "low": low,
                "high": high,
                "beats": wholly_above(low),
                "images": int(table[method].notna().sum()),
            }
        )
    return pd.DataFrame(rows)
