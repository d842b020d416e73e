"""Attributions and their scores, on hand-made cases whose answer is known, and against captum."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import require
from torch import nn

from fundus_lib.attribution.methods import (
    BLUR_SIGMA_SHARE,
    IG_BASELINES,
    grad_cam,
    ig_baseline,
    integrated_gradients,
    overlay,
    pixel_map,
    saliency,
    smoothgrad,
)
from fundus_lib.attribution.sanity import (
    block_of,
    cascade_steps,
    label_randomisation_check,
    map_similarity,
    randomisation_check,
)
from fundus_lib.attribution.scores import (
    REFERENCES,
    deletion_auc,
    deletion_curve,
    lesion_auc,
    pointing_game,
    reference_maps,
    reference_margin,
    relevance_mass,
)
from fundus_lib.models import IMAGENET_MEAN, IMAGENET_STD, create_model
from fundus_lib.statistics import passes_randomisation


def linear_model(weights: torch.Tensor) -> nn.Module:
    """logit 1 = sum(w * x), logit 0 = 0: IG is exact, (x - baseline) * w."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(weights.numel(), 2, bias=False))
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].weight[1] = weights.flatten()
    return model


def original_code_ig(model, x, target, baseline, steps):
    """The report's vendored IG: gradients at steps + 1 points on the straight path, averaged in
    adjacent pairs (trapezoid rule), times (x - baseline). Written out here as the reference."""
    alphas = torch.linspace(0, 1, steps + 1).view(-1, 1, 1, 1, 1)
    path = (baseline + alphas * (x - baseline)).reshape(-1, *x.shape[1:]).requires_grad_(True)
    outputs = model(path)[torch.arange(len(path)), target.repeat(steps + 1)]
    grads = torch.autograd.grad(outputs.sum(), path)[0].view(steps + 1, *x.shape)
    return (x - baseline) * ((grads[:-1] + grads[1:]) / 2).mean(dim=0)


def test_report_setting_matches_the_original_codes_formula():
    """captum's trapezoid weights sum to (n - 1) / n; with the correction, our IG equals the
    original code's trapezoid over ``steps`` intervals."""
    model = create_model("small-cnn").eval()
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    baseline = torch.rand(x.shape, generator=torch.Generator().manual_seed(6))
    target = torch.tensor([1, 3])
    ours = integrated_gradients(model, x, target, baseline=baseline, steps=10, method="riemann_trapezoid")
    reference = original_code_ig(model, x, target, baseline, steps=10)
    assert torch.allclose(ours, reference, atol=1e-5, rtol=1e-4)


def test_ig_is_exact_and_complete_on_a_linear_model():
    weights = torch.randn(3, 8, 8, generator=torch.Generator().manual_seed(0))
    model = linear_model(weights)
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    attributions, delta = integrated_gradients(
        model, x, torch.tensor([1, 1]), baseline="zero", steps=20, return_delta=True
    )
    assert torch.allclose(attributions, x * weights, atol=1e-5)
    assert delta.abs().max() < 1e-4
    assert torch.allclose(attributions.sum(dim=(1, 2, 3)), model(x)[:, 1], atol=1e-4)


def test_ig_with_the_reports_settings_is_complete_on_a_cnn():
    model = create_model("small-cnn").eval()
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    generator = torch.Generator().manual_seed(3)
    attributions, delta = integrated_gradients(model, x, torch.tensor([0, 3]), generator=generator, return_delta=True)
    assert attributions.shape == x.shape
    with torch.no_grad():
        gap = (model(x) - model(torch.rand(x.shape, generator=torch.Generator().manual_seed(3))))[[0, 1], [0, 3]]
    assert (delta.abs() <= 0.05 * gap.abs() + 1e-3).all()  # completeness within 5 % of f(x) - f(baseline)


