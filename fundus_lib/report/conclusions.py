"""The conclusions page's sentences and tables: one sentence per finding, the findings against
this run, how each combines its comparisons, and every comparison, from ``findings.report_findings``.

Example::

    findings = report_findings(params)
    finding_sentence(findings[0])
"""

from __future__ import annotations

import pandas as pd

from fundus_lib.report.plots import VERDICT_COLOURS
from fundus_lib.report.tables import REPORT_LABEL, styled
from fundus_lib.statistics import INCONCLUSIVE, MIN_SEEDS, POWER

MOST_SEEDS = 30  # the largest seed count ``seeds_for_power`` considers


def comparisons_frame(findings) -> pd.DataFrame:
    """One row per comparison of every finding: where, label, rule, the report's value (NaN where
    it published none), this run's estimate with its interval, the threshold, the MDD and the verdict."""
    return pd.DataFrame(
        [
            {
                "where": item.section,
                "comparison": comparison.label,
                "rule": comparison.claim(),
                "report": float("nan") if reported is None else reported,
                "estimate": comparison.estimate.mean,
                "low": comparison.estimate.low,
                "high": comparison.estimate.high,
                "threshold": comparison.threshold,
                "MDD": comparison.mdd,
                "verdict": comparison.verdict,
            }
            for item in findings
            for comparison, reported in zip(item.comparisons, item.reported)
        ]
    )


def power_note(item) -> str:
    """Whether the run could see the report's effect: its power there, or nothing when unknown."""
    power = item.power_at_report
    if power is None:
        return ""
    if item.below_mdd and item.verdict == INCONCLUSIVE:
        return f". The report's effect is below this run's MDD: no verdict was possible (power {power:.0%})"
    return f". Power to reproduce the report's effect: {power:.0%}"


def evidence(item) -> str:
    """The first comparison's estimate, interval and report value, the n, the count of the others
    and the power note (or the finding's note when nothing was tested)."""
    if not item.comparisons:
        note = item.note or "not tested in this run"
        return note[0].upper() + note[1:]
    first, reported = item.comparisons[0], item.reported[0]
    text = (
        f"{first.label}: {first.estimate.mean:+.3f} [{first.estimate.low:+.3f}, {first.estimate.high:+.3f}]"
        + (f" against the report's {reported:+.3f}" if reported is not None else "")
        + f" (rule: {first.claim()}; {item.n})"
    )
    others = len(item.comparisons) - 1
    return text + (f", and {others} more comparison(s) in the table below" if others else "") + power_note(item)


def lower_first(text: str) -> str:
    """The claim inside a sentence: its first letter lower-cased unless it starts an acronym (SMOTE)."""
    return text if text[:2].isupper() else text[:1].lower() + text[1:]


def finding_sentence(item) -> str:
    """Markdown: the finding's section, claim and outcome, then its ``evidence``."""
    return f"**{item.section}**, *{lower_first(item.claim)}*: **{item.verdict}**. {evidence(item)}."


def _coloured(frame: pd.DataFrame, caption: str):
    """``tables.styled`` with each verdict cell on its outcome's colour."""
    return styled(frame, caption=caption).map(
        lambda verdict: f"background-color: {VERDICT_COLOURS[verdict]}33" if verdict in VERDICT_COLOURS else "",
        subset=["verdict"],
    )


def findings_table(findings):
    """The report's findings against this run: outcome, the finding's MDD, the power at the report's
    effect and the images and seeds behind it, coloured by outcome."""
    table = pd.DataFrame(
        [
            {
                "where": item.section,
                "finding": item.claim,
                "verdict": item.verdict,
                "MDD of the finding": item.mdd_text,
                "power at the report's effect": "–" if item.power_at_report is None else f"{item.power_at_report:.0%}",
                "n": item.n,
            }
            for item in findings
        ]
    )
    return _coloured(table.set_index(["where", "finding"]), "The report's findings against this run")


def seeds_for_power(item, most: int = MOST_SEEDS) -> str:
    """The fewest seeds (up to ``most``) at which the projected power at the report's effect
    reaches 80 %, in words ("–" where the report published no value, "> most" beyond)."""
    seeds_now = item.comparisons[0].estimate.n_seeds if item.comparisons else 0
    if item.power_at_report is None or seeds_now < MIN_SEEDS:
        return "–"
    for seeds in range(seeds_now, most + 1):
        if item.with_seeds(seeds).power_at_report >= POWER:
            return str(seeds)
    return f"> {most}"


def power_table(findings, seeds: tuple[int, ...] = (5, 10)) -> pd.DataFrame:
    """Per finding with an interval: its MDD on this run's seeds and projected at ``seeds`` seeds on
    the same test images (``Finding.with_seeds``), and the seeds its power at the report's effect
    needs: where more seeds buy power and where they cannot."""
    rows = []
    for item in findings:
        if not item.comparisons or item.comparisons[0].estimate.n_seeds < MIN_SEEDS:
            continue
        row = {"where": item.section, "finding": item.claim, "seeds": item.comparisons[0].estimate.n_seeds}
        row["MDD (this run)"] = item.mdd_text
        row |= {f"MDD at {count} seeds": item.with_seeds(count).mdd_text for count in seeds}
        row["seeds for 80 % power at the report's effect"] = seeds_for_power(item)
        row["test images' share of the variance"] = max(part.estimate.image_share for part in item.comparisons)
        rows.append(row)
    return pd.DataFrame(rows).set_index(["where", "finding"]) if rows else pd.DataFrame()


def rules_table(findings) -> pd.DataFrame:
    """Per finding how its comparisons combine with its false-call rates, and its note."""
    rules = pd.DataFrame(
        [
            {
                "where": item.section,
                "finding": item.claim,
                "how it combines, false-call rates": item.error_rate,
                "note": item.note or "–",
            }
            for item in findings
        ]
    )
    return rules.set_index(["where", "finding"])


def comparisons_table(comparisons: pd.DataFrame, ours: str):
    """Every comparison, one per line: rule, the report's value, this run's estimate [interval],
    MDD and verdict, coloured by verdict."""
    shown = comparisons.assign(
        ours=[f"{row.estimate:+.3f} [{row.low:+.3f}, {row.high:+.3f}]" for row in comparisons.itertuples()]
    )
    shown = shown[["where", "comparison", "rule", "report", "ours", "MDD", "verdict"]].rename(
        columns={"report": REPORT_LABEL, "ours": f"{ours} [interval]"}
    )
    return _coloured(shown.set_index(["where", "comparison"]), "Every comparison of the findings")
