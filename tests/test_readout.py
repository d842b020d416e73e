"""The threshold readout: thresholds fitted for kappa on one split, and a model wrapper whose
argmax is the thresholded expected grade (so attacks act on the reported decision)."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import cohen_kappa_score

from fundus_lib.training.readout import MIDPOINTS, ThresholdReadout, expected_grade, fit_thresholds, threshold_grades


def biased_scores(n: int = 2000, seed: int = 0):
    """Grades with the report's balance and a score that ranks them but sits too close to 0."""
    rng = np.random.default_rng(seed)
    labels = rng.choice(5, size=n, p=[0.735, 0.069, 0.151, 0.025, 0.020])
    return 0.45 * labels + rng.normal(0, 0.35, n), labels


def test_threshold_grades_count_the_thresholds_below():
    assert threshold_grades([0.2, 0.5, 0.51, 3.9, 9], MIDPOINTS).tolist() == [0, 1, 1, 4, 4]


def test_fitted_thresholds_beat_rounding_and_agree_with_sklearn():
    scores, labels = biased_scores()
    thresholds = fit_thresholds(scores, labels)
    assert (np.diff(thresholds) >= 0).all()
    fitted = cohen_kappa_score(labels, threshold_grades(scores, thresholds), weights="quadratic")
    rounded = cohen_kappa_score(labels, threshold_grades(scores, MIDPOINTS), weights="quadratic")
    assert fitted > rounded + 0.05
    # thresholds fitted on one sample carry over to another sample of the same kind
    other_scores, other_labels = biased_scores(seed=1)
    assert cohen_kappa_score(
        other_labels, threshold_grades(other_scores, thresholds), weights="quadratic"
    ) > cohen_kappa_score(other_labels, threshold_grades(other_scores, MIDPOINTS), weights="quadratic")


def test_the_wrapped_model_decides_as_the_thresholds_and_stays_differentiable():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 5))
    thresholds = [0.7, 1.2, 2.6, 3.1]
    wrapped = ThresholdReadout(model, thresholds)
    images = (torch.rand(256, 3, 2, 2) * 6).requires_grad_()
    probabilities = torch.softmax(model(images), dim=1).detach().numpy()
    outputs = wrapped(images)
    assert (outputs.argmax(dim=1).numpy() == threshold_grades(expected_grade(probabilities), thresholds)).all()
    outputs[:, 4].sum().backward()
    assert torch.isfinite(images.grad).all() and images.grad.abs().sum() > 0
