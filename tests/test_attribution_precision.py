"""Integrated gradients that are only summed into relevance masses may run in bfloat16
(``runtime.mass_bfloat16``): the masses stay well inside the share margin of float32's, and the
float32 evaluations keep the cache keys they had before the option existed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from fundus_lib.attribution.methods import integrated_gradients, pixel_map
from fundus_lib.attribution.scores import relevance_mass
from fundus_lib.config import RuntimeConfig
from fundus_lib.evaluation.attribution import mass_bfloat16, mass_precision, precision_key
from fundus_lib.models import create_model
from fundus_lib.statistics import MARGINS
from fundus_lib.training.loop import native_bfloat16


def masses(model, images, labels, masks, bfloat16: bool) -> np.ndarray:
    with mass_precision(bfloat16):
        attributions = integrated_gradients(
            model, images, labels, "uniform", 100, "riemann_trapezoid", 64, torch.Generator().manual_seed(0)
        )
    return np.array([relevance_mass(m, mask) for m, mask in zip(pixel_map(attributions.float()), masks)])


def test_bfloat16_relevance_masses_agree_with_float32():
    torch.manual_seed(0)
    model = create_model("small-cnn", num_classes=5).eval()
    images = torch.rand(4, 3, 64, 64)
    labels = torch.tensor([0, 1, 2, 3])
    masks = np.zeros((4, 64, 64), dtype=bool)
    masks[:, 20:36, 24:44] = True
    exact, rounded = masses(model, images, labels, masks, False), masses(model, images, labels, masks, True)
    assert np.all((exact > 0) & (exact < 1))
    assert np.max(np.abs(rounded - exact)) < MARGINS["share"] / 4


def test_float32_mass_evaluations_keep_their_cache_keys():
    assert precision_key(False) == {} and precision_key(True) == {"bfloat16": True}


def test_the_setting_resolves_like_the_training_one(tmp_path: Path):
    amx, plain = tmp_path / "amx", tmp_path / "plain"
    amx.write_text("flags : fpu sse2 amx_bf16 amx_tile\n")
    plain.write_text("flags : fpu sse2 avx2\n")
    assert native_bfloat16("auto", amx) and not native_bfloat16("auto", plain)
    assert native_bfloat16(True, plain) and not native_bfloat16(False, amx)
    assert not mass_bfloat16(RuntimeConfig())  # float32 unless a params file asks
