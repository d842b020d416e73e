"""How a finding becomes a verdict: estimates, intervals, margins, outcomes and error rates, in one place.

Every finding of the conclusions page is one or more *comparisons*: a difference between two
configurations (treatment minus reference) of one measure on the same test images, e.g. the
kappa of SMOTE minus the kappa of cross-entropy. The rules below are fixed before any result is
seen, and they are the same for every params file (synthetic demo, real EyePACS, full scale).

Estimate. Each configuration is trained with the params' seeds (``params.seeds``); seed k of the
treatment is paired with seed k of the reference (a fine-tuned run starts from the same seed's
run). The estimate is the mean over seeds of the per-seed difference on all test images.

Interval: variance components, not overlapping half-widths. Two sources of chance move a
difference: which test images were drawn and which training seeds were used. A paired bootstrap
over the test images (the same resampled images score both configurations and every seed) gives
the S x S covariance of the per-seed differences under image sampling. Its mean over all entries
is the *image variance* of the seed mean; its diagonal minus its off-diagonal part is the
*seed-by-image* variance w of one seed (two seeds disagree on which images they get right). The
per-seed differences' sample variance s2 holds the *seed variance* plus w, so the seed term is
max(s2 - w, 0) / S (floored: a negative variance is no information) and

    variance of the seed mean = max(s2 - w, 0) / S + image variance.

Adding the bootstrap half-width and a t x seed half-width in quadrature, as before, counted w
twice (simulated coverage 96-99.5 %, widths up to twice the exact one). The estimate's degrees of
freedom come from Satterthwaite's rule: the seed term's S - 1, the image term's as many as the
test images, df = (S - 1) x (variance / (u / S))^2 clipped to [S - 1, n - 1], so three seeds
whose spread dominates get t(2) = 4.30 and an image-dominated difference nearly z. Here u is the
seed stage max(s2, w) at its upper 50 % bound, max(s2, w) x (S - 1) / median of chi2(S - 1):
plugging in s2 itself gives the most degrees of freedom exactly when s2 happens to be small, and
the simulated coverage then fell to 92-93 % for two and three seeds. The interval
is mean -/+ t(df) x standard error, clipped to the measure's range (``RANGES``: a share or an
accuracy difference lies in [-1, 1], a kappa or an accuracy-drop difference in [-2, 2]); both
terms always enter both sides. With one seed the seed term is unknown: the interval is the image
term alone and the comparison is inconclusive whatever it shows (``MIN_SEEDS``).
``tests/test_statistics.py`` measures the coverage by simulation with seed, image and
seed-by-image spreads (up to 0.1, the real-data edition's seed spread) and checks that a rule
without the seed term, or with z in place of t, fails the same test.

Outcomes. A claim says on which side of a *threshold* the difference lies: "higher" means above
+margin, "lower" below -margin (``MARGINS``: the smallest difference that counts as the report's
effect); a *bound* such as "loses under a point" (above -0.01) is its own threshold.

- **reproduced**: the interval lies wholly beyond the threshold on the claim's side;
- **smaller than reported**: wholly short of the threshold but not wholly reversed: the effect is
  absent or smaller than what counts (the report's own values lie beyond the margin);
- **contradicted**: wholly beyond the *opposite* margin, -threshold: the effect goes the other way
  by at least what counts as an effect. The opposite margin, not zero, because "contradicted" is
  read as "found the opposite": a reversal of 0.002 kappa is no more an effect than a gain of
  0.002, and with zero as the line every negligible reversal would become "contradicted" as
  intervals tighten (the flaw the old rule had with "smaller" effects). For a bound the claim and
  its negation share one line: wholly on the other side of it is contradicted (e.g. the loss
  exceeds a point), and "smaller than reported" cannot occur;
- **inconclusive**: the interval straddles the threshold (or one seed, ``MIN_SEEDS``);
- **not tested**: no interval (no images, no run).

Error rates per finding. A finding of m comparisons holds when ``needed`` = k of them are
reproduced (k = m: "all", the default; Table 4's "most models": k = m // 2 + 1). Each outcome
risks one error: a false "reproduced" (the finding called when fewer than k comparisons have the
effect) needs a false call on the claim side of some comparison whose true difference is not
beyond its threshold; a false "smaller"/"contradicted" needs a false call on the far side of a
comparison that has the effect. Splitting the 5 % family-wise rate into 2.5 % per direction, each
comparison's claim-side bound sits at one-sided 2.5 % / (m - k + 1) and its far bound at
2.5 % / k (a Bonferroni split, proven in ``family``). For "all" this is the intersection-union
test: "reproduced" needs no correction (every comparison must pass its own 2.5 % test) while
"smaller"/"contradicted", which any one comparison can trigger, use 2.5 % / m. So a finding
calls "reproduced" falsely in at most 2.5 % of runs, "smaller than reported" or "contradicted"
falsely in at most 2.5 %, and makes any false call in at most 5 % (``FAMILY_ERROR``). A single
comparison's interval is the plain 95 % interval. A finding is reproduced when k comparisons are,
ruled out when m - k + 1 are short of their threshold (contradicted when that many are reversed,
smaller than reported otherwise), inconclusive in between (``combine``).

Power. A finding's minimum detectable difference (MDD) is the true difference at which the
*finding* is reproduced with 80 % probability: every comparison's true difference the same
distance beyond its threshold, each comparison reproduced with the power of its t test (a
noncentral t with the estimate's degrees of freedom beyond its claim-side quantile), at least k
of m reproduced (comparisons taken as independent; a
shared reference arm correlates them positively, which only raises the true power, so the MDD
errs large). Needing all of m comparisons at 80 % each would give about 0.8^m, so the largest of
the comparisons' own MDDs overstates the finding's power. The same formula at the report's
values is the run's power to see the report's effect: below 80 % the report's effect is below
this run's MDD, and an inconclusive outcome says nothing about the report.

Gates. A gate that decides whether evidence counts is decided on data the evidence does not use
(``gate_half``: a fixed half of the images, by a hash of their key).

Example::

    per_seed = [metric_difference("kappa", labels, smote, ce) for smote, ce in zip(smote_seeds, ce_seeds)]
    comparison = compare("SMOTE vs cross-entropy", "kappa", LOWER, per_seed, len(labels))
    comparison.verdict, comparison.estimate.low, comparison.mdd
"""

