"""Metrics against scikit-learn, on random and edge-case inputs."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sklearn.metrics import balanced_accuracy_score, cohen_kappa_score, confusion_matrix

from fundus_lib.metrics import confusion, row_normalised, scores

grades = st.lists(st.tuples(st.integers(0, 4), st.integers(0, 4)), min_size=1, max_size=300)


def sklearn_scores(y_true, y_pred):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            "accuracy": float(np.mean(np.asarray(y_true) == np.asarray(y_pred))),
            "balanced_accuracy": balanced_accuracy_score(y_true, y_pred),
            "kappa": cohen_kappa_score(y_true, y_pred, weights="quadratic", labels=list(range(5))),
        }


def assert_same(ours, reference):
    for key, value in reference.items():
        if np.isnan(value):
            assert np.isnan(ours[key]), key
        else:
            assert ours[key] == pytest.approx(value, abs=1e-12), key


@given(grades)
def test_random_inputs_match_sklearn(pairs):
    y_true, y_pred = map(list, zip(*pairs))
    assert_same(scores(y_true, y_pred), sklearn_scores(y_true, y_pred))
    assert np.array_equal(confusion(y_true, y_pred), confusion_matrix(y_true, y_pred, labels=range(5)))


@pytest.mark.parametrize(
    "y_true, y_pred",
    [
        ([0, 0, 0, 0], [0, 0, 0, 0]),  # one class only, all right: kappa undefined
        ([0, 0, 0, 0], [1, 2, 0, 0]),  # one class in y_true
        ([2, 2, 2], [0, 0, 0]),  # one class each, all wrong
        ([0, 1, 2, 3], [0, 1, 2, 3]),  # perfect, grade 4 empty
        ([0, 1, 3, 3, 1], [1, 1, 3, 0, 4]),  # grade 2 and 4 absent from y_true
        ([4, 4, 0, 0], [0, 0, 4, 4]),  # maximally wrong
    ],
)
def test_edge_cases_match_sklearn(y_true, y_pred):
    assert_same(scores(y_true, y_pred), sklearn_scores(y_true, y_pred))


def test_perfect_and_constant_predictions():
    y = np.array([0] * 70 + [1] * 7 + [2] * 15 + [3] * 5 + [4] * 3)
    assert scores(y, y) == {"accuracy": 1.0, "balanced_accuracy": 1.0, "kappa": 1.0}
    lazy = scores(y, np.zeros_like(y))  # the "lazy" model of the report
    assert lazy["accuracy"] == pytest.approx(0.7) and lazy["balanced_accuracy"] == pytest.approx(0.2)
    assert lazy["kappa"] == 0.0


def test_empty_input_is_nan():
    assert all(np.isnan(value) for value in scores([], []).values())


def test_bad_input_is_an_error():
    with pytest.raises(ValueError, match="outside 0-4"):
        scores([0, 5], [0, 0])
    with pytest.raises(ValueError, match="differ in shape"):
        scores([0, 1], [0])


def test_row_normalised_rows_sum_to_one_or_zero():
    matrix = confusion([0, 0, 1, 3], [0, 1, 1, 2])
    rows = row_normalised(matrix).sum(axis=1)
    assert np.allclose(rows, [1, 1, 0, 1, 0])
