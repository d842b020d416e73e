"""The report's findings, checked against this run: the book's conclusions page.

Each finding is a claim of the report written as one or more comparisons between configurations
(treatment minus reference, on the same test images), judged by the rules of
:mod:`fundus_lib.statistics`: an estimate over the params' seeds with a 95 % interval (the
image-bootstrap variance plus the seed variance net of it), the images and seeds behind it, a
margin fixed in advance, and an outcome (reproduced / smaller than reported / contradicted /
inconclusive) that is never typed in. Each finding states how its comparisons combine (all, or
"most" for Table 4) and holds its family-wise false-call rate at 5 %; its MDD is where the whole
finding is reproduced with 80 % probability. The report's value of the same difference, where it
published one, stands beside ours. No row is picked and no gate is decided on the test evidence
it serves: "the best" row is chosen on the validation split, a degenerate model is recognised on
its validation predictions, and the cue's power is measured on a held-out half of the cue images.

Example::

    for finding in report_findings(params):
        print(finding.claim, finding.verdict, finding.ours)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from fundus_lib.config import Params, RunConfig
from fundus_lib.data.pipeline import FundusData
from fundus_lib.evaluation.robustness import strongest_outcomes
from fundus_lib.experiments import (
    adversarial_runs,
    balancing_runs,
    compared_baselines,
    corruption_runs,
    has_spurious_experiment,
    seeded,
    spurious_params,
)
from fundus_lib.report.numbers import report_table
from fundus_lib.runs import Run, get_run, run_data
from fundus_lib.statistics import (
    CONTRADICTED,
    HIGHER,
    INCONCLUSIVE,
    LOWER,
    MARGINS,
    NOT_TESTED,
    POWER,
    REPRODUCED,
    SMALLER,
    Comparison,
    combine,
    compare,
    detectable_distance,
    error_rule,
    family,
    gate_half,
    majority,
    mean_difference,
    metric_difference,
    per_grade,
    power_at,
)

#: A model that gives one grade to at least this share of the validation images is degenerate: it is
#: "robust" to any attack only because it barely looks at the image (attack findings leave it untested;
#: decided on validation, so that the gate never reads the test split it gates).
DEGENERATE_SHARE = 0.95

#: Chapter 6's margin: an attribution share must move by at least one percentage point.
MIN_EFFECT = MARGINS["share"]


@dataclass(frozen=True)
class Finding:
    """A claim of the report, its comparisons on this run and the report's values of the same differences."""

    section: str
    claim: str
    comparisons: tuple[Comparison, ...] = ()
    reported: tuple[float | None, ...] = ()  # the report's value of each comparison (None: not published)
    n: str = ""  # the images (per grade) and seeds behind the estimates
    note: str = ""  # why it is not tested, what was chosen on validation, what the report showed
    undecidable: tuple[str, ...] = ()  # parts measured on something that cannot show the effect, with the reason
    report_text: str = ""  # what the report published instead, where it gave no value of these differences
    needed: int | None = None  # how many comparisons must hold ("most" models); None: all

    def __post_init__(self):
        """The comparisons as one family: their bounds at the finding's error split (``statistics.family``)."""
        object.__setattr__(self, "comparisons", family(self.comparisons, self.needed))

    @property
    def verdict(self) -> str:
        """The comparisons combined (``statistics.combine``); a part that cannot discriminate counts as inconclusive."""
        verdicts = [comparison.verdict for comparison in self.comparisons] + [INCONCLUSIVE] * len(self.undecidable)
        return combine(verdicts, self.needed) if verdicts else NOT_TESTED

    @property
    def must_hold(self) -> int:
        """How many of its comparisons must be reproduced."""
        return len(self.comparisons) if self.needed is None else self.needed

    @property
    def error_rate(self) -> str:
        """How its comparisons combine and the false-call rates that holds (``statistics.error_rule``)."""
        return error_rule(len(self.comparisons), self.must_hold) if self.comparisons else "–"

    @property
    def ours(self) -> str:
        """The estimates with their intervals, one per comparison."""
        parts = [
            f"{item.label}: {item.estimate.mean:+.3f} [{item.estimate.low:+.3f}, {item.estimate.high:+.3f}]"
            for item in self.comparisons
        ]
        return "; ".join(parts + list(self.undecidable)) or "–"

    @property
    def report(self) -> str:
        values = [
            f"{item.label}: {value:+.3f}" for item, value in zip(self.comparisons, self.reported) if value is not None
        ]
        return "; ".join(values) or self.report_text or "no values published"

    @property
    def margin(self) -> str:
        return "; ".join(sorted({item.claim() for item in self.comparisons}))

    @property
    def mdd(self) -> tuple[float, ...]:
        """Per comparison, the true difference at which the whole finding is reproduced with 80 %
        probability (all comparisons the same distance beyond their thresholds; ``statistics``)."""
        distance = detectable_distance(self.comparisons, self.must_hold)
        return tuple(item.threshold + item.side * distance for item in self.comparisons)

    @property
    def mdd_text(self) -> str:
        """The MDD in words, one value per measure, e.g. ``kappa < -0.094``."""
        parts = {
            f"{item.measure.replace('_', ' ')} {'>' if item.side == HIGHER else '<'} {value:+.3f}": None
            for item, value in zip(self.comparisons, self.mdd)
        }
        return "; ".join(parts) or "–"

    def with_seeds(self, seeds: int) -> Finding:
        """The same finding had every configuration it compares trained ``seeds`` seeds on the same
        test images: a projection from this run's variance components (``Estimate.with_seeds``), for
        planning where more seeds buy power; its MDD and power, not its verdict, are meaningful."""
        return replace(self, comparisons=tuple(item.with_seeds(seeds) for item in self.comparisons))

    @property
    def power_at_report(self) -> float | None:
        """P(this run reproduces the finding) if the truth were the report's values (None where the
        report published none of some comparison)."""
        if not self.comparisons or any(value is None for value in self.reported):
            return None
        return power_at(self.comparisons, self.reported, self.must_hold)

    @property
    def below_mdd(self) -> bool:
        """The report's effect is below this run's MDD: the run had under 80 % power to see it."""
        power = self.power_at_report
        return power is not None and power < POWER