from __future__ import annotations

import functools
import hashlib
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
from scipy import optimize, stats

from fundus_lib.metrics import N_CLASSES

LEVEL = 0.95  # two-sided confidence of a single comparison's interval
TAIL = (1 - LEVEL) / 2  # one-sided error of each direction: false "reproduced", false "smaller"/"contradicted"
FAMILY_ERROR = 2 * TAIL  # the family-wise rate of any false call of a finding (module docstring)
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

#: The largest possible size of a difference of each measure: kappa lies in [-1, 1] and a per-image
#: accuracy drop in {-1, 0, 1}, so their differences lie in [-2, 2]; the others are shares in [0, 1].
RANGES = {
    "kappa": 2.0,
    "accuracy_drop": 2.0,
    "balanced_accuracy": 1.0,
    "accuracy": 1.0,
    "robust_accuracy": 1.0,
    "share": 1.0,
}

REPRODUCED, SMALLER, CONTRADICTED = "reproduced", "smaller than reported", "contradicted"
INCONCLUSIVE, NOT_TESTED = "inconclusive", "not tested"
OUTCOMES = (REPRODUCED, SMALLER, CONTRADICTED, INCONCLUSIVE, NOT_TESTED)  # in the order the page counts them
HIGHER, LOWER = 1, -1  # the claim's side: the difference lies above (below) the threshold

