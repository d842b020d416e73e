"""Model factory: the report's seven networks (Table 2) and a small CPU network, with a 5-unit
head and the input normalisation inside the model.

Every model takes float images (N, 3, H, W) in [0, 1] pixels and returns logits (N, classes);
its first layer normalises with ImageNet mean and std, so attacks and attributions can work in
pixel units. ``inception_v3`` returns ``(logits, aux_logits)`` in training mode, as torchvision's.

Example::

    model = create_model("efficientnet-b0", num_classes=5, dropout=0.2)
    list_models()  # ['efficientnet-b0', ..., 'small-cnn']
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import torchvision
from efficientnet_pytorch import EfficientNet
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


class WeightsError(RuntimeError):
    """Pretrained weights are missing or do not fit the model."""


class Normalize(nn.Module):
    """(x - mean) / std per channel; x in [0, 1] pixels."""

    def __init__(self, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class FundusNet(nn.Module):
    """A backbone behind a Normalize layer; ``name`` and ``input_size`` travel with the model."""

    def __init__(self, name: str, backbone: nn.Module, input_size: int | None = None):
        super().__init__()
        self.name = name
        self.input_size = input_size
        self.normalize = Normalize()
        self.backbone = backbone

    def forward(self, x: torch.Tensor):
        return self.backbone(self.normalize(x))


def register_model(name: str):
    """Decorator: file a backbone builder ``fn(num_classes, dropout) -> nn.Module`` under ``name``."""

    def decorate(builder):
        _REGISTRY[name] = builder
        return builder

    return decorate


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def _replace_head(linear: nn.Linear, num_classes: int, dropout: float) -> nn.Module:
    head = nn.Linear(linear.in_features, num_classes)
    return nn.Sequential(nn.Dropout(dropout), head) if dropout > 0 else head


@register_model("resnet18")
def resnet18(num_classes: int, dropout: float) -> nn.Module:
    model = torchvision.models.resnet18()
    model.fc = _replace_head(model.fc, num_classes, dropout)
    return model


@register_model("resnet50")
def resnet50(num_classes: int, dropout: float) -> nn.Module:
    model = torchvision.models.resnet50()
    model.fc = _replace_head(model.fc, num_classes, dropout)
    return model


def _efficientnet(version: int):
    def build(num_classes: int, dropout: float) -> nn.Module:
        overrides = {"dropout_rate": dropout} if dropout > 0 else {}
        return EfficientNet.from_name(f"efficientnet-b{version}", num_classes=num_classes, **overrides)

    return build


for _version in range(4):
    register_model(f"efficientnet-b{_version}")(_efficientnet(_version))


@register_model("inception_v3")
def inception_v3(num_classes: int, dropout: float) -> nn.Module:
    return torchvision.models.inception_v3(num_classes=num_classes, aux_logits=True, init_weights=True,
                                           dropout=dropout)


@register_model("small-cnn")
def small_cnn(num_classes: int, dropout: float) -> nn.Module:
    """Four conv-BN-ReLU blocks (32-64-128-256 channels) and global pooling: fast on a CPU."""
    layers: list[nn.Module] = []
    channels = 3
    for width in (32, 64, 128, 256):
        layers += [nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
                   nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
                   nn.MaxPool2d(2)]
        channels = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(channels, num_classes)]
    return nn.Sequential(*layers)


INPUT_SIZES = {"inception_v3": 299}


def create_model(name: str, num_classes: int = 5, dropout: float = 0.0,
                 weights: str | Path | None = None) -> FundusNet:
    """Build a registered model; optionally load pretrained backbone weights from a local file.

    weights: a state dict file of the *backbone* (e.g. torchvision's or efficientnet-pytorch's
    ImageNet weights); the classification head is left out when its shape differs. Missing
    file: WeightsError saying where to put it. Nothing is downloaded.
    """
    if name not in _REGISTRY:
        raise KeyError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    if not 0 <= dropout < 1:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    backbone = _REGISTRY[name](num_classes, dropout)
    if weights is not None:
        load_backbone_weights(backbone, weights)
    return FundusNet(name, backbone, INPUT_SIZES.get(name))


def load_backbone_weights(backbone: nn.Module, path: str | Path) -> None:
    """Load ImageNet weights into ``backbone``, skipping only head tensors whose shape differs."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(
            f"pretrained weights not found: {path}. This project never downloads; put the ImageNet "
            "state dict there (e.g. copy it from torchvision's cache, ~/.cache/torch/hub/checkpoints/) "
            "or set pretrained: false"
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    own = backbone.state_dict()
    mismatched = [key for key, value in state.items() if key in own and own[key].shape != value.shape]
    unknown = [key for key in state if key not in own]
    if len(unknown) > 2 or any(not _is_head(key) for key in mismatched):
        raise WeightsError(f"{path} does not fit this model: unknown keys {unknown[:5]}, wrong shapes {mismatched[:5]}")
    kept = {key: value for key, value in state.items() if key in own and key not in mismatched}
    missing = backbone.load_state_dict(kept, strict=False).missing_keys
    if any(not _is_head(key) for key in missing):
        raise WeightsError(f"{path} lacks backbone weights: {missing[:5]}")


def _is_head(key: str) -> bool:
    return key.split(".")[0] in {"fc", "_fc", "classifier", "AuxLogits"} or key.startswith("fc.")
