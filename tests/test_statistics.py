"""The findings' statistics: the batch metrics agree with fundus_lib.metrics, the bootstrap with
scipy's, the outcome rule does what its docstring says, and, simulated with seed, image and
seed-by-image spreads and the true difference at each boundary, the intervals cover, every
outcome is called falsely at most at its nominal rate and every finding holds its family-wise
rate, while a rule without the seed term, with z for t or without the family split fails the same
checks (so the checks can fail)."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from scipy import stats

from fundus_lib import statistics
from fundus_lib.metrics import REPORT_METRICS, scores
from fundus_lib.statistics import CONTRADICTED, HIGHER, INCONCLUSIVE, LOWER, NOT_TESTED, REPRODUCED, SMALLER


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


def test_the_image_term_is_scipys_paired_bootstrap():
    """One seed, a mean of per-image differences: our standard error is scipy's paired bootstrap's,
    and the interval is the mean -/+ t x that standard error."""
    rng = np.random.default_rng(2)
    treatment, reference = rng.random(400) < 0.6, rng.random(400) < 0.5
    ours = statistics.estimate([statistics.mean_difference(treatment, reference)], 400)
    scipy = stats.bootstrap(
        (treatment.astype(float), reference.astype(float)),
        lambda a, b, axis: (a - b).mean(axis=axis),
        paired=True,
        method="percentile",
        n_resamples=statistics.REPEATS,
        random_state=0,
    )
    assert ours.mean == pytest.approx((treatment.astype(float) - reference).mean())
    assert ours.standard_error == pytest.approx(scipy.standard_error, rel=0.05)
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


@pytest.mark.parametrize(
    "low, high, side, threshold, expected",
    [
        (0.03, 0.08, HIGHER, 0.02, REPRODUCED),
        (-0.01, 0.01, HIGHER, 0.02, SMALLER),  # short of the margin, not reversed: absent or smaller
        (-0.015, 0.015, HIGHER, 0.02, SMALLER),
        (-0.05, -0.03, HIGHER, 0.02, CONTRADICTED),  # wholly beyond the opposite margin
        (-0.05, -0.01, HIGHER, 0.02, SMALLER),  # reversed, but not by what counts as an effect
        (0.01, 0.05, HIGHER, 0.02, INCONCLUSIVE),
        (-0.08, -0.03, LOWER, -0.02, REPRODUCED),
        (-0.01, 0.01, LOWER, -0.02, SMALLER),
        (0.03, 0.04, LOWER, -0.02, CONTRADICTED),
        (-0.04, 0.00, LOWER, -0.02, INCONCLUSIVE),
        (float("nan"), float("nan"), LOWER, -0.02, NOT_TESTED),
    ],
)
def test_the_outcome_rule(low, high, side, threshold, expected):
    assert statistics.verdict(low, high, side, threshold) == expected


def test_a_bound_is_its_own_reversal():
    """ "Loses under a point" (accuracy difference > -0.01): wholly below the bound contradicts it."""
    assert statistics.verdict(-0.04, -0.02, HIGHER, -0.01, reversal=-0.01) == CONTRADICTED
    assert statistics.verdict(-0.005, 0.01, HIGHER, -0.01, reversal=-0.01) == REPRODUCED
    assert statistics.verdict(-0.02, 0.01, HIGHER, -0.01, reversal=-0.01) == INCONCLUSIVE


def test_a_finding_combines_its_comparisons():
    combine = statistics.combine
    assert combine([REPRODUCED, REPRODUCED]) == REPRODUCED
    assert combine([REPRODUCED, INCONCLUSIVE]) == INCONCLUSIVE
    assert combine([REPRODUCED, SMALLER, INCONCLUSIVE]) == SMALLER
    assert combine([REPRODUCED, CONTRADICTED, SMALLER]) == CONTRADICTED
    assert combine([REPRODUCED, NOT_TESTED]) == INCONCLUSIVE
    assert combine([NOT_TESTED]) == NOT_TESTED
    # "most" of three: two must hold; ruled out once two are short
    assert combine([REPRODUCED, REPRODUCED, SMALLER], needed=2) == REPRODUCED
    assert combine([REPRODUCED, SMALLER, INCONCLUSIVE], needed=2) == INCONCLUSIVE
    assert combine([CONTRADICTED, SMALLER, REPRODUCED], needed=2) == SMALLER
    assert combine([CONTRADICTED, CONTRADICTED, REPRODUCED], needed=2) == CONTRADICTED
    assert statistics.majority(6) == 4 and statistics.majority(1) == 1


def test_a_clear_effect_is_reproduced_and_its_reverse_contradicted():
    rng = np.random.default_rng(4)
    labels = grades(3000, rng)
    strong = [simulated_predictions(labels, 0.9, rng) for _ in range(3)]
    weak = [simulated_predictions(labels, 0.6, rng) for _ in range(3)]
    comparison = statistics.compare(
        "strong - weak",
        "accuracy",
        HIGHER,
        [statistics.metric_difference("accuracy", labels, s, w) for s, w in zip(strong, weak)],
        len(labels),
    )
    assert comparison.verdict == REPRODUCED
    truth = np.mean([(s == labels).mean() - (w == labels).mean() for s, w in zip(strong, weak)])
    assert comparison.estimate.mean == pytest.approx(truth)
    assert comparison.estimate.low < truth < comparison.estimate.high
    assert statistics.MARGINS["accuracy"] < comparison.mdd < 0.1
    assert (
        statistics.compare(
            "weak - strong",
            "accuracy",
            HIGHER,
            [statistics.metric_difference("accuracy", labels, w, s) for s, w in zip(strong, weak)],
            len(labels),
        ).verdict
        == CONTRADICTED
    )


def null_comparison(rng: np.random.Generator, measure: str, side: int, seeds: int, n: int) -> str:
    """Two configurations with the same true accuracy; each seed its own accuracy (seed-to-seed
    spread of 3 points, as small CPU models show), each evaluated on the same test images."""
    labels = grades(n, rng)

    def seed_predictions():
        return simulated_predictions(labels, float(np.clip(rng.normal(0.7, 0.03), 0, 1)), rng)

    per_seed = [
        statistics.metric_difference(measure, labels, seed_predictions(), seed_predictions()) for _ in range(seeds)
    ]
    return statistics.compare("null", measure, side, per_seed, n).verdict


@pytest.mark.parametrize("measure", REPORT_METRICS)
@pytest.mark.parametrize("seeds", [1, 2, 3])
def test_null_two_seeds_of_one_configuration_are_not_called_different(measure, seeds, monkeypatch):
    """The null test: with no true effect, "reproduced" at most at the nominal one-tailed 2.5 %
    (checked with a binomial upper bound on 200 simulated runs per rule, both sides; 200
    resamples per interval to keep it quick). The boundary tests below put the truth at the margin."""
    monkeypatch.setattr(statistics, "REPEATS", 200)
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
    monkeypatch.setattr(statistics, "REPEATS", 200)
    rng = np.random.default_rng(5)
    labels = grades(1000, rng)
    reproduced = 0
    for _ in range(100):
        first = simulated_predictions(labels, float(rng.normal(0.7, 0.05)), rng)
        second = simulated_predictions(labels, float(rng.normal(0.7, 0.05)), rng)
        estimate = statistics.estimate([statistics.metric_difference("accuracy", labels, first, second)], len(labels))
        reproduced += statistics.verdict(estimate.low, estimate.high, HIGHER, 0.02) == REPRODUCED
    assert reproduced > 10
    single = statistics.compare(
        "one seed", "accuracy", HIGHER, [statistics.metric_difference("accuracy", labels, labels, first)], len(labels)
    )
    assert single.estimate.low > 0.02 and single.verdict == INCONCLUSIVE


def test_the_same_model_twice_is_smaller_than_reported_not_contradicted():
    rng = np.random.default_rng(6)
    labels = grades(500, rng)
    predictions = simulated_predictions(labels, 0.7, rng)
    comparison = statistics.compare(
        "same", "kappa", HIGHER, [statistics.metric_difference("kappa", labels, predictions, predictions)] * 2, 500
    )
    assert comparison.estimate.mean == 0 and comparison.estimate.low == 0 and comparison.estimate.high == 0
    assert comparison.verdict == SMALLER  # no effect at all: the claimed effect is ruled out, nothing is reversed


def test_intervals_stay_in_the_measures_range_and_widen_both_sides():
    """Seeds that disagree wildly on a share: the interval is clipped to [-1, 1] (not +105 %), and
    both sides carry the same terms (no side drops one)."""
    rng = np.random.default_rng(8)
    flips = [rng.random(300) < rate for rate in (0.95, 0.2, 0.9)]
    per_seed = [statistics.mean_difference(flip, np.zeros(300)) for flip in flips]
    wide = statistics.compare("share", "share", HIGHER, per_seed, 300).estimate
    assert -1 <= wide.low and wide.high == 1.0
    assert wide.mean - wide.low == pytest.approx(statistics.quantile(statistics.TAIL, wide.df) * wide.standard_error)


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
    monkeypatch.setattr(statistics, "REPEATS", 200)
    rng = np.random.default_rng(7 + seeds)
    verdicts = []
    for side in (HIGHER, LOWER):
        for _ in range(100):
            hardness = rng.random(300)  # shared by both configurations: the pairing matters
            per_seed = [
                statistics.mean_difference(hardness < rng.normal(0.5, 0.03), hardness < rng.normal(0.5, 0.03))
                for _ in range(seeds)
            ]
            verdicts.append(statistics.compare("null", "robust_accuracy", side, per_seed, 300).verdict)
    assert verdicts.count(REPRODUCED) <= 10


# --- boundary, coverage and family-wise simulations (vectorised: thousands of runs in about a second) -----------

#: (seed sd, image sd, seed-by-image sd) of a per-image paired difference: image-dominated, balanced,
#: and seed-dominated up to the real-data edition's seed spread of 0.05-0.1 (kappa or a share)
SPREADS = [
    (0.0, 0.3, 0.5),
    (0.02, 0.3, 0.5),
    (0.05, 0.3, 0.5),
    (0.1, 0.3, 0.5),
    (0.05, 0.1, 0.2),
    (0.1, 0.1, 0.2),
    (0.03, 0.5, 0.3),
]
N_SIMULATED, IMAGES = 3000, 200


def simulate(rng, runs: int, truths: np.ndarray, seeds: int, spreads) -> tuple[np.ndarray, np.ndarray]:
    """Per-seed differences (runs, m, seeds) of m treatment arms against one shared reference arm,
    and their covariance under image sampling (runs, m, seeds, seeds), the quantity the paired
    bootstrap estimates (its plug-in value), for true differences ``truths`` (m,)."""
    scales = np.asarray(spreads) / np.sqrt(2)  # each arm carries half of a difference's variance
    arms = len(truths) + 1
    values = (
        rng.normal(0, scales[0], (runs, arms, seeds, 1))
        + rng.normal(0, scales[1], (runs, arms, 1, IMAGES))
        + rng.normal(0, scales[2], (runs, arms, seeds, IMAGES))
    )
    differences = values[:, 1:] - values[:, :1] + np.asarray(truths)[None, :, None, None]
    means = differences.mean(axis=-1)
    centred = differences - means[..., None]
    return means, np.einsum("rmkn,rmln->rmkl", centred, centred) / IMAGES**2


@functools.cache
def null_grid(seeds: int, spreads: tuple) -> tuple[np.ndarray, np.ndarray]:
    """N_SIMULATED single comparisons with no true difference (a truth is added to the values: the
    covariance does not move), made once per grid point and shared by the tests below."""
    return simulate(
        np.random.default_rng(seeds * 100 + SPREADS.index(spreads)), N_SIMULATED, np.zeros(1), seeds, spreads
    )


def correct_rule(values, covariance):
    return statistics.variance_components(values, covariance, IMAGES)


def without_seed_term(values, covariance):
    """The broken rule: the image bootstrap alone, as if seeds did not vary."""
    return np.sqrt(covariance.mean(axis=(-2, -1))), np.full(values.shape[:-1], IMAGES - 1.0)


def z_for_t(values, covariance):
    """The broken rule: the same standard error with z in place of t."""
    return statistics.variance_components(values, covariance, IMAGES)[0], np.full(values.shape[:-1], np.inf)


BROKEN = {"seed term removed": without_seed_term, "z in place of t": z_for_t}


def outcomes(rule, values, covariance, tails, side=HIGHER, threshold=0.02) -> np.ndarray:
    """The outcome of every simulated comparison (runs, m) under ``rule``, bounds at ``tails``."""
    error, df = rule(values, covariance)
    low, high = statistics.interval(values.mean(axis=-1), error, df, *tails)
    return np.vectorize(lambda a, b: statistics.verdict(a, b, side, threshold))(low, high)


def coverage(rule, seeds: int, spreads) -> float:
    """The share of simulated 95 % intervals that hold the true difference (0)."""
    values, covariance = null_grid(seeds, spreads)
    error, df = rule(values, covariance)
    low, high = statistics.interval(values.mean(axis=-1), error, df, statistics.TAIL, statistics.TAIL)
    return float(np.mean((low <= 0) & (0 <= high)))


def lowest_coverage(rule) -> float:
    return min(coverage(rule, seeds, spreads) for seeds in (2, 3, 5) for spreads in SPREADS)


def allowed(rate: float, runs: int = N_SIMULATED) -> float:
    """The largest simulated rate compatible with a true ``rate`` (binomial 99.9 % quantile)."""
    return stats.binom.ppf(0.999, runs, rate) / runs


def test_the_interval_covers_across_the_grid_and_broken_rules_do_not():
    assert lowest_coverage(correct_rule) >= 0.93
    for name, rule in BROKEN.items():
        assert lowest_coverage(rule) < 0.93, name


@pytest.mark.parametrize(
    "rule, holds",
    [(correct_rule, True), (without_seed_term, False), (z_for_t, False)],
    ids=["correct", "seed term removed", "z in place of t"],
)
def test_each_outcome_is_false_at_most_at_its_rate_at_the_boundary(rule, holds):
    """True difference at the margin: "reproduced" (and "smaller") at most 2.5 %; at the opposite
    margin "contradicted" at most 2.5 %; at zero "contradicted" at most 2.5 %. The broken rules
    exceed the first somewhere on the grid."""
    worst = {}
    for seeds in (2, 3, 5):
        for spreads in SPREADS:
            values, covariance = null_grid(seeds, spreads)
            for truth, outcome in ((0.02, REPRODUCED), (0.02, SMALLER), (-0.02, CONTRADICTED), (0.0, CONTRADICTED)):
                called = outcomes(rule, values + truth, covariance, (statistics.TAIL, statistics.TAIL))
                rate = float(np.mean(called == outcome))
                worst[truth, outcome] = max(worst.get((truth, outcome), 0.0), rate)
    if holds:
        assert all(rate <= allowed(statistics.TAIL) for rate in worst.values()), worst
    else:
        assert worst[0.02, REPRODUCED] > allowed(statistics.TAIL), worst


def family_outcomes(count: int, split: bool, runs: int = 1500) -> np.ndarray:
    """The outcomes of simulated m-comparison findings, every true difference at the margin,
    against one shared reference arm, three seeds, the real-data seed spread."""
    values, covariance = simulate(np.random.default_rng(count), runs, np.full(count, 0.02), 3, (0.05, 0.3, 0.5))
    far = statistics.TAIL / count if split else statistics.TAIL
    called = outcomes(correct_rule, values, covariance, (statistics.TAIL, far))
    return np.array([statistics.combine(list(row)) for row in called])


@pytest.mark.parametrize("count", [2, 4, 13])
def test_every_finding_holds_its_family_wise_rate(count):
    """Table 6's four level ranges, SMOTE against 13 rows: the finding is falsely reproduced at
    most 2.5 %, falsely ruled out at most 2.5 %, any false call at most 5 %."""
    findings = family_outcomes(count, split=True)
    reproduced, ruled_out = np.mean(findings == REPRODUCED), np.mean(np.isin(findings, (SMALLER, CONTRADICTED)))
    assert reproduced <= allowed(statistics.TAIL, len(findings))
    assert ruled_out <= allowed(statistics.TAIL, len(findings))
    assert reproduced + ruled_out <= allowed(statistics.FAMILY_ERROR, len(findings))


def test_without_the_family_split_a_large_finding_is_ruled_out_too_often():
    """The same check fails for SMOTE's 13 comparisons with every bound at 2.5 % (the old rule)."""
    findings = family_outcomes(13, split=False)
    assert np.mean(np.isin(findings, (SMALLER, CONTRADICTED))) > allowed(statistics.TAIL, len(findings))