#: image indices (R, n) -> the difference on each of the R resamples, shape (R,)
Statistic = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Estimate:
    """A difference (in its measure's units) with its interval and what stands behind it.

    ``low``/``high`` lie ``lower_tail``/``upper_tail`` (one-sided errors) from the mean: 2.5 % each
    for a plain 95 % interval, less inside a finding of several comparisons (``family``)."""

    mean: float
    low: float
    high: float
    n_images: int
    n_seeds: int
    standard_error: float = float("nan")  # of the seed mean, image and seed terms together (module docstring)
    df: float = float("inf")  # Satterthwaite degrees of freedom of that standard error
    bound: float = float("inf")  # the interval is clipped to [-bound, +bound], the measure's range
    lower_tail: float = TAIL
    upper_tail: float = TAIL
    seed_stage: float = float("nan")  # one seed's spread, seed-by-image part included (``seed_stage_components``)
    common: float = float("nan")  # the test-image variance common to every seed
    within: float = float("nan")  # the seed-by-image variance of one seed's difference

    @property
    def image_share(self) -> float:
        """The share of the seed mean's variance that comes from test-image sampling (common to every
        seed, plus each seed's own image noise): near 1 more test images buy power, near 0 more seeds."""
        return (self.common + self.within / self.n_seeds) / (self.seed_stage / self.n_seeds + self.common)

    def with_seeds(self, seeds: int) -> Estimate:
        """The estimate's precision had the run trained ``seeds`` seeds on the same test images: the
        same mean, the standard error and df of ``seed_mean_error`` at that many seeds, from this
        run's variance components (a projection for planning; NaN where this run had fewer than
        MIN_SEEDS seeds, whose spread is unknown; a ValueError for fewer than MIN_SEEDS ``seeds``)."""
        if seeds < MIN_SEEDS:
            raise ValueError(f"a projection needs at least {MIN_SEEDS} seeds, not {seeds}")
        error, df = seed_mean_error(self.seed_stage, self.common, seeds, self.n_images)
        projected = replace(self, n_seeds=seeds, standard_error=float(error), df=float(df))
        return projected.with_tails(self.lower_tail, self.upper_tail)

    def with_tails(self, lower_tail: float, upper_tail: float) -> Estimate:
        """The same estimate with its bounds at other one-sided errors (e.g. 0.025 and 0.025 / m)."""
        low, high = interval(self.mean, self.standard_error, self.df, lower_tail, upper_tail, self.bound)
        return replace(self, low=float(low), high=float(high), lower_tail=lower_tail, upper_tail=upper_tail)


def quantile(tail, df):
    """The t(df) quantile leaving ``tail`` above it (z for infinite df); vectorised."""
    return stats.t.isf(tail, df)


def interval(mean, standard_error, df, lower_tail: float, upper_tail: float, bound: float = float("inf")):
    """mean -/+ t(df) x standard error at the given one-sided errors, clipped to [-bound, bound]
    (vectorised over the estimates; NaN without a standard error)."""
    low = mean - quantile(lower_tail, df) * standard_error
    high = mean + quantile(upper_tail, df) * standard_error
    return np.clip(low, -bound, bound), np.clip(high, -bound, bound)


