"""The report's findings, checked against this run: the book's conclusions page.

Each finding is a claim of the report written as a test on a table. The same test runs on the
report's published table (its evidence) and on the table this run computes from the run store, so
a verdict is never typed in: "reproduced" when this run's numbers pass the test the report's pass,
"not reproduced" when they fail it, "not tested" when the params file has no run for it.

Example::

    for finding in report_findings(params):
        print(finding.claim, finding.verdict, finding.ours)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fundus_lib.attribution import bootstrap_interval
from fundus_lib.config import Params, RunConfig
from fundus_lib.experiments import (
    adversarial_runs,
    balancing_runs,
    baseline_runs,
    corruption_runs,
    has_spurious_experiment,
    spurious_params,
)
from fundus_lib.metrics import REPORT_METRICS
from fundus_lib.report import report_table
from fundus_lib.runs import Run, get_run, run_data

REPRODUCED, NOT_REPRODUCED, NOT_TESTED = "reproduced", "not reproduced", "not tested"

#: A model that gives one grade to at least this share of the test images is degenerate: its
#: numbers say nothing about a method (chapter 5's decision-attack verdict uses it too).
DEGENERATE_SHARE = 0.95

#: Chapter 6's rule: a paired difference counts as evidence when its 95 % bootstrap interval
#: excludes 0 and it is at least one percentage point (the measures are shares).
MIN_EFFECT = 0.01


@dataclass(frozen=True)
class Check:
    """The outcome of a claim's test on one table: whether it holds, and the numbers behind it."""

    holds: bool | None  # None: the table lacks the rows the claim needs
    evidence: str


@dataclass(frozen=True)
class Finding:
    section: str
    claim: str
    report: str  # the report's evidence (its numbers, or what it showed)
    ours: str  # this run's evidence
    verdict: str  # REPRODUCED, NOT_REPRODUCED or NOT_TESTED


def finding(section: str, claim: str, test: Callable[[pd.DataFrame], Check], report: pd.DataFrame | str,
            ours: pd.DataFrame | None) -> Finding:
    """Run ``test`` on the report's table (or take its text) and on this run's table."""
    report_check = test(report) if isinstance(report, pd.DataFrame) else Check(True, report)
    if ours is None:
        return Finding(section, claim, report_check.evidence, "no run for it in this params file", NOT_TESTED)
    our_check = test(ours)
    if our_check.holds is None:
        return Finding(section, claim, report_check.evidence, our_check.evidence, NOT_TESTED)
    return Finding(section, claim, report_check.evidence, our_check.evidence,
                   REPRODUCED if our_check.holds == report_check.holds else NOT_REPRODUCED)


def top_share(run: Run) -> float:
    """The share of test images given the run's most frequent predicted grade."""
    confusion = run.confusion("test")
    return float(confusion.sum(axis=0).max() / max(1, confusion.sum()))


def metrics_frame(runs: dict[str, Run]) -> pd.DataFrame:
    """Test accuracy, balanced accuracy, kappa and top_share per run, indexed by the runs' names."""
    return pd.DataFrame({name: {**{metric: run.metrics("test")[metric] for metric in REPORT_METRICS}, "top_share": top_share(run)}
                         for name, run in runs.items()}).T


def degenerate(rows: pd.DataFrame) -> Check | None:
    """A 'not tested' check when a model among ``rows`` is degenerate (``top_share`` column; the
    report's tables have none), else None."""
    if "top_share" not in rows:
        return None
    shares = rows.groupby("model" if "model" in rows else rows.index, sort=False)["top_share"].first()
    bad = shares[shares >= DEGENERATE_SHARE]
    if bad.empty:
        return None
    return Check(None, f"degenerate: {', '.join(map(str, bad.index))} give(s) one grade to at least "
                       f"{DEGENERATE_SHARE:.0%} of the test images")


# Table 4 ------------------------------------------------------------------------------------------

def larger_images_help(table: pd.DataFrame) -> Check:
    """Table 4: for most models trained at two sizes, the larger size gives the higher kappa."""
    pairs = []
    for model, rows in table.groupby("model"):
        if rows["image_size"].nunique() > 1:
            small, large = rows.sort_values("image_size").iloc[[0, -1]].itertuples()
            pairs.append((model, small, large))
    if not pairs:
        return Check(None, "no model is trained at two image sizes")
    better = [large.kappa > small.kappa for _, small, large in pairs]
    return Check(bool(sum(better) > len(pairs) / 2), "; ".join(
        f"{model} {small.image_size}→{large.image_size} px: κ {small.kappa:.3f}→{large.kappa:.3f}"
        for model, small, large in pairs))


