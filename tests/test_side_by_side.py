"""Work side by side in worker processes: how many at once and their share of the cores, a run
after the run it starts from, errors that name the run, the console trainer of `fundus run` with
two workers, and which chapters execute side by side (the smoke book in test_book.py executes
them so)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import NamedTuple

import pytest

from fundus_lib.config import RuntimeConfig, load_params
from fundus_lib.errors import UserError
from fundus_lib.paths import project_root
from fundus_lib.report.chapters import execute_chapters, list_chapters, side_by_side_chapters
from fundus_lib.runs import get_run
from fundus_lib.training.side_by_side import RunTrainer
from fundus_lib.workers import side_by_side, side_by_side_pool


class Config(NamedTuple):
    name: str
    init_from: Config | None = None


def timed_work(label: str, folder: str, config: Config) -> tuple[str, float]:
    """A stand-in for training: sleeps, and writes when it started and ended."""
    if config.name == "broken":
        raise UserError("no such model")
    started = time.time()
    time.sleep(1.0 if config.name == "parent" else 0.2)
    (Path(folder) / f"{label}.json").write_text(json.dumps([started, time.time()]))
    return label, time.time() - started


def meet(label: str, folder: str, config: Config) -> tuple[str, float]:
    """Waits (up to 60 s) until both workers have started one of these: afterwards both are ready."""
    (Path(folder) / f"{label}.started").touch()
    deadline = time.time() + 60
    while len(list(Path(folder).glob("*.started"))) < 2 and time.time() < deadline:
        time.sleep(0.05)
    return label, 0.0


def test_auto_is_two_processes_on_a_cpu_with_two_cores_and_one_elsewhere(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert side_by_side(RuntimeConfig(device="cpu"), cores=2) == 2
    assert side_by_side(RuntimeConfig(device="cpu"), cores=1) == 1
    assert side_by_side(RuntimeConfig(device="cuda"), cores=16) == 1
    assert side_by_side(RuntimeConfig(device="cpu", side_by_side=3), cores=2) == 3
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert side_by_side(RuntimeConfig(device="cpu"), cores=2) == 1


def worker_threads() -> tuple[int, str]:
    import torch

    return torch.get_num_threads(), os.environ["OMP_NUM_THREADS"]


def test_each_worker_side_by_side_gets_its_share_of_the_cores():
    with side_by_side_pool(2, cores=4) as pool:
        assert pool.submit(worker_threads).result() == (2, "2")
    with side_by_side_pool(2, cores=1) as pool:
        assert pool.submit(worker_threads).result() == (1, "1")


def test_a_run_starts_after_the_run_it_starts_from_and_the_others_alongside(tmp_path):
    parent = Config("parent")
    runs = {
        "parent": (str(tmp_path), parent),
        "child": (str(tmp_path), Config("child", init_from=parent)),
        "other": (str(tmp_path), Config("other")),
    }
    with RunTrainer(2, cores=2, work=meet) as trainer:
        list(trainer.train({name: (str(tmp_path), Config(name)) for name in ("warm 1", "warm 2")}))
        trainer.work = timed_work  # both workers are up: the timing below is not their start-up
        finished = [label for label, _ in trainer.train(runs)]
    assert sorted(finished) == ["child", "other", "parent"]
    times = {label: json.loads((tmp_path / f"{label}.json").read_text()) for label in runs}
    assert times["child"][0] >= times["parent"][1]
    assert times["other"][0] < times["parent"][1]  # side by side with the parent


def test_a_failed_run_is_raised_with_its_label_after_the_others_finish(tmp_path):
    runs = {"broken": (str(tmp_path), Config("broken")), "other": (str(tmp_path), Config("other"))}
    with RunTrainer(2, cores=2, work=timed_work) as trainer, pytest.raises(UserError, match="no such model"):
        list(trainer.train(runs))
    assert (tmp_path / "other.json").exists()


def test_fewer_than_two_processes_is_refused():
    with pytest.raises(ValueError, match="at least 2"):
        RunTrainer(1)


def test_fundus_run_trains_a_run_and_the_run_it_starts_from_in_two_workers(tmp_path, monkeypatch, capsys):
    """Chapter 5's adversarial run fine-tunes chapter 2's baseline: with two workers the baseline
    trains first, and both land in the store as they would in this process."""
    from fundus_lib.cli import _ConsoleTrainer, runs_to_train

    monkeypatch.setenv("FUNDUS_RUNS_DIR", str(tmp_path / "runs"))
    params = load_params(project_root() / "params" / "smoke.yaml")
    chapters = ["02_baselines", "05_adversarial"]
    missing = runs_to_train(params, chapters, progress=False)
    both = missing["02_baselines"] | missing["05_adversarial"]
    with _ConsoleTrainer(both, quiet=True, processes=2) as trainer:
        assert trainer.train(both) > 0
    out = capsys.readouterr().out
    assert "-- training 2 runs, 2 at a time" in out
    assert out.index("done: 02 baselines") < out.index("done: 05 adversarial")
    assert runs_to_train(params, chapters, progress=False) == {}
    side_by_side_run = get_run(params, both["02 baselines: small-cnn 48 px"][1], train=False)
    monkeypatch.setenv("FUNDUS_RUNS_DIR", str(tmp_path / "alone"))
    alone = get_run(params, both["02 baselines: small-cnn 48 px"][1], progress=False)
    assert alone.record["metrics"] == side_by_side_run.record["metrics"]  # the same threads either way
    assert alone.record["history"] == side_by_side_run.record["history"]


def test_the_chapters_before_the_conclusions_execute_side_by_side():
    chapters = list_chapters()
    alongside = side_by_side_chapters(chapters)
    assert alongside == [chapter for chapter in chapters if chapter < "07"] and "07_conclusions" not in alongside
    assert "08_build" in chapters and "08_build" not in alongside


def test_a_chapter_failing_side_by_side_is_raised_with_its_reason(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text((project_root() / "params" / "smoke.yaml").read_text() + "\nnot_a_section: 1\n")
    with pytest.raises(UserError, match="not_a_section"):
        list(execute_chapters(["01_data", "02_baselines"], bad, tmp_path / "out", processes=2))