def test_a_findings_mdd_is_where_the_finding_is_reproduced_with_80_percent():
    """The finding's MDD is beyond its comparisons' own, and at it the simulated finding is
    reproduced in about 80 % of runs (at least; the shared reference makes the formula cautious)."""
    count, runs, spreads = 4, 1500, (0.05, 0.3, 0.5)
    values, covariance = simulate(np.random.default_rng(40), runs, np.full(count, 0.02), 3, spreads)
    error, df = correct_rule(values, covariance)
    typical = float(np.sqrt(np.mean(error**2)))  # the standard error a run estimates, on average over runs
    estimates = [statistics.Estimate(0.0, 0.0, 0.0, IMAGES, 3, typical, float(np.median(df)))]
    members = statistics.family(
        [statistics.Comparison(f"c{k}", "kappa", HIGHER, 0.02, estimates[0], -0.02) for k in range(count)]
    )
    distance = statistics.detectable_distance(members, count)
    assert distance > statistics.detectable_distance(members[:1], 1)
    values, covariance = simulate(np.random.default_rng(41), runs, np.full(count, 0.02 + distance), 3, spreads)
    called = outcomes(correct_rule, values, covariance, members[0].tails)
    reproduced = np.mean([statistics.combine(list(row)) == REPRODUCED for row in called])
    assert 0.72 <= reproduced <= 0.97