def seed_stage_components(
    values: np.ndarray, image_covariance: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(seed stage max(s2, w), seed-by-image variance w, image part common to every seed) of the
    per-seed differences ``values`` (..., S) and their covariance under test-image sampling
    (..., S, S) (module docstring); the image variance of the seed mean is common + w / S."""
    seeds = values.shape[-1]
    image = image_covariance.mean(axis=(-2, -1))  # variance of the seed mean over test images
    diagonal = np.einsum("...kk->...k", image_covariance).mean(axis=-1)
    within = seeds / (seeds - 1) * (diagonal - image)  # seed-by-image variance of one seed's difference
    seed_stage = np.maximum(values.var(axis=-1, ddof=1), within)  # seed spread + w, at least w
    return seed_stage, within, image - within / seeds


def seed_mean_error(seed_stage, common, seeds: int, n_images: int) -> tuple[np.ndarray, np.ndarray]:
    """(standard error, Satterthwaite degrees of freedom) of the mean over ``seeds`` seeds, from the
    components of ``seed_stage_components``: variance seed_stage / S + common (module docstring;
    the same formula at another S is the projection ``Estimate.with_seeds`` makes)."""
    variance = seed_stage / seeds + common  # = max(s2 - w, 0) / S + image variance
    cautious = seed_stage * (seeds - 1) / stats.chi2.median(seeds - 1)  # its upper 50 % bound: see the docstring
    with np.errstate(divide="ignore", invalid="ignore"):
        df = np.where(seed_stage > 0, (seeds - 1) * (variance / (cautious / seeds)) ** 2, np.inf)
    return np.sqrt(variance), np.clip(df, seeds - 1, max(n_images - 1, seeds - 1))


def variance_components(
    values: np.ndarray, image_covariance: np.ndarray, n_images: int
) -> tuple[np.ndarray, np.ndarray]:
    """(standard error, degrees of freedom) of the seed mean of ``values`` (..., S), the per-seed
    differences, from their covariance under test-image sampling (..., S, S) (module docstring:
    seed term net of the seed-by-image variance, floored at 0, plus the image variance;
    Satterthwaite df). Vectorised over the leading axes, so that a simulation can call it once."""
    seeds = values.shape[-1]
    if seeds < MIN_SEEDS:
        image = image_covariance.mean(axis=(-2, -1))
        return np.sqrt(image), np.full(np.shape(image), max(n_images - 1, 1), dtype=float)
    seed_stage, _, common = seed_stage_components(values, image_covariance)
    return seed_mean_error(seed_stage, common, seeds, n_images)


def estimate(per_seed: Sequence[Statistic], n_images: int, bound: float = float("inf")) -> Estimate:
    """The seed-mean of ``per_seed`` differences with its 95 % interval (module docstring), clipped
    to [-bound, bound].

    ``per_seed[k]`` scores seed k on resamples of the ``n_images`` test images; every seed sees
    the same resamples (the test images are shared)."""
    if n_images == 0 or not per_seed:
        return Estimate(float("nan"), float("nan"), float("nan"), n_images, len(per_seed))
    every_image = np.arange(n_images)[None]
    values = np.array([float(statistic(every_image)[0]) for statistic in per_seed])
    resampled = np.stack([statistic(bootstrap_indices(n_images)) for statistic in per_seed])
    resampled = resampled[:, ~np.isnan(resampled).any(axis=0)]  # a resample where a metric is undefined
    covariance = np.atleast_2d(np.cov(resampled)) if resampled.shape[1] > 1 else np.full((len(values),) * 2, np.nan)
    if len(values) >= MIN_SEEDS:  # the components once: the interval and the projection both use them
        seed_stage, within, common = seed_stage_components(values, covariance)
        standard_error, df = seed_mean_error(seed_stage, common, len(values), n_images)
    else:
        seed_stage = within = common = float("nan")
        standard_error, df = variance_components(values, covariance, n_images)
    mean = float(values.mean())
    low, high = interval(mean, float(standard_error), float(df), TAIL, TAIL, bound)
    return Estimate(
        mean,
        float(low),
        float(high),
        n_images,
        len(values),
        float(standard_error),
        float(df),
        bound,
        seed_stage=float(seed_stage),
        common=float(common),
        within=float(within),
    )


def bootstrap_indices(n_images: int) -> np.ndarray:
    """The fixed resamples (REPEATS, n_images) of ``n_images`` test images (read-only, made once)."""
    return _resamples(n_images, REPEATS)


@functools.lru_cache(maxsize=8)
def _resamples(n_images: int, repeats: int) -> np.ndarray:
    indices = np.random.default_rng(BOOTSTRAP_SEED).integers(0, n_images, (repeats, n_images), dtype=np.int32)
    indices.flags.writeable = False
    return indices


def mean_interval(values) -> tuple[float, float, float]:
    """(mean, low, high): the mean of ``values`` (nan left out) with its percentile bootstrap interval
    at LEVEL over the values, on the module's fixed resamples (the same values give the same
    interval); nan for no values. For a score per image, e.g. an attribution's relevance mass."""
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    if values.size == 0:
        return float("nan"), float("nan"), float("nan")
    means = values[bootstrap_indices(values.size)].mean(axis=1)
    return float(values.mean()), float(np.quantile(means, TAIL)), float(np.quantile(means, 1 - TAIL))


def resampled_intervals(n: int, measures: Callable[[np.ndarray], Sequence[float]]) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap intervals at LEVEL of several measures of ``n`` items (e.g. accuracy and
    kappa of n graded photographs): ``measures(indices)`` gives them for the items at ``indices``,
    evaluated on the module's fixed resamples; (low, high), one value per measure."""
    if n < 1:
        raise ValueError("a bootstrap interval needs at least one item")
    draws = np.array([measures(draw) for draw in bootstrap_indices(n)], dtype=float)
    low, high = np.nanquantile(draws, [TAIL, 1 - TAIL], axis=0)
    return low, high


