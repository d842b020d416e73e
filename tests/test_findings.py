"""The conclusions' findings: each claim encodes what the report says (its own numbers lie on
the claimed side), a clear simulated effect is reproduced, the reverse is contradicted, a row is
chosen on validation and never on test, and a piece that cannot discriminate is inconclusive."""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest

from fundus_lib import findings
from fundus_lib.config import load_params
from fundus_lib.experiments import balancing_runs
from fundus_lib.metrics import confusion
from fundus_lib.paths import project_root
from fundus_lib.report import report_table
from fundus_lib.statistics import CONTRADICTED, HIGHER, INCONCLUSIVE, NOT_TESTED, REPRODUCED

N_IMAGES = 1500


@dataclass
class FakeRun:
    """What a finding reads from a run: validation metrics and the test confusion matrix."""

    valid: dict
    test_confusion: np.ndarray

    def metrics(self, split):
        return self.valid

    def confusion(self, split):
        return self.test_confusion


LABELS = np.random.default_rng(0).choice(5, N_IMAGES, p=(0.6, 0.1, 0.2, 0.05, 0.05))


def fake_arm(name: str, accuracy: float, seeds: int = 3, valid_balanced_accuracy: float = 0.5) -> findings.Arm:
    """A configuration whose seeds are right with probability ``accuracy`` (else one grade off)."""
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    predictions = []
    for _ in range(seeds):
        wrong = rng.random(N_IMAGES) > accuracy
        predictions.append(np.where(wrong, (LABELS + 1) % 5, LABELS))
    runs = tuple(FakeRun({"balanced_accuracy": valid_balanced_accuracy}, confusion(LABELS, p)) for p in predictions)
    return findings.Arm(name, np.arange(N_IMAGES).astype(str), LABELS, np.stack(predictions), runs)


def report5() -> pd.DataFrame:
    table = report_table("table5").set_index("method")
    return table.assign(kind=table.index.map(findings.report_balancing_kind))


def table5_arms(accuracies: dict[str, float]) -> tuple[dict, dict]:
    names = list(report5().index)
    arms = {name: fake_arm(name, accuracies.get(name, 0.8)) for name in names}
    return arms, {name: findings.report_balancing_kind(name) for name in names}


TABLE5_TESTS = (findings.reweighting_balances, findings.oversampling_overfits, findings.restart_trades_accuracy,
                findings.smote_is_worst)


@pytest.mark.parametrize("test", TABLE5_TESTS)
def test_the_reports_own_numbers_lie_on_the_claimed_side(test):
    arms, kinds = table5_arms({})
    finding = test(arms, kinds, report5())
    assert finding.comparisons and len(finding.reported) == len(finding.comparisons)
    for comparison, value in zip(finding.comparisons, finding.reported):
        assert value is not None
        assert comparison.side * (value - comparison.threshold) > 0, (comparison.label, value)


def test_level_range_claims_encode_the_report():
    for name, measure, side in (("table6", "kappa", -1), ("table7", "kappa", 1)):
        table = report_table(name).set_index("level_range")
        arms = {row: fake_arm(row, 0.8) for row in table.index}
        finding = findings.every_level_range(name, "x", arms, table, measure, side)
        assert all(side * (value - side * 0.02) > 0 for value in finding.reported)


def test_a_clear_effect_is_reproduced_and_the_reverse_contradicted():
    arms, kinds = table5_arms({"SMOTE": 0.4})
    finding = findings.smote_is_worst(arms, kinds, report5())
    assert finding.verdict == REPRODUCED
    assert len(finding.comparisons) == 13  # every other row, none picked
    assert "1500 test images" in finding.n and "× 3 seed(s)" in finding.n
    arms, kinds = table5_arms({"SMOTE": 0.95})
    assert findings.smote_is_worst(arms, kinds, report5()).verdict == CONTRADICTED


