"""The findings' statistics: the batch metrics agree with fundus_lib.metrics, the bootstrap with
scipy's, the three-way rule does what its docstring says, and, with no true effect, every rule
calls "reproduced" at most at the nominal rate (the null test)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from fundus_lib import statistics
from fundus_lib.metrics import REPORT_METRICS, scores
from fundus_lib.statistics import CONTRADICTED, HIGHER, INCONCLUSIVE, LOWER, NOT_TESTED, REPRODUCED


def simulated_predictions(labels: np.ndarray, accuracy: float, rng: np.random.Generator) -> np.ndarray:
    """A model right with probability ``accuracy``, otherwise off by one grade."""
    wrong = rng.random(len(labels)) > accuracy
    step = rng.choice([-1, 1], len(labels))
    return np.where(wrong, np.clip(labels + step, 0, 4), labels)


def grades(n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.choice(5, n, p=(0.735, 0.069, 0.151, 0.025, 0.020))


@pytest.mark.parametrize("metric", REPORT_METRICS)
def test_batch_metrics_agree_with_the_metrics_module(metric):
    rng = np.random.default_rng(1)
    labels = grades(300, rng)
    predictions = simulated_predictions(labels, 0.7, rng)
    indices = rng.integers(0, 300, (5, 300))
    batch = statistics.batch_metric(metric, statistics.batch_confusions(labels, predictions, indices))
    expected = [scores(labels[row], predictions[row])[metric] for row in indices]
    np.testing.assert_allclose(batch, expected)


def test_the_paired_bootstrap_matches_scipy():
    """One seed, a mean of per-image differences: our percentile interval is scipy's paired bootstrap's."""
    rng = np.random.default_rng(2)
    treatment, reference = rng.random(400) < 0.6, rng.random(400) < 0.5
    ours = statistics.estimate([statistics.mean_difference(treatment, reference)], 400)
    scipy = stats.bootstrap((treatment.astype(float), reference.astype(float)), lambda a, b, axis: (a - b).mean(axis=axis),
                            paired=True, method="percentile", n_resamples=statistics.REPEATS, random_state=0)
    assert ours.mean == pytest.approx((treatment.astype(float) - reference).mean())
    assert ours.low == pytest.approx(scipy.confidence_interval.low, abs=0.01)
    assert ours.high == pytest.approx(scipy.confidence_interval.high, abs=0.01)
    assert ours.n_seeds == 1 and ours.n_images == 400


def test_the_seed_spread_widens_the_interval():
    rng = np.random.default_rng(3)
    values = rng.random(400)
    shifts = [0.0, 0.05, -0.05]
    per_seed = [statistics.mean_difference(values + shift, values) for shift in shifts]
    wide = statistics.estimate(per_seed, 400)
    assert wide.n_seeds == 3 and wide.mean == pytest.approx(0.0)
    half = stats.t.ppf(0.975, 2) * np.std(shifts, ddof=1) / np.sqrt(3)
    assert wide.high - wide.mean == pytest.approx(half)  # the images add nothing: every pair differs by a constant


@pytest.mark.parametrize("low, high, side, threshold, expected", [
    (0.03, 0.08, HIGHER, 0.02, REPRODUCED),
    (-0.05, 0.01, HIGHER, 0.02, CONTRADICTED),
    (0.01, 0.05, HIGHER, 0.02, INCONCLUSIVE),
    (-0.08, -0.03, LOWER, -0.02, REPRODUCED),
    (-0.01, 0.04, LOWER, -0.02, CONTRADICTED),
    (-0.04, 0.00, LOWER, -0.02, INCONCLUSIVE),
    (float("nan"), float("nan"), LOWER, -0.02, NOT_TESTED),
])
def test_the_three_way_rule(low, high, side, threshold, expected):
    assert statistics.verdict(low, high, side, threshold) == expected


def test_a_finding_combines_its_comparisons():
    assert statistics.combine([REPRODUCED, REPRODUCED]) == REPRODUCED
    assert statistics.combine([REPRODUCED, INCONCLUSIVE]) == INCONCLUSIVE
    assert statistics.combine([REPRODUCED, CONTRADICTED, INCONCLUSIVE]) == CONTRADICTED
    assert statistics.combine([REPRODUCED, NOT_TESTED]) == INCONCLUSIVE
    assert statistics.combine([NOT_TESTED]) == NOT_TESTED


def test_a_clear_effect_is_reproduced_and_its_mdd_is_beyond_the_margin():
    rng = np.random.default_rng(4)
    labels = grades(3000, rng)
    strong = [simulated_predictions(labels, 0.9, rng) for _ in range(3)]
    weak = [simulated_predictions(labels, 0.6, rng) for _ in range(3)]
    comparison = statistics.compare("strong - weak", "accuracy", HIGHER,
                                    [statistics.metric_difference("accuracy", labels, s, w) for s, w in zip(strong, weak)],
                                    len(labels))
    assert comparison.verdict == REPRODUCED
    truth = np.mean([(s == labels).mean() - (w == labels).mean() for s, w in zip(strong, weak)])
    assert comparison.estimate.mean == pytest.approx(truth)
    assert comparison.estimate.low < truth < comparison.estimate.high
    assert statistics.MARGINS["accuracy"] < comparison.mdd < 0.1
    assert statistics.compare("weak - strong", "accuracy", HIGHER,
                              [statistics.metric_difference("accuracy", labels, w, s) for s, w in zip(strong, weak)],
                              len(labels)).verdict == CONTRADICTED


def null_comparison(rng: np.random.Generator, measure: str, side: int, seeds: int, n: int) -> str:
    """Two configurations with the same true accuracy; each seed its own accuracy (seed-to-seed
    spread of 3 points, as small CPU models show), each evaluated on the same test images."""
    labels = grades(n, rng)

    def seed_predictions():
        return simulated_predictions(labels, float(np.clip(rng.normal(0.7, 0.03), 0, 1)), rng)

    per_seed = [statistics.metric_difference(measure, labels, seed_predictions(), seed_predictions()) for _ in range(seeds)]
    return statistics.compare("null", measure, side, per_seed, n).verdict


@pytest.mark.parametrize("measure", REPORT_METRICS)
@pytest.mark.parametrize("seeds", [1, 2, 3])
def test_null_two_seeds_of_one_configuration_are_not_called_different(measure, seeds, monkeypatch):
    """The null test: with no true effect, "reproduced" at most at the nominal one-tailed 2.5 %
    (checked with a binomial upper bound on 200 simulated runs per rule, both sides; 500
    resamples per interval to keep it quick)."""
    monkeypatch.setattr(statistics, "REPEATS", 500)
    rng = np.random.default_rng(REPORT_METRICS.index(measure) * 10 + seeds)
    runs = 100
    verdicts = [null_comparison(rng, measure, side, seeds, 400) for side in (HIGHER, LOWER) for _ in range(runs)]
    reproduced = verdicts.count(REPRODUCED)
    # P(X >= 11) for X ~ Binomial(200, 0.025) is about 0.02: a broken rule (e.g. a sign test: 50 %) fails by far
    assert reproduced <= 10, f"{reproduced} of {len(verdicts)} null comparisons called reproduced"


def test_the_null_test_catches_a_rule_without_seed_spread(monkeypatch):
    """The same simulation, judged on one seed pair's image bootstrap alone while seeds vary
    much: such a rule calls a non-effect reproduced far too often (so the test above can fail,
    and a single seed decides nothing)."""
    monkeypatch.setattr(statistics, "REPEATS", 500)
    rng = np.random.default_rng(5)
    labels = grades(1000, rng)
    reproduced = 0
    for _ in range(100):
        first = simulated_predictions(labels, float(rng.normal(0.7, 0.05)), rng)
        second = simulated_predictions(labels, float(rng.normal(0.7, 0.05)), rng)
        estimate = statistics.estimate([statistics.metric_difference("accuracy", labels, first, second)], len(labels))
        reproduced += statistics.verdict(estimate.low, estimate.high, HIGHER, 0.02) == REPRODUCED
    assert reproduced > 10
    single = statistics.compare("one seed", "accuracy", HIGHER,
                                [statistics.metric_difference("accuracy", labels, labels, first)], len(labels))
    assert single.estimate.low > 0.02 and single.verdict == INCONCLUSIVE


def test_the_same_model_twice_is_never_different():
    rng = np.random.default_rng(6)
    labels = grades(500, rng)
    predictions = simulated_predictions(labels, 0.7, rng)
    comparison = statistics.compare("same", "kappa", HIGHER,
                                    [statistics.metric_difference("kappa", labels, predictions, predictions)] * 2, 500)
    assert comparison.estimate.mean == 0 and comparison.estimate.low == 0 and comparison.estimate.high == 0
    assert comparison.verdict == CONTRADICTED  # no effect at all: the claimed effect is ruled out


def test_seed_summary_is_the_mean_with_a_t_interval():
    mean, low, high = statistics.seed_summary([0.70, 0.72, 0.74])
    assert mean == pytest.approx(0.72)
    assert high - mean == pytest.approx(stats.t.ppf(0.975, 2) * 0.02 / np.sqrt(3))
    assert statistics.seed_summary([0.5]) == (0.5, 0.5, 0.5)
    assert statistics.per_grade(np.array([0, 0, 1, 4])) == "2/1/0/0/1"


@pytest.mark.parametrize("seeds", [1, 3])
def test_null_per_image_shares_are_not_called_different(seeds, monkeypatch):
    """The same null test for the per-image rules (robust accuracy, accuracy drop, attribution
    shares): paired 0/1 outcomes on the same images, each seed its own rate, no true difference."""
    monkeypatch.setattr(statistics, "REPEATS", 500)
    rng = np.random.default_rng(7 + seeds)
    verdicts = []
    for side in (HIGHER, LOWER):
        for _ in range(100):
            hardness = rng.random(300)  # shared by both configurations: the pairing matters
            per_seed = [statistics.mean_difference(hardness < rng.normal(0.5, 0.03), hardness < rng.normal(0.5, 0.03))
                        for _ in range(seeds)]
            verdicts.append(statistics.compare("null", "robust_accuracy", side, per_seed, 300).verdict)
    assert verdicts.count(REPRODUCED) <= 10