def wholly_above(low: float, threshold: float = 0.0) -> bool:
    """Whether an interval with lower bound ``low`` lies wholly above ``threshold`` (a one-sided
    decision, false at most TAIL of the time when the truth is at the threshold)."""
    return bool(low > threshold)


def seed_half_width(values: np.ndarray) -> float:
    """t(seeds - 1) x the standard error of the mean over seeds (0 for a single seed)."""
    if len(values) < 2:
        return 0.0
    return float(quantile(TAIL, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values)))


def verdict(low: float, high: float, side: int, threshold: float, reversal: float | None = None) -> str:
    """The outcome of an interval (module docstring): beyond ``threshold`` on the claim's ``side``
    reproduced, wholly beyond ``reversal`` (default the opposite margin, -threshold) contradicted,
    wholly short of the threshold otherwise smaller than reported, else inconclusive; NOT_TESTED
    without an interval."""
    if np.isnan(low) or np.isnan(high):
        return NOT_TESTED
    reversal = -threshold if reversal is None else reversal
    near, far = (low, high) if side == HIGHER else (high, low)  # the bound that decides "reproduced", the other
    if side * (near - threshold) > 0:
        return REPRODUCED
    if side * (far - reversal) < 0:
        return CONTRADICTED
    return SMALLER if side * (far - threshold) < 0 else INCONCLUSIVE


def majority(count: int) -> int:
    """How many of ``count`` comparisons "most" needs: more than half."""
    return count // 2 + 1


def combine(verdicts: Sequence[str], needed: int | None = None) -> str:
    """A finding's outcome from its comparisons' (module docstring): reproduced when ``needed``
    (default all) are, ruled out when so many are short of their threshold that fewer than
    ``needed`` can hold (contradicted when that many are reversed, else smaller than reported),
    inconclusive otherwise; not tested when none was."""
    if all(item == NOT_TESTED for item in verdicts):
        return NOT_TESTED
    needed = len(verdicts) if needed is None else needed
    against = len(verdicts) - needed + 1
    if sum(item == REPRODUCED for item in verdicts) >= needed:
        return REPRODUCED
    if sum(item == CONTRADICTED for item in verdicts) >= against:
        return CONTRADICTED
    return SMALLER if sum(item in (SMALLER, CONTRADICTED) for item in verdicts) >= against else INCONCLUSIVE


def threshold_for(measure: str, side: int) -> float:
    """The threshold of "higher" / "lower" on ``measure``: +margin or -margin."""
    return side * MARGINS[measure]


@dataclass(frozen=True)
class Comparison:
    """One tested difference: what it compares, the claim's side, threshold and reversal line, the
    estimate, and the finding it belongs to (``family``: its m comparisons, ``needed`` of them to hold)."""

    label: str
    measure: str
    side: int
    threshold: float
    estimate: Estimate
    reversal: float  # wholly beyond this on the other side is "contradicted": -threshold, or the bound itself
    family: int = 1
    needed: int = 1

    @property
    def tails(self) -> tuple[float, float]:
        """(lower, upper) one-sided errors of its bounds: the claim side at TAIL / (m - k + 1), the far
        side at TAIL / k (module docstring; a single comparison: 2.5 % each)."""
        claim, far = TAIL / (self.family - self.needed + 1), TAIL / self.needed
        return (claim, far) if self.side == HIGHER else (far, claim)

    @property
    def verdict(self) -> str:
        """The outcome rule; inconclusive below MIN_SEEDS seeds, whose spread is then unknown."""
        result = verdict(self.estimate.low, self.estimate.high, self.side, self.threshold, self.reversal)
        return INCONCLUSIVE if result != NOT_TESTED and self.estimate.n_seeds < MIN_SEEDS else result

    def with_seeds(self, seeds: int) -> Comparison:
        """This comparison had both configurations trained ``seeds`` seeds (``Estimate.with_seeds``)."""
        return replace(self, estimate=self.estimate.with_seeds(seeds))

    @property
    def mdd(self) -> float:
        """The minimum detectable difference of this comparison alone (signed, on the claim's side)."""
        return self.threshold + self.side * detectable_distance((replace(self, family=1, needed=1),), 1)

    def reproduced_probability(self, distance: np.ndarray) -> np.ndarray:
        """P(reproduced) if the true difference lies ``distance`` beyond the threshold on the claim's
        side: the power of its t test, a noncentral t(df) beyond the claim-side quantile."""
        claim_tail = self.tails[0] if self.side == HIGHER else self.tails[1]
        error, df = self.estimate.standard_error, self.estimate.df
        if error == 0:
            return (np.asarray(distance) > 0).astype(float)
        return stats.nct.sf(quantile(claim_tail, df), min(df, 1e6), np.asarray(distance) / error)

    def claim(self) -> str:
        """The rule in words, e.g. ``kappa difference < -0.02``."""
        return (
            f"{self.measure.replace('_', ' ')} difference {'>' if self.side == HIGHER else '<'} {self.threshold:+.2f}"
        )