# --- a configuration's runs over seeds, on the test images --------------------------------------------------


@dataclass(frozen=True)
class Arm:
    """One configuration trained with every seed: labels and predictions on the same test images."""

    name: str
    images: np.ndarray  # (n,) image names, sorted
    labels: np.ndarray  # (n,)
    predictions: np.ndarray  # (seeds, n)
    runs: tuple[Run, ...] = field(repr=False)

    def valid_metric(self, metric: str) -> float:
        """The mean over seeds of a validation metric (for choosing a row without the test split)."""
        return float(np.mean([run.metrics("valid")[metric] for run in self.runs]))

    @property
    def top_share(self) -> float:
        """The largest share of validation images given one grade, over the seeds."""
        return max(top_share(run) for run in self.runs)


def arm(name: str, runs: Sequence[Run]) -> Arm:
    """The test predictions of ``runs`` (one per seed), aligned by image."""
    tables = [run.predictions().query("split == 'test'").sort_values("image") for run in runs]
    images = tables[0]["image"].to_numpy()
    if any(not np.array_equal(table["image"].to_numpy(), images) for table in tables):
        raise ValueError(f"the seeds of {name} were tested on different images")
    return Arm(
        name,
        images,
        tables[0]["level"].to_numpy(),
        np.stack([table["prediction"].to_numpy() for table in tables]),
        tuple(runs),
    )


def top_share(run: Run) -> float:
    """The share of validation images given the run's most frequent predicted grade (the
    degenerate-model gate: never the test split, whose evidence it gates)."""
    confusion = run.confusion("valid")
    return float(confusion.sum(axis=0).max() / max(1, confusion.sum()))


def collapsed(run: Run) -> bool:
    """Whether the run gives one grade to at least DEGENERATE_SHARE of its validation images: it has
    not learned to grade, so no table reports its numbers as a grading result."""
    return top_share(run) >= DEGENERATE_SHARE


def collapse_note(arms: dict[str, Arm]) -> str:
    """Which arms collapsed onto one grade in how many seeds ("" when none did)."""
    counts = {name: sum(collapsed(run) for run in item.runs) for name, item in arms.items()}
    parts = [f"{name} in {count} of {len(arms[name].runs)} seed(s)" for name, count in counts.items() if count]
    if not parts:
        return ""
    return (
        "collapsed onto one grade (at least "
        f"{DEGENERATE_SHARE:.0%} of the validation images): {'; '.join(parts)}; such a model has not learned to "
        "grade, so its comparison says whether the recipe learns at all, not how far a trained model falls behind"
    )


def metric_comparison(
    label: str, measure: str, side: int, treatment: Arm, reference: Arm, threshold: float | None = None
) -> Comparison:
    """``measure`` of treatment minus reference, seed k against seed k, on the same test images."""
    if not np.array_equal(treatment.images, reference.images):
        raise ValueError(f"{treatment.name} and {reference.name} were tested on different images")
    per_seed = [
        metric_difference(measure, treatment.labels, ours, theirs)
        for ours, theirs in zip(treatment.predictions, reference.predictions)
    ]
    return compare(label, measure, side, per_seed, len(treatment.labels), threshold)


def images_behind(item: Arm) -> str:
    """The n of a finding: '3400 test images (2508/224/514/80/74 per grade) × 3 seed(s)'."""
    return f"{len(item.labels)} test images ({per_grade(item.labels)} per grade) × {len(item.runs)} seed(s)"


def reported_difference(table: pd.DataFrame, treatment, reference, column: str) -> float | None:
    """The report's value of the same difference (None where a row is missing)."""
    if treatment not in table.index or reference not in table.index:
        return None
    return float(table.at[treatment, column] - table.at[reference, column])


# --- Table 4 ---------------------------------------------------------------------------------------------------