def test_no_true_effect_is_not_reproduced():
    arms, kinds = table5_arms({})  # every row the same accuracy: only seeds and images differ
    for test in TABLE5_TESTS:
        assert test(arms, kinds, report5()).verdict != REPRODUCED


def test_the_best_row_is_chosen_on_validation_not_on_test():
    arms, kinds = table5_arms({"focal loss gamma=3": 0.95})  # best on test
    arms["focal loss gamma=1"] = fake_arm("focal loss gamma=1", 0.8, valid_balanced_accuracy=0.9)  # best on valid
    finding = findings.reweighting_balances(arms, kinds, report5())
    assert "focal loss gamma=1 chosen" in finding.note
    assert all("gamma=1" in comparison.label for comparison in finding.comparisons)


def test_a_claim_without_its_rows_is_not_tested():
    arms, kinds = table5_arms({})
    del arms["SMOTE"]
    assert findings.smote_is_worst(arms, kinds, report5()).verdict == NOT_TESTED
    one_size = {("small-cnn", 128): fake_arm("a", 0.8)}
    assert findings.larger_images_help(one_size, report_table("table4")).verdict == NOT_TESTED


def test_larger_images_average_over_models():
    arms = {("resnet18", 256): fake_arm("r256", 0.6), ("resnet18", 512): fake_arm("r512", 0.9)}
    finding = findings.larger_images_help(arms, report_table("table4"))
    assert finding.verdict == REPRODUCED
    assert finding.reported[0] == pytest.approx(0.066, abs=0.001)  # the report's mean over its six models


def test_a_single_seed_decides_nothing():
    arms, kinds = table5_arms({})
    arms = {name: fake_arm(name, 0.4 if name == "SMOTE" else 0.8, seeds=1) for name in arms}
    finding = findings.smote_is_worst(arms, kinds, report5())
    assert finding.verdict == INCONCLUSIVE and "× 1 seed(s)" in finding.n


def test_attack_findings_leave_a_degenerate_model_untested():
    arms = {"baseline": fake_arm("baseline", 0.8), "adversarially trained": fake_arm("adv", 0.8)}
    arms["baseline"].runs[0].test_confusion = np.zeros((5, 5), int)
    arms["baseline"].runs[0].test_confusion[:, 0] = [60, 10, 20, 5, 5]  # grade 0 for every image
    finding = findings.attack_finding("Figure 6", "x", arms, {}, "baseline", HIGHER, "curves only")
    assert finding.verdict == NOT_TESTED and "degenerate" in finding.note


def test_attack_findings_compare_robust_accuracy_per_image():
    rng = np.random.default_rng(1)

    def outcomes(robust: float):
        rows = np.arange(200)
        labels = LABELS[:200]
        frames = []
        for eps in (0, 1 / 255, 2 / 255):
            attacked = np.where(rng.random(200) < (1 if eps == 0 else robust), labels, (labels + 1) % 5)
            frames.append(pd.DataFrame({"eps": eps, "row": rows, "label": labels, "clean": labels, "attacked": attacked}))
        return pd.concat(frames)

    arms = {"baseline": fake_arm("baseline", 0.8), "adversarially trained": fake_arm("adv", 0.8)}
    tables = {"baseline": [outcomes(0.2) for _ in range(3)], "adversarially trained": [outcomes(0.6) for _ in range(3)]}
    finding = findings.attack_finding("Figure 6", "x", arms, tables, "baseline", HIGHER, "curves only")
    assert finding.verdict == REPRODUCED and "200 attacked test images" in finding.n
    assert finding.report == "curves only" and "robust accuracy" in finding.note
    assert finding.comparisons[0].estimate.mean == pytest.approx(0.4, abs=0.06)


def test_config_and_name_classifiers_agree_on_the_full_scale_table_5():
    """The report's rows are known by name, this run's by configuration: both must agree."""
    params = load_params(project_root() / "params" / "eyepacs-512.yaml")
    kinds = {name: findings.balancing_kind(config) for name, config in balancing_runs(params).items()}
    assert kinds == {name: findings.report_balancing_kind(name) for name in kinds}
    assert set(kinds.values()) == set(report5()["kind"])