# Table 5 ------------------------------------------------------------------------------------------

def balancing_kind(config: RunConfig) -> str:
    """What a Table-5 row does, from its configuration."""
    if config.sampling == "smote":
        return "SMOTE"
    if config.sampling == "oversample":
        if config.init_from is not None:
            return "oversampling + restart"
        return "oversampling dropout=0" if config.dropout == 0 else "oversampling with dropout"
    return {"cross_entropy": "cross-entropy", "focal": "reweighted loss", "class_balanced": "reweighted loss",
            "inverse_frequency": "inverse frequency"}[config.loss]


def report_balancing_kind(method: str) -> str:
    """The same for the report's Table 5, whose rows are known by their names."""
    for prefix, kind in (("cross-entropy", "cross-entropy"), ("focal", "reweighted loss"),
                         ("class-balanced", "reweighted loss"), ("inverse", "inverse frequency"),
                         ("oversampling dropout=0", "oversampling dropout=0"),
                         ("oversampling +", "oversampling + restart"), ("oversampling", "oversampling with dropout"),
                         ("SMOTE", "SMOTE")):
        if method.startswith(prefix) and not (prefix == "oversampling dropout=0" and method != prefix):
            return kind
    raise ValueError(f"unknown Table-5 method {method!r}")


def _needs(table: pd.DataFrame, *kinds: str) -> str | None:
    missing = [kind for kind in kinds if not (table["kind"] == kind).any()]
    return f"no {', '.join(missing)} row" if missing else None


def _row(table: pd.DataFrame, kind: str) -> pd.Series:
    return table[table["kind"] == kind].iloc[0]


def reweighting_balances(table: pd.DataFrame) -> Check:
    """The best focal / class-balanced row beats cross-entropy's balanced accuracy, losing < 1 point of accuracy."""
    if missing := _needs(table, "cross-entropy", "reweighted loss"):
        return Check(None, missing)
    base = _row(table, "cross-entropy")
    best = table[table["kind"] == "reweighted loss"].sort_values("balanced_accuracy").iloc[-1]
    if broken := degenerate(table.loc[[base.name, best.name]]):
        return broken
    holds = best["balanced_accuracy"] > base["balanced_accuracy"] and best["accuracy"] >= base["accuracy"] - 0.01
    return Check(bool(holds), f"{best.name}: balanced accuracy {best['balanced_accuracy']:.1%} vs {base['balanced_accuracy']:.1%}, "
                        f"accuracy {best['accuracy']:.1%} vs {base['accuracy']:.1%} (cross-entropy)")


def oversampling_overfits(table: pd.DataFrame) -> Check:
    """Oversampling without dropout gives a lower kappa than cross-entropy and than oversampling with dropout."""
    if missing := _needs(table, "cross-entropy", "oversampling dropout=0"):
        return Check(None, missing)
    if broken := degenerate(table[table["kind"].isin(["cross-entropy", "oversampling dropout=0", "oversampling with dropout"])]):
        return broken
    plain = _row(table, "oversampling dropout=0")["kappa"]
    others = {"cross-entropy": _row(table, "cross-entropy")["kappa"]}
    others |= {name: row["kappa"] for name, row in table[table["kind"] == "oversampling with dropout"].iterrows()}
    return Check(all(plain < kappa for kappa in others.values()), f"κ {plain:.3f} without dropout vs "
                 + ", ".join(f"{kappa:.3f} ({name})" for name, kappa in others.items()))


def restart_trades_accuracy(table: pd.DataFrame) -> Check:
    """Oversampling + restart raises balanced accuracy over cross-entropy and lowers accuracy."""
    if missing := _needs(table, "cross-entropy", "oversampling + restart"):
        return Check(None, missing)
    base, restart = _row(table, "cross-entropy"), _row(table, "oversampling + restart")
    if broken := degenerate(table.loc[[base.name, restart.name]]):
        return broken
    holds = restart["balanced_accuracy"] > base["balanced_accuracy"] and restart["accuracy"] < base["accuracy"]
    return Check(bool(holds), f"balanced accuracy {restart['balanced_accuracy']:.1%} vs {base['balanced_accuracy']:.1%}, "
                        f"accuracy {restart['accuracy']:.1%} vs {base['accuracy']:.1%} (cross-entropy)")


