"""The AutoAttack-class attacks (pyautoattack), the masking checks, the report's attack as its code
ran it and the clinical view: units, eval mode, side effects, and agreement with torchattacks.

The toy problem has 5 ordered classes like the DR grades: 16x16 RGB noise images, graded by the
quintile of (red mean - blue mean). Its margins are small, so attacks at a few /255 flip grades.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import require
from sklearn.metrics import cohen_kappa_score
from torch import nn

from fundus_lib.attacks.library import apgd_ce, apgd_t, attack_outcomes, library_attacks, pgd_attack, square
from fundus_lib.attacks.pgd import pgd, predict_labels, targeted_pgd
from fundus_lib.attacks.report_code import report_code_pgd
from fundus_lib.evaluation.robustness import robustness_table, worst_case
from fundus_lib.models import IMAGENET_MEAN, IMAGENET_STD, Normalize
from fundus_lib.statistics import WORST_CASE, masking_check, steps_ladder_failures, sweep_failures

SIZE = 16
EDGES = torch.tensor([-0.022, -0.007, 0.007, 0.022])  # about the quintiles of the red-blue difference


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def graded_noise(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.rand(count, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))
    difference = images[:, 0].mean((1, 2)) - images[:, 2].mean((1, 2))
    return images, torch.bucketize(difference, EDGES)


@pytest.fixture(scope="module")
def model() -> nn.Module:
    """Normalize + conv + BatchNorm + dropout + linear, 5 classes, 300 Adam steps; eval mode."""
    torch.manual_seed(0)
    net = nn.Sequential(
        Normalize(),
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Dropout(0.2),
        nn.Linear(8, 5),
    )
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    for step in range(300):
        images, labels = graded_noise(128, seed=1000 + step)
        loss = nn.functional.cross_entropy(net(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return net.eval()


@pytest.fixture(scope="module")
def sample(model):
    """48 fresh images the model grades correctly, and their grades."""
    images, labels = graded_noise(200, seed=1)
    keep = predict_labels(model, images) == labels
    return images[keep][:48], labels[keep][:48]


def test_the_toy_model_learned_the_grades(model):
    images, labels = graded_noise(400, seed=2)
    assert (predict_labels(model, images) == labels).float().mean() > 0.6
    assert len(torch.unique(labels)) == 5


LIBRARY = {
    "apgd-ce": lambda m, x, y, eps: apgd_ce(m, x, y, eps, steps=20),
    "apgd-t": lambda m, x, y, eps: apgd_t(m, x, y, eps, steps=10),
    "square": lambda m, x, y, eps: square(m, x, y, eps, queries=300),
}


@pytest.mark.parametrize("name", LIBRARY)
def test_attacks_work_in_pixel_units_inside_the_ball(model, sample, name):
    """eps is in [0, 1] pixel units: the perturbation reaches (not just stays under) 2/255 and no
    further, the result stays in [0, 1], and the attack flips grades that 2/255 can flip."""
    images, labels = sample
    eps = 2 / 255
    adversarials = LIBRARY[name](model, images, labels, eps)
    delta = (adversarials - images).abs()
    assert delta.max() <= eps + 1e-6
    assert delta.max() >= 0.99 * eps  # not eps x std, not eps / 255
    assert adversarials.min() >= 0 and adversarials.max() <= 1
    assert (predict_labels(model, adversarials) != labels).float().mean() > 0.2
    assert torch.equal(LIBRARY[name](model, images, labels, 0.0), images)


@pytest.mark.parametrize("name", LIBRARY)
def test_attacks_run_in_eval_mode_and_restore_modes(model, sample, name):
    """The same result whether the caller left the model in train or eval mode (dropout and
    BatchNorm frozen during the attack), the modes and the running statistics put back, and the
    global random stream untouched (the library seeds it)."""
    images, labels = sample
    expected = LIBRARY[name](model, images[:8], labels[:8], 1 / 255)
    statistics = model[2].running_mean.clone()
    model.train()
    try:
        state = torch.get_rng_state()
        result = LIBRARY[name](model, images[:8], labels[:8], 1 / 255)
        assert torch.equal(torch.get_rng_state(), state)
        assert model.training and all(module.training for module in model.modules())
    finally:
        model.eval()
    assert torch.equal(result, expected)
    assert torch.equal(model[2].running_mean, statistics)


def test_apgd_is_at_least_as_strong_as_the_reports_pgd(model, sample):
    images, labels = sample
    outcomes = attack_outcomes(
        model, images, labels, [1 / 255], {"pgd-5": pgd_attack(5), "apgd-ce": LIBRARY["apgd-ce"]}, progress=False
    )
    table = robustness_table(outcomes, with_worst_case=False).set_index("attack")["robust_accuracy"]
    assert table["apgd-ce"] <= table["pgd-5"] + 1 / len(labels)


def test_apgd_t_targets_four_classes_for_five_grades(model, sample, monkeypatch):
    """APGD-T attacks towards the 4 most likely other grades (the library's default is 9, for 10 classes)."""
    from pyautoattack import autopgd_base

    seen = []
    original = autopgd_base.APGDAttack_targeted.__init__

    def spy(self, *args, **kwargs):
        original(self, *args, **kwargs)
        seen.append(self.n_target_classes)

    monkeypatch.setattr(autopgd_base.APGDAttack_targeted, "__init__", spy)
    images, labels = sample
    apgd_t(model, images[:4], labels[:4], 1 / 255, steps=2)
    assert seen == [4]


def test_apgd_equals_torchattacks_port(model, sample):
    """torchattacks 3.5.1 ports the authors' APGD independently: with the same seed and steps it
    returns the same adversarials, bit for bit (and so the same robust accuracy)."""
    torchattacks = require("torchattacks")
    images, labels = sample
    for eps in (0.5 / 255, 2 / 255):
        ours = apgd_ce(model, images, labels, eps, steps=20)
        theirs = torchattacks.APGD(model, norm="Linf", eps=eps, steps=20, n_restarts=1, seed=0, loss="ce")(
            images, labels
        )
        assert torch.equal(ours, theirs)
        assert (predict_labels(model, ours) != labels).any()


def test_square_equals_torchattacks_port(model, sample):
    torchattacks = require("torchattacks")
    images, labels = sample
    ours = square(model, images, labels, 2 / 255, queries=300)
    theirs = torchattacks.Square(model, norm="Linf", eps=2 / 255, n_queries=300, n_restarts=1, seed=0)(images, labels)
    assert torch.equal(predict_labels(model, ours), predict_labels(model, theirs))
    assert (predict_labels(model, ours) != labels).any()


def test_outcomes_and_table_count_as_by_hand(model, sample):
    images, labels = sample
    outcomes = attack_outcomes(
        model, images[:12], labels[:12], [0, 2 / 255], {"pgd-5": pgd_attack(5)}, batch_size=5, progress=False
    )
    assert len(outcomes) == 24 and set(outcomes["eps_255"]) == {0, 2}
    at_zero = outcomes[outcomes["eps"] == 0]
    assert (at_zero["attacked"] == at_zero["clean"]).all()
    table = robustness_table(outcomes).set_index("eps_255")
    attacked = outcomes[outcomes["eps_255"] == 2]
    assert table.loc[2, "robust_accuracy"] == pytest.approx((attacked["attacked"] == attacked["label"]).mean())
    expected = cohen_kappa_score(attacked["label"], attacked["attacked"], weights="quadratic", labels=range(5))
    assert table.loc[2, "robust_kappa"] == pytest.approx(expected)


def test_outcomes_at_eps_zero_run_no_attack(model, sample):
    """At eps 0 the ball holds only the image: the attack is not called (Square would spend its
    whole budget there) and the attacked grade is the clean one."""
    images, labels = sample
    calls = []

    def recording(net, x, y, eps):
        calls.append(eps)
        return pgd_attack(2)(net, x, y, eps)

    outcomes = attack_outcomes(
        model, images[:8], labels[:8], [0, 1 / 255], {"pgd": recording}, batch_size=4, progress=False
    )
    assert calls == [1 / 255, 1 / 255]
    at_zero = outcomes[outcomes["eps"] == 0]
    assert len(at_zero) == 8 and (at_zero["attacked"] == at_zero["clean"]).all()


def test_transfer_outcomes_grade_with_the_target_model(model, sample):
    """A transfer attack crafted on another model is graded by the attacked one, and an attack
    crafted on the model itself is at least as strong."""
    images, labels = sample
    torch.manual_seed(5)
    other = nn.Sequential(
        Normalize(), nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5)
    ).eval()
    white = attack_outcomes(model, images, labels, [2 / 255], {"pgd": pgd_attack(10)}, progress=False)
    transfer = attack_outcomes(model, images, labels, [2 / 255], {"pgd": pgd_attack(10)}, progress=False, source=other)
    assert (transfer["clean"] == white["clean"]).all()
    assert (white["attacked"] == white["label"]).mean() <= (transfer["attacked"] == transfer["label"]).mean()