def larger_images_help(arms: dict[tuple[str, int, bool], Arm], report: pd.DataFrame) -> Finding:
    """Table 4: for most models trained at two sizes from the same weights (a count: more than half of
    them, each model with its own interval), the larger size gives a higher kappa by the margin.
    ``arms`` is keyed by (model, image size, pretrained)."""
    claim = "For most models, 512 px images give a higher kappa than 256 px"
    pairs = {}
    for model, pretrained in sorted({(model, pretrained) for model, _, pretrained in arms}):
        sizes = sorted(size for name, size, weights in arms if (name, weights) == (model, pretrained))
        if len(sizes) > 1:
            pairs[model] = (arms[model, sizes[-1], pretrained], arms[model, sizes[0], pretrained])
    two_sizes = report.groupby("model").filter(lambda rows: rows["image_size"].nunique() > 1).sort_values("image_size")
    theirs = two_sizes.groupby("model")["kappa"].agg(lambda kappas: kappas.iloc[-1] - kappas.iloc[0])
    report_text = (
        f"{int((theirs > MARGINS['kappa']).sum())} of {len(theirs)} models higher at 512 px by more than "
        f"{MARGINS['kappa']}"
    )
    if not pairs:
        return Finding(
            "Table 4", claim, note="no model is trained at two image sizes in this params file", report_text=report_text
        )
    comparisons = tuple(
        metric_comparison(f"{model}: κ(larger) − κ(smaller)", "kappa", HIGHER, large, small)
        for model, (large, small) in pairs.items()
    )
    reported = tuple(float(theirs[model]) if model in theirs.index else None for model in pairs)
    first = next(iter(pairs.values()))[0]
    return Finding(
        "Table 4",
        claim,
        comparisons,
        reported,
        images_behind(first),
        "; ".join(
            filter(
                None,
                [
                    f"'most' = {majority(len(pairs))} of {len(pairs)} model(s), each with its own interval; "
                    f"the report: {report_text}",
                    collapse_note({arm_.name: arm_ for both in pairs.values() for arm_ in both}),
                ],
            )
        ),
        report_text=report_text,
        needed=majority(len(pairs)),
    )


def transfer_helps(arms: dict[tuple[str, int, bool], Arm]) -> Finding:
    """The report's protocol (its 2.3): a model fine-tuned from ImageNet weights grades better (kappa, by
    the margin) than the same model trained from scratch for as many epochs, at every size trained both ways.
    The report published no from-scratch number, so there is no value of its own to show."""
    claim = "ImageNet weights give a higher kappa than training from scratch (the report's choice, its 2.3)"
    pairs = {
        (model, size): (arms[model, size, True], arms[model, size, False])
        for model, size, pretrained in sorted(arms)
        if pretrained and (model, size, False) in arms
    }
    report_text = "fine-tuned every model from ImageNet; no from-scratch comparison published"
    if not pairs:
        return Finding(
            "Table 4",
            claim,
            note="no model is trained both from ImageNet and from scratch in this params file",
            report_text=report_text,
        )
    comparisons = tuple(
        metric_comparison(f"{model} {size} px: κ(ImageNet) − κ(scratch)", "kappa", HIGHER, imagenet, scratch)
        for (model, size), (imagenet, scratch) in pairs.items()
    )
    named = {
        f"{model} {size} px {weights}": arm_
        for (model, size), both in pairs.items()
        for weights, arm_ in zip(("ImageNet", "from scratch"), both)
    }
    return Finding(
        "Table 4",
        claim,
        comparisons,
        (None,) * len(comparisons),
        images_behind(next(iter(pairs.values()))[0]),
        note=collapse_note(named),
        report_text=report_text,
    )


# --- Table 5 ---------------------------------------------------------------------------------------------------


def balancing_kind(config: RunConfig) -> str:
    """What a Table-5 row does, from its configuration."""
    if config.sampling == "smote":
        return "SMOTE"
    if config.sampling == "oversample":
        if config.init_from is not None:
            return "oversampling + restart"
        return "oversampling dropout=0" if config.dropout == 0 else "oversampling with dropout"
    return {
        "cross_entropy": "cross-entropy",
        "focal": "reweighted loss",
        "class_balanced": "reweighted loss",
        "inverse_frequency": "inverse frequency",
    }[config.loss]


def report_balancing_kind(method: str) -> str:
    """The same for the report's Table 5, whose rows are known by their names."""
    for prefix, kind in (
        ("cross-entropy", "cross-entropy"),
        ("focal", "reweighted loss"),
        ("class-balanced", "reweighted loss"),
        ("inverse", "inverse frequency"),
        ("oversampling dropout=0", "oversampling dropout=0"),
        ("oversampling +", "oversampling + restart"),
        ("oversampling", "oversampling with dropout"),
        ("SMOTE", "SMOTE"),
    ):
        if method.startswith(prefix) and not (prefix == "oversampling dropout=0" and method != prefix):
            return kind
    raise ValueError(f"unknown Table-5 method {method!r}")


def _of_kind(arms: dict[str, Arm], kinds: dict[str, str], kind: str) -> list[str]:
    return [name for name in arms if kinds[name] == kind]


def _first_of(names: list[str], report: pd.DataFrame, kind: str) -> tuple[str | None, str | None]:
    """Our row of a kind and the report's row of the same kind (None where absent)."""
    theirs = report.index[report["kind"] == kind]
    return (names[0] if names else None), (theirs[0] if len(theirs) else None)