def compare(
    label: str, measure: str, side: int, per_seed: Sequence[Statistic], n_images: int, threshold: float | None = None
) -> Comparison:
    """A comparison with the margin of ``measure`` (reversal: the opposite margin), or with an
    explicit bound ``threshold`` (e.g. -0.01 for "loses under a point"; reversal: the bound itself)."""
    line = threshold_for(measure, side) if threshold is None else threshold
    return Comparison(
        label, measure, side, line, estimate(per_seed, n_images, RANGES[measure]), -line if threshold is None else line
    )


def family(comparisons: Sequence[Comparison], needed: int | None = None) -> tuple[Comparison, ...]:
    """The comparisons of one finding with the bounds of its error split: with m comparisons of
    which k must hold, claim side at TAIL / (m - k + 1), far side at TAIL / k. Why this holds the
    family-wise rate: a false "reproduced" needs, when j >= m - k + 1 comparisons lack the effect,
    k - m + j false claim-side calls among those j, of probability <= j x tail / (k - m + j) (Markov
    on their count), largest at j = m - k + 1: TAIL. A false ruling-out likewise needs false far-side
    calls, of probability <= k x TAIL / k. Idempotent: a finding may re-apply it."""
    needed = len(comparisons) if needed is None else needed
    members = [replace(item, family=len(comparisons), needed=needed) for item in comparisons]
    return tuple(replace(item, estimate=item.estimate.with_tails(*item.tails)) for item in members)


def reproduced_probability(comparisons: Sequence[Comparison], distances: Sequence[float], needed: int) -> float:
    """P(at least ``needed`` comparisons reproduced) when comparison i's true difference lies
    ``distances[i]`` beyond its threshold (comparisons taken as independent: module docstring)."""
    counts = np.array([1.0])  # the distribution of how many are reproduced, one comparison at a time
    for item, distance in zip(comparisons, distances):
        p = float(item.reproduced_probability(distance))
        counts = np.append(counts * (1 - p), 0) + np.insert(counts * p, 0, 0)
    return float(counts[needed:].sum())


def detectable_distance(comparisons: Sequence[Comparison], needed: int) -> float:
    """How far beyond every threshold the true differences must lie for the finding to be
    reproduced with probability POWER (the MDD is threshold + side x this); NaN without errors."""
    errors = [item.estimate.standard_error for item in comparisons]
    if not comparisons or np.isnan(errors).any():
        return float("nan")
    far = max(errors) * (quantile(TAIL / len(comparisons), 1) + 10) + 1e-12

    def shortfall(distance: float) -> float:
        return reproduced_probability(comparisons, [distance] * len(comparisons), needed) - POWER

    return float(optimize.brentq(shortfall, 0.0, far, xtol=1e-6)) if shortfall(0.0) < 0 else 0.0


def power_at(comparisons: Sequence[Comparison], truths: Sequence[float], needed: int) -> float:
    """P(the finding is reproduced) if each comparison's true difference were ``truths[i]`` (e.g.
    the report's values): below POWER the report's effect is below this run's MDD."""
    return reproduced_probability(
        comparisons, [item.side * (truth - item.threshold) for item, truth in zip(comparisons, truths)], needed
    )


