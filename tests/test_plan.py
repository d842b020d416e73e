"""The plan of a params file: its image passes agree with what the trainer actually iterates,
its run count with the run list, and its report names every chapter, the caches and the space."""

from __future__ import annotations

import numpy as np
import pytest

from fundus_lib.config import load_params
from fundus_lib.experiments import all_runs
from fundus_lib.plan import cache_bytes, epoch_images, image_passes, labelled_counts, plan_report, training_plan
from fundus_lib.runs import run_data
from fundus_lib.training.loop import training_set


def test_epoch_images_match_the_training_sets_the_trainer_builds():
    """For every sampling of the smoke params (plain, oversampled, SMOTE), the plan's images per
    epoch equal the positions the trainer's training set gives epoch 0."""
    params = load_params("params/smoke.yaml")
    checked = set()
    for _, (run_params, config) in all_runs(params).items():
        if config.sampling in checked or config.corruption is not None:
            continue
        checked.add(config.sampling)
        data = run_data(run_params, config, progress=False)
        trained = training_set(config, data, progress=False)
        assert epoch_images(config, trained.class_counts) == len(trained.positions(0)), config.sampling
    assert checked == {"none", "oversample", "smote"}


def test_image_passes_count_epochs_and_pgd_steps():
    params = load_params("params/eyepacs-512.yaml")
    counts = np.array([100, 10, 20, 4, 3])
    runs = {label: config for label, (_, config) in all_runs(params).items()}
    plain = runs["02 baselines: efficientnet-b0 512 px"]
    adversarial = next(config for config in runs.values() if config.adversarial is not None)
    assert image_passes(plain, counts) == plain.epochs * 137
    assert image_passes(adversarial, counts) == adversarial.epochs * 137 * (1 + adversarial.adversarial.steps)
    oversampled = next(config for config in runs.values() if config.sampling == "oversample")
    assert image_passes(oversampled, counts) == oversampled.epochs * 500


def test_the_plan_lists_every_run_and_its_caches():
    """Without the Kaggle download the counts come from the report's Table 1 (35,126 images); the
    512 px cache alone is 35,126 x 512 x 512 x 3 bytes."""
    params = load_params("params/eyepacs-512.yaml")
    plan = training_plan(params)
    assert len(plan) == len(all_runs(params)) and (plan["passes"] > 0).all()
    counts, source = labelled_counts(params)
    if "Table 1" in source:
        assert counts.sum() == 35_126
    caches, size = cache_bytes(params)
    assert caches >= 2 and size == caches * counts.sum() * 512 * 512 * 3


@pytest.mark.slow
def test_the_plan_report_measures_and_extrapolates(capsys):
    text = plan_report(load_params("params/smoke.yaml"), "params/smoke.yaml")
    for chapter in ("02_baselines", "03_balancing", "04_corruption", "05_adversarial"):
        assert chapter in text
    assert "small-cnn at 48 px" in text and "free under" in text and "image passes" in text
    assert "measuring small-cnn at 48 px" in capsys.readouterr().out