def reweighting_balances(arms: dict[str, Arm], kinds: dict[str, str], report: pd.DataFrame) -> Finding:
    """The best focal / class-balanced row (chosen on validation) beats cross-entropy's balanced
    accuracy by the margin and loses under a point of accuracy."""
    claim = "A reweighted loss (focal, class-balanced) raises balanced accuracy at under a point of accuracy"
    candidates, (base, report_base) = (
        _of_kind(arms, kinds, "reweighted loss"),
        _first_of(_of_kind(arms, kinds, "cross-entropy"), report, "cross-entropy"),
    )
    if not candidates or base is None:
        return Finding("Table 5", claim, note="no cross-entropy or reweighted-loss row")
    best = max(candidates, key=lambda name: arms[name].valid_metric("balanced_accuracy"))
    report_rows = report[report["kind"] == "reweighted loss"]
    report_best = report_rows["balanced_accuracy"].idxmax()
    comparisons = (
        metric_comparison(
            f"{best} − cross-entropy, balanced accuracy", "balanced_accuracy", HIGHER, arms[best], arms[base]
        ),
        metric_comparison(
            f"{best} − cross-entropy, accuracy", "accuracy", HIGHER, arms[best], arms[base], threshold=-0.01
        ),
    )
    reported = tuple(
        reported_difference(report, report_best, report_base, column) for column in ("balanced_accuracy", "accuracy")
    )
    return Finding(
        "Table 5",
        claim,
        comparisons,
        reported,
        images_behind(arms[base]),
        f"{best} chosen as the best reweighted row on validation balanced accuracy (the report's: {report_best})",
    )


def oversampling_overfits(arms: dict[str, Arm], kinds: dict[str, str], report: pd.DataFrame) -> Finding:
    """Oversampling without dropout gives a lower kappa than cross-entropy and than every row with dropout."""
    claim = "Oversampling without dropout overfits: lower kappa than the baseline and than with dropout"
    plain, report_plain = _first_of(_of_kind(arms, kinds, "oversampling dropout=0"), report, "oversampling dropout=0")
    others = _of_kind(arms, kinds, "cross-entropy")[:1] + _of_kind(arms, kinds, "oversampling with dropout")
    if plain is None or not others:
        return Finding("Table 5", claim, note="no oversampling dropout=0 or cross-entropy row")
    comparisons = tuple(
        metric_comparison(f"dropout=0 − {other}", "kappa", LOWER, arms[plain], arms[other]) for other in others
    )
    reported = tuple(reported_difference(report, report_plain, other, "kappa") for other in others)
    return Finding("Table 5", claim, comparisons, reported, images_behind(arms[plain]))


def restart_trades_accuracy(arms: dict[str, Arm], kinds: dict[str, str], report: pd.DataFrame) -> Finding:
    """Oversampling + restart raises balanced accuracy over cross-entropy and lowers accuracy."""
    claim = "Oversampling + restart raises balanced accuracy at the cost of accuracy"
    restart, report_restart = _first_of(
        _of_kind(arms, kinds, "oversampling + restart"), report, "oversampling + restart"
    )
    base, report_base = _first_of(_of_kind(arms, kinds, "cross-entropy"), report, "cross-entropy")
    if restart is None or base is None:
        return Finding("Table 5", claim, note="no oversampling + restart or cross-entropy row")
    comparisons = (
        metric_comparison(
            "restart − cross-entropy, balanced accuracy", "balanced_accuracy", HIGHER, arms[restart], arms[base]
        ),
        metric_comparison("restart − cross-entropy, accuracy", "accuracy", LOWER, arms[restart], arms[base]),
    )
    reported = tuple(
        reported_difference(report, report_restart, report_base, column) for column in ("balanced_accuracy", "accuracy")
    )
    return Finding("Table 5", claim, comparisons, reported, images_behind(arms[base]))


def smote_is_worst(arms: dict[str, Arm], kinds: dict[str, str], report: pd.DataFrame) -> Finding:
    """SMOTE gives a lower kappa than every other row (each row tested: none is picked)."""
    claim = "SMOTE gives the lowest kappa of all methods"
    smote, report_smote = _first_of(_of_kind(arms, kinds, "SMOTE"), report, "SMOTE")
    others = [name for name in arms if kinds[name] != "SMOTE"]
    if smote is None or not others:
        return Finding("Table 5", claim, note="no SMOTE row, or no other row")
    comparisons = tuple(
        metric_comparison(f"SMOTE − {other}", "kappa", LOWER, arms[smote], arms[other]) for other in others
    )
    reported = tuple(reported_difference(report, report_smote, other, "kappa") for other in others)
    return Finding("Table 5", claim, comparisons, reported, images_behind(arms[smote]))


# --- Tables 6-8 and Figure 5 -------------------------------------------------------------------------------------


def every_level_range(
    section: str, claim: str, arms: dict[str, Arm], report: pd.DataFrame, measure: str, side: int
) -> Finding:
    """Every level-range row against the ``baseline`` row, on a metric of the test predictions."""
    if len(arms) < 2:
        return Finding(section, claim, note="no corruption-trained row")
    rows = [name for name in arms if name != "baseline"]
    comparisons = tuple(
        metric_comparison(f"{name} − baseline", measure, side, arms[name], arms["baseline"]) for name in rows
    )
    reported = tuple(reported_difference(report, name, "baseline", measure) for name in rows)
    return Finding(section, claim, comparisons, reported, images_behind(arms["baseline"]))