def test_the_ig_baselines_in_pixel_units():
    """The report's code drew U[0, 1] on normalised tensors: in pixels each channel lies in
    [mean, mean + std] and is the same draw as the text's pixel noise, mapped; blurred is the
    image under a Gaussian of sigma side/16 (cv2 as the reference); every baseline in [0, 1]."""
    cv2 = require("cv2")
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    pixel = ig_baseline(images, "uniform", torch.Generator().manual_seed(1))
    normalised = ig_baseline(images, "uniform-normalised", torch.Generator().manual_seed(1))
    assert torch.allclose(normalised, pixel * std + mean)
    assert (normalised >= mean).all() and (normalised <= mean + std).all()
    sigma = BLUR_SIGMA_SHARE * 64
    blurred = ig_baseline(images, "blurred")
    reference = cv2.GaussianBlur(
        images[0].permute(1, 2, 0).numpy(),
        (2 * int(np.ceil(3 * sigma)) + 1,) * 2,
        sigma,
        borderType=cv2.BORDER_REFLECT_101,
    )
    assert np.abs(blurred[0].permute(1, 2, 0).numpy() - reference).max() < 1e-4
    assert blurred.std() < 0.2 * images.std()  # the noise is blurred away
    for kind in IG_BASELINES:
        start = ig_baseline(images, kind, torch.Generator().manual_seed(2))
        assert start.shape == images.shape and start.min() >= 0 and start.max() <= 1, kind
    with pytest.raises(ValueError, match="unknown IG baseline"):
        ig_baseline(images, "black")


@pytest.mark.parametrize("kind", IG_BASELINES)
def test_ig_is_complete_from_every_baseline(kind):
    model = create_model("small-cnn").eval()
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    start = ig_baseline(x, kind, torch.Generator().manual_seed(3))
    _, delta = integrated_gradients(model, x, torch.tensor([0, 3]), start, steps=100, return_delta=True)
    with torch.no_grad():
        change = (model(x) - model(start))[[0, 1], [0, 3]]
    assert (delta.abs() <= 0.05 * change.abs() + 1e-3).all()


def test_batch_equals_one_image_at_a_time():
    model = create_model("small-cnn").eval()
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    target = torch.tensor([1, 2, 4])
    together = integrated_gradients(model, x, target, baseline="grey", steps=16)
    apart = torch.cat(
        [integrated_gradients(model, x[i : i + 1], target[i : i + 1], baseline="grey", steps=16) for i in range(3)]
    )
    assert torch.allclose(together, apart, atol=1e-5)


def test_other_methods_have_the_image_shape_and_leave_the_mode():
    model = create_model("small-cnn").train()
    x = torch.rand(2, 3, 32, 32)
    target = torch.tensor([0, 1])
    for method in (saliency, smoothgrad, grad_cam):
        result = method(model, x, target)
        assert result.shape == x.shape and torch.isfinite(result).all(), method.__name__
    assert model.training


def test_saliency_marks_the_only_pixel_that_matters():
    weights = torch.zeros(3, 8, 8)
    weights[:, 2, 5] = 1.0
    attribution = pixel_map(saliency(linear_model(weights), torch.rand(1, 3, 8, 8), torch.tensor([1])))[0]
    assert np.unravel_index(attribution.argmax(), attribution.shape) == (2, 5)


@pytest.fixture
def lesion():
    mask = np.zeros((20, 20), bool)
    mask[5:10, 5:10] = True
    return mask


def test_scores_on_a_perfect_map(lesion):
    perfect = lesion.astype(float)
    assert relevance_mass(perfect, lesion) == 1.0
    assert pointing_game(perfect, lesion)
    assert lesion_auc(perfect, lesion) == 1.0


def test_scores_on_a_wrong_map(lesion):
    wrong = (~lesion).astype(float)
    assert relevance_mass(wrong, lesion) == 0.0
    assert not pointing_game(wrong, lesion)
    assert lesion_auc(wrong, lesion) == 0.0


def test_relevance_mass_counts_only_positive_attribution(lesion):
    attribution = np.zeros((20, 20))
    attribution[lesion] = 1.0
    attribution[15:, 15:] = 1.0  # 25 more positive pixels outside
    attribution[0, 0] = -100  # negative attribution does not count
    assert relevance_mass(attribution, lesion) == pytest.approx(25 / 50)


def test_pointing_game_tolerance(lesion):
    attribution = np.zeros((20, 20))
    attribution[11, 7] = 1.0  # two pixels below the lesion
    assert not pointing_game(attribution, lesion)
    assert pointing_game(attribution, lesion, tolerance_px=2)


def test_random_map_has_chance_auc(lesion):
    rng = np.random.default_rng(0)
    values = [lesion_auc(rng.random((20, 20)), lesion) for _ in range(50)]
    assert 0.45 < np.mean(values) < 0.55
    assert np.isnan(lesion_auc(rng.random((20, 20)), np.zeros((20, 20), bool)))


