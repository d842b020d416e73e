"""Attacks: checked by hand on a linear model, then on a small trained CNN against torchattacks
(PGD) and foolbox (HopSkipJump).

The toy problem: 16x16 RGB images of uniform noise, class 1 when the red channel's mean exceeds
the blue channel's. Its margins are small (the difference of the means has std ~0.026), so PGD at
a few /255 flips a fair share of predictions and the success rate has room to grow with eps.
"""

from __future__ import annotations

import math

import pytest
import torch
from conftest import require
from torch import nn

from fundus_lib.attacks.adversarial_training import adversarial_loss
from fundus_lib.attacks.decision import (
    CONVERGED_FACTOR,
    _random_directions,
    hop_skip_jump,
    last_fifth_factor,
    perturbation_sizes,
)
from fundus_lib.attacks.pgd import attack_success, eps_from_255, pgd, predict_labels, report_eps_to_pixels
from fundus_lib.models import Normalize, create_model

SIZE = 16


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run fastest on one thread (and the second core may be busy)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def toy_data(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.rand(count, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))
    return images, (images[:, 0].mean((1, 2)) > images[:, 2].mean((1, 2))).long()


@pytest.fixture(scope="module")
def toy_model() -> nn.Module:
    """Normalize + conv + BatchNorm + ReLU + pooling + linear, trained 200 Adam steps (~1 s); about
    90 % accurate on fresh noise. Returned in eval mode."""
    torch.manual_seed(0)
    model = nn.Sequential(
        Normalize(),
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 2),
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for step in range(200):
        images, labels = toy_data(128, seed=1000 + step)
        loss = nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


@pytest.fixture(scope="module")
def sample() -> tuple[torch.Tensor, torch.Tensor]:
    """200 fresh toy images (N, 3, 16, 16) in [0, 1] and their labels."""
    return toy_data(200, seed=1)


@pytest.fixture(scope="module")
def correct(toy_model, sample):
    """The first 12 sample images the toy model classifies correctly."""
    images, labels = sample
    keep = predict_labels(toy_model, images) == labels
    return images[keep][:12], labels[keep][:12]


