"""The build's timing record: where ``make book`` spent its time, written by the build itself.

``make book`` starts the record after the install step (``fundus build-record start``), ``fundus run``
adds the data step and each chapter's training and execution as it finishes them, and the
Makefile adds the HTML step at the end (``fundus build-record finish``), which also appends the
whole record to the store's history of builds. The book's page "How this book was built"
(``notebooks/08_build.py``) shows the record and that history; no time is typed by hand.

The record of the current build is ``<executed chapters>/build_record.json`` (``book/generated/``):
its params file, commit, machine, start time and steps, each step a dict with ``step`` (install,
data, training, executing, html), ``chapter`` (for training and executing) and ``seconds``; an
executing step also has ``side_by_side: true`` when its chapter executed at the same time as
others (``report.chapters.execute_chapters``), so the steps' seconds overlap and their sum exceeds
the build's time. The build's time is therefore the wall clock from the start of the install step
(``began``, epoch seconds) to the end of the HTML step: ``total_seconds`` of a finished record. The
history is ``<run store>/builds.jsonl``, one finished record per line, so it is kept exactly as
long as the runs it built from.

Example::

    start_record(out_dir, "params/demo.yaml", began=time.time() - 130.0)
    add_step(out_dir, "training", 188.0, chapter="02_baselines")
    steps_frame(read_record(out_dir))
"""

from __future__ import annotations

import datetime
import json
import time
from pathlib import Path

import pandas as pd

from fundus_lib.errors import UserError
from fundus_lib.files import write_atomic
from fundus_lib.paths import runs_dir
from fundus_lib.report.provenance import git_commit, hardware

RECORD_NAME = "build_record.json"
HISTORY_NAME = "builds.jsonl"
#: The steps of a build in the order they run.
STEPS = ("install", "data", "training", "executing", "html")


def record_path(out_dir: str | Path) -> Path:
    return Path(out_dir) / RECORD_NAME


def history_path() -> Path:
    return runs_dir() / HISTORY_NAME


def new_record(params_file: str | Path) -> dict:
    """A record with no steps yet: the params file, the commit, the machine, the start time (UTC)."""
    return {
        "params": str(params_file),
        "commit": git_commit(),
        "machine": hardware(),
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "steps": [],
    }


def start_record(out_dir: str | Path, params_file: str | Path, began: float | None = None) -> dict:
    """Begin a build's record (replacing the previous build's). ``began``: when the build's install
    step began (epoch seconds); the install step is the time from then to now."""
    record = new_record(params_file)
    if began is not None:
        record["began"] = began
        record["steps"].append(_step("install", time.time() - began))
    _write(out_dir, record)
    return record


def read_record(out_dir: str | Path) -> dict | None:
    """The current build's record, or None when no build has written one in ``out_dir``."""
    path = record_path(out_dir)
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"the build record {path} is not valid JSON ({exc}); delete it and rebuild") from None
    if not isinstance(record, dict) or not isinstance(record.get("steps"), list):
        raise UserError(f"the build record {path} has no list of steps; delete it and rebuild")
    return record


def add_step(
    out_dir: str | Path,
    step: str,
    seconds: float,
    chapter: str | None = None,
    params_file: str | Path | None = None,
    side_by_side: bool = False,
) -> dict:
    """Record one step of the build in ``out_dir``'s record (started here if none was). A step that
    is already there (the same chapter executed again) is replaced: the record holds each step's
    latest time. ``side_by_side``: the step ran at the same time as other steps."""
    record = read_record(out_dir) or new_record(params_file or "unknown")
    new = _step(step, seconds, chapter) | ({"side_by_side": True} if side_by_side else {})
    record["steps"] = [
        old for old in record["steps"] if (old["step"], old.get("chapter")) != (new["step"], new.get("chapter"))
    ] + [new]
    _write(out_dir, record)
    return record


def elapsed_seconds(record: dict) -> float:
    """The build's time so far: the wall clock since ``began`` where the record has it, else (a
    record of ``fundus run`` without ``make book``) the sum of its steps."""
    if "began" in record:
        return time.time() - record["began"]
    return sum(step["seconds"] for step in record["steps"])