def test_gates_are_decided_on_a_fixed_half():
    keys = np.arange(1000)
    half = statistics.gate_half(keys)
    assert 400 < half.sum() < 600 and np.array_equal(half, statistics.gate_half(keys))


def test_a_mean_interval_matches_scipys_percentile_bootstrap_and_covers_the_mean():
    """statistics.mean_interval against scipy.stats.bootstrap (percentile method): the same interval
    up to resampling noise; over 400 samples of a skewed score the interval covers the true mean
    about 95 % of the time; nan scores are left out, none gives nan; the same values, the same interval."""
    values = np.random.default_rng(1).normal(0.3, 0.1, 200)
    mean, low, high = statistics.mean_interval(values)
    reference = stats.bootstrap(
        (values,),
        np.mean,
        confidence_level=0.95,
        method="percentile",
        n_resamples=20000,
        random_state=np.random.default_rng(2),
    ).confidence_interval
    assert mean == pytest.approx(values.mean()) and low < mean < high
    assert (low, high) == pytest.approx((reference.low, reference.high), abs=0.002)
    assert statistics.mean_interval(values) == (mean, low, high)
    assert statistics.mean_interval(np.append(values, np.nan)) == (mean, low, high)
    assert np.isnan(statistics.mean_interval([np.nan])).all()
    rng = np.random.default_rng(3)
    covered = [
        low <= 1.0 <= high for low, high in (statistics.mean_interval(rng.exponential(1.0, 60))[1:] for _ in range(400))
    ]
    assert 0.90 <= np.mean(covered) <= 0.985


