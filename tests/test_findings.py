"""The conclusions' findings: each claim encodes what the report says (its own numbers lie on
the claimed side), a clear simulated effect is reproduced, the reverse is contradicted, a row is
chosen on validation and never on test, every gate is decided off the evidence it gates, each
finding states its error split and MDD, and a piece that cannot discriminate is inconclusive."""

from __future__ import annotations

import zlib
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import pytest

from fundus_lib import findings, statistics
from fundus_lib.config import load_params
from fundus_lib.experiments import balancing_runs
from fundus_lib.metrics import confusion
from fundus_lib.paths import project_root
from fundus_lib.report.numbers import report_table
from fundus_lib.statistics import CONTRADICTED, HIGHER, INCONCLUSIVE, NOT_TESTED, REPRODUCED, SMALLER

N_IMAGES = 1500


@dataclass
class FakeRun:
    """What a finding reads from a run: validation metrics and confusion matrices per split."""

    valid: dict
    confusions: dict

    def metrics(self, split):
        return self.valid

    def confusion(self, split):
        return self.confusions[split]


LABELS = np.random.default_rng(0).choice(5, N_IMAGES, p=(0.6, 0.1, 0.2, 0.05, 0.05))


def fake_arm(name: str, accuracy: float, seeds: int = 3, valid_balanced_accuracy: float = 0.5) -> findings.Arm:
    """A configuration whose seeds are right with probability ``accuracy`` (else one grade off)."""
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    predictions = []
    for _ in range(seeds):
        wrong = rng.random(N_IMAGES) > accuracy
        predictions.append(np.where(wrong, (LABELS + 1) % 5, LABELS))
    runs = tuple(
        FakeRun(
            {"balanced_accuracy": valid_balanced_accuracy},
            {"valid": confusion(LABELS, p), "test": confusion(LABELS, p)},
        )
        for p in predictions
    )
    return findings.Arm(name, np.arange(N_IMAGES).astype(str), LABELS, np.stack(predictions), runs)


def report5() -> pd.DataFrame:
    table = report_table("table5").set_index("method")
    return table.assign(kind=table.index.map(findings.report_balancing_kind))


def table5_arms(accuracies: dict[str, float], seeds: int = 3) -> tuple[dict, dict]:
    names = list(report5().index)
    arms = {name: fake_arm(name, accuracies.get(name, 0.8), seeds) for name in names}
    return arms, {name: findings.report_balancing_kind(name) for name in names}


TABLE5_TESTS = (
    findings.reweighting_balances,
    findings.oversampling_overfits,
    findings.restart_trades_accuracy,
    findings.smote_is_worst,
)


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
    assert finding.power_at_report is not None and "13 comparisons, all must hold" in finding.error_rate
    # the reverse, clearly: 13 far bounds at 2.5 %/13 with t(df) need more than 3 seeds to call it
    arms, kinds = table5_arms({"SMOTE": 0.99}, seeds=5)
    assert findings.smote_is_worst(arms, kinds, report5()).verdict == CONTRADICTED


def test_a_finding_is_one_family_and_its_mdd_is_beyond_its_comparisons():
    """Inside SMOTE's 13-comparison finding each far bound sits at 2.5 %/13 (wider than alone), the
    claim-side bound at 2.5 %; the finding's MDD needs all 13, so it lies beyond each comparison's own."""
    arms, kinds = table5_arms({"SMOTE": 0.75})
    finding = findings.smote_is_worst(arms, kinds, report5())
    for member, finding_mdd in zip(finding.comparisons, finding.mdd):
        single = statistics.family((member,))[0].estimate
        assert member.estimate.high == pytest.approx(single.high)  # LOWER: the claim side is the upper bound
        assert member.estimate.low < single.low
        assert finding_mdd < member.mdd < member.threshold


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
    one_size = {("small-cnn", 128, False): fake_arm("a", 0.8)}
    assert findings.larger_images_help(one_size, report_table("table4")).verdict == NOT_TESTED
    assert findings.transfer_helps(one_size).verdict == NOT_TESTED


def test_larger_images_count_models_each_with_its_own_interval():
    """Three models, two of which gain: "most" (2 of 3) is reproduced, whatever the third does;
    each model's comparison carries the report's value for that model."""
    arms = {
        ("resnet18", 256, True): fake_arm("r256", 0.6),
        ("resnet18", 512, True): fake_arm("r512", 0.9),
        ("resnet50", 256, True): fake_arm("a256", 0.6),
        ("resnet50", 512, True): fake_arm("a512", 0.9),
        ("small-cnn", 64, False): fake_arm("s64", 0.9),
        ("small-cnn", 128, False): fake_arm("s128", 0.5),
    }
    finding = findings.larger_images_help(arms, report_table("table4"))
    assert len(finding.comparisons) == 3 and finding.must_hold == 2
    assert [item.verdict for item in finding.comparisons].count(REPRODUCED) == 2
    assert finding.verdict == REPRODUCED and "2 of 3 must hold" in finding.error_rate
    assert finding.reported[0] == pytest.approx(0.760 - 0.701) and finding.reported[2] is None
    assert "5 of 6 models" in finding.report_text  # resnet50 gained nothing in the report