def build_summary(record: dict | None, record_dir: str | Path) -> str:
    """The build page's opening sentences: which build, where, how long so far (markdown)."""
    if record is None:
        return (
            f"No build has written a timing record into `{record_dir}`: this page was executed on its own "
            "(`fundus run 08`), not by `make book` or `fundus run all`."
        )
    machine = record["machine"]
    text = (
        f"This build of `{record['params']}` began at {record['started']} (UTC) at commit `{record['commit']}`, on "
        f"{machine['cpu']} (GPU: {machine['gpu']}; {machine['platform']}, Python {machine['python']}). It has taken "
        f"**{elapsed_seconds(record) / 60:.1f} minutes** so far"
        f"{' (wall clock, from the start of the install step)' if 'began' in record else ''}."
    )
    overlapping = [step["chapter"] for step in record["steps"] if step.get("side_by_side")]
    if overlapping:
        text += f" Chapters {', '.join(overlapping)} executed side by side: their times overlap."
    return text


def finish_record(out_dir: str | Path, html_seconds: float) -> dict:
    """Add the HTML step and the build's time (``elapsed_seconds``), then append the finished record
    to the store's history of builds."""
    record = add_step(out_dir, "html", html_seconds)
    record["total_seconds"] = round(elapsed_seconds(record), 1)
    _write(out_dir, record)
    history = history_path()
    history.parent.mkdir(parents=True, exist_ok=True)
    with history.open("a") as file:
        file.write(json.dumps(record) + "\n")
    return record


def steps_frame(record: dict) -> pd.DataFrame:
    """One row per step in build order (install, data, each chapter's training and execution, HTML):
    step, chapter ('' for install, data and html), seconds, minutes."""
    frame = pd.DataFrame(
        [
            {"step": step["step"], "chapter": step.get("chapter", ""), "seconds": step["seconds"]}
            for step in record["steps"]
        ],
        columns=["step", "chapter", "seconds"],
    )
    phase = {"install": 0, "data": 1, "training": 2, "executing": 2, "html": 3}
    frame = frame.assign(phase=frame["step"].map(phase), order=frame["step"].map(STEPS.index))
    frame = frame.sort_values(["phase", "chapter", "order"]).drop(columns=["phase", "order"])
    return frame.assign(minutes=frame["seconds"] / 60).reset_index(drop=True)


def chapters_frame(record: dict) -> pd.DataFrame:
    """Per chapter: seconds training its runs, seconds executing, and their sum."""
    steps = pd.DataFrame(record["steps"], columns=["step", "chapter", "seconds"])
    steps = steps[steps["step"].isin(["training", "executing"])]
    table = steps.pivot_table(index="chapter", columns="step", values="seconds", aggfunc="sum", fill_value=0.0)
    table = table.reindex(columns=["training", "executing"], fill_value=0.0)
    return table.assign(total=table.sum(axis=1)).reset_index()


def read_history(path: str | Path | None = None) -> tuple[pd.DataFrame, list[str]]:
    """The finished builds of the store, oldest first (started, params, commit, cpu, gpu, minutes per
    step and in all), and a reason for each line that could not be read (kept out, never guessed)."""
    path = Path(path or history_path())
    rows, skipped = [], []
    lines = path.read_text().splitlines() if path.exists() else []
    for number, line in enumerate(lines, start=1):
        try:
            record = json.loads(line)
            steps = pd.DataFrame(record["steps"], columns=["step", "chapter", "seconds"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            skipped.append(f"{path.name} line {number}: {type(exc).__name__}: {exc}")
            continue
        minutes = steps.groupby("step")["seconds"].sum().div(60).reindex(list(STEPS), fill_value=0.0)
        machine = record.get("machine", {})
        rows.append(
            {
                "started": record.get("started", ""),
                "params": record.get("params", ""),
                "commit": record.get("commit", ""),
                "cpu": machine.get("cpu", ""),
                "gpu": machine.get("gpu", ""),
                **{f"{step} (min)": value for step, value in minutes.items()},
                "total (min)": record.get("total_seconds", steps["seconds"].sum()) / 60,
            }
        )
    return pd.DataFrame(rows), skipped


def _step(step: str, seconds: float, chapter: str | None = None) -> dict:
    if step not in STEPS:
        raise ValueError(f"unknown build step {step!r}; steps: {', '.join(STEPS)}")
    if not seconds >= 0:
        raise ValueError(f"a build step takes a non-negative time, got {seconds} s for {step}")
    return {"step": step, **({"chapter": chapter} if chapter else {}), "seconds": round(float(seconds), 1)}


def _write(out_dir: str | Path, record: dict) -> None:
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    write_atomic(record_path(out_dir), json.dumps(record, indent=1))
