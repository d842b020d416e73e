"""The report's published numbers (``report_numbers.yaml``), as labelled data frames.

The numbers are data, kept once; the book shows them beside this run's numbers and never mixes
the two without a label.

Example::

    report_table("table1")   # grade, images, share (the report's Table 1)
"""

from __future__ import annotations

import re
from functools import cache
from importlib.resources import files

import pandas as pd
import yaml

_DURATION = re.compile(r"^(?:(?P<h>\d+)h)?(?:(?P<m>\d+)min)?$")


@cache
def _numbers() -> dict:
    return yaml.safe_load(files("fundus_lib.report").joinpath("report_numbers.yaml").read_text())


def report_source() -> str:
    """One line saying where the report's numbers come from and on what data."""
    return _numbers()["source"]


def duration_hours(text: str) -> float:
    """The report's training time ('2h40min', '10h1min') in hours."""
    match = _DURATION.match(str(text).strip())
    if not match or not any(match.groups()):
        raise ValueError(f"not a duration like '2h40min': {text!r}")
    return int(match["h"] or 0) + int(match["m"] or 0) / 60


def report_table(name: str) -> pd.DataFrame:
    """One of the report's tables; ``.attrs['caption']`` holds its caption.

    A ``training_time`` column (text) gains a ``training_hours`` column beside it.
    """
    tables = _numbers()["tables"]
    if name not in tables:
        raise KeyError(f"no report table {name!r}; available: {', '.join(tables)}")
    table = tables[name]
    frame = pd.DataFrame(table["rows"], columns=table["columns"])
    if "training_time" in frame:
        frame["training_hours"] = frame["training_time"].map(duration_hours)
    frame.attrs["caption"] = table["caption"]
    return frame


def other_study(name: str) -> dict:
    """A published number of another study (``other_studies`` of ``report_numbers.yaml``): its
    ``source``, ``measure`` and values, shown for scale and labelled with its source."""
    studies = _numbers().get("other_studies", {})
    if name not in studies:
        raise KeyError(f"no other study {name!r}; available: {', '.join(studies)}")
    return dict(studies[name])