def test_wholly_above_is_false_at_most_at_the_tail_rate_when_the_truth_is_the_threshold():
    rng = np.random.default_rng(4)
    calls = [statistics.wholly_above(statistics.mean_interval(rng.normal(0.0, 1.0, 80))[1]) for _ in range(600)]
    assert np.mean(calls) <= statistics.TAIL + 0.02
    assert (
        statistics.wholly_above(0.01) and not statistics.wholly_above(0.0) and not statistics.wholly_above(-0.2, -0.1)
    )


def test_resampled_intervals_agree_with_mean_interval_and_take_several_measures():
    values = np.random.default_rng(5).normal(0.0, 1.0, 150)
    low, high = statistics.resampled_intervals(len(values), lambda draw: [values[draw].mean(), values[draw].max()])
    assert (low[0], high[0]) == pytest.approx(statistics.mean_interval(values)[1:])
    assert low[1] <= values.max() == high[1]
    with pytest.raises(ValueError, match="at least one item"):
        statistics.resampled_intervals(0, lambda draw: [0.0])


def test_failing_methods_marks_a_method_that_fails_the_cascade_for_any_model_and_none_when_unjudged():
    import pandas as pd

    def cascade(*correlations):  # one method's randomisation check, layer by layer
        return pd.DataFrame({"layers": range(1, len(correlations) + 1), "rank_correlation": correlations})

    ends = [  # (method, model, passes) at the end of each cascade
        ("saliency", "baseline", statistics.passes_randomisation(cascade(0.9, 0.2))),
        ("saliency", "adversarially trained", statistics.passes_randomisation(cascade(0.8, 0.7))),
        ("grad-cam", "baseline", statistics.passes_randomisation(cascade(0.9, statistics.RANDOMISATION_PASS))),
        ("grad-cam", "adversarially trained", statistics.passes_randomisation(cascade(0.6, 0.1))),
        ("integrated gradients", "baseline", statistics.passes_randomisation(cascade(0.7, 0.3))),
        ("integrated gradients", "adversarially trained", statistics.passes_randomisation(cascade(0.5, 0.0))),
    ]
    methods, _, passes = zip(*ends)
    failing = statistics.failing_methods(methods, passes)
    assert failing == {"saliency", "grad-cam"}  # each fails for one model only; at the threshold is a failure
    assert failing == {method for method, _, passed in ends if not passed}
    assert statistics.failing_methods(methods, passes, judged=False) == set()  # a shortened cascade marks none
    assert statistics.failing_methods(methods, [True] * len(methods)) == set()
    with pytest.raises(ValueError):
        statistics.failing_methods(methods, passes[:-1])