def linear_model() -> nn.Module:
    """logits = W x + b on the flattened pixels, two classes, small random weights."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * SIZE * SIZE, 2))
    with torch.no_grad():
        model[1].weight.normal_(0, 0.05)
    return model.eval()


def ce(model, images, labels):
    with torch.no_grad():
        return nn.functional.cross_entropy(model(images), labels, reduction="none")


def seed(value: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(value)


# --- units -----------------------------------------------------------------------------------------


def test_units():
    assert eps_from_255(2) == 2 / 255
    # 2.5/255 normalised x mean std (0.229 + 0.224 + 0.225) / 3 = 0.226 -> 0.565/255 pixels
    assert report_eps_to_pixels(2.5 / 255) * 255 == pytest.approx(0.565)


# --- PGD by hand -------------------------------------------------------------------------------------


def test_pgd_reaches_the_optimum_of_a_linear_model():
    """For two classes and logits W x + b, cross-entropy rises with (w_other - w_true) . x, so the
    best point of the eps-ball within [0, 1] is clamp(x + eps sign(w_other - w_true), 0, 1).
    PGD with steps x alpha >= 2 eps reaches it from any start."""
    model, (images, labels) = linear_model(), toy_data(50, seed=2)
    weight = model[1].weight.detach()
    direction = (weight[1 - labels] - weight[labels]).sign().view_as(images)
    eps = 4 / 255
    optimum = torch.clamp(images + eps * direction, 0, 1)
    adversarials = pgd(model, images, labels, eps, alpha=1 / 255, steps=8, generator=seed())
    assert torch.allclose(adversarials, optimum, atol=1e-7)


def test_more_steps_never_lower_the_loss_on_a_linear_model():
    """Guaranteed, per image: the same generator seed gives the same random start and alpha is
    fixed, so the k-step run is the start of the (k+1)-step run; on a two-class linear model the
    gradient's sign is the same everywhere, so each pixel only moves towards the optimal corner
    and the loss cannot fall. (With alpha = 2.5 eps / steps, the default, the step size changes
    with steps and there is no such guarantee.)"""
    model, (images, labels) = linear_model(), toy_data(50, seed=3)
    losses = [
        ce(model, pgd(model, images, labels, 2 / 255, alpha=0.5 / 255, steps=steps, generator=seed()), labels)
        for steps in range(1, 9)
    ]
    for fewer, more in zip(losses, losses[1:]):
        assert (more >= fewer - 1e-6).all()


def test_more_steps_raise_the_mean_loss_on_a_cnn(toy_model, sample):
    """Not guaranteed on a non-linear model (sign steps can overshoot), but robust for the batch
    mean: same start, same alpha, 10 steps against 2."""
    images, labels = sample
    short, long = (
        ce(
            toy_model, pgd(toy_model, images, labels, 2 / 255, alpha=0.5 / 255, steps=steps, generator=seed()), labels
        ).mean()
        for steps in (2, 10)
    )
    assert long > short


@pytest.mark.parametrize("eps_255", [0.5, 2, 8])
@pytest.mark.parametrize("restarts, random_start", [(1, True), (3, True), (1, False)])
def test_pgd_stays_in_the_eps_ball_and_in_pixel_range(toy_model, sample, eps_255, restarts, random_start):
    images, labels = sample
    images = images.clone()
    images[:, :, :2] = 0.0  # rows at the pixel bounds, where the clamp to [0, 1] must act
    images[:, :, -2:] = 1.0
    eps = eps_from_255(eps_255)
    adversarials = pgd(
        toy_model, images, labels, eps, steps=5, restarts=restarts, random_start=random_start, generator=seed()
    )
    assert adversarials.shape == images.shape and not adversarials.requires_grad
    assert (adversarials - images).abs().max() <= eps + 1e-6
    assert adversarials.min() >= 0 and adversarials.max() <= 1


def test_restarts_keep_the_highest_loss(toy_model, sample):
    """Restart 1 of a 3-restart run is the 1-restart run (same seed), and per image the kept loss
    is the maximum over restarts, so it is never below the single run's. (Small steps, so that
    the end point depends on the start.)"""
    images, labels = sample
    single, several = (
        ce(
            toy_model,
            pgd(toy_model, images, labels, 2 / 255, alpha=0.5 / 255, steps=2, restarts=restarts, generator=seed()),
            labels,
        )
        for restarts in (1, 3)
    )
    assert (several >= single).all() and (several > single).any()


def test_eps_zero_changes_nothing(toy_model, sample):
    images, labels = sample
    assert torch.equal(pgd(toy_model, images, labels, eps=0, generator=seed()), images)
    row = attack_success(toy_model, images, labels, [0], steps=5, progress=False).iloc[0]
    assert row.success_rate == 0 and row.robust_accuracy == row.clean_accuracy


def test_success_rate_grows_with_eps(toy_model, sample):
    """Not guaranteed for a finite number of steps, but robust here: neighbouring eps differ by
    9-29 points of success rate (measured 0, 9.5, 18, 40.5, 69.5, 92.5 % at 0, 0.5, 1, 2, 4, 8 /255)."""
    images, labels = sample
    table = attack_success(
        toy_model,
        images,
        labels,
        [eps_from_255(k) for k in (0, 0.5, 1, 2, 4, 8)],
        steps=10,
        batch_size=64,
        generator=seed(),
        progress=False,
    )
    assert table.success_rate.is_monotonic_increasing and table.robust_accuracy.is_monotonic_decreasing
    assert table.success_rate.iloc[-1] > 0.5
    assert table.clean_accuracy.iloc[0] == (predict_labels(toy_model, images) == labels).sum().item() / len(labels)


def test_attack_success_counts_as_the_report(toy_model, sample):
    """One batch: success = share of predictions changed (eq. 11), robust = share still correct."""
    images, labels = sample
    table = attack_success(
        toy_model, images, labels, [2 / 255], steps=5, batch_size=len(images), generator=seed(), progress=False
    )
    adversarial = predict_labels(toy_model, pgd(toy_model, images, labels, 2 / 255, steps=5, generator=seed()))
    clean = predict_labels(toy_model, images)
    assert table.success_rate.iloc[0] == pytest.approx((adversarial != clean).float().mean().item())
    assert table.robust_accuracy.iloc[0] == pytest.approx((adversarial == labels).float().mean().item())
    assert list(table.columns) == ["eps", "eps_255", "success_rate", "robust_accuracy", "clean_accuracy"]


# --- leaving the model as found -------------------------------------------------------------------


def _run_pgd(model, images, labels):
    pgd(model, images, labels, 2 / 255, steps=2, restarts=2, generator=seed())


def _run_success(model, images, labels):
    attack_success(model, images, labels, [1 / 255], steps=2, batch_size=4, progress=False)


def _run_decision(model, images, labels):
    hop_skip_jump(model, images, labels, steps=1, initial_evals=10, max_queries=300, generator=seed())


@pytest.mark.parametrize("attack", [_run_pgd, _run_success, _run_decision])
@pytest.mark.parametrize("training", [True, False])
def test_attacks_leave_the_model_as_found(attack, training):
    """small-cnn with BatchNorm and dropout; one BatchNorm frozen by the caller stays frozen."""
    model = create_model("small-cnn", dropout=0.5).train(training)
    frozen = model.backbone[4]
    frozen.eval()
    images, labels = torch.rand(8, 3, 32, 32, generator=seed()), torch.arange(8) % 5
    nn.functional.cross_entropy(model(images), labels).backward()  # .grad set, running stats moved once
    modes = {name: module.training for name, module in model.named_modules()}
    buffers = {name: value.clone() for name, value in model.named_buffers()}
    grads = {name: parameter.grad.clone() for name, parameter in model.named_parameters()}
    attack(model, images, labels)
    assert {name: module.training for name, module in model.named_modules()} == modes
    assert all(torch.equal(value, buffers[name]) for name, value in model.named_buffers())
    assert all(torch.equal(parameter.grad, grads[name]) for name, parameter in model.named_parameters())


def test_pgd_runs_in_eval_mode(toy_model, sample):
    """The same result whatever mode the caller left the model in (BatchNorm uses running stats)."""
    images, labels = sample
    toy_model.train()
    try:
        in_train = pgd(toy_model, images, labels, 2 / 255, steps=3, generator=seed())
    finally:
        toy_model.eval()
    assert torch.equal(in_train, pgd(toy_model, images, labels, 2 / 255, steps=3, generator=seed()))


def test_pgd_works_under_no_grad(toy_model, sample):
    """Evaluation loops often run under torch.no_grad(); the attack still gets its gradients."""
    images, labels = sample
    with torch.no_grad():
        inside = pgd(toy_model, images, labels, 2 / 255, steps=3, generator=seed())
    assert torch.equal(inside, pgd(toy_model, images, labels, 2 / 255, steps=3, generator=seed()))


def test_mode_is_restored_after_an_exception():
    seen = []

    class Failing(nn.Module):
        def forward(self, images):
            seen.append(self.training)
            raise RuntimeError("boom")

    model = nn.Sequential(nn.BatchNorm2d(3), Failing()).train()
    with pytest.raises(RuntimeError, match="boom"):
        pgd(model, torch.rand(2, 3, 8, 8), torch.zeros(2, dtype=torch.long), 1 / 255)
    assert seen == [False] and model.training and model[0].training


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_attacks_run_on_cuda(toy_model, correct):
    """The device comes from the images; a CPU generator still drives the random draws."""
    images, labels = (tensor.cuda() for tensor in correct)
    model = toy_model.cuda()
    try:
        adversarials = pgd(model, images, labels, 2 / 255, steps=3, generator=seed())
        assert adversarials.is_cuda and (adversarials - images).abs().max() <= 2 / 255 + 1e-6
        result = hop_skip_jump(model, images, labels, steps=2, generator=seed())
        assert result.adversarials.is_cuda and result.success.all()
    finally:
        toy_model.cpu()


# --- agreement with torchattacks ------------------------------------------------------------------


@pytest.mark.parametrize("random_start", [False, True])
def test_pgd_equals_torchattacks_bit_for_bit(toy_model, sample, random_start):
    """Same arithmetic in the same order: torchattacks takes the gradient of the batch *mean*
    cross-entropy, we of the sum, which has the same signs. With random starts, the same seed in
    torch's global generator (theirs) and in ours gives the same uniform draws (both call
    Tensor.uniform_). Measured: identical images (max difference 0.0) on these 200 images."""
    torchattacks = require("torchattacks")
    images, labels = sample
    with torch.random.fork_rng():
        torch.manual_seed(0)
        attack = torchattacks.PGD(toy_model, eps=2 / 255, alpha=0.5 / 255, steps=10, random_start=random_start)
        theirs = attack(images, labels)
    ours = pgd(
        toy_model, images, labels, 2 / 255, alpha=0.5 / 255, steps=10, random_start=random_start, generator=seed(0)
    )
    assert torch.equal(ours, theirs)


def test_pgd_success_rate_matches_torchattacks(toy_model, sample):
    """Different random starts (seed 0 for theirs, 1 for ours) and few short steps (3 x 0.5/255,
    less than the ball's width 4/255), so that the start matters: the success rates on 200
    images agree within 0.05 (measured: ours 0.245, torchattacks 0.240; over seeds 0-3 both
    range over 0.240-0.265)."""
    torchattacks = require("torchattacks")
    images, labels = sample
    clean = predict_labels(toy_model, images)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        theirs = torchattacks.PGD(toy_model, eps=2 / 255, alpha=0.5 / 255, steps=3, random_start=True)(images, labels)
    ours = pgd(toy_model, images, labels, 2 / 255, alpha=0.5 / 255, steps=3, generator=seed(1))
    assert not torch.equal(ours, theirs)
    rates = [
        (predict_labels(toy_model, adversarials) != clean).float().mean().item() for adversarials in (ours, theirs)
    ]
    assert 0.1 < rates[0] < 0.9
    assert rates[0] == pytest.approx(rates[1], abs=0.05)


# --- adversarial training objective ---------------------------------------------------------------


def mean_ce(outputs, labels):
    return nn.functional.cross_entropy(outputs, labels)


@pytest.mark.parametrize("eps, weight", [(2 / 255, 0.0), (0.0, 0.3), (0.0, 0.5), (0.0, 1.0)])
def test_adversarial_loss_is_the_clean_loss_without_attack(toy_model, sample, eps, weight):
    images, labels = sample
    toy_model.train()
    try:
        loss = adversarial_loss(toy_model, images, labels, mean_ce, eps=eps, steps=3, weight=weight)
        clean = mean_ce(toy_model(images), labels)
    finally:
        toy_model.eval()
    assert loss.item() == pytest.approx(clean.item(), rel=1e-6)


@pytest.mark.parametrize("weight", [0.5, 1.0])
def test_adversarial_loss_mixes_clean_and_pgd_losses(toy_model, sample, weight):
    """In eval mode (deterministic forward passes): (1 - w) clean + w loss(pgd(...)) with the same seed."""
    images, labels = sample
    loss = adversarial_loss(toy_model, images, labels, mean_ce, eps=2 / 255, steps=3, weight=weight, generator=seed())
    adversarials = pgd(toy_model, images, labels, 2 / 255, steps=3, generator=seed())
    expected = (1 - weight) * mean_ce(toy_model(images), labels) + weight * mean_ce(toy_model(adversarials), labels)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert not toy_model.training


def test_adversarial_loss_in_train_mode():
    """Train mode stays on; BatchNorm statistics move twice (clean and adversarial passes), not
    once per attack step as in the report's code; gradients reach every parameter."""
    model = create_model("small-cnn").train()
    images, labels = torch.rand(8, 3, 32, 32, generator=seed()), torch.arange(8) % 5
    tracked = model.backbone[1].num_batches_tracked.item()
    loss = adversarial_loss(model, images, labels, mean_ce, eps=2 / 255, steps=5, weight=0.5, generator=seed())
    loss.backward()
    assert model.training and all(module.training for module in model.modules())
    assert model.backbone[1].num_batches_tracked.item() == tracked + 2
    assert all(parameter.grad is not None and parameter.grad.abs().sum() > 0 for parameter in model.parameters())


def test_adversarial_loss_passes_training_outputs_untouched(toy_model, sample):
    """inception_v3 returns (logits, aux_logits) in train mode: loss_fn gets the tuple as it is."""

    class TupleInTraining(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, images):
            logits = self.inner(images)
            return (logits, logits) if self.training else logits

    seen = []

    def loss_fn(outputs, labels):
        seen.append(type(outputs))
        return mean_ce(outputs[0], labels) + 0.4 * mean_ce(outputs[1], labels)

    model = TupleInTraining(toy_model).train()
    images, labels = sample
    try:
        adversarial_loss(model, images[:16], labels[:16], loss_fn, eps=2 / 255, steps=2).backward()
    finally:
        toy_model.eval()
    assert seen == [tuple, tuple]


# --- decision-based attack ------------------------------------------------------------------------


def blend_bisection(model, images, labels, generator, rounds=30):
    """Baseline: per image, the first misclassified uniform-noise image, then the smallest blend
    (1 - t) x + t noise that is still misclassified, by bisection on t."""
    noise = torch.empty_like(images)
    for index in range(len(images)):
        while True:
            candidate = torch.rand(images[index].shape, generator=generator)
            if predict_labels(model, candidate[None]).item() != labels[index]:
                noise[index] = candidate
                break
    low, high = torch.zeros(len(images)), torch.ones(len(images))
    for _ in range(rounds):
        middle = (low + high) / 2
        blend = images + middle.view(-1, 1, 1, 1) * (noise - images)
        adversarial = predict_labels(model, blend) != labels
        high, low = torch.where(adversarial, middle, high), torch.where(adversarial, low, middle)
    return images + high.view(-1, 1, 1, 1) * (noise - images)


def test_hop_skip_jump_finds_valid_adversarials_within_budget(toy_model, correct):
    images, labels = correct
    result = hop_skip_jump(toy_model, images, labels, steps=10, max_queries=1500, generator=seed())
    assert result.success.all()
    assert (predict_labels(toy_model, result.adversarials) != labels).all()
    assert result.adversarials.min() >= 0 and result.adversarials.max() <= 1
    assert (result.queries <= 1500).all() and (result.queries > 1000).all()
    again = hop_skip_jump(toy_model, images, labels, steps=10, max_queries=1500, generator=seed())
    assert torch.equal(again.adversarials, result.adversarials) and torch.equal(again.queries, result.queries)


def test_hop_skip_jump_beats_a_blend_bisection(toy_model, correct):
    """The median L2 is below that of the best blend towards a misclassified noise image (measured
    on these 12 images: L2 0.19 against 6.5; L-inf 4.7/255 against 141/255)."""
    images, labels = correct
    result = hop_skip_jump(toy_model, images, labels, steps=10, max_queries=3000, generator=seed())
    ours = perturbation_sizes(images, result.adversarials, result.success)
    baseline = perturbation_sizes(images, blend_bisection(toy_model, images, labels, seed(1)))
    assert ours.median_l2 <= baseline.median_l2 and ours.median_linf <= baseline.median_linf


def test_hop_skip_jump_is_near_the_optimum_of_a_linear_model():
    """For logits W x + b the smallest L2 change to the other class is |margin| / ||w1 - w0||
    (without the [0, 1] box; with it, never less). No adversarial may be closer; the median
    lies within 20 % of it (measured 1.27 x after 10 steps, 1.11 x after 20, 1.05 x after 40)."""
    model, (images, labels) = linear_model(), toy_data(12, seed=4)
    labels = predict_labels(model, images)
    with torch.no_grad():
        logits = model(images)
    weight = model[1].weight.detach()
    optimum = (logits[:, 1] - logits[:, 0]).abs() / (weight[1] - weight[0]).norm()
    result = hop_skip_jump(model, images, labels, steps=20, max_queries=10_000, generator=seed())
    sizes = torch.tensor(perturbation_sizes(images, result.adversarials, result.success).per_image.l2.values)
    assert result.success.all() and (sizes >= optimum.double() * (1 - 1e-4)).all()
    assert (sizes / optimum).median() < 1.2


def test_hop_skip_jump_is_comparable_to_foolbox(toy_model, correct):
    """foolbox 3.3.4's HopSkipJumpAttack (its own blended-noise start, no query budget) and ours
    with the same steps, initial and maximum evaluations: median L2 of the same order, asserted
    within a factor 3. Measured on these 12 images after 10 steps: ours L2 0.19 (L-inf 4.7/255,
    2,421 queries at most), foolbox L2 0.29 (L-inf 8.1/255). Ours keeps the best point so far."""
    foolbox = require("foolbox")
    images, labels = correct
    with torch.random.fork_rng():
        torch.manual_seed(0)
        attack = foolbox.attacks.HopSkipJumpAttack(
            steps=10, initial_gradient_eval_steps=100, max_gradient_eval_steps=1000
        )
        _, theirs, found = attack(foolbox.PyTorchModel(toy_model, bounds=(0, 1)), images, labels, epsilons=None)
    result = hop_skip_jump(toy_model, images, labels, steps=10, max_evals=1000, generator=seed())
    ours = perturbation_sizes(images, result.adversarials, result.success).median_l2
    reference = perturbation_sizes(images, theirs, found).median_l2
    assert found.all() and result.success.all()
    assert 1 / 3 < ours / reference < 3


def test_hop_skip_jump_starts(toy_model, correct, sample):
    """Misclassified inputs are returned as they are; without noise trials only ``starts`` can
    start an attack; a budget below the cost of the start is refused."""
    images, labels = correct
    other = torch.stack([sample[0][sample[1] != label][0] for label in labels])  # an image of the other class
    wrong = hop_skip_jump(toy_model, images, 1 - labels, steps=2, generator=seed())
    assert wrong.success.all() and torch.equal(wrong.adversarials, images) and (wrong.queries == 1).all()
    none = hop_skip_jump(toy_model, images, labels, steps=2, init_trials=0, generator=seed())
    assert not none.success.any() and torch.equal(none.adversarials, images)
    given = hop_skip_jump(toy_model, images, labels, steps=2, init_trials=0, starts=other, generator=seed())
    assert torch.equal(given.success, predict_labels(toy_model, other) != labels) and given.success.any()
    with pytest.raises(ValueError, match="max_queries"):
        hop_skip_jump(toy_model, images, labels, max_queries=50)


def test_perturbation_sizes_by_hand():
    images = torch.full((2, 3, 2, 2), 0.5)
    adversarials = images.clone()
    adversarials[0, 0, 0, 0] += 0.3
    adversarials[0, 1, 1, 1] -= 0.4
    adversarials[1] += 0.1
    sizes = perturbation_sizes(images, adversarials)
    assert sizes.per_image.l2.tolist() == pytest.approx([0.5, math.sqrt(12 * 0.01)])
    assert sizes.per_image.linf.tolist() == pytest.approx([0.4, 0.1])
    assert sizes.median_linf == pytest.approx(0.25)
    failed = perturbation_sizes(images, adversarials, torch.tensor([True, False]))
    assert failed.median_l2 == pytest.approx(0.5) and math.isnan(failed.per_image.l2[1])


def test_hop_skip_jump_records_the_best_distance_per_iteration(toy_model, correct):
    """history: the start and one entry per iteration run, never increasing, ending at the result's L2."""
    images, labels = correct
    history = []
    result = hop_skip_jump(toy_model, images, labels, steps=6, max_queries=100_000, generator=seed(), history=history)
    assert len(history) == 7
    trace = torch.stack(history)
    assert (trace[1:] <= trace[:-1] + 1e-6).all()
    final = perturbation_sizes(images, result.adversarials, result.success).per_image["l2"].to_numpy()
    assert torch.allclose(trace[-1].double(), torch.tensor(final), atol=1e-4)
    plain = hop_skip_jump(toy_model, images, labels, steps=6, max_queries=100_000, generator=seed())
    assert torch.equal(plain.adversarials, result.adversarials)  # recording changes nothing


def upsampling_basis(grid_px: int) -> torch.Tensor:
    """(SIZE x SIZE, grid_px^2): bilinear upsampling of each coarse pixel to SIZE x SIZE."""
    basis = torch.eye(grid_px * grid_px).view(-1, 1, grid_px, grid_px)
    upsampled = nn.functional.interpolate(basis, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    return upsampled.view(grid_px * grid_px, -1).T


def test_random_directions_on_a_grid_lie_in_the_upsampled_subspace():
    """With a 4 px grid every direction (each channel) is a combination of the 16 upsampled coarse
    pixels (least-squares residual ~0); per pixel (None) it is not; a grid as large as the image
    is the per-pixel draw."""
    basis = upsampling_basis(4)
    like = torch.zeros(1)
    coarse = _random_directions((2, 5, 3, SIZE, SIZE), like, 4, seed()).reshape(-1, SIZE * SIZE).T
    fine = _random_directions((2, 5, 3, SIZE, SIZE), like, None, seed()).reshape(-1, SIZE * SIZE).T

    def residual(directions):
        solution = torch.linalg.lstsq(basis, directions).solution
        return ((basis @ solution - directions).norm(dim=0) / directions.norm(dim=0)).max()

    assert residual(coarse) < 1e-5 and residual(fine) > 0.5
    assert torch.equal(
        _random_directions((2, 5, 3, SIZE, SIZE), like, SIZE, seed()),
        _random_directions((2, 5, 3, SIZE, SIZE), like, None, seed()),
    )


def test_hop_skip_jump_on_a_grid_reaches_a_linear_optimum_inside_its_subspace():
    """For logits W x + b with w1 - w0 smooth (upsampled from a 4 px grid), the closest adversarial
    lies along it, inside the subspace: the grid attack gets within 20 % of |margin| / ||w1 - w0||
    in 20 steps and never below it, and with half the queries per estimate it is at least as
    close as the per-pixel attack (measured on these 12 images: 1.08 x against 1.20 x)."""
    model, (images, labels) = linear_model(), toy_data(12, seed=4)
    smooth = upsampling_basis(4) @ torch.randn(16, 2 * 3, generator=seed(3))
    with torch.no_grad():
        model[1].weight.copy_(smooth.T.reshape(2, 3 * SIZE * SIZE) * 0.02)
        model[1].bias.copy_(torch.stack([torch.tensor(0.0), -(model[1].weight[1] - model[1].weight[0]).sum() / 2]))
        logits = model(images)
    labels = logits.argmax(dim=1)
    weight = model[1].weight.detach()
    optimum = ((logits[:, 1] - logits[:, 0]).abs() / (weight[1] - weight[0]).norm()).double()

    def ratio(**options):
        result = hop_skip_jump(model, images, labels, steps=20, max_queries=10_000, generator=seed(), **options)
        sizes = torch.tensor(perturbation_sizes(images, result.adversarials, result.success).per_image.l2.values)
        assert result.success.all() and (sizes >= optimum * (1 - 1e-4)).all()
        return float((sizes / optimum).median())

    on_grid = ratio(direction_grid_px=4, initial_evals=50, max_evals=500)
    assert on_grid < 1.2 and on_grid <= ratio(initial_evals=50, max_evals=500)


def test_last_fifth_factor():
    """Flat traces give 1, a trace that halves over its last fifth 0.5; images never attacked (0)
    are left out; the threshold reads as 'less than 5 % lower'."""
    flat = [[4.0] * 11, [2.0] * 11]
    assert last_fifth_factor(flat) == 1.0
    falling = [[8, 8, 8, 8, 8, 8, 8, 8, 8, 6, 4], [0] * 11]
    assert last_fifth_factor(falling) == 0.5
    assert math.isnan(last_fifth_factor([[0] * 11]))
    assert last_fifth_factor([[1.0, 0.96]]) >= CONVERGED_FACTOR > last_fifth_factor([[1.0, 0.94]])
