"""How a finding becomes a verdict: estimates with intervals, margins and the three-way rule, in one place.

Every finding of the conclusions page is one or more *comparisons*: a difference between two
configurations (treatment minus reference) of one measure on the same test images, e.g. the
kappa of SMOTE minus the kappa of cross-entropy. The rules below are fixed before any result is
seen, and they are the same for every params file (synthetic demo, real EyePACS, full scale).

Estimate. Each configuration is trained with the params' seeds (``params.seeds``); seed k of the
treatment is paired with seed k of the reference (a fine-tuned run starts from the same seed's
run). The estimate is the mean over seeds of the per-seed difference on all test images.

Interval (95 %). Two sources of chance move a difference: which test images were drawn and which
training seed was used. (1) A paired bootstrap over test images: the same resampled images score
both configurations (and every seed), so what the images have in common cancels, and the
percentile interval of the seed-mean difference gives the test-sampling error. (2) The spread over
seeds: the per-seed differences' standard error times Student's t with seeds - 1 degrees of
freedom (3 seeds are few, so t = 4.30 rather than 1.96). The two half-widths are added in
quadrature. This counts part of the test-sampling error twice (it is also in the per-seed
spread), so the interval errs on the wide side. With one seed the seed term is unknown: the
interval is the test sampling alone, and the comparison is inconclusive whatever it shows
(``MIN_SEEDS``), because two seeds of one configuration can differ by more than that interval.

Verdict. A claim says on which side of a *threshold* the difference lies: "higher" means above
+margin, "lower" below -margin, "loses under a point" above -0.01. The margin is the smallest
difference that counts as the report's effect (``MARGINS``). **Reproduced**: the whole interval
lies on the claim's side of the threshold. **Contradicted**: the whole interval lies on the other
side (the effect, if any, is smaller than what counts, or reversed). **Inconclusive**: the interval
straddles the threshold, the data cannot decide. A finding made of several comparisons is
reproduced when every one is, contradicted when any one is, inconclusive otherwise. With no true
effect a comparison is called reproduced in at most 2.5 % of runs (one tail of a 95 % interval),
and a finding needing several comparisons less often still (``tests/test_statistics.py`` checks
this by simulation).

Power. The minimum detectable difference (MDD) of a comparison is the true difference it would
call reproduced with 80 % probability: the threshold plus (1.96 + 0.84) standard errors on the
claim's side, the standard error read off the interval's width. A finding whose MDD is far beyond
the report's own difference cannot be reproduced by this run, whatever the truth.

Example::

    comparison = compare("SMOTE vs cross-entropy", "kappa", LOWER, metric_difference("kappa", labels, smote, ce))
    comparison.verdict, comparison.estimate.low, comparison.mdd
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from fundus_lib.metrics import N_CLASSES

LEVEL = 0.95  # two-sided confidence of every interval
POWER = 0.80  # the power at which the minimum detectable difference is quoted
REPEATS = 2000  # bootstrap resamples
BOOTSTRAP_SEED = 0  # the resamples are fixed: the same runs give the same interval
MIN_SEEDS = 2  # below this the spread over seeds is unknown, so no comparison is decided

#: The smallest difference that counts as the report's effect, per measure (all shares, 0-1).
#: Chosen before any result, from the report's own scale: its Table-5 rows differ by 0.01-0.04
#: in kappa and balanced accuracy, its "under a point of accuracy" is 0.01, and chapter 6
#: counts an attribution shift of one percentage point.
MARGINS = {
    "kappa": 0.02,
    "balanced_accuracy": 0.02,
    "accuracy": 0.01,
    "accuracy_drop": 0.01,
    "robust_accuracy": 0.02,
    "share": 0.01,
}

REPRODUCED, CONTRADICTED, INCONCLUSIVE, NOT_TESTED = "reproduced", "contradicted", "inconclusive", "not tested"
HIGHER, LOWER = 1, -1  # the claim's side: the difference lies above (below) the threshold

#: image indices (R, n) -> the difference on each of the R resamples, shape (R,)
Statistic = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Estimate:
    """A difference with its 95 % interval and what stands behind it."""

    mean: float
    low: float
    high: float
    n_images: int
    n_seeds: int

    @property
    def standard_error(self) -> float:
        """The interval's half-width in standard errors of a normal estimate."""
        return (self.high - self.low) / (2 * stats.norm.ppf(0.5 + LEVEL / 2))


