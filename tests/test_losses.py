"""Losses: focal with gamma 0 is cross-entropy; class-balanced weights tend to inverse frequency."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from fundus_lib.training.losses import (
    build_loss,
    class_balanced_weights,
    default_beta,
    focal_loss,
    inverse_frequency_weights,
)

COUNTS = [1030, 101, 224, 29, 20]


@pytest.fixture
def batch():
    generator = torch.Generator().manual_seed(0)
    return torch.randn(64, 5, generator=generator) * 3, torch.randint(0, 5, (64,), generator=generator)


def test_focal_with_gamma_zero_is_cross_entropy(batch):
    """Per image the values are identical; the means differ at most by float32 rounding of the sum."""
    logits, labels = batch
    per_image = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
    assert torch.equal(focal_loss(logits, labels, 0.0), per_image.mean())
    assert torch.allclose(
        focal_loss(logits, labels, 0.0), torch.nn.functional.cross_entropy(logits, labels), rtol=1e-6, atol=0
    )
    assert torch.allclose(
        build_loss("focal", gamma=0.0)(logits, labels), torch.nn.functional.cross_entropy(logits, labels)
    )


def test_focal_matches_its_definition_and_down_weights_easy_examples(batch):
    logits, labels = batch
    p_t = torch.softmax(logits, 1)[torch.arange(64), labels]
    expected = (-((1 - p_t) ** 2) * torch.log(p_t)).mean()
    assert torch.allclose(focal_loss(logits, labels, 2.0), expected, atol=1e-6)
    assert focal_loss(logits, labels, 2.0) < focal_loss(logits, labels, 1.0) < focal_loss(logits, labels, 0.0)


def test_weighted_cross_entropy_matches_torch(batch):
    logits, labels = batch
    weights = inverse_frequency_weights(COUNTS)
    ours = build_loss("inverse_frequency", class_counts=COUNTS)(logits, labels)
    # torch's weighted CE divides by the summed weights; ours averages weighted losses (the report's eq. 9)
    reference = torch.nn.functional.cross_entropy(
        logits, labels, weight=torch.tensor(weights, dtype=torch.float32), reduction="sum"
    ) / len(labels)
    assert torch.allclose(ours, reference, atol=1e-6)


@given(st.lists(st.integers(1, 5000), min_size=2, max_size=6))
def test_class_balanced_weights_are_normalised_and_ordered(counts):
    weights = class_balanced_weights(counts, 0.99)
    assert weights.sum() == pytest.approx(len(counts))
    order = np.argsort(counts, kind="stable")
    assert np.all(np.diff(weights[order]) <= 1e-12)  # fewer samples, larger weight


def test_class_balanced_tends_to_inverse_frequency_as_beta_tends_to_one():
    target = inverse_frequency_weights(COUNTS)
    gaps = [np.abs(class_balanced_weights(COUNTS, beta) - target).max() for beta in (0.9, 0.99, 0.999, 0.99999)]
    assert gaps == sorted(gaps, reverse=True) and gaps[-1] < 1e-2


def test_class_balanced_with_beta_zero_is_uniform():
    assert np.allclose(class_balanced_weights(COUNTS, 0.0), np.ones(5))


def test_default_beta_is_the_original_codes():
    assert default_beta(COUNTS) == (sum(COUNTS) - 1) / sum(COUNTS)


def test_absent_classes_get_no_weight():
    assert inverse_frequency_weights([10, 0, 5])[1] == 0
    assert class_balanced_weights([10, 0, 5], 0.9)[1] == 0


def test_inception_outputs_add_the_auxiliary_loss(batch):
    logits, labels = batch
    loss_fn = build_loss("cross_entropy")
    assert torch.allclose(loss_fn((logits, logits), labels), 1.4 * loss_fn(logits, labels))


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown loss"):
        build_loss("hinge")
    with pytest.raises(ValueError, match="class counts"):
        build_loss("class_balanced")
    with pytest.raises(ValueError, match="beta"):
        class_balanced_weights(COUNTS, 1.0)


def test_the_schema_offers_exactly_the_implemented_losses():
    from fundus_lib.config import LOSS_NAMES
    from fundus_lib.training.losses import LOSSES

    assert LOSS_NAMES == LOSSES
    for name in LOSSES:
        loss_fn = build_loss(name, class_counts=[10, 5, 3, 2, 1], gamma=2.0)
        assert torch.isfinite(loss_fn(torch.randn(4, 5), torch.tensor([0, 1, 2, 4])))