def smote_is_worst(table: pd.DataFrame) -> Check:
    """SMOTE gives the lowest kappa of all rows."""
    if missing := _needs(table, "SMOTE"):
        return Check(None, missing)
    if broken := degenerate(table):
        return broken
    smote = _row(table, "SMOTE")["kappa"]
    others = table[table["kind"] != "SMOTE"]["kappa"]
    return Check(bool(smote < others.min()), f"κ {smote:.3f} for SMOTE; the others {others.min():.3f} to {others.max():.3f}")


# Tables 6-8 and Figure 5 --------------------------------------------------------------------------

def every_level_range_against_baseline(table: pd.DataFrame, column: str, below: bool, label: str,
                                       number: str = ".3f") -> Check:
    """Whether every level-range row's ``column`` is below (or above) the ``baseline`` row's."""
    if broken := degenerate(table):
        return broken
    baseline, rows = table.at["baseline", column], table.drop(index="baseline")[column]
    holds = (rows < baseline) if below else (rows > baseline)
    return Check(bool(holds.all()), f"{label} baseline {baseline:{number}}; level ranges "
                 + ", ".join(f"{name}: {value:{number}}" for name, value in rows.items()))


def corruption_costs_clean_kappa(table: pd.DataFrame) -> Check:
    """Table 6: every corruption-trained model has a lower clean kappa than the baseline."""
    return every_level_range_against_baseline(table, "kappa", below=True, label="κ")


def corruption_helps_oversampled(table: pd.DataFrame) -> Check:
    """Table 7: on the oversampled set every corruption-trained model beats the baseline's kappa."""
    return every_level_range_against_baseline(table, "kappa", below=False, label="κ oversampled")


def corruption_training_resists_corruption(table: pd.DataFrame) -> Check:
    """Table 8: every corruption-trained model loses less accuracy on corrupted images than the baseline."""
    return every_level_range_against_baseline(table, "accuracy_drop", below=True, label="accuracy drop", number=".1%")


def mean_success(curves: pd.DataFrame) -> pd.Series:
    """Mean PGD success rate over the tested eps > 0, per model (rows: model, eps, success_rate)."""
    return curves[curves["eps"] > 0].groupby("model", sort=False)["success_rate"].mean()


def corruption_training_weakens_pgd(curves: pd.DataFrame) -> Check:
    """Figure 5: every corruption-trained model has a higher mean PGD success rate than the baseline."""
    if broken := degenerate(curves):
        return broken
    means = mean_success(curves)
    others = means.drop("baseline")
    return Check(bool((others > means["baseline"]).all()), f"mean success rate baseline {means['baseline']:.0%}; "
                 + ", ".join(f"{name}: {value:.0%}" for name, value in others.items()))


# Table 9, Figure 6 --------------------------------------------------------------------------------

def adversarial_training_costs_kappa(table: pd.DataFrame) -> Check:
    """Table 9: the adversarially trained model has a lower clean kappa than the baseline."""
    if broken := degenerate(table):
        return broken
    base, robust = table.iloc[0]["kappa"], table.iloc[1]["kappa"]
    return Check(bool(robust < base), f"κ {base:.3f} baseline vs {robust:.3f} adversarially trained")


def adversarial_training_resists_pgd(curves: pd.DataFrame) -> Check:
    """Figure 6: the adversarially trained model has a lower mean PGD success rate than the baseline."""
    if broken := degenerate(curves):
        return broken
    means = mean_success(curves)
    return Check(bool(means["adversarially trained"] < means["baseline"]),
                 f"mean success rate over eps {', '.join(f'{eps * 255:g}' for eps in sorted(curves['eps'].unique()) if eps > 0)}"
                 f"/255: {means['baseline']:.0%} baseline vs {means['adversarially trained']:.0%} adversarially trained")