def test_sizes_are_compared_from_the_same_weights_and_weights_at_the_same_size():
    """Lite0 from ImageNet at 96 and 128 px and from scratch at 128 px: the size comparison pairs the
    two ImageNet rows (never the scratch row), the transfer comparison the two 128 px rows."""
    arms = {
        ("efficientnet-lite0", 128, True): fake_arm("imagenet 128", 0.9),
        ("efficientnet-lite0", 96, True): fake_arm("imagenet 96", 0.6),
        ("efficientnet-lite0", 128, False): fake_arm("scratch 128", 0.3),
    }
    sizes = findings.larger_images_help(arms, report_table("table4"))
    transfer = findings.transfer_helps(arms)
    assert len(sizes.comparisons) == 1 and len(transfer.comparisons) == 1
    assert sizes.verdict == REPRODUCED and transfer.verdict == REPRODUCED
    assert transfer.comparisons[0].label.startswith("efficientnet-lite0 128 px") and transfer.reported == (None,)
    arms["efficientnet-lite0", 128, False] = fake_arm("scratch 128", 0.9)
    assert findings.transfer_helps(arms).verdict != REPRODUCED
    assert findings.larger_images_help(arms, report_table("table4")).verdict == REPRODUCED


def test_a_single_seed_decides_nothing():
    arms, kinds = table5_arms({})
    arms = {name: fake_arm(name, 0.4 if name == "SMOTE" else 0.8, seeds=1) for name in arms}
    finding = findings.smote_is_worst(arms, kinds, report5())
    assert finding.verdict == INCONCLUSIVE and "× 1 seed(s)" in finding.n


def test_attack_findings_leave_a_model_degenerate_on_validation_untested():
    """The degenerate-model gate reads validation predictions, never the test split it gates."""
    collapsed = np.zeros((5, 5), int)
    collapsed[:, 0] = [60, 10, 20, 5, 5]  # grade 0 for every image
    arms = {"baseline": fake_arm("baseline", 0.8), "adversarially trained": fake_arm("adv", 0.8)}
    arms["baseline"].runs[0].confusions["valid"] = collapsed
    finding = findings.attack_finding("Figure 6", "x", arms, {}, "baseline", HIGHER, "curves only")
    assert finding.verdict == NOT_TESTED and "validation images" in finding.note
    arms = {"baseline": fake_arm("baseline", 0.8), "adversarially trained": fake_arm("adv", 0.8)}
    arms["baseline"].runs[0].confusions["test"] = collapsed  # collapsed on test only: the gate does not look
    assert arms["baseline"].top_share < findings.DEGENERATE_SHARE


def test_attack_findings_compare_robust_accuracy_per_image():
    rng = np.random.default_rng(1)

    def outcomes(robust: float):
        rows = np.arange(200)
        labels = LABELS[:200]
        frames = []
        for eps in (0, 1 / 255, 2 / 255):
            attacked = np.where(rng.random(200) < (1 if eps == 0 else robust), labels, (labels + 1) % 5)
            frames.append(
                pd.DataFrame({"eps": eps, "row": rows, "label": labels, "clean": labels, "attacked": attacked})
            )
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
    absent = [rng.normal(0.0, 0.01, 2000) for _ in range(3)]  # no shift, measured precisely
    assert findings.judge_difference(absent, True, "m").outcome == SMALLER
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


def piece(outcome: str) -> findings.Evidence:
    """A piece of evidence whose interval gives ``outcome`` (claim: more than +1 point)."""
    low, high = {
        REPRODUCED: (0.02, 0.05),
        SMALLER: (-0.005, 0.005),
        CONTRADICTED: (-0.05, -0.02),
        INCONCLUSIVE: (0.0, 0.05),
        NOT_TESTED: (float("nan"), float("nan")),
    }[outcome]
    estimate = statistics.Estimate((low + high) / 2, low, high, 100, 3)
    return findings.Evidence("m", statistics.Comparison("m", "share", HIGHER, 0.01, estimate, -0.01))


def test_the_overall_verdict_treats_a_piece_that_cannot_discriminate_as_no_evidence():
    assert findings.overall_verdict([piece(REPRODUCED), piece(REPRODUCED)]) == "supports"
    assert findings.overall_verdict([piece(REPRODUCED), piece(INCONCLUSIVE)]) == "inconclusive"
    assert findings.overall_verdict([piece(CONTRADICTED), piece(NOT_TESTED)]) == "refutes"
    assert findings.overall_verdict([piece(REPRODUCED), piece(CONTRADICTED)]) == "refutes"
    assert findings.overall_verdict([piece(REPRODUCED), piece(SMALLER)]) == findings.WORDS[SMALLER]
    assert findings.overall_verdict([piece(NOT_TESTED)]) == "untested"
    undecided = findings.cannot_discriminate(piece(CONTRADICTED), "the baseline ignores the cue")
    assert (
        undecided.word == "inconclusive" and findings.overall_verdict([piece(REPRODUCED), undecided]) == "inconclusive"
    )


