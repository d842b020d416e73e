"""The build's timing record: steps added as the build goes, a rerun step replacing the old one,
the finished record appended to the store's history, and unreadable input named, not guessed."""

from __future__ import annotations

import json

import pytest

import fundus_lib.report.build_record as build_record
from fundus_lib.cli import main
from fundus_lib.errors import UserError
from fundus_lib.report.build_record import (
    add_step,
    chapters_frame,
    finish_record,
    history_path,
    read_history,
    read_record,
    record_path,
    start_record,
    steps_frame,
)


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("FUNDUS_RUNS_DIR", str(tmp_path / "runs"))
    return tmp_path


@pytest.fixture
def clock(monkeypatch):
    """The build record's wall clock, set by the test: clock.now = epoch seconds."""

    class Clock:
        now = 1000.0

    monkeypatch.setattr(build_record.time, "time", lambda: Clock.now)
    return Clock


def test_steps_accumulate_and_a_rerun_chapter_replaces_its_time(store, clock):
    out = store / "generated"
    clock.now = 1012.0
    start_record(out, "params/demo.yaml", began=1000.0)
    add_step(out, "data", 30.0)
    add_step(out, "training", 100.0, chapter="02_baselines")
    add_step(out, "executing", 20.0, chapter="02_baselines")
    add_step(out, "training", 0.0, chapter="01_data")
    add_step(out, "executing", 5.0, chapter="01_data")
    add_step(out, "executing", 25.0, chapter="02_baselines")  # the chapter executed again
    record = read_record(out)
    assert record["params"] == "params/demo.yaml" and record["machine"]["cpu"]
    steps = steps_frame(record)
    assert list(zip(steps["step"], steps["chapter"])) == [
        ("install", ""),
        ("data", ""),
        ("training", "01_data"),
        ("executing", "01_data"),
        ("training", "02_baselines"),
        ("executing", "02_baselines"),
    ]
    assert steps["seconds"].tolist() == [12.0, 30.0, 0.0, 5.0, 100.0, 25.0]
    assert steps["minutes"].tolist() == pytest.approx(steps["seconds"].div(60).tolist())
    chapters = chapters_frame(record).set_index("chapter")
    assert chapters.loc["02_baselines"].tolist() == [100.0, 25.0, 125.0]


def test_a_finished_build_goes_into_the_history_of_its_store(store, clock):
    out = store / "generated"
    assert read_record(out) is None and read_history()[0].empty
    for number in (1, 2):
        clock.now = 1060.0
        start_record(out, f"params/p{number}.yaml", began=1000.0)
        add_step(out, "executing", 120.0, chapter="01_data")
        clock.now = 1210.0
        record = finish_record(out, 30.0)
        assert record["total_seconds"] == 210.0
    history, unreadable = read_history()
    assert history["params"].tolist() == ["params/p1.yaml", "params/p2.yaml"] and not unreadable
    assert history[["install (min)", "executing (min)", "html (min)", "total (min)"]].iloc[0].tolist() == [
        1.0,
        2.0,
        0.5,
        3.5,
    ]
    with history_path().open("a") as file:
        file.write("{not json\n")
    history, unreadable = read_history()
    assert len(history) == 2 and len(unreadable) == 1 and "builds.jsonl line 3" in unreadable[0]


def test_chapters_side_by_side_count_once_in_the_build_time(store, clock):
    """Two chapters of 100 s that executed at the same time: the build took the wall clock, not the
    steps' sum; a record of `fundus run` alone (no start time) sums its steps."""
    out = store / "generated"
    clock.now = 1060.0
    start_record(out, "params/demo.yaml", began=1000.0)
    add_step(out, "executing", 100.0, chapter="01_data", side_by_side=True)
    add_step(out, "executing", 100.0, chapter="02_baselines", side_by_side=True)
    clock.now = 1200.0
    record = finish_record(out, 40.0)
    assert record["total_seconds"] == 200.0 < sum(step["seconds"] for step in record["steps"])
    assert [step.get("side_by_side", False) for step in record["steps"]] == [False, True, True, False]
    assert read_history()[0]["total (min)"].tolist() == pytest.approx([200 / 60])
    alone = store / "alone"
    add_step(alone, "executing", 100.0, chapter="01_data")
    assert finish_record(alone, 5.0)["total_seconds"] == 105.0


def test_bad_records_and_steps_are_named(store):
    out = store / "generated"
    out.mkdir()
    record_path(out).write_text("[1, 2")
    with pytest.raises(UserError, match="build_record.json is not valid JSON"):
        read_record(out)
    record_path(out).write_text(json.dumps({"params": "x"}))
    with pytest.raises(UserError, match="no list of steps"):
        read_record(out)
    with pytest.raises(ValueError, match="unknown build step 'compile'"):
        add_step(store / "other", "compile", 1.0)
    with pytest.raises(ValueError, match="non-negative"):
        add_step(store / "other", "data", -1.0)


def test_the_command_starts_and_finishes_a_record(store, capsys):
    out = store / "generated"
    assert main(["build-record", "start", "params/smoke.yaml", "--since", "0", "--out", str(out)]) == 0
    assert read_record(out)["steps"][0]["step"] == "install"
    assert main(["build-record", "finish", "--out", str(out)]) == 2
    assert "needs --since" in capsys.readouterr().err
    assert main(["build-record", "finish", "--since", "0", "--out", str(out)]) == 0
    assert "build of params/smoke.yaml" in capsys.readouterr().out and len(read_history()[0]) == 1
