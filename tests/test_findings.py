"""The conclusions' findings: each claim's test passes on the report's own numbers (so it encodes
what the report says), fails when the numbers say the opposite, and the verdicts follow."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fundus_lib import findings
from fundus_lib.config import load_params
from fundus_lib.experiments import balancing_runs
from fundus_lib.paths import project_root
from fundus_lib.report import report_table


def report5() -> pd.DataFrame:
    table = report_table("table5").set_index("method")
    return table.assign(kind=table.index.map(findings.report_balancing_kind))


def report_curves() -> pd.DataFrame:
    curves = report_table("pgd_success").assign(eps=lambda frame: frame["eps_255_normalised"] / 255)
    return curves.assign(model=curves["model"].str.replace("corruption-trained ", ""))


@pytest.mark.parametrize("test, table", [
    (findings.larger_images_help, lambda: report_table("table4")),
    (findings.reweighting_balances, report5),
    (findings.oversampling_overfits, report5),
    (findings.restart_trades_accuracy, report5),
    (findings.smote_is_worst, report5),
    (findings.corruption_costs_clean_kappa, lambda: report_table("table6").set_index("level_range")),
    (findings.corruption_helps_oversampled, lambda: report_table("table7").set_index("level_range")),
    (findings.corruption_training_resists_corruption, lambda: report_table("table8").set_index("level_range")),
    (findings.corruption_training_weakens_pgd, report_curves),
    (findings.adversarial_training_costs_kappa, lambda: report_table("table9")),
])
def test_every_claim_holds_on_the_reports_numbers(test, table):
    check = test(table())
    assert check.holds is True, check.evidence
    assert check.evidence


def test_claims_fail_when_the_numbers_say_otherwise():
    table = report5()
    table.loc["SMOTE", "kappa"] = 0.9
    assert findings.smote_is_worst(table).holds is False
    table = report5()
    table.loc["oversampling dropout=0", "kappa"] = 0.79  # above the dropout=0.9 row's 0.780
    assert findings.oversampling_overfits(table).holds is False
    table = report5()
    table.loc[table["kind"] == "reweighted loss", "accuracy"] = 0.80  # more than a point below 85.2 %
    assert findings.reweighting_balances(table).holds is False
    table8 = report_table("table8").set_index("level_range")
    table8.loc["1-3", "accuracy_drop"] = 0.2
    assert findings.corruption_training_resists_corruption(table8).holds is False
    curves = pd.DataFrame({"model": ["baseline"] * 2 + ["adversarially trained"] * 2, "eps": [0, 1 / 255] * 2,
                           "success_rate": [0, 0.3, 0, 0.5]})
    assert findings.adversarial_training_resists_pgd(curves).holds is False


def test_a_claim_without_its_rows_is_not_tested():
    table = report5().drop(index="SMOTE")
    assert findings.smote_is_worst(table).holds is None
    one_size = report_table("table4").query("image_size == 256")
    assert findings.larger_images_help(one_size).holds is None
    result = findings.finding("Table 5", "SMOTE is worst", findings.smote_is_worst, report5(), table)
    assert result.verdict == findings.NOT_TESTED
    assert findings.finding("Table 5", "x", findings.smote_is_worst, report5(), None).verdict == findings.NOT_TESTED


def test_verdicts_compare_this_run_with_the_report():
    ours = report5()
    assert findings.finding("Table 5", "x", findings.smote_is_worst, report5(), ours).verdict == findings.REPRODUCED
    ours.loc["SMOTE", "kappa"] = 0.99
    result = findings.finding("Table 5", "x", findings.smote_is_worst, report5(), ours)
    assert result.verdict == findings.NOT_REPRODUCED
    assert "0.990" in result.ours and "0.364" in result.report


def test_config_and_name_classifiers_agree_on_the_full_scale_table_5():
    """The report's rows are known by name, this run's by configuration: both must agree."""
    params = load_params(project_root() / "params" / "eyepacs-512.yaml")
    kinds = {name: findings.balancing_kind(config) for name, config in balancing_runs(params).items()}
    assert kinds == {name: findings.report_balancing_kind(name) for name in kinds}
    assert set(kinds.values()) == set(report5()["kind"])


def test_differences_are_judged_by_their_interval_and_size():
    rng = np.random.default_rng(0)
    clear = rng.normal(0.1, 0.02, 200)
    assert findings.judge_difference(clear, True, "m", seed=0).word == "supports"
    assert findings.judge_difference(clear, False, "m", seed=0).word == "refutes"
    assert findings.judge_difference(rng.normal(0, 0.05, 200), True, "m", seed=0).word == "neither"
    assert findings.judge_difference(np.full(50, 0.005), True, "m", seed=0).word == "neither"  # below one point
    assert findings.judge_difference(np.array([]), True, "m", seed=0).word == "no data"


def test_the_overall_verdict_needs_every_piece_to_agree():
    def piece(word):
        return findings.Evidence("m", 0.0, 0.0, 0.0, word)

    assert findings.overall_verdict([piece("supports"), piece("supports")]) == "supports"
    assert findings.overall_verdict([piece("supports"), piece("neither")]) == "neither"
    assert findings.overall_verdict([piece("refutes"), piece("no data")]) == "refutes"
    assert findings.overall_verdict([piece("neither")]) == "neither"
    assert findings.overall_verdict([piece("no data")]) == "untested"


def test_a_degenerate_model_makes_a_claim_untested():
    """A model that gives one grade to (almost) every image says nothing about a method."""
    table = report_table("table6").set_index("level_range").assign(top_share=0.5)
    assert findings.corruption_costs_clean_kappa(table).holds is True
    table.loc["1-2", "top_share"] = 0.97
    check = findings.corruption_costs_clean_kappa(table)
    assert check.holds is None and "1-2" in check.evidence
    curves = pd.DataFrame({"model": ["baseline"] * 2 + ["adversarially trained"] * 2, "eps": [0, 1 / 255] * 2,
                           "success_rate": [0, 0.5, 0, 0.1], "top_share": [0.99] * 2 + [0.6] * 2})
    check = findings.adversarial_training_resists_pgd(curves)
    assert check.holds is None and "baseline" in check.evidence
    assert findings.adversarial_training_resists_pgd(curves.assign(top_share=0.6)).holds is True