# Chapter 6 ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Evidence:
    """A paired difference (adversarially trained minus baseline) judged against the hypothesis."""

    measure: str
    mean: float
    low: float
    high: float
    word: str  # "supports", "refutes", "neither" or "no data"


def judge_difference(differences: np.ndarray, more_is_support: bool, measure: str, seed: int) -> Evidence:
    """Chapter 6's rule on a paired difference: evidence when the 95 % bootstrap interval excludes 0
    and the mean is at least MIN_EFFECT; for the hypothesis if its sign is the predicted one."""
    mean, low, high = bootstrap_interval(np.asarray(differences, dtype=float), seed=seed)
    if np.isnan(mean):
        return Evidence(measure, mean, low, high, "no data")
    if (low > 0 or high < 0) and abs(mean) >= MIN_EFFECT:
        word = "supports" if (low > 0) == more_is_support else "refutes"
    else:
        word = "neither"
    return Evidence(measure, mean, low, high, word)


def hypothesis_evidence(params: Params, runs: dict[str, Run], train: bool = False) -> list[Evidence]:
    """Chapter 6's test of the report's hypothesis on the baseline and adversarially trained runs:
    more IG relevance mass on lesions (with lesion masks), fewer predictions changed by flipping
    the spurious cue and less IG mass on it (with the spurious-cue experiment). Paired over images."""
    from fundus_lib import evaluation

    settings, adversarial = params.attribution, "adversarially trained"
    evidence = []
    data = run_data(params, runs["baseline"].config, progress=False)
    if data.cache.masks is not None:
        scores = pd.concat({name: evaluation.attribution_scores(run, data, settings) for name, run in runs.items()},
                           names=["model", "position"]).reset_index("model")
        ig = scores[scores["method"] == evaluation.REPORT_IG].pivot(index="row", columns="model", values="relevance_mass")
        evidence.append(judge_difference(ig[adversarial] - ig["baseline"], True, "IG relevance mass on lesions",
                                         settings.seed))
    if has_spurious_experiment(params):
        cue_params = spurious_params(params)
        cue_runs = {name: get_run(cue_params, config, train=train, progress=False)
                    for name, config in adversarial_runs(cue_params).items()}
        cue_data = run_data(cue_params, cue_runs["baseline"].config, progress=False)
        flips = {}
        for name, run in cue_runs.items():
            table = evaluation.cue_reliance(run, cue_data)
            flips[name] = (table["cue flipped"] != table["as generated"]).astype(float)
        evidence.append(judge_difference(flips[adversarial] - flips["baseline"], False,
                                         "share of predictions changed by flipping the cue", settings.seed))
        mass = {name: evaluation.cue_attribution(run, cue_data, settings).set_index("row")["mass_on_cue"]
                for name, run in cue_runs.items()}
        evidence.append(judge_difference((mass[adversarial] - mass["baseline"]).dropna(), False, "IG mass on the cue",
                                         settings.seed))
    return evidence


def overall_verdict(evidence: list[Evidence]) -> str:
    """``supports`` / ``refutes`` when every measured piece agrees, else ``neither`` (``untested`` without data)."""
    words = {item.word for item in evidence if item.word != "no data"}
    if not words:
        return "untested"
    return words.pop() if len(words) == 1 and words != {"neither"} else "neither"


# The whole report ---------------------------------------------------------------------------------

def with_shares(curves: pd.DataFrame, runs: dict[str, Run]) -> pd.DataFrame:
    """PGD curves (model, eps_255, ...) with eps in [0, 1] pixels and each model's top_share."""
    shares = {name: top_share(run) for name, run in runs.items()}
    return curves.assign(eps=curves["eps_255"] / 255, top_share=curves["model"].map(shares))