def estimate(per_seed: Sequence[Statistic], n_images: int) -> Estimate:
    """The seed-mean of ``per_seed`` differences with its interval (module docstring).

    ``per_seed[k]`` scores seed k on resamples of the ``n_images`` test images; every seed sees
    the same resamples (the test images are shared)."""
    if n_images == 0 or not per_seed:
        return Estimate(float("nan"), float("nan"), float("nan"), n_images, len(per_seed))
    every_image = np.arange(n_images)[None]
    values = np.array([float(statistic(every_image)[0]) for statistic in per_seed])
    indices = bootstrap_indices(n_images)
    resampled = np.mean([statistic(indices) for statistic in per_seed], axis=0)
    mean = float(values.mean())
    tail = (1 - LEVEL) / 2 * 100
    low, high = np.nanpercentile(resampled, [tail, 100 - tail])
    seed_half = seed_half_width(values)
    return Estimate(mean, mean - float(np.hypot(max(mean - low, 0), seed_half)),
                    mean + float(np.hypot(max(high - mean, 0), seed_half)), n_images, len(values))


@functools.lru_cache(maxsize=8)
def bootstrap_indices(n_images: int) -> np.ndarray:
    """The fixed resamples (REPEATS, n_images) of ``n_images`` test images (read-only, made once)."""
    indices = np.random.default_rng(BOOTSTRAP_SEED).integers(0, n_images, (REPEATS, n_images), dtype=np.int32)
    indices.flags.writeable = False
    return indices


def seed_half_width(values: np.ndarray) -> float:
    """t(seeds - 1) x the standard error of the mean over seeds (0 for a single seed)."""
    if len(values) < 2:
        return 0.0
    return float(stats.t.ppf(0.5 + LEVEL / 2, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values)))


def verdict(low: float, high: float, side: int, threshold: float) -> str:
    """The three-way rule on an interval (module docstring); NOT_TESTED without an interval."""
    if np.isnan(low) or np.isnan(high):
        return NOT_TESTED
    beyond, short = (low > threshold, high < threshold) if side == HIGHER else (high < threshold, low > threshold)
    return REPRODUCED if beyond else CONTRADICTED if short else INCONCLUSIVE


def combine(verdicts: Sequence[str]) -> str:
    """A finding of several comparisons: reproduced if all are, contradicted if any is, else inconclusive."""
    tested = [item for item in verdicts if item != NOT_TESTED]
    if not tested:
        return NOT_TESTED
    if CONTRADICTED in tested:
        return CONTRADICTED
    return REPRODUCED if all(item == REPRODUCED for item in tested) and len(tested) == len(verdicts) else INCONCLUSIVE


def threshold_for(measure: str, side: int) -> float:
    """The threshold of "higher" / "lower" on ``measure``: +margin or -margin."""
    return side * MARGINS[measure]


@dataclass(frozen=True)
class Comparison:
    """One tested difference: what it compares, the claim's side and threshold, and the estimate."""

    label: str
    measure: str
    side: int
    threshold: float
    estimate: Estimate

    @property
    def verdict(self) -> str:
        """The three-way rule; inconclusive below MIN_SEEDS seeds, whose spread is then unknown."""
        result = verdict(self.estimate.low, self.estimate.high, self.side, self.threshold)
        return INCONCLUSIVE if result != NOT_TESTED and self.estimate.n_seeds < MIN_SEEDS else result

    @property
    def mdd(self) -> float:
        """The minimum detectable difference (signed, on the claim's side; module docstring)."""
        z = stats.norm.ppf(0.5 + LEVEL / 2) + stats.norm.ppf(POWER)
        return self.threshold + self.side * z * self.estimate.standard_error

    def claim(self) -> str:
        """The rule in words, e.g. ``kappa difference < -0.02``."""
        return f"{self.measure.replace('_', ' ')} difference {'>' if self.side == HIGHER else '<'} {self.threshold:+.2f}"


def compare(label: str, measure: str, side: int, per_seed: Sequence[Statistic], n_images: int,
            threshold: float | None = None) -> Comparison:
    """A comparison with the margin of ``measure`` (or an explicit ``threshold``, e.g. -0.01 for
    "loses under a point")."""
    line = threshold_for(measure, side) if threshold is None else threshold
    return Comparison(label, measure, side, line, estimate(per_seed, n_images))


# --- the statistics: metrics of resampled predictions, means of per-image values ---------------------


