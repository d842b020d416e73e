"""Training seeds: every configuration a finding compares trains params.seeds seeds, the first
seed is the configuration itself (its run key does not change), a fine-tuned run continues the
same seed of its baseline, and tables show the mean over seeds with its interval."""

import math

import pytest
from scipy import stats

from fundus_lib.config import load_params
from fundus_lib.experiments import (
    adversarial_runs,
    all_runs,
    balancing_runs,
    compared_seeds,
    seeded,
    seeds_phrase,
    training_seeds,
)
from fundus_lib.paths import project_root
from fundus_lib.report.tables import over_seeds


@pytest.mark.parametrize("name, seeds", [("demo", 3), ("eyepacs-256", 3), ("eyepacs-512", 3), ("smoke", 1)])
def test_params_train_enough_seeds(name, seeds):
    params = load_params(project_root() / "params" / f"{name}.yaml")
    assert training_seeds(params) == list(range(seeds))
    labels = all_runs(params)
    for label, configs in compared_seeds(params).items():
        assert label in labels and len(configs) >= seeds
        assert all(f"{label}, seed {config.seed}" in labels for config in configs[1:])


def test_a_chapter_may_train_more_seeds_than_the_others():
    params = load_params(project_root() / "params" / "demo.yaml")
    params = params.model_copy(
        update={
            "seeds": 3,
            "balancing": params.balancing.model_copy(update={"seeds": 5}),
            "corruption": params.corruption.model_copy(update={"seeds": None}),
        }
    )
    compared = compared_seeds(params)
    assert {len(configs) for label, configs in compared.items() if label.startswith("03 ")} == {5}
    assert {len(configs) for label, configs in compared.items() if not label.startswith("03 ")} == {3}
    assert [config.seed for config in seeded(params, balancing_runs(params), "balancing")["SMOTE"]] == [0, 1, 2, 3, 4]
    labels = all_runs(params)
    assert "03 balancing: SMOTE, seed 4" in labels and "04 corruption: table6, baseline, seed 4" not in labels
    assert seeds_phrase(params) == "3 (chapter 3: 5)"
    assert (
        seeds_phrase(params.model_copy(update={"balancing": params.balancing.model_copy(update={"seeds": 3})})) == "3"
    )


def test_seeds_keep_the_first_run_and_follow_fine_tuning():
    params = load_params(project_root() / "params" / "demo.yaml")
    runs = seeded(params, adversarial_runs(params))
    assert runs["baseline"][0] == adversarial_runs(params)["baseline"]
    for seed, (baseline, adversarial) in enumerate(zip(runs["baseline"], runs["adversarially trained"])):
        assert baseline.seed == adversarial.seed == seed
        assert adversarial.init_from == baseline
    assert len({config.model_dump_json() for config in runs["baseline"]}) == 3


def test_tables_show_the_mean_over_seeds_with_its_interval():
    table = over_seeds({"a": [{"kappa": 0.70}, {"kappa": 0.72}, {"kappa": 0.74}], "b": [{"kappa": 0.5}]}, ("kappa",))
    assert table.loc["a", "kappa"] == pytest.approx(0.72)
    assert table.loc["a", "kappa ±"] == pytest.approx(stats.t.ppf(0.975, 2) * 0.02 / 3**0.5)
    assert table.loc["b", "seeds"] == 1 and math.isnan(table.loc["b", "kappa ±"])  # one seed: no spread, shown as "–"
