"""Reading a grade out of a model's five class probabilities: the argmax (the report), or the
expected grade cut at four thresholds fitted on the validation split.

Quadratic kappa counts how far a predicted grade is from the true one, and the argmax of a model
trained on 74 % grade-0 images rarely dares a high grade. The Kaggle EyePACS winners therefore
read their models out as a continuous score cut at thresholds tuned for kappa. Here the score is
the expected grade E = sum_k k p_k, and the four thresholds are fitted on the validation split
(never the test split) by coordinate search for the largest validation kappa.

:class:`ThresholdReadout` wraps a model so that its output's argmax *is* that thresholded grade:
output_k = s * sum_{j < k} (E - t_j), whose successive differences s (E - t_k) fall with k, so the
largest output is the number of thresholds below E. Attacks and attributions then act on the
same decision the tables report, and the output stays differentiable in the image.

Example::

    thresholds = fit_thresholds(expected_grade(valid_probabilities), valid_labels)
    grades = threshold_grades(expected_grade(test_probabilities), thresholds)
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from fundus_lib.metrics import confusion, quadratic_kappa

#: Where the search starts: the midpoints between grades (rounding the expected grade).
MIDPOINTS = (0.5, 1.5, 2.5, 3.5)


def expected_grade(probabilities: np.ndarray) -> np.ndarray:
    """E = sum_k k p_k per row of probabilities (N, 5)."""
    return np.asarray(probabilities) @ np.arange(probabilities.shape[1])


def threshold_grades(scores: np.ndarray, thresholds) -> np.ndarray:
    """The grade of each score: the number of (sorted) thresholds below it."""
    return np.searchsorted(np.sort(np.asarray(thresholds)), np.asarray(scores), side="right").astype(np.int64)


def _kappa(scores: np.ndarray, labels: np.ndarray, thresholds: np.ndarray) -> float:
    return quadratic_kappa(confusion(labels, threshold_grades(scores, thresholds)))


def fit_thresholds(scores: np.ndarray, labels: np.ndarray, rounds: int = 3, candidates: int = 41) -> np.ndarray:
    """Four sorted thresholds that maximise the quadratic kappa of ``threshold_grades(scores)``
    against ``labels``: coordinate search from the midpoints, each threshold tried at
    ``candidates`` values between its neighbours, ``rounds`` passes. Never worse than the midpoints."""
    scores, labels = np.asarray(scores, dtype=float), np.asarray(labels, dtype=np.int64)
    thresholds = np.array(MIDPOINTS)
    best = _kappa(scores, labels, thresholds)
    for _ in range(rounds):
        for index in range(4):
            low = thresholds[index - 1] if index else 0.0
            high = thresholds[index + 1] if index < 3 else 4.0
            for value in np.linspace(low, high, candidates)[1:-1]:
                trial = thresholds.copy()
                trial[index] = value
                kappa = _kappa(scores, labels, trial)
                if kappa > best:
                    best, thresholds = kappa, trial
    return thresholds


class ThresholdReadout(nn.Module):
    """``model`` followed by the threshold readout: outputs whose argmax is the thresholded expected grade.

    sharpness: s, the output gap per grade of expected grade (larger = more confident outputs).
    """

    def __init__(self, model: nn.Module, thresholds, sharpness: float = 8.0):
        super().__init__()
        self.model = model
        self.name = getattr(model, "name", type(model).__name__)
        self.input_size = getattr(model, "input_size", None)
        self.sharpness = sharpness
        self.register_buffer("thresholds", torch.as_tensor(np.sort(np.asarray(thresholds)), dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probabilities = torch.softmax(self.model(x).float(), dim=1)
        expected = probabilities @ torch.arange(probabilities.shape[1], dtype=probabilities.dtype, device=x.device)
        steps = expected[:, None] - self.thresholds[None, :]
        outputs = torch.cat([torch.zeros_like(expected)[:, None], torch.cumsum(steps, dim=1)], dim=1)
        return self.sharpness * (outputs - outputs.mean(dim=1, keepdim=True))