#: Confusion matrices of the fixed resamples, per (labels, predictions): a model's predictions
#: enter many comparisons (SMOTE's against every other row), its resampled matrices are made once.
_RESAMPLED_CONFUSIONS: dict[tuple[bytes, bytes], np.ndarray] = {}


def batch_confusions(labels: np.ndarray, predictions: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Confusion matrices (R, K, K) of the resamples ``indices`` (R, n) of one model's predictions."""
    if indices is bootstrap_indices(len(labels)):
        key = (hashlib.sha1(np.ascontiguousarray(labels)).digest(), hashlib.sha1(np.ascontiguousarray(predictions)).digest())
        if key not in _RESAMPLED_CONFUSIONS:
            if len(_RESAMPLED_CONFUSIONS) >= 256:
                _RESAMPLED_CONFUSIONS.clear()
            matrices = _confusions(labels, predictions, indices)
            matrices.flags.writeable = False
            _RESAMPLED_CONFUSIONS[key] = matrices
        return _RESAMPLED_CONFUSIONS[key]
    return _confusions(labels, predictions, indices)


def _confusions(labels: np.ndarray, predictions: np.ndarray, indices: np.ndarray) -> np.ndarray:
    count = len(indices)
    codes = labels[indices].astype(np.int64) * N_CLASSES + predictions[indices]
    codes += np.arange(count, dtype=np.int64)[:, None] * N_CLASSES**2
    return np.bincount(codes.ravel(), minlength=count * N_CLASSES**2).reshape(count, N_CLASSES, N_CLASSES)


def batch_metric(name: str, matrices: np.ndarray) -> np.ndarray:
    """accuracy, balanced_accuracy or kappa of each confusion matrix (R, K, K), as ``fundus_lib.metrics``."""
    diagonal = np.einsum("rkk->rk", matrices).astype(float)
    total = matrices.sum(axis=(1, 2)).astype(float)
    if name == "accuracy":
        return diagonal.sum(axis=1) / total
    if name == "balanced_accuracy":
        support = matrices.sum(axis=2)
        with np.errstate(invalid="ignore", divide="ignore"):
            recall = np.where(support > 0, diagonal / support, np.nan)
        return np.nanmean(recall, axis=1)
    if name == "kappa":
        grades = np.arange(N_CLASSES)
        weights = (grades[:, None] - grades[None, :]) ** 2 / (N_CLASSES - 1) ** 2
        expected = np.einsum("ri,rj->rij", matrices.sum(axis=2), matrices.sum(axis=1)) / total[:, None, None]
        denominator = (weights * expected).sum(axis=(1, 2))
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(denominator > 0, 1 - (weights * matrices).sum(axis=(1, 2)) / denominator, np.nan)
    raise ValueError(f"unknown metric {name!r}")


def metric_difference(name: str, labels: np.ndarray, treatment: np.ndarray, reference: np.ndarray) -> Statistic:
    """metric(treatment) - metric(reference) on resampled test images (predictions of one seed each)."""
    def statistic(indices: np.ndarray) -> np.ndarray:
        return (batch_metric(name, batch_confusions(labels, treatment, indices))
                - batch_metric(name, batch_confusions(labels, reference, indices)))
    return statistic


def mean_difference(treatment: np.ndarray, reference: np.ndarray) -> Statistic:
    """The mean over resampled images of a per-image value (a 0/1 outcome, a share), treatment - reference."""
    difference = np.asarray(treatment, dtype=float) - np.asarray(reference, dtype=float)
    return lambda indices: difference[indices].mean(axis=1)


def median_ratio(treatment: np.ndarray, reference: np.ndarray) -> Statistic:
    """median(treatment) / median(reference) over resampled images (paired: the same images for both)."""
    treatment, reference = np.asarray(treatment, dtype=float), np.asarray(reference, dtype=float)
    return lambda indices: np.median(treatment[indices], axis=1) / np.median(reference[indices], axis=1)


def seed_summary(values: Sequence[float]) -> tuple[float, float, float]:
    """(mean, low, high) over seeds for a table cell: the mean with its t interval (the
    spread of the seeds only; the findings' intervals add the test sampling)."""
    values = np.asarray(values, dtype=float)
    half = seed_half_width(values)
    return float(values.mean()), float(values.mean() - half), float(values.mean() + half)


def per_grade(labels: np.ndarray) -> str:
    """Images per grade, e.g. ``2508/224/514/80/74``."""
    return "/".join(str(count) for count in np.bincount(np.asarray(labels, dtype=np.int64), minlength=N_CLASSES))