def per_image_comparisons(
    section: str,
    claim: str,
    values: dict[str, np.ndarray],
    reference: str,
    measure: str,
    side: int,
    reported: dict[str, float | None],
    n: str,
    note: str = "",
) -> Finding:
    """Every row's per-image values (seeds, n) against ``reference``'s, as mean differences."""
    comparisons = tuple(
        compare(
            f"{name} − {reference}",
            measure,
            side,
            [mean_difference(ours, theirs) for ours, theirs in zip(values[name], values[reference])],
            values[reference].shape[1],
        )
        for name in values
        if name != reference
    )
    return Finding(
        section, claim, comparisons, tuple(reported.get(name) for name in values if name != reference), n, note
    )


def accuracy_drops(
    arms: dict[str, Arm], corrupted: dict[str, list[pd.DataFrame]], data_images: pd.Series
) -> dict[str, np.ndarray]:
    """Per row, per seed and test image: correct on the clean image minus correct on the corrupted one."""
    drops = {}
    for name, item in arms.items():
        seeds = []
        for predictions, table in zip(item.predictions, corrupted[name]):
            table = table.assign(image=data_images.loc[table["row"]].to_numpy()).set_index("image").loc[item.images]
            corrupted_correct = table.filter(regex=r"^p\d$").to_numpy().argmax(axis=1) == item.labels
            seeds.append((predictions == item.labels).astype(float) - corrupted_correct)
        drops[name] = np.stack(seeds)
    return drops


def robust_correct(outcomes: Sequence[pd.DataFrame]) -> tuple[np.ndarray, np.ndarray]:
    """(labels (n,), per seed and attacked image the share of eps > 0 at which it stays correct (seeds, n))."""
    tables = [
        table[table["eps"] > 0].assign(correct=lambda frame: frame["attacked"] == frame["label"]) for table in outcomes
    ]
    shares = [table.groupby("row")["correct"].mean().sort_index() for table in tables]
    labels = tables[0].groupby("row")["label"].first().sort_index().to_numpy()
    if any(not share.index.equals(shares[0].index) for share in shares):
        raise ValueError("the seeds were attacked on different images")
    return labels, np.stack([share.to_numpy() for share in shares])


def attack_finding(
    section: str,
    claim: str,
    arms: dict[str, Arm],
    outcomes: dict[str, list[pd.DataFrame]],
    reference: str,
    side: int,
    report_text: str,
) -> Finding:
    """Robust accuracy (mean over the eps > 0 of the sweep) of every row against ``reference``, paired per image."""
    degenerate = [name for name, item in arms.items() if item.top_share >= DEGENERATE_SHARE]
    if degenerate:
        return Finding(
            section,
            claim,
            note=f"degenerate: {', '.join(degenerate)} give(s) one grade to at least "
            f"{DEGENERATE_SHARE:.0%} of the validation images",
            report_text=report_text,
        )
    per_image = {name: robust_correct(tables) for name, tables in outcomes.items()}
    labels = per_image[reference][0]
    n = f"{len(labels)} attacked test images ({per_grade(labels)} per grade) × {len(outcomes[reference])} seed(s)"
    finding = per_image_comparisons(
        section,
        claim,
        {name: values for name, (_, values) in per_image.items()},
        reference,
        "robust_accuracy",
        side,
        {},
        n,
        SUCCESS_NOTE,
    )
    return replace(finding, report_text=report_text)


def strongest(params: Params, data: FundusData, seeds: dict[str, list[Run]]) -> dict[str, list[pd.DataFrame]]:
    """Per row and seed the white-box worst case of chapter 5's sweep (``evaluation.robustness``)."""
    return {
        name: [strongest_outcomes(run, data, params.attacks.robustness, progress=False) for run in runs]
        for name, runs in seeds.items()
    }


SUCCESS_NOTE = (
    "judged on robust accuracy under the strongest white-box attack (per image the worst of APGD-CE and "
    "APGD-T, chapter 5's sweep), not the report's 5-step PGD; "
    "the report's success rate (shown beside) falls with clean accuracy, "
    "since a misgraded image rarely changes its grade, so a worse model looks more robust"
)


def report_success_difference(curves: pd.DataFrame) -> dict[str, float]:
    """The report's mean PGD success rate over eps > 0, each row minus the baseline (its only measure)."""
    means = curves[curves["eps"] > 0].groupby("model", sort=False)["success_rate"].mean()
    return {name: float(value - means["baseline"]) for name, value in means.items() if name != "baseline"}


# --- Chapter 6 ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Evidence:
    """A paired difference (adversarially trained minus baseline) judged against the hypothesis."""

    measure: str
    comparison: Comparison
    reason: str = ""  # why a piece that cannot discriminate counts as inconclusive

    @property
    def outcome(self) -> str:
        """The comparison's outcome; inconclusive where the measure cannot discriminate."""
        verdict = self.comparison.verdict
        return INCONCLUSIVE if self.reason and verdict != NOT_TESTED else verdict

    @property
    def word(self) -> str:
        """The outcome said of the hypothesis (``WORDS``)."""
        return WORDS[self.outcome]

    @property
    def mean(self) -> float:
        return self.comparison.estimate.mean

    @property
    def low(self) -> float:
        return self.comparison.estimate.low

    @property
    def high(self) -> float:
        return self.comparison.estimate.high