def outcome_rows(attack: str, eps: float, attacked: list[int], labels: list[int]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "attack": attack,
            "eps": eps,
            "eps_255": eps * 255,
            "image": range(len(labels)),
            "label": labels,
            "clean": labels,
            "attacked": attacked,
        }
    )


def test_worst_case_takes_the_first_attack_that_misgrades():
    labels = [0, 1, 2, 3]
    outcomes = pd.concat(
        [outcome_rows("apgd-ce", 1 / 255, [0, 2, 2, 3], labels), outcome_rows("apgd-t", 1 / 255, [1, 3, 2, 3], labels)]
    )
    worst = worst_case(outcomes).sort_values("image")
    assert worst["attacked"].tolist() == [1, 2, 2, 3]  # image 1: apgd-ce comes first
    assert (worst["attack"] == WORST_CASE).all()
    table = robustness_table(outcomes).set_index("attack")
    assert table.loc[WORST_CASE, "robust_accuracy"] == 0.5
    with pytest.raises(ValueError, match="none of the attacks"):
        worst_case(outcome_rows("square", 0, labels, labels))


def curve(accuracies, n=20, attack=WORST_CASE, eps=(0, 1, 2, 4, 16)) -> pd.DataFrame:
    return pd.DataFrame(
        {"attack": attack, "eps_255": eps, "eps": np.array(eps) / 255, "robust_accuracy": accuracies, "n": n}
    )