def test_differences_are_judged_by_their_interval_and_margin_over_seed_pairs():
    rng = np.random.default_rng(0)
    clear = [rng.normal(0.1, 0.02, 200) for _ in range(3)]
    assert findings.judge_difference(clear, True, "m").word == "supports"
    assert findings.judge_difference(clear, False, "m").word == "refutes"
    one_pair = findings.judge_difference(clear[:1], True, "m")
    assert one_pair.comparison.estimate.low > findings.MIN_EFFECT and one_pair.word == "inconclusive"
    null = [rng.normal(0.0, 0.05, 200) for _ in range(3)]  # two models that do not differ
    # ... support neither direction
    assert "supports" not in {findings.judge_difference(null, side, "m").word for side in (True, False)}
    assert findings.judge_difference([np.array([])], True, "m").word == "no data"


def test_an_image_without_a_value_in_one_seed_pair_leaves_every_pair():
    first, second = np.array([0.1, np.nan, 0.3]), np.array([0.2, 0.2, np.nan])
    evidence = findings.judge_difference([first, second], True, "m")
    assert evidence.comparison.estimate.n_images == 1 and evidence.mean == pytest.approx(0.15)


def test_the_overall_verdict_treats_a_piece_that_cannot_discriminate_as_no_evidence():
    def piece(word):
        return findings.Evidence("m", 0.0, 0.0, 0.0, word)

    assert findings.overall_verdict([piece("supports"), piece("supports")]) == "supports"
    assert findings.overall_verdict([piece("supports"), piece("inconclusive")]) == "inconclusive"
    assert findings.overall_verdict([piece("refutes"), piece("no data")]) == "refutes"
    assert findings.overall_verdict([piece("supports"), piece("refutes")]) == "refutes"
    assert findings.overall_verdict([piece("no data")]) == "untested"
    undecided = findings.cannot_discriminate(piece("refutes"), "the baseline ignores the cue")
    assert undecided.word == "inconclusive" and findings.overall_verdict([piece("supports"), undecided]) == "inconclusive"


def test_a_finding_with_an_undecidable_part_is_inconclusive_at_best():
    arms, kinds = table5_arms({"SMOTE": 0.4})
    decided = findings.smote_is_worst(arms, kinds, report5())
    assert decided.verdict == REPRODUCED
    partial = findings.Finding("x", "y", decided.comparisons, decided.reported, decided.n, "", ("cue: cannot discriminate",))
    assert partial.verdict == INCONCLUSIVE and "cannot discriminate" in partial.ours


def reliance_table(rng, n, cue_flip_rate, distractor_flip_rate):
    """A cue-reliance table (predictions as generated and with each patch flipped) whose flips
    change the prediction at the given rates."""
    generated = rng.integers(0, 5, n)

    def flipped(rate):
        return np.where(rng.random(n) < rate, (generated + 1) % 5, generated)

    return pd.DataFrame({"as generated": generated, "cue flipped": flipped(cue_flip_rate),
                         "distractor flipped": flipped(distractor_flip_rate)})


def test_the_cue_has_power_only_when_its_flips_beat_the_distractors():
    rng = np.random.default_rng(1)
    relied_on = [reliance_table(rng, 800, 0.3, 0.02) for _ in range(3)]
    assert findings.cue_power(relied_on).word == "supports"
    # a baseline that reacts to any salient patch, or to none: the cue test has no power
    for rates in ((0.3, 0.3), (0.0, 0.0), (0.02, 0.02)):
        for seed in range(5):
            tables = [reliance_table(np.random.default_rng(seed * 10 + k), 800, *rates) for k in range(3)]
            assert findings.cue_power(tables).word != "supports", (rates, seed)
    assert findings.cue_power(relied_on[:1]).word == "inconclusive", "one seed decides nothing"