#: An outcome said of the hypothesis: "smaller than reported" is a shift short of one percentage
#: point (or none), "refutes" a shift the other way by at least that much.
WORDS = {
    REPRODUCED: "supports",
    SMALLER: "shows no shift of a point",
    CONTRADICTED: "refutes",
    INCONCLUSIVE: "inconclusive",
    NOT_TESTED: "no data",
}


def judge_difference(per_seed: Sequence[np.ndarray], more_is_support: bool, measure: str) -> Evidence:
    """Per seed pair the per-image paired differences (the same images for every pair), judged by
    the statistics rule on a share (margin MIN_EFFECT; one seed pair is inconclusive at best).
    An image with no value in some pair is left out of all of them."""
    values = np.array([np.asarray(differences, dtype=float) for differences in per_seed])
    values = values[:, ~np.isnan(values).any(axis=0)]
    comparison = compare(
        measure,
        "share",
        HIGHER if more_is_support else LOWER,
        [mean_difference(seed, np.zeros_like(seed)) for seed in values],
        values.shape[1],
    )
    return Evidence(measure, comparison)


def cannot_discriminate(evidence: Evidence, reason: str) -> Evidence:
    """The same numbers, counted as inconclusive: the measure could not have shown the effect."""
    return replace(evidence, reason=reason)


def changed_by(table: pd.DataFrame, variant: str) -> pd.Series:
    """Per image of a cue-reliance table: 1.0 where ``variant`` (e.g. "cue flipped") changed the
    prediction as generated, else 0.0."""
    return (table[variant] != table["as generated"]).astype(float)


def gate_images(table: pd.DataFrame) -> pd.DataFrame:
    """The rows of a per-image table (column ``row``) on which the cue's power is decided."""
    return table[gate_half(table["row"])]


def evidence_images(table: pd.DataFrame) -> pd.DataFrame:
    """The other rows: the cue measures that the power gate gates."""
    return table[~gate_half(table["row"])]


def cue_power(baseline_tables: Sequence[pd.DataFrame]) -> Evidence:
    """Whether the spurious-cue experiment can show anything, decided on the baseline alone (its
    cue-reliance tables, one per seed) before the adversarial model is looked at, on the gate half
    of the images (``gate_images``: the cue measures use the other half, so a baseline that flips
    often by chance does not both pass the gate and bias the evidence): flipping the cue must
    change more of its predictions than flipping the distractor (as salient, independent of the
    grade), paired over images, by more than MIN_EFFECT. ``supports`` = the test has power."""
    per_seed = [
        (changed_by(table, "cue flipped") - changed_by(table, "distractor flipped")).to_numpy()
        for table in map(gate_images, baseline_tables)
    ]
    return judge_difference(
        per_seed, True, "the baseline's predictions changed by flipping the cue, minus the distractor"
    )


def cue_evidence(params: Params, seed_runs: dict[str, list[Run]]) -> list[Evidence]:
    """The spurious-cue measures of the hypothesis over every seed pair (``seed_runs``: the cue
    experiment's runs per model, paired in order), on the evidence half of the images: fewer
    predictions changed by flipping the cue, less IG mass on it. Without power (``cue_power`` on
    the baseline's gate half) both are inconclusive."""
    from fundus_lib.evaluation.attribution import cue_attribution, cue_reliance, mass_bfloat16

    adversarial = "adversarially trained"
    data = run_data(spurious_params(params), seed_runs["baseline"][0].config, progress=False)
    tables = {name: [cue_reliance(run, data) for run in runs] for name, runs in seed_runs.items()}
    power = cue_power(tables["baseline"])
    bfloat16 = mass_bfloat16(params.runtime)

    def mass(run: Run) -> pd.Series:
        masses = evidence_images(cue_attribution(run, data, params.attribution, bfloat16))
        return masses.set_index("row")["mass_on_cue"]

    measures = {
        "share of predictions changed by flipping the cue": [
            changed_by(evidence_images(treated), "cue flipped") - changed_by(evidence_images(base), "cue flipped")
            for base, treated in zip(tables["baseline"], tables[adversarial])
        ],
        "IG mass on the cue": [
            mass(treated) - mass(base) for base, treated in zip(seed_runs["baseline"], seed_runs[adversarial])
        ],
    }
    evidence = []
    for measure, per_seed in measures.items():
        piece = judge_difference([difference.to_numpy() for difference in per_seed], False, measure)
        if power.outcome != REPRODUCED:
            piece = cannot_discriminate(
                piece,
                f"the cue has no measured power: the baseline's flips exceed the "
                f"distractor's by {power.mean:+.1%} [{power.low:+.1%}, {power.high:+.1%}]",
            )
        evidence.append(piece)
    return evidence


def as_family(evidence: list[Evidence]) -> list[Evidence]:
    """The pieces that can discriminate as one family (``statistics.family``: their bounds at the
    hypothesis's error split); the others, which make no call, as they are."""
    decided = [item for item in evidence if not item.reason and item.outcome != NOT_TESTED]
    members = iter(family([item.comparison for item in decided]))
    return [replace(item, comparison=next(members)) if item in decided else item for item in evidence]