def test_the_sweep_check_passes_a_working_attack_and_fails_a_broken_one():
    assert sweep_failures(curve([0.9, 0.6, 0.3, 0.05, 0.0])) == []
    assert sweep_failures(curve([0.9, 0.6, 0.65, 0.05, 0.0])) == []  # one image of 20: noise, not a rise
    rising = sweep_failures(curve([0.9, 0.6, 0.3, 0.5, 0.0]))
    assert len(rising) == 1 and "rises" in rising[0]
    stuck = sweep_failures(curve([0.9, 0.8, 0.7, 0.6, 0.5]))
    assert len(stuck) == 1 and "largest eps" in stuck[0]
    assert sweep_failures(curve([0.9, 0.8, 0.7, 0.6, 0.5], attack="square")) == []  # only the worst case must reach 0


def test_the_sweep_check_passes_two_seeds_of_one_attack_on_null_data(model, sample):
    """Null data: the same attack twice with different seeds never 'rises' beyond noise."""
    images, labels = sample
    eps = [0, 0.5 / 255, 1 / 255, 2 / 255, 16 / 255]
    for seed in (0, 1):
        outcomes = attack_outcomes(
            model, images, labels, eps, {"apgd-ce": library_attacks(10, seed=seed)["apgd-ce"]}, progress=False
        )
        assert sweep_failures(robustness_table(outcomes)) == []


def test_masking_checks_by_hand():
    assert masking_check("square", 0.40, 0.40)["passed"]
    assert masking_check("square", 0.41, 0.40)["passed"]  # at the tolerance
    assert not masking_check("square", 0.45, 0.40)["passed"]
    assert masking_check("transfer", 0.10, 0.60)["passed"]
    assert steps_ladder_failures([0.5, 0.4, 0.4, 0.35]) == []
    assert steps_ladder_failures([0.5, 0.4, 0.45, 0.35]) == [2]


def test_the_reports_attack_cuts_normalised_values_at_zero_and_one(model, sample):
    """As the report's code ran it: at eps 0 the 'attack' still clamps the normalised image to
    [0, 1], so every pixel darker than its channel's mean becomes the mean; with eps > 0 the
    normalised change where nothing was cut stays within eps (normalised units)."""
    images, labels = sample
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    cut = report_code_pgd(model, images, labels, 0.0, steps=5)
    assert torch.allclose(cut, torch.clamp((images - mean) / std, 0, 1) * std + mean, atol=1e-6)
    assert (cut[images < mean] - mean.expand_as(images)[images < mean]).abs().max() < 1e-6
    eps = 2 / 255
    adversarials = report_code_pgd(model, images, labels, eps, steps=5, generator=torch.Generator().manual_seed(0))
    before, after = (images - mean) / std, (adversarials - mean) / std
    inside = (before > eps) & (before < 1 - eps)
    assert (after - before)[inside].abs().max() <= eps + 1e-5
    assert (after - before)[inside].abs().max() >= 0.99 * eps


def test_the_reports_attack_in_train_mode_leaves_the_model_alone(model, sample):
    images, labels = sample
    statistics = model[2].running_mean.clone()
    report_code_pgd(model, images, labels, 2 / 255, train_mode=True, generator=torch.Generator().manual_seed(0))
    assert torch.equal(model[2].running_mean, statistics) and not model.training


def test_targeted_pgd_moves_grades_towards_the_target(model, sample):
    images, labels = sample
    low = images[labels == 0]
    moved = targeted_pgd(model, low, 4, eps=16 / 255, steps=20, generator=torch.Generator().manual_seed(0))
    assert (predict_labels(model, moved) == 4).float().mean() > 0.5
    assert (moved - low).abs().max() <= 16 / 255 + 1e-6
    untargeted = pgd(model, low, torch.zeros(len(low), dtype=torch.int64), 1 / 255, steps=5)
    assert (predict_labels(model, untargeted) == 4).float().mean() <= (predict_labels(model, moved) == 4).float().mean()