def test_a_finding_with_an_undecidable_part_is_inconclusive_at_best():
    arms, kinds = table5_arms({"SMOTE": 0.4})
    decided = findings.smote_is_worst(arms, kinds, report5())
    assert decided.verdict == REPRODUCED
    partial = findings.Finding(
        "x", "y", decided.comparisons, decided.reported, decided.n, "", ("cue: cannot discriminate",)
    )
    assert partial.verdict == INCONCLUSIVE and "cannot discriminate" in partial.ours


def reliance_table(rng, n, cue_flip_rate, distractor_flip_rate):
    """A cue-reliance table (predictions as generated and with each patch flipped) whose flips
    change the prediction at the given rates."""
    generated = rng.integers(0, 5, n)

    def flipped(rate):
        return np.where(rng.random(n) < rate, (generated + 1) % 5, generated)

    return pd.DataFrame(
        {
            "row": np.arange(n),
            "as generated": generated,
            "cue flipped": flipped(cue_flip_rate),
            "distractor flipped": flipped(distractor_flip_rate),
        }
    )


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


def test_the_cue_gate_and_the_cue_evidence_use_disjoint_halves_of_the_images():
    table = reliance_table(np.random.default_rng(2), 800, 0.3, 0.02)
    gate, evidence = findings.gate_images(table), findings.evidence_images(table)
    assert set(gate["row"]).isdisjoint(evidence["row"]) and len(gate) + len(evidence) == len(table)
    assert findings.cue_power([table] * 2).comparison.estimate.n_images == len(gate)


def test_the_external_finding_pairs_seeds_on_the_external_photographs(monkeypatch):
    """Without an external set the finding is not tested; with one, adversarially trained against
    baseline seed by seed on the external photographs, reproduced only when it grades them better."""
    from fundus_lib.config import load_params
    from fundus_lib.paths import project_root

    params = load_params(project_root() / "params" / "smoke.yaml")
    assert findings.generalises_across_cameras(params, {}).verdict == NOT_TESTED
    external = params.model_copy(update={"data": params.data.model_copy(update={"external": project_root()})})
    accuracy = {"baseline": 0.6, "adversarially trained": 0.9}
    monkeypatch.setattr(findings, "external_arm", lambda params, name, runs: fake_arm(name, accuracy[name]))
    seed_runs = {"baseline": [], "adversarially trained": []}
    better = findings.generalises_across_cameras(external, seed_runs)
    assert better.verdict == REPRODUCED and "external photographs" in better.n and better.reported == (None,)
    accuracy["adversarially trained"] = 0.6
    assert findings.generalises_across_cameras(external, seed_runs).verdict != REPRODUCED


def test_a_collapsed_arm_is_named_in_the_table4_findings():
    """A from-scratch arm whose seeds give one grade to every validation image: the transfer finding
    says which arm collapsed in how many seeds, and a healthy pair carries no such note."""
    healthy = {
        ("efficientnet-lite0", 96, True): fake_arm("imagenet 96", 0.8),
        ("efficientnet-lite0", 96, False): fake_arm("scratch 96", 0.5),
    }
    assert findings.transfer_helps(healthy).note == ""
    one_grade = np.zeros((5, 5), dtype=np.int64)
    one_grade[:, 2] = np.bincount(LABELS, minlength=5)
    scratch = fake_arm("scratch 96", 0.5)
    collapsed_runs = (FakeRun({}, {"valid": one_grade, "test": one_grade}),) * 2 + scratch.runs[2:]
    arms = {**healthy, ("efficientnet-lite0", 96, False): replace(scratch, runs=collapsed_runs)}
    assert findings.collapsed(collapsed_runs[0]) and not findings.collapsed(scratch.runs[2])
    note = findings.transfer_helps(arms).note
    assert "collapsed onto one grade" in note and "efficientnet-lite0 96 px from scratch in 2 of 3 seed(s)" in note
    assert "ImageNet in" not in note


def test_more_seeds_shrink_a_findings_mdd_and_the_planner_names_the_seeds_that_suffice():
    from fundus_lib.report.conclusions import power_table, seeds_for_power

    arms, kinds = table5_arms({"SMOTE": 0.78})
    finding = findings.smote_is_worst(arms, kinds, report5())
    mdds = [finding.with_seeds(count).mdd[0] for count in (3, 5, 10)]
    assert mdds[0] == pytest.approx(finding.mdd[0])
    assert mdds[0] < mdds[1] < mdds[2] < finding.comparisons[0].threshold  # LOWER: closer to the margin
    needed = seeds_for_power(finding)
    if needed.isdigit():
        assert finding.with_seeds(int(needed)).power_at_report >= statistics.POWER
        assert int(needed) == 3 or finding.with_seeds(int(needed) - 1).power_at_report < statistics.POWER
    table = power_table([finding])
    assert list(table["seeds"]) == [3] and "MDD at 10 seeds" in table.columns