def error_rule(count: int, needed: int) -> str:
    """How a finding of ``count`` comparisons combines and what false-call rates it holds, in words."""
    if count == 1:
        return f"one comparison, 95 % interval: false call ≤ {TAIL:.1%} each way"
    combination = "all must hold" if needed == count else f"{needed} of {count} must hold"
    return (
        f"{count} comparisons, {combination}: false 'reproduced' ≤ {TAIL:.1%} (claim-side bounds at "
        f"{TAIL / (count - needed + 1):.2%}), false 'smaller'/'contradicted' ≤ {TAIL:.1%} (far bounds at "
        f"{TAIL / needed:.2%}); any false call ≤ {FAMILY_ERROR:.0%}"
    )


def gate_half(keys: Sequence) -> np.ndarray:
    """True for the fixed half of ``keys`` (image names or row numbers) on which a gate is decided;
    its evidence uses the other half, so no gate is decided on the evidence it gates."""
    return np.array([zlib.crc32(str(key).encode()) % 2 == 0 for key in keys], dtype=bool)


# --- the statistics: metrics of resampled predictions, means of per-image values ---------------------


#: Confusion matrices of the fixed resamples, per (labels, predictions): a model's predictions
#: enter many comparisons (SMOTE's against every other row), its resampled matrices are made once.
_RESAMPLED_CONFUSIONS: dict[tuple[bytes, bytes], np.ndarray] = {}