def test_deletion_removes_the_evidence_first_for_a_faithful_map():
    """The model's class-1 score is the mean of a 4 x 4 patch: deleting that patch first (a
    faithful map) must lower the probability faster than deleting in random order."""
    weights = torch.zeros(3, 16, 16)
    weights[:, 4:8, 4:8] = 0.05  # logit 2.4 on a white image, 1.2 once the patch is grey
    model = linear_model(weights)
    image = torch.ones(3, 16, 16)
    faithful = (weights.sum(dim=0) > 0).numpy().astype(float)
    random_map = np.random.default_rng(0).random((16, 16))
    fractions = np.linspace(0, 0.5, 11)
    curve = deletion_curve(model, image, 1, faithful, fractions)
    assert curve[0] > curve[-1] and np.all(np.diff(curve) <= 1e-6)
    assert deletion_auc(curve, fractions) < deletion_auc(
        deletion_curve(model, image, 1, random_map, fractions), fractions
    )


def test_overlay_colours():
    image = np.full((4, 4, 3), 0.5)
    attribution = np.zeros((4, 4))
    attribution[0, 0], attribution[3, 3] = 1.0, -1.0
    picture = overlay(image, attribution, percentile=100)
    assert picture[0, 0, 1] > picture[0, 0, 0] and picture[3, 3, 0] > picture[3, 3, 1]
    assert np.allclose(picture[1, 1], picture[1, 1, 0])  # no attribution: grey


def test_smoothgrad_is_seeded_and_leaves_the_global_generator_alone():
    model = create_model("small-cnn").eval()
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    target = torch.tensor([0, 3])
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    first = smoothgrad(model, x, target, seed=1)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert torch.equal(smoothgrad(model, x, target, seed=1), first)
    assert not torch.equal(smoothgrad(model, x, target, seed=2), first)


def test_reference_maps_are_random_edges_and_intensity():
    from skimage.filters import sobel

    torch.manual_seed(0)
    images = torch.rand(2, 3, 24, 24) * 0.2
    images[:, :, :, 12:] += 0.6  # a vertical step: the only strong edge
    maps = reference_maps(images, seed=3)
    assert list(maps) == list(REFERENCES) and all(m.shape == (2, 24, 24) for m in maps.values())
    random, edges, intensity = maps.values()
    assert np.allclose(intensity, images.mean(dim=1).numpy())
    assert set(np.argmax(edges[:, 12], axis=1)) <= {11, 12}  # the step's two columns
    interior = (slice(None), slice(1, -1), slice(1, -1))
    theirs = np.stack([sobel(picture) for picture in images.mean(dim=1).numpy()])
    # scikit-image's sobel is the same magnitude with kernels divided by 4 and the sum of squares halved
    assert np.allclose(edges[interior], theirs[interior] * 4 * np.sqrt(2), rtol=1e-4, atol=1e-5)
    assert np.array_equal(random, reference_maps(images * 0, seed=3)["reference: random"])  # model- and image-free
    assert relevance_mass(random[0], random[0] > 2) == 0 and 0.4 < random.mean() < 0.6


def test_map_similarity_of_a_map_with_itself_and_with_noise():
    rng = np.random.default_rng(0)
    picture = rng.random((32, 32))
    assert map_similarity(picture, picture) == pytest.approx((1.0, 1.0))
    assert map_similarity(picture, -picture)[0] == pytest.approx(1.0)  # absolute values
    rank, ssim = map_similarity(picture, rng.random((32, 32)))
    assert abs(rank) < 0.1 and ssim < 0.2


def test_randomisation_check_fails_a_model_free_map_and_passes_saliency():
    torch.manual_seed(0)
    model = create_model("small-cnn").eval()
    before = [parameter.detach().clone() for parameter in model.parameters()]
    images, target = torch.rand(3, 3, 48, 48), torch.tensor([0, 1, 2])
    edges_only = randomisation_check(model, images, target, lambda _, x, y: x.clone())
    assert (edges_only["rank_correlation"] == 1).all() and not passes_randomisation(edges_only)
    gradients = randomisation_check(model, images, target, saliency)
    layers = sum(1 for module in model.modules() if isinstance(module, (nn.Conv2d, nn.BatchNorm2d, nn.Linear)))
    assert len(gradients) == layers + 1 and gradients["layer"].iloc[1].endswith(str(len(model.backbone) - 1))
    assert passes_randomisation(gradients), gradients
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # the model is left as it was


