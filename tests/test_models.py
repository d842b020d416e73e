"""The model factory: the report's parameter counts, normalisation inside, local weights only."""

from __future__ import annotations

import pytest
import torch
import torchvision

from fundus_lib.config import MODEL_NAMES
from fundus_lib.models import (
    IMAGENET_MEAN,
    FOLDABLE,
    IMAGENET_STD,
    WeightsError,
    create_model,
    inference_model,
    list_models,
    pretrained_weights_file,
)
from fundus_lib.report import report_table


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
    assert "efficientnet-b0-" in str(error.value) and "never downloads" in str(error.value)
    with pytest.raises(WeightsError, match="no ImageNet weights"):
        pretrained_weights_file("small-cnn", tmp_path)


def test_weights_of_another_model_are_refused(tmp_path):
    path = tmp_path / "resnet18-x.pth"
    torch.save(torchvision.models.resnet50().state_dict(), path)
    with pytest.raises(WeightsError, match="does not fit"):
        create_model("resnet18", weights=path)
