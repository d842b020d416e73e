"""Chapter 3's tables: Table 5 beside the report's, where each method's predictions go, and the
chapter's reading of them, from the balancing runs (``experiments.balancing_runs``, every seed).

Example::

    seed_runs = {name: [get_run(params, config) for config in seeds]
                 for name, seeds in seeded(params, balancing_runs(params), "balancing").items()}
    table5(seed_runs, run_label(params))
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fundus_lib.metrics import REPORT_METRICS
from fundus_lib.report.numbers import report_table
from fundus_lib.report.tables import REPORT_LABEL, beside_report, duration, over_seeds, spread_text
from fundus_lib.runs import Run
from fundus_lib.statistics import little_influence

#: Short column names of Table 5.
SHORT = {"batch_size": "batch", "accuracy": "acc.", "balanced_accuracy": "bal. acc.", "training_time": "time"}
TRUE_GRADES = "true grades (test split)"


def report_table5() -> pd.DataFrame:
    """The report's Table 5 with the columns this chapter shows."""
    return report_table("table5")[["method", "batch_size", *REPORT_METRICS, "training_time"]]


def table5(seed_runs: dict[str, list[Run]], ours: str) -> pd.DataFrame:
    """Table 5: the report's rows beside this run's (test metrics, mean over seeds with the 95 %
    interval's half-width; batch, epochs and training time of the first seed), in this run's order
    and then the report's extra rows."""
    means = seed_means(seed_runs, "test")
    spread = spread_text(means, REPORT_METRICS, percent=("accuracy", "balanced_accuracy"))
    rows = pd.DataFrame(
        [
            {
                "method": name,
                "batch_size": seeds[0].config.batch_size,
                "epochs": seeds[0].record["epochs_run"],
                **spread.loc[name],
                "training_time": duration(seeds[0].total_seconds / 3600),
            }
            for name, seeds in seed_runs.items()
        ]
    )
    report5 = report_table5()
    order: dict[str, int] = {}
    for name in [*seed_runs, *report5["method"]]:  # this run's order, then the report's extra rows
        order.setdefault(name, len(order))
    table = beside_report(report5, rows, "method", ours).rename(columns=SHORT, level=1)
    table = table.iloc[np.argsort([order[name] for name in table.index])]
    for column in [(REPORT_LABEL, "batch"), (ours, "batch"), (ours, "epochs")]:
        table[column] = table[column].astype("Int64")
    return table


def prediction_shares_frame(runs: dict[str, Run]) -> pd.DataFrame:
    """Share of test predictions per grade (columns) for each method's first seed (rows), below a
    first row with the true grades of the test split."""
    first = next(iter(runs.values())).confusion("test")
    shares = pd.DataFrame(
        {name: run.confusion("test").sum(axis=0) / run.confusion("test").sum() for name, run in runs.items()}
    ).T
    shares.loc[TRUE_GRADES] = first.sum(axis=1) / first.sum()
    shares = shares.loc[[TRUE_GRADES, *runs]]
    shares.columns.name = "predicted grade"
    return shares


def zero_shares(shares: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """Per method the share of grade-0 predictions and its change against the ``baseline`` method."""
    zero = shares[0].drop(TRUE_GRADES)
    return pd.DataFrame({"predicted grade 0": zero, "change vs baseline": zero - zero[baseline]})


def reading_text(seed_runs: dict[str, list[Run]], shares: pd.DataFrame, baseline: str) -> str:
    """Markdown list: the best method on validation (balanced accuracy, kappa) against the report's
    best, the method that moved most predictions off grade 0, and how much the re-weighted losses
    moved them (``statistics.little_influence``: the report's "little influence")."""
    means = seed_means(seed_runs, "test")
    on_valid = seed_means(seed_runs, "valid")
    report_rows = report_table5().set_index("method")
    lines = []
    for metric, label in (("balanced_accuracy", "balanced accuracy"), ("kappa", "kappa")):
        best_here, best_report = on_valid[metric].idxmax(), report_rows[metric].idxmax()  # chosen on validation
        verdict = "the same method as" if best_here == best_report else "not the method that won in"
        lines.append(
            f"- Best {label} on validation here: **{best_here}** (on test {means.at[best_here, metric]:.3f}; the "
            f"baseline {means.at[baseline, metric]:.3f}), {verdict} the report, whose best was {best_report} "
            f"({report_rows.at[best_report, metric]:.3f})."
        )
    zero = shares[0].drop(TRUE_GRADES)
    moved = zero.drop(baseline)
    lines.append(
        f"- The method that moved most predictions away from grade 0 is **{(moved - zero[baseline]).idxmin()}** "
        f"({moved.min():.0%} grade-0 predictions against the baseline's {zero[baseline]:.0%}; true share "
        f"{shares.at[TRUE_GRADES, 0]:.0%})."
    )
    loss_rows = [name for name in means.index if "loss" in name]
    if loss_rows:
        shift = (zero[loss_rows] - zero[baseline]).mean()
        reading = (
            'little, as the report found ("they have little influence on balancing the decision distribution").'
            if little_influence(shift)
            else 'more than the report\'s "little influence".'
        )
        lines.append(
            f"- Re-weighted losses change the share of grade-0 predictions by {shift:+.1%} on average: {reading}"
        )
    return "\n".join(lines)


def best_on_validation(seed_runs: dict[str, list[Run]], metric: str) -> str:
    """The method with the best validation ``metric`` (mean over seeds)."""
    return str(seed_means(seed_runs, "valid")[metric].idxmax())


def seed_means(seed_runs: dict[str, list[Run]], split: str) -> pd.DataFrame:
    """Every method's metrics on ``split``, mean over its seeds (``over_seeds``), one row per method."""
    return over_seeds({name: [run.metrics(split) for run in seeds] for name, seeds in seed_runs.items()})