def report_findings(params: Params, train: bool = False, progress: bool = False) -> list[Finding]:
    """Every finding of the report that this params file can test, from the run store.

    train=False (the default) reads finished runs and fails on a missing one: the conclusions
    page summarises the chapters, it does not train. Attack and attribution results come from the
    runs' evaluation caches that the chapters filled (computed here if absent).
    """
    from fundus_lib import evaluation  # the evaluations import the trainer: only when asked

    def runs_of(configs: dict[str, RunConfig], run_params: Params = params) -> dict[str, Run]:
        return {name: get_run(run_params, config, train=train, progress=progress) for name, config in configs.items()}

    findings = []
    table4 = pd.DataFrame([{"model": config.model, "image_size": config.image_size, **run.metrics("test")}
                           for config, run in zip(baseline_runs(params).values(), runs_of(baseline_runs(params)).values())])
    findings.append(finding("Table 4", "For most models, 512 px images give a higher kappa than 256 px",
                            larger_images_help, report_table("table4"), table4))

    configs = balancing_runs(params)
    ours5 = metrics_frame(runs_of(configs)).assign(kind=[balancing_kind(config) for config in configs.values()])
    report5 = report_table("table5").set_index("method")
    report5 = report5.assign(kind=report5.index.map(report_balancing_kind))
    for claim, test in (
        ("A reweighted loss (focal, class-balanced) raises balanced accuracy at under a point of accuracy", reweighting_balances),
        ("Oversampling without dropout overfits: lower kappa than the baseline and than with dropout", oversampling_overfits),
        ("Oversampling + restart raises balanced accuracy at the cost of accuracy", restart_trades_accuracy),
        ("SMOTE gives the lowest kappa of all methods", smote_is_worst),
    ):
        findings.append(finding("Table 5", claim, test, report5, ours5))

    tables = {table: runs_of(configs) for table, configs in corruption_runs(params).items()}
    data = run_data(params, tables["table6"]["baseline"].config, progress=False)
    settings = params.corruption
    findings.append(finding("Table 6", "Training on corrupted images lowers the clean kappa (imbalanced set)",
                            corruption_costs_clean_kappa, report_table("table6").set_index("level_range"),
                            metrics_frame(tables["table6"])))
    findings.append(finding("Table 7", "On the oversampled set, corrupted images act as augmentation: higher kappa",
                            corruption_helps_oversampled, report_table("table7").set_index("level_range"),
                            metrics_frame(tables["table7"]) if "table7" in tables else None))
    clean = metrics_frame(tables["table6"])
    corrupted = pd.DataFrame({name: evaluation.corrupted_test_metrics(run, data, settings.test_levels, settings.seed).iloc[0]
                              for name, run in tables["table6"].items()}).T
    findings.append(finding("Table 8", "Corruption-trained models lose less accuracy on corrupted test images",
                            corruption_training_resists_corruption, report_table("table8").set_index("level_range"),
                            corrupted.assign(accuracy_drop=clean["accuracy"] - corrupted["accuracy"])))
    report_curves = report_table("pgd_success").assign(eps=lambda frame: frame["eps_255_normalised"] / 255)
    report_curves["model"] = report_curves["model"].str.replace("corruption-trained ", "")
    ours_curves = pd.concat({name: evaluation.pgd_curve(run, data, params.attacks, progress=False)
                             for name, run in tables["table6"].items()}, names=["model", "position"]).reset_index("model")
    findings.append(finding("Figure 5", "Corruption-trained models are more vulnerable to PGD than the baseline",
                            corruption_training_weakens_pgd, report_curves, with_shares(ours_curves, tables["table6"])))

    adversarial = runs_of(adversarial_runs(params))
    findings.append(finding("Table 9", "Adversarial training lowers the clean kappa", adversarial_training_costs_kappa,
                            report_table("table9"), metrics_frame(adversarial)))
    data = run_data(params, adversarial["baseline"].config, progress=False)
    curves = pd.concat({name: evaluation.pgd_curve(run, data, params.attacks, progress=False)
                        for name, run in adversarial.items()}, names=["model", "position"]).reset_index("model")
    findings.append(finding("Figure 6", "Adversarial training lowers the PGD success rate",
                            adversarial_training_resists_pgd, "shown in Figure 6 (no values published)",
                            with_shares(curves, adversarial)))
    evidence = hypothesis_evidence(params, adversarial, train=train)
    verdict = overall_verdict(evidence)
    findings.append(finding(
        "Figures 7-8", "Adversarial training moves attributions from non-robust features to real structures",
        lambda _: Check(None if verdict == "untested" else verdict == "supports", "; ".join(
            f"{item.measure}: {item.mean:+.3f} [{item.low:+.3f}, {item.high:+.3f}] ({item.word})" for item in evidence)
            + f" → {verdict}"),
        "two pictures (Figures 7-8), no measurement", pd.DataFrame()))
    return findings