def batch_confusions(labels: np.ndarray, predictions: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Confusion matrices (R, K, K) of the resamples ``indices`` (R, n) of one model's predictions."""
    if indices is bootstrap_indices(len(labels)):
        key = (
            hashlib.sha1(np.ascontiguousarray(labels)).digest(),
            hashlib.sha1(np.ascontiguousarray(predictions)).digest(),
        )
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
        return batch_metric(name, batch_confusions(labels, treatment, indices)) - batch_metric(
            name, batch_confusions(labels, reference, indices)
        )

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


#: The name of the per-image worst case over the white-box attacks of a sweep (AutoAttack's rule:
#: an image counts as robust only if every attack fails on it).
WORST_CASE = "worst case"
#: Gradient-masking tolerance: a check fails when the white-box robust accuracy exceeds a weaker
#: attack's by more than 1 point (the issue's threshold; AutoAttack's own check flags 0.2 points).
MASKING_TOLERANCE = 0.01


#: The sweep check: at the largest eps the worst-case robust accuracy must be at most this.
ZERO_AT_LARGEST = 0.05


def sweep_failures(table: pd.DataFrame, zero_at_largest: float = ZERO_AT_LARGEST) -> list[str]:
    """What is wrong with an eps sweep (``robustness_table`` rows), per attack: robust accuracy that
    rises with eps by more than one image, or a worst case above ``zero_at_largest`` at the largest
    eps (an attack that works drives it to about 0). Empty: the sweep proves the attacks work."""
    failures = []
    for name, curve in table.sort_values("eps").groupby("attack", sort=False):
        accuracy, eps = curve["robust_accuracy"].to_numpy(), curve["eps_255"].to_numpy()
        rises = np.flatnonzero(np.diff(accuracy) > 1 / curve["n"].max() + 1e-9)
        failures += [
            f"{name}: robust accuracy rises from {accuracy[i]:.1%} at {eps[i]:g}/255 to "
            f"{accuracy[i + 1]:.1%} at {eps[i + 1]:g}/255"
            for i in rises
        ]
        if name == WORST_CASE and accuracy[-1] > zero_at_largest:
            failures.append(
                f"{name}: robust accuracy {accuracy[-1]:.1%} at the largest eps {eps[-1]:g}/255, "
                f"above {zero_at_largest:.0%}"
            )
    return failures


def masking_check(name: str, strong: float, weak: float, tolerance: float = MASKING_TOLERANCE) -> dict:
    """One gradient-masking check: the white-box (``strong``) robust accuracy must not exceed the
    ``weak`` attack's by more than ``tolerance``. Returns a row: check, white_box, other, gap, passed."""
    gap = strong - weak
    return {"check": name, "white_box": strong, "other": weak, "gap": gap, "passed": bool(gap <= tolerance + 1e-9)}


def steps_ladder_failures(accuracies: Sequence[float], tolerance: float = MASKING_TOLERANCE) -> list[int]:
    """Positions in a ladder of ever stronger attacks (more steps, more restarts) where the robust
    accuracy rises by more than ``tolerance`` over the rung before: more effort must never help the model."""
    values = np.asarray(accuracies, dtype=float)
    return [int(i) + 1 for i in np.flatnonzero(np.diff(values) > tolerance + 1e-9)]


def wilson_share(hits, confidence: float = 0.95) -> dict:
    """The share of True in ``hits`` (images) with its Wilson interval: a row with ``share``,
    ``low``, ``high`` and ``images`` (NaN share and bounds when there is no image)."""
    hits = np.asarray(hits, dtype=bool)
    if len(hits) == 0:
        return {"share": np.nan, "low": np.nan, "high": np.nan, "images": 0}
    bounds = stats.binomtest(int(hits.sum()), len(hits)).proportion_ci(confidence_level=confidence, method="wilson")
    return {"share": hits.mean(), "low": bounds.low, "high": bounds.high, "images": len(hits)}


#: The outcomes of ``decision_outcome``, in the order it checks them.
DECISION_OUTCOMES = ("degenerate", "unconverged", "larger", "smaller", "no difference")


def decision_outcome(ratio: Estimate, unconverged: Sequence[str], degenerate: Sequence[str]) -> str:
    """Judge a decision-based attack's comparison of two models by the ratio of the median L2
    perturbations it needed (treatment over reference, with its interval), in this order:
    "degenerate" when a model answers one grade for (almost) every image (a large perturbation then
    says only that it barely reads the image), "unconverged" when the attack's budget has not
    converged for a model (the sizes are upper bounds a larger budget would still lower, by
    different amounts), "larger" / "smaller" when the interval lies wholly above / below 1, and
    "no difference" otherwise."""
    if degenerate:
        return "degenerate"
    if unconverged:
        return "unconverged"
    if ratio.low > 1:
        return "larger"
    if ratio.high < 1:
        return "smaller"
    return "no difference"


#: A method passes the randomisation check when, with every layer of the model re-initialised, its
#: maps keep a median rank correlation (of absolute values, per image) below this with the
#: trained model's maps: most of their ordering then came from what the model learned. Fixed here
#: before any result is seen; Adebayo et al. (2018) read correlations near 0 as passing and
#: near 1 as "independent of the model".
RANDOMISATION_PASS = 0.5


def passes_randomisation(check: pd.DataFrame) -> bool:
    """Whether a method's ``randomisation_check`` ends (every layer re-initialised) below
    ``RANDOMISATION_PASS`` rank correlation with the trained model's maps."""
    return bool(check["rank_correlation"].iloc[-1] < RANDOMISATION_PASS)


#: A change of the grade-0 prediction share smaller than this (5 points, either way) reads as the
#: report's "little influence on balancing the decision distribution" (chapter 3's reading of the
#: re-weighted losses; the conclusions judge the findings with their intervals).
LITTLE_INFLUENCE = 0.05


def little_influence(share_change: float) -> bool:
    """Whether a change of a prediction share (in [-1, 1]) is below ``LITTLE_INFLUENCE`` either way."""
    return bool(abs(share_change) < LITTLE_INFLUENCE)


def meets_bar(kappas: Sequence[float], balanced_accuracies: Sequence[float], collapsed: Sequence[bool], bar) -> bool:
    """Whether a baseline reaches ``bar`` (``config.GradingBar``): the means over its seeds of test
    kappa and balanced accuracy at least the bar's, and no seed collapsed onto one grade."""
    return bool(
        np.mean(kappas) >= bar.kappa and np.mean(balanced_accuracies) >= bar.balanced_accuracy and not any(collapsed)
    )


def failing_methods(methods: Sequence[str], passes: Sequence[bool], judged: bool = True) -> set[str]:
    """The attribution methods a sanity check marks as failing: every method with a row (one per
    model, say) that does not pass (``passes_randomisation``, or the data-randomisation check's
    ``passes``), so a method that fails for one model is marked for all. None when the check is not
    ``judged``: a shortened randomisation cascade (``attribution.sanity_layers``) re-initialises too
    few layers to say anything, so chapter 6 marks no method on it."""
    if not judged:
        return set()
    return {method for method, passed in zip(methods, passes, strict=True) if not passed}