def test_wilson_share_matches_the_closed_form_and_handles_no_images():
    hits = np.array([True] * 7 + [False] * 13)
    row = statistics.wilson_share(hits)
    n, share, z = 20, 7 / 20, stats.norm.isf(0.025)  # Wilson (1927): centre and half-width in closed form
    centre = (share + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z / (1 + z**2 / n) * np.sqrt(share * (1 - share) / n + z**2 / (4 * n**2))
    assert row["images"] == n and row["share"] == pytest.approx(share)
    assert (row["low"], row["high"]) == pytest.approx((centre - half, centre + half), abs=1e-9)
    assert 0 < statistics.wilson_share([True] * 5)["low"] < 1 == statistics.wilson_share([True] * 5)["high"]
    empty = statistics.wilson_share([])
    assert empty["images"] == 0 and np.isnan(empty["share"]) and np.isnan(empty["low"])


def test_decision_outcome_checks_degenerate_then_convergence_then_the_interval():
    def ratio(low, high):
        return statistics.Estimate(mean=(low + high) / 2, low=low, high=high, n_images=8, n_seeds=1)

    assert statistics.decision_outcome(ratio(1.2, 2.0), [], []) == "larger"
    assert statistics.decision_outcome(ratio(0.3, 0.9), [], []) == "smaller"
    assert statistics.decision_outcome(ratio(0.8, 1.3), [], []) == "no difference"
    assert statistics.decision_outcome(ratio(1.0, 1.3), [], []) == "no difference"  # touching 1 is not beyond it
    assert statistics.decision_outcome(ratio(1.2, 2.0), ["baseline"], []) == "unconverged"
    assert statistics.decision_outcome(ratio(1.2, 2.0), ["baseline"], ["baseline"]) == "degenerate"
    assert set(statistics.DECISION_OUTCOMES) >= {"larger", "smaller", "no difference", "unconverged", "degenerate"}


def test_little_influence_is_symmetric_and_strict_at_its_threshold():
    limit = statistics.LITTLE_INFLUENCE
    assert statistics.little_influence(0.0) and statistics.little_influence(-limit / 2)
    assert not statistics.little_influence(limit) and not statistics.little_influence(-limit - 0.01)


def test_a_projection_to_the_runs_own_seeds_is_the_estimate_itself():
    rng = np.random.default_rng(7)
    labels = grades(400, rng)
    per_seed = [
        statistics.metric_difference(
            "kappa", labels, simulated_predictions(labels, 0.8, rng), simulated_predictions(labels, 0.7, rng)
        )
        for _ in range(3)
    ]
    estimate = statistics.estimate(per_seed, len(labels), statistics.RANGES["kappa"])
    same = estimate.with_seeds(3)
    assert (same.standard_error, same.df, same.low, same.high) == pytest.approx(
        (estimate.standard_error, estimate.df, estimate.low, estimate.high)
    )
    more = [estimate.with_seeds(count).standard_error for count in (5, 10, 100)]
    assert more == sorted(more, reverse=True) and more[-1] > np.sqrt(estimate.common)
    with pytest.raises(ValueError, match="at least 2 seeds"):
        estimate.with_seeds(1)


def test_without_image_noise_the_projection_is_the_standard_error_of_more_seeds():
    values = np.array([0.05, 0.11, -0.02, 0.07])
    seed_stage, within, common = statistics.seed_stage_components(values, np.zeros((4, 4)))
    error, _ = statistics.seed_mean_error(seed_stage, common, 9, 1000)
    assert within == common == 0
    assert error == pytest.approx(stats.sem(values) * np.sqrt(4 / 9))


def test_the_projected_variance_matches_the_variance_at_that_many_seeds():
    """Projected from 3 seeds to 8, the seed mean's variance is on average what the rule computes
    from 8 seeds of the same configurations (the components are unbiased but for the floor)."""
    spreads = (0.05, 0.3, 0.5)
    values, covariance = simulate(np.random.default_rng(50), 4000, np.zeros(1), 3, spreads)
    seed_stage, _, common = statistics.seed_stage_components(values, covariance)
    projected, _ = statistics.seed_mean_error(seed_stage, common, 8, IMAGES)
    values, covariance = simulate(np.random.default_rng(51), 4000, np.zeros(1), 8, spreads)
    actual, _ = correct_rule(values, covariance)
    assert np.mean(projected**2) == pytest.approx(np.mean(actual**2), rel=0.1)


def test_the_image_share_tells_whether_images_or_seeds_set_the_width():
    rng = np.random.default_rng(8)
    labels = grades(400, rng)
    treatment, reference = simulated_predictions(labels, 0.8, rng), simulated_predictions(labels, 0.7, rng)
    same = statistics.metric_difference("accuracy", labels, treatment, reference)
    assert statistics.estimate([same] * 3, len(labels)).image_share == pytest.approx(1.0)  # seeds agree
    seed_stage, within, common = statistics.seed_stage_components(np.array([0.1, 0.3, 0.2]), np.zeros((3, 3)))
    share = statistics.Estimate(0.2, 0, 0, 400, 3, seed_stage=seed_stage, common=common, within=within).image_share
    assert share == 0.0  # no image noise: only seeds
