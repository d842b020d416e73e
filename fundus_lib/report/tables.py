"""Tables of the book: this run's numbers beside the report's, always labelled.

Example::

    beside_report(report_table("table1"), grade_distribution(levels), key="grade",
                  ours_label=run_label(params))
"""

from __future__ import annotations

import pandas as pd

from fundus_lib.config import Params
from fundus_lib.metrics import REPORT_METRICS
from fundus_lib.statistics import seed_summary

REPORT_LABEL = "report (EyePACS)"


def run_label(params: Params) -> str:
    """Column label for this run's numbers, naming the data they were measured on."""
    source = "synthetic" if params.data.source == "synthetic" else "EyePACS"
    return f"this run ({source}, {params.name})"


def grade_distribution(levels: pd.Series) -> pd.DataFrame:
    """Images and share per grade 0-4 (grades with no image get 0)."""
    counts = levels.value_counts().reindex(range(5), fill_value=0)
    return pd.DataFrame(
        {"grade": range(5), "images": counts.to_numpy(), "share": (counts / max(1, counts.sum())).to_numpy()}
    )


def beside_report(report: pd.DataFrame, ours: pd.DataFrame, key: str | list[str], ours_label: str) -> pd.DataFrame:
    """One row per key; the report's columns, then this run's, under two labelled headers."""
    keys = [key] if isinstance(key, str) else key
    left = report.set_index(keys)
    right = ours.set_index(keys)
    return pd.concat({REPORT_LABEL: left, ours_label: right}, axis=1)


def styled(frame: pd.DataFrame, percent: tuple[str, ...] = (), decimals: int = 3, caption: str | None = None):
    """A Styler for the book: float columns whose last level is in ``percent`` as %, other floats
    rounded, underscores in headers shown as spaces."""
    formats = {}
    for column in frame.columns:
        name = column[-1] if isinstance(column, tuple) else column
        if not pd.api.types.is_float_dtype(frame[column]):
            continue  # text (e.g. ``spread_text``) and integers are shown as they are
        if name in percent:
            formats[column] = "{:.1%}"
        else:
            formats[column] = f"{{:.{decimals}f}}"
    frame = frame.rename_axis(
        index=[_readable(name) for name in frame.index.names], columns=[_readable(name) for name in frame.columns.names]
    )
    style = frame.style.format(formats, na_rep="–").format_index(_readable, axis=1).format_index(_readable, axis=0)
    return style.set_caption(caption) if caption else style


def _readable(label):
    """Headers read as words: ``balanced_accuracy`` -> ``balanced accuracy`` (None stays None)."""
    return label.replace("_", " ") if isinstance(label, str) else label


def duration(hours: float) -> str:
    """A training time for a table: ``14 h 59 min``, ``3.9 min`` or ``12 s``."""
    if pd.isna(hours):
        return "–"
    if hours >= 1:
        whole, minutes = divmod(round(hours * 60), 60)
        return f"{whole} h {minutes:02d} min"
    return f"{hours * 60:.1f} min" if hours * 60 >= 1 else f"{hours * 3600:.0f} s"


def over_seeds(metrics: dict[str, list[dict[str, float]]], columns: tuple[str, ...] = REPORT_METRICS) -> pd.DataFrame:
    """One row per configuration (the index): ``seeds``, the mean over seeds of each column and,
    as ``<column> ±``, the half-width of its 95 % t interval over seeds (NaN, shown as "–", for a
    single seed: one seed has no spread to show). The per-seed numbers stay in the run store."""
    rows = {}
    for name, per_seed in metrics.items():
        row = {"seeds": len(per_seed)}
        for column in columns:
            mean, low, _ = seed_summary([values[column] for values in per_seed])
            row |= {column: mean, f"{column} ±": mean - low if len(per_seed) > 1 else float("nan")}
        rows[name] = row
    return pd.DataFrame.from_dict(rows, orient="index")


def spread_text(
    means: pd.DataFrame, columns: tuple[str, ...], percent: tuple[str, ...] = (), decimals: int = 3
) -> pd.DataFrame:
    """Each of ``columns`` of an ``over_seeds`` frame with its ``±`` companion as one text column,
    ``0.712 ± 0.013`` (``71.2 ± 1.3 %`` for ``percent`` columns; the mean alone where there is no
    spread): one column per measure keeps a table within the page."""

    def text(mean: float, half: float, as_percent: bool) -> str:
        if pd.isna(mean):
            return "–"
        scale, unit, places = (100, " %", 1) if as_percent else (1, "", decimals)
        shown = f"{mean * scale:.{places}f}"
        return shown + unit if pd.isna(half) else f"{shown} ± {half * scale:.{places}f}{unit}"

    return pd.DataFrame(
        {
            column: [text(mean, half, column in percent) for mean, half in zip(means[column], means[f"{column} ±"])]
            for column in columns
        },
        index=means.index,
    )


def with_spread(columns: tuple[str, ...]) -> tuple[str, ...]:
    """The columns and their ``±`` companions (for ``styled``'s percent argument)."""
    return tuple(name for column in columns for name in (column, f"{column} ±"))