def hypothesis_evidence(
    params: Params, seed_runs: dict[str, list[Run]], cue_runs: dict[str, list[Run]] | None = None
) -> list[Evidence]:
    """Chapter 6's test of the report's hypothesis on the baseline and adversarially trained runs
    (``seed_runs``: each model's seeds, paired in order): more IG relevance mass on lesions (with
    lesion masks; ``attribution.verdict_images`` images, every seed pair), and, with the spurious-cue
    experiment's runs (``cue_runs``, likewise), fewer predictions changed by flipping the cue and
    less IG mass on it (``cue_evidence``). Paired over images; the pieces that can discriminate
    form one family (all must hold)."""
    from fundus_lib.evaluation.attribution import mass_bfloat16, verdict_relevance_mass

    settings, adversarial = params.attribution, "adversarially trained"
    bfloat16 = mass_bfloat16(params.runtime)
    evidence = []
    data = run_data(params, seed_runs["baseline"][0].config, progress=False)
    if data.cache.masks is not None:
        per_seed = []
        for baseline, treated in zip(seed_runs["baseline"], seed_runs[adversarial]):
            masses = {
                name: verdict_relevance_mass(run, data, settings, bfloat16=bfloat16).set_index("row")["relevance_mass"]
                for name, run in (("baseline", baseline), (adversarial, treated))
            }
            per_seed.append((masses[adversarial] - masses["baseline"]).to_numpy())
        evidence.append(judge_difference(per_seed, True, "IG relevance mass on lesions"))
    if cue_runs is not None:
        evidence += cue_evidence(params, cue_runs)
    return as_family(evidence)


def overall_verdict(evidence: list[Evidence]) -> str:
    """The pieces' outcomes combined by ``statistics.combine`` (every piece must support; one that
    cannot discriminate is inconclusive), said of the hypothesis (``WORDS``); ``untested`` without data."""
    outcomes = [item.outcome for item in evidence if item.outcome != NOT_TESTED]
    return WORDS[combine(outcomes)] if outcomes else "untested"


# --- the whole report ----------------------------------------------------------------------------------------------


def report_findings(params: Params, train: bool = False, progress: bool = False) -> list[Finding]:
    """Every finding of the report that this params file can test, from the run store.

    train=False (the default) reads finished runs and fails on a missing one: the conclusions
    page summarises the chapters, it does not train. Attack and attribution results come from the
    runs' evaluation caches that the chapters filled (computed here if absent).
    """
    from fundus_lib.evaluation.corruption import corrupted_test_predictions  # imports the trainer: only when asked

    def runs_of(
        configs: dict[str, RunConfig], run_params: Params = params, section: str | None = None
    ) -> dict[str, list[Run]]:
        return {
            name: [get_run(run_params, config, train=train, progress=progress) for config in seeds]
            for name, seeds in seeded(run_params, configs, section).items()
        }

    def arms_of(configs: dict[str, RunConfig], section: str | None = None) -> dict[str, Arm]:
        return {name: arm(name, runs) for name, runs in runs_of(configs, section=section).items()}

    compared = compared_baselines(params)
    arms4 = {
        (config.model, config.image_size, config.pretrained): item
        for config, item in zip(compared.values(), arms_of(compared).values())
    }
    findings = [larger_images_help(arms4, report_table("table4")), transfer_helps(arms4)]

    configs = balancing_runs(params)
    arms5, kinds = arms_of(configs, "balancing"), {name: balancing_kind(config) for name, config in configs.items()}
    report5 = report_table("table5").set_index("method")
    report5 = report5.assign(kind=report5.index.map(report_balancing_kind))
    findings += [
        test(arms5, kinds, report5)
        for test in (reweighting_balances, oversampling_overfits, restart_trades_accuracy, smote_is_worst)
    ]

    tables = {
        table: runs_of(configs, section="corruption")
        for table, configs in corruption_runs(params).items()
        if table != "improvements"
    }
    arms6 = {name: arm(name, runs) for name, runs in tables["table6"].items()}
    findings.append(
        every_level_range(
            "Table 6",
            "Training on corrupted images lowers the clean kappa (imbalanced set)",
            arms6,
            report_table("table6").set_index("level_range"),
            "kappa",
            LOWER,
        )
    )
    findings.append(
        every_level_range(
            "Table 7",
            "On the oversampled set, corrupted images act as augmentation: higher kappa",
            {name: arm(name, runs) for name, runs in tables.get("table7", {}).items()},
            report_table("table7").set_index("level_range"),
            "kappa",
            HIGHER,
        )
    )
    data = run_data(params, tables["table6"]["baseline"][0].config, progress=False)
    settings = params.corruption
    corrupted = {
        name: [corrupted_test_predictions(run, data, settings.test_levels, settings.seed) for run in runs]
        for name, runs in tables["table6"].items()
    }
    report8 = report_table("table8").set_index("level_range")
    findings.append(
        per_image_comparisons(
            "Table 8",
            "Corruption-trained models lose less accuracy on corrupted test images",
            accuracy_drops(arms6, corrupted, data.manifest["image"]),
            "baseline",
            "accuracy_drop",
            LOWER,
            {name: reported_difference(report8, name, "baseline", "accuracy_drop") for name in arms6},
            images_behind(arms6["baseline"]),
        )
    )
    report_curves = report_table("pgd_success").assign(eps=lambda frame: frame["eps_255_normalised"] / 255)
    report_curves["model"] = report_curves["model"].str.replace("corruption-trained ", "")
    findings.append(
        attack_finding(
            "Figure 5",
            "Corruption-trained models are more vulnerable to PGD than the baseline",
            arms6,
            strongest(params, data, tables["table6"]),
            "baseline",
            LOWER,
            "mean success rate over eps, its only measure: "
            + ", ".join(
                f"{name} − baseline {value:+.3f}" for name, value in report_success_difference(report_curves).items()
            ),
        )
    )

    adversarial_seeds = runs_of(adversarial_runs(params))
    arms9 = {name: arm(name, runs) for name, runs in adversarial_seeds.items()}
    report9 = report_table("table9")
    findings.append(
        Finding(
            "Table 9",
            "Adversarial training lowers the clean kappa",
            (
                metric_comparison(
                    "adversarially trained − baseline",
                    "kappa",
                    LOWER,
                    arms9["adversarially trained"],
                    arms9["baseline"],
                ),
            ),
            (float(report9.iloc[1]["kappa"] - report9.iloc[0]["kappa"]),),
            images_behind(arms9["baseline"]),
        )
    )
    data = run_data(params, adversarial_seeds["baseline"][0].config, progress=False)
    findings.append(
        attack_finding(
            "Figure 6",
            "Adversarial training makes the model resist PGD",
            arms9,
            strongest(params, data, adversarial_seeds),
            "baseline",
            HIGHER,
            "success-rate curves drawn, no values published",
        )
    )
    findings.append(generalises_across_cameras(params, adversarial_seeds))
    cue_params = spurious_params(params)
    cue_runs = runs_of(adversarial_runs(cue_params), cue_params) if has_spurious_experiment(params) else None
    findings.append(attribution_finding(params, adversarial_seeds, cue_runs))
    return findings


