"""`fundus grade` on another layout: IDRiD's grading set graded by a stored run, with the measures
a screening reader needs (intervals over the photographs, referable-DR sensitivity and specificity)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fundus_lib.cli import main
from fundus_lib.config import load_params, run_config
from fundus_lib.evaluation.grading import external_measures, per_grade
from fundus_lib.paths import project_root
from fundus_lib.runs import get_run


def test_perfect_grades_score_one_with_a_degenerate_interval():
    levels = np.repeat(np.arange(5), 20)
    measures = external_measures(levels, levels)
    assert (measures[["value", "low", "high"]] == 1).all().all()
    assert measures["n"].tolist() == [100, 100, 100, 60, 40]


def test_referable_sensitivity_and_specificity_count_grade_two_and_above():
    levels = np.array([0, 0, 0, 1, 2, 2, 3, 4])
    grades = np.array([0, 2, 1, 1, 1, 2, 4, 3])  # one healthy eye referred, one referable eye missed
    measures = external_measures(levels, grades)
    assert measures.at["referable_sensitivity", "value"] == pytest.approx(3 / 4)
    assert measures.at["referable_specificity", "value"] == pytest.approx(3 / 4)
    assert (measures["low"] <= measures["value"]).all() and (measures["value"] <= measures["high"]).all()
    assert measures.at["kappa", "low"] < measures.at["kappa", "high"]  # a real interval on 8 photographs
    assert per_grade(levels).tolist() == [3, 1, 2, 1, 1]


def test_fundus_grade_reads_idrid_from_its_own_layout(idrid_grading, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FUNDUS_RUNS_DIR", str(tmp_path / "runs"))
    params_file = project_root() / "params" / "smoke.yaml"
    params = load_params(params_file, {"runtime": {"loader_workers": 0}})
    get_run(params, run_config(params, params.baselines[0]), progress=False)  # the stored baseline
    out = tmp_path / "grades.csv"
    assert main(["grade", str(params_file), str(idrid_grading), "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    grades = pd.read_csv(out)
    assert len(grades) == 516 - 9  # three duplicates kept once, three conflicting pairs excluded
    assert grades["image"].str.match(r"^(train|test)/IDRiD_\d{3}$").all() and grades["image"].is_unique
    for measure in ("accuracy", "balanced_accuracy", "kappa", "referable_sensitivity", "referable_specificity"):
        assert f"  {measure}: " in printed
    assert "9 image(s) skipped" in printed and "conflicting duplicate" in printed
    assert f"0: {(grades['level'] == 0).sum()}" in printed
