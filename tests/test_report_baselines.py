"""Chapter 2's bar for the baseline: the rule (statistics.meets_bar) and the sentence (report.baselines)."""

from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np

from fundus_lib import statistics
from fundus_lib.config import GradingBar
from fundus_lib.report import baselines

BAR = GradingBar(kappa=0.6, balanced_accuracy=0.4)


@dataclass
class SeedRun:
    """What the bar reads from a run: test metrics, the validation confusion, epochs and time."""

    seed: int
    kappa: float
    balanced_accuracy: float
    best_epoch: int = 4
    epochs_run: int = 4
    train_seconds: float = 240.0
    one_grade: bool = False
    config: SimpleNamespace = field(init=False)
    record: dict = field(init=False)

    def __post_init__(self):
        self.config = SimpleNamespace(model="efficientnet-lite0", image_size=128, seed=self.seed)
        self.record = {"best_epoch": self.best_epoch, "epochs_run": self.epochs_run}

    def metrics(self, split):
        return {"kappa": self.kappa, "balanced_accuracy": self.balanced_accuracy}

    def confusion(self, split):
        if self.one_grade:
            return np.array([[50, 0, 0, 0, 0]] * 5)
        return np.eye(5, dtype=int) * 10 + 1


def test_the_bar_needs_both_means_and_no_collapsed_seed():
    assert statistics.meets_bar([0.6, 0.6], [0.4, 0.4], [False, False], BAR)  # at the bar counts
    assert statistics.meets_bar([0.5, 0.7], [0.35, 0.45], [False, False], BAR)  # the mean, not every seed
    assert not statistics.meets_bar([0.59, 0.6], [0.5, 0.5], [False, False], BAR)
    assert not statistics.meets_bar([0.9, 0.9], [0.39, 0.4], [False, False], BAR)
    assert not statistics.meets_bar([0.9, 0.9], [0.9, 0.9], [False, True], BAR)


def test_a_baseline_that_meets_the_bar_is_said_to_and_gets_no_cost_estimate():
    runs = [SeedRun(seed, 0.65 + 0.01 * seed, 0.45) for seed in range(3)]
    text = baselines.bar_text(BAR, runs)
    assert "**met**" in text and "estimate" not in text
    assert "0.660" in text  # the mean of 0.65, 0.66, 0.67
    assert list(baselines.bar_rows(runs).index) == [0, 1, 2]


def test_a_baseline_below_the_bar_gets_the_cost_at_the_reports_size():
    """4 epochs of 60 s each at 128 px; 256 px has 4 times the pixels: 3 seeds x 4 epochs x 240 s = 48 min."""
    runs = [SeedRun(0, 0.45, 0.40), SeedRun(1, 0.45, 0.40, best_epoch=2), SeedRun(2, 0.46, 0.41, one_grade=True)]
    text = baselines.bar_text(BAR, runs)
    assert "**not met**" in text and "1 seed(s) collapsed" in text
    assert "best in 2 of 3 seed(s)" in text
    assert "4.0 times the pixels" in text and "48.0 min" in text
    assert baselines.bar_rows(runs)["collapsed"].tolist() == [False, False, True]
