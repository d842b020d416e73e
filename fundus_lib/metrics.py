"""Classification metrics of the report: accuracy, balanced accuracy, quadratic weighted kappa and
the confusion matrix, for grades 0-4. All are computed from the confusion matrix, so they agree
with each other by construction; the tests cross-check them against scikit-learn.

Example::

    scores(y_true, y_pred)   # {'accuracy': ..., 'balanced_accuracy': ..., 'kappa': ...}
"""

from __future__ import annotations

import numpy as np

N_CLASSES = 5

#: The three measures of the report's tables, in its column order.
REPORT_METRICS = ("accuracy", "balanced_accuracy", "kappa")


def confusion(y_true, y_pred, n_classes: int = N_CLASSES) -> np.ndarray:
    """int64 (n_classes, n_classes): rows = true grade, columns = predicted grade."""
    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true and y_pred differ in shape: {y_true.shape} vs {y_pred.shape}")
    for name, values in (("y_true", y_true), ("y_pred", y_pred)):
        if values.size and (values.min() < 0 or values.max() >= n_classes):
            raise ValueError(f"{name} holds values outside 0-{n_classes - 1}")
    return np.bincount(y_true * n_classes + y_pred, minlength=n_classes**2).reshape(n_classes, n_classes)


def accuracy(matrix: np.ndarray) -> float:
    """Share of correct predictions (nan when empty)."""
    total = matrix.sum()
    return float(np.trace(matrix) / total) if total else float("nan")


def balanced_accuracy(matrix: np.ndarray) -> float:
    """Mean recall over the grades present in y_true (the report's eq. 2-3, sklearn's definition)."""
    support = matrix.sum(axis=1)
    present = support > 0
    if not present.any():
        return float("nan")
    return float(np.mean(np.diag(matrix)[present] / support[present]))


def quadratic_kappa(matrix: np.ndarray) -> float:
    """Cohen's kappa with weights (i - j)^2 / (N - 1)^2 (the report's eq. 4-5, Kaggle's metric).

    nan when undefined (both raters use one and the same grade only), as scikit-learn.
    """
    n = matrix.shape[0]
    total = matrix.sum()
    if not total:
        return float("nan")
    grades = np.arange(n)
    weights = (grades[:, None] - grades[None, :]) ** 2 / (n - 1) ** 2
    expected = np.outer(matrix.sum(axis=1), matrix.sum(axis=0)) / total
    denominator = (weights * expected).sum()
    return float(1 - (weights * matrix).sum() / denominator) if denominator else float("nan")


def scores(y_true, y_pred, n_classes: int = N_CLASSES) -> dict[str, float]:
    """accuracy, balanced_accuracy and kappa of predictions."""
    matrix = confusion(y_true, y_pred, n_classes)
    return {
        "accuracy": accuracy(matrix),
        "balanced_accuracy": balanced_accuracy(matrix),
        "kappa": quadratic_kappa(matrix),
    }


def row_normalised(matrix: np.ndarray) -> np.ndarray:
    """Each row divided by its sum (the share of each true grade predicted as each grade)."""
    support = matrix.sum(axis=1, keepdims=True)
    return np.divide(matrix, support, out=np.zeros(matrix.shape), where=support > 0)