def test_a_block_is_the_first_numbered_element_of_a_path():
    assert block_of("backbone.net._blocks.15._project_conv") == "backbone.net._blocks.15"
    assert block_of("backbone.layer1.0.conv1") == "backbone.layer1.0"
    assert block_of("backbone.net._fc") == "backbone.net._fc"
    assert block_of("backbone.3") == "backbone.3"  # a numbered layer with nothing below is its own block


def test_the_cascade_by_block_ends_at_the_same_model_as_the_cascade_by_layer():
    """Lite0: 99 layers with weights in 16 blocks plus stem and head; each layer seeded alone, so the
    last step (every layer re-initialised) gives the same maps whichever way the cascade stepped."""
    torch.manual_seed(0)
    model = create_model("efficientnet-lite0").eval()
    steps = cascade_steps(model, by_block=True)
    layers = cascade_steps(model)
    assert len(layers) == sum(len(modules) for _, modules in steps) > len(steps)
    assert any(name.endswith("_blocks.15") for name, _ in steps) and len({name for name, _ in steps}) == len(steps)
    images, target = torch.rand(2, 3, 32, 32), torch.tensor([0, 3])
    by_block = randomisation_check(model, images, target, saliency, seed=1, by_block=True)
    by_layer = randomisation_check(model, images, target, saliency, seed=1)
    assert len(by_block) == len(steps) + 1 and len(by_layer) == len(layers) + 1
    assert by_block["layers"].iloc[-1] == by_layer["layers"].iloc[-1] == len(layers)
    last = ["rank_correlation", "ssim"]
    assert by_block[last].iloc[-1].to_numpy() == pytest.approx(by_layer[last].iloc[-1].to_numpy())


def test_label_randomisation_fails_a_map_of_the_image_and_passes_another_models_gradients():
    torch.manual_seed(0)
    model, other = create_model("small-cnn").eval(), create_model("small-cnn").eval()
    images, target = torch.rand(3, 3, 48, 48), torch.tensor([0, 1, 2])
    image_only = label_randomisation_check(model, other, images, target, lambda _, x, y: x.clone())
    assert image_only["rank_correlation"] == pytest.approx(1.0) and not image_only["passes"]
    itself = label_randomisation_check(model, model, images, target, saliency)
    assert itself["rank_correlation"] == pytest.approx(1.0) and itself["ssim"] == pytest.approx(1.0)
    assert not itself["passes"]
    assert label_randomisation_check(model, other, images, target, saliency)["passes"]


def test_reference_margin_pairs_the_images_and_picks_the_best_reference():
    rng = np.random.default_rng(0)
    images = np.arange(40)
    references = {"reference: random": 0.02, "reference: Sobel edges": 0.30, "reference: intensity": 0.10}
    records = []
    for model, gain in (("good", 0.2), ("edge-like", 0.0)):
        per_image = rng.random(40) * 0.2  # image difficulty, shared by all maps of the image
        for method, level in {**references, "ig": 0.30 + gain}.items():
            records += [
                {"model": model, "row": row, "method": method, "relevance_mass": level + value}
                for row, value in zip(images, per_image)
            ]
    margin = reference_margin(pd.DataFrame(records), "ig").set_index("model")
    assert (margin["best reference"] == "reference: Sobel edges").all()
    assert margin.loc["good", "beats"] and margin.loc["good", "difference"] == pytest.approx(0.2)
    assert not margin.loc["edge-like", "beats"] and margin.loc["edge-like", "images"] == 40


def test_randomisation_check_equals_quantus_mprt():
    """Quantus's MPRT (cascading, top-down, every layer re-initialised under torch.manual_seed(its
    seed + 1)) gives the same median rank correlation after each layer as ours."""
    quantus = require("quantus")
    torch.manual_seed(0)
    model = create_model("small-cnn").eval()
    images, target = torch.rand(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    ours = randomisation_check(model, images, target, saliency, seed=5)

    def explain(model, inputs, targets, **kwargs):
        return pixel_map(saliency(model, torch.as_tensor(inputs), torch.as_tensor(targets)))[:, None]

    theirs = quantus.MPRT(layer_order="top_down", seed=4, disable_warnings=True)(
        model=model, x_batch=images.numpy(), y_batch=target.numpy(), a_batch=None, explain_func=explain, device="cpu"
    )
    theirs.pop("original")
    assert list(theirs) == ours["layer"].iloc[1:].tolist()
    assert np.allclose([np.median(values) for values in theirs.values()], ours["rank_correlation"].iloc[1:], atol=1e-9)
