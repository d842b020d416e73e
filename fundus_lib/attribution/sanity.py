"""Sanity checks of attribution methods (Adebayo et al. 2018): cascading model-parameter
randomisation and data randomisation (a model trained on shuffled labels). Each returns the
similarity of the maps before and after; ``statistics.passes_randomisation`` judges them.
"""

from __future__ import annotations

from copy import deepcopy

import numpy as np
import pandas as pd
import torch
from scipy.stats import spearmanr
from skimage.metrics import structural_similarity
from torch import nn

from fundus_lib.attribution.methods import pixel_map
from fundus_lib.statistics import RANDOMISATION_PASS


def _layers_with_weights(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The modules that hold their own parameters and can re-initialise them, input first."""
    return [
        (name, module)
        for name, module in model.named_modules()
        if hasattr(module, "reset_parameters") and any(True for _ in module.parameters(recurse=False))
    ]


def map_similarity(first: np.ndarray, second: np.ndarray) -> tuple[float, float]:
    """(Spearman rank correlation, SSIM) of the absolute values of two maps (H, W), as Adebayo et
    al. compare saliency maps (SSIM on maps scaled to [0, 1] by their maximum)."""
    a, b = np.abs(first).ravel(), np.abs(second).ravel()
    rank = float(spearmanr(a, b).statistic) if a.std() > 0 and b.std() > 0 else float("nan")
    scaled = [np.abs(picture) / (np.abs(picture).max() or 1.0) for picture in (first, second)]
    return rank, float(structural_similarity(*scaled, data_range=1.0))


def block_of(name: str) -> str:
    """The block a layer belongs to: its module path up to the first numbered element that has more
    below it (``net._blocks.15._project_conv`` -> ``net._blocks.15``, ``net.layer1.0.conv1`` ->
    ``net.layer1.0``); a layer outside numbered containers (``net._fc``, ``features.3``) is its own block."""
    parts = name.split(".")
    numbered = next((index for index, part in enumerate(parts[:-1]) if part.isdigit()), None)
    return name if numbered is None else ".".join(parts[: numbered + 1])


def cascade_steps(model: nn.Module, by_block: bool = False) -> list[tuple[str, list[nn.Module]]]:
    """The cascade's steps from the output down: (name, the layers re-initialised at that step), one
    layer with weights per step, or with ``by_block`` the layers of one block (``block_of``) per step."""
    steps: list[tuple[str, list[nn.Module]]] = []
    for name, layer in _layers_with_weights(model)[::-1]:
        key = block_of(name) if by_block else name
        if steps and steps[-1][0] == key:
            steps[-1][1].append(layer)
        else:
            steps.append((key, [layer]))
    return steps


def randomisation_check(
    model: nn.Module,
    images: torch.Tensor,
    target: torch.Tensor,
    method,
    seed: int = 0,
    max_layers: int | None = None,
    by_block: bool = False,
) -> pd.DataFrame:
    """Cascading model-parameter randomisation (Adebayo et al. 2018, https://arxiv.org/abs/1810.03292).

    The layers with weights are re-initialised one after another from the output down to the
    input (cumulatively; each under ``torch.manual_seed(seed)``), and after each the maps
    ``method(model, images, target)`` (a function returning attributions shaped like images, e.g.
    ``saliency``) are compared with
    the trained model's: per image, the rank correlation and SSIM of absolute values
    (``map_similarity``). ``model`` itself is left untouched. ``by_block`` steps through whole
    blocks (``cascade_steps``; each layer still seeded alone, so the last step, every layer
    re-initialised, is the same model). ``max_layers`` stops the cascade after that many steps (a
    rehearsal's shortcut: the check then cannot judge the method).

    Returns one row per step: ``layer`` (the last re-initialised layer or block; "none" first),
    ``layers`` re-initialised so far, and the medians over images ``rank_correlation`` and ``ssim``.
    """
    trained = pixel_map(method(model, images, target))
    copy = deepcopy(model)
    rows = [{"layer": "none", "layers": 0, "rank_correlation": 1.0, "ssim": 1.0}]
    count = 0
    with torch.random.fork_rng(devices=[]):
        for name, layers in cascade_steps(copy, by_block)[:max_layers]:
            for layer in layers:
                torch.manual_seed(seed)  # per layer, as Quantus's MPRT (which seeds with its seed + 1)
                layer.reset_parameters()
            count += len(layers)
            maps = pixel_map(method(copy, images, target))
            similarity = np.array([map_similarity(first, second) for first, second in zip(trained, maps)])
            rows.append(
                {
                    "layer": name,
                    "layers": count,
                    "rank_correlation": float(np.nanmedian(similarity[:, 0])),
                    "ssim": float(np.nanmedian(similarity[:, 1])),
                }
            )
    return pd.DataFrame(rows)


def label_randomisation_check(
    model: nn.Module, shuffled: nn.Module, images: torch.Tensor, target: torch.Tensor, method
) -> dict[str, float]:
    """Data randomisation (Adebayo et al. 2018): the maps of ``model`` against those of
    ``shuffled``, the same architecture trained on permuted labels, for the same images and
    ``target``: medians over images of ``rank_correlation`` and ``ssim`` (``map_similarity``),
    and ``passes`` (rank correlation below ``RANDOMISATION_PASS``)."""
    pairs = zip(pixel_map(method(model, images, target)), pixel_map(method(shuffled, images, target)))
    similarity = np.array([map_similarity(first, second) for first, second in pairs])
    rank = float(np.nanmedian(similarity[:, 0]))
    return {
        "rank_correlation": rank,
        "ssim": float(np.nanmedian(similarity[:, 1])),
        "passes": rank < RANDOMISATION_PASS,
    }