def external_arm(params: Params, name: str, runs: Sequence[Run]) -> Arm:
    """The grades of the external test set (``params.data.external``) by ``runs`` (one per seed), aligned by image."""
    from fundus_lib.evaluation.grading import external_grades

    tables = [table.sort_values("image") for table in external_grades(params, dict(enumerate(runs))).values()]
    images = tables[0]["image"].to_numpy()
    if any(not np.array_equal(table["image"].to_numpy(), images) for table in tables):
        raise ValueError(f"the seeds of {name} graded different external photographs")
    return Arm(
        name,
        images,
        tables[0]["level"].to_numpy(),
        np.stack([table["grade"].to_numpy() for table in tables]),
        tuple(runs),
    )


def generalises_across_cameras(params: Params, seed_runs: dict[str, list[Run]]) -> Finding:
    """The report's hypothesis (adversarial training moves the model to robust features) has an
    external consequence: the adversarially trained model grades another camera's and population's
    photographs better than the baseline (kappa on ``data.external``, seed k against seed k, paired
    over the external photographs). The report tested on EyePACS only."""
    claim = "Adversarial training makes the model grade another camera's photographs better (external kappa)"
    report_text = "not studied: the report tested on EyePACS photographs only"
    if params.data.external is None:
        return Finding(
            "External test",
            claim,
            note="no external test set in this params file (data.external)",
            report_text=report_text,
        )
    arms = {name: external_arm(params, name, runs) for name, runs in seed_runs.items()}
    comparison = metric_comparison(
        "adversarially trained − baseline on the external set",
        "kappa",
        HIGHER,
        arms["adversarially trained"],
        arms["baseline"],
    )
    baseline = arms["baseline"]
    n = (
        f"{len(baseline.labels)} external photographs ({per_grade(baseline.labels)} per grade) × "
        f"{len(baseline.runs)} seed(s)"
    )
    return Finding("External test", claim, (comparison,), (None,), n, report_text=report_text)


def attribution_finding(
    params: Params, seed_runs: dict[str, list[Run]], cue_runs: dict[str, list[Run]] | None = None
) -> Finding:
    """Figures 7-8 from chapter 6's evidence (``hypothesis_evidence``). A piece that cannot
    discriminate makes the finding inconclusive at best, with its reason."""
    evidence = [item for item in hypothesis_evidence(params, seed_runs, cue_runs) if item.outcome != NOT_TESTED]
    undecidable = tuple(
        f"{item.measure} {item.mean:+.3f} [{item.low:+.3f}, {item.high:+.3f}] cannot discriminate: {item.reason}"
        for item in evidence
        if item.reason
    )
    comparisons = tuple(item.comparison for item in evidence if not item.reason)
    n = ", ".join(
        f"{item.measure}: {item.comparison.estimate.n_images} images × {item.comparison.estimate.n_seeds} seed pair(s)"
        for item in evidence
    )
    single = [item.measure for item in evidence if item.comparison.estimate.n_seeds < 2]
    note = (
        f"{', '.join(single)}: one seed pair, so inconclusive at best (the spread over seeds is unknown)"
        if single
        else ""
    )
    return Finding(
        "Figures 7-8",
        "Adversarial training moves attributions from non-robust features to real structures",
        comparisons,
        tuple(None for _ in comparisons),
        n,
        note,
        undecidable,
        "two pictures, no measurement",
    )
