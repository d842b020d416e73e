"""The label-noise summary: per-grade rates and the oracle's ceiling, on a hand-made example
and on the generator's own specs (the per-grade rates differ, the ceiling is below 1)."""

import numpy as np
import pytest

from fundus_lib.config import SyntheticConfig
from fundus_lib.data.label_noise import by_grade, oracle_scores
from fundus_lib.data.synthetic import sample_specs


def test_per_grade_rates_on_a_hand_made_example():
    grades = np.array([0, 0, 0, 0, 1, 1, 2, 3, 4, 4])
    labels = np.array([0, 0, 0, 1, 1, 0, 2, 3, 4, 3])
    table = by_grade(grades, labels)
    assert table.loc[0, "labelled otherwise"] == pytest.approx(0.25)
    assert table.loc[1, "labels that are right"] == pytest.approx(0.5)  # labelled 1: one true 1, one true 0
    assert table.loc[4, "labelled otherwise"] == pytest.approx(0.5)
    assert oracle_scores(grades, grades) == {"accuracy": 1.0, "balanced_accuracy": 1.0, "kappa": 1.0}
    assert oracle_scores(grades, labels)["accuracy"] == pytest.approx(0.7)


def test_the_generators_noise_is_uneven_and_caps_every_model():
    specs = sample_specs(SyntheticConfig(n_patients=2000, label_noise=0.1))
    grades, labels = np.array([s.grade for s in specs]), np.array([s.label for s in specs])
    assert (grades != labels).mean() == pytest.approx(0.1, abs=0.02)
    table = by_grade(grades, labels)
    assert table.loc[1, "labelled otherwise"] > 3 * table.loc[0, "labelled otherwise"]
    assert oracle_scores(grades, labels)["balanced_accuracy"] < 0.85
