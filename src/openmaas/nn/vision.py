"""The image networks the `cnn` and `resnet` recipes train, and their servable directory.

- `SmallCNN`: the classic stack, read top to bottom: blocks of 3x3 convolutions (batch norm,
  ReLU), each block ending in 2x2 max pooling and dropout, then one dense hidden layer with
  dropout and the output layer.
- `ResNet18`: torchvision's ResNet-18, layer for layer. For small images (`stem="small"`)
  its first convolution is 3x3 with stride 1 (max pooling kept), so a 28 x 28 image reaches
  the last stage at 2 x 2 instead of 1 x 1; `stem="imagenet"` is torchvision's 7x7 stride-2
  stem. Its input channels follow the images (1 for grey).

The directory (`save_image_classifier` / `load_image_classifier`): `openmaas.json` (task,
runtime `openmaas-vision`, architecture and its config, labels in output order, the input
size and channels, per-channel mean and std) and `model.safetensors`.

Example::

    network = SmallCNN(CNNConfig(channels=1, height=28, width=28, n_labels=10))
    logits = network(torch.zeros(8, 1, 28, 28))  # (8, 10)
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model
from torch import nn

from openmaas.runtimes.base import NATIVE_SPEC

RUNTIME = "openmaas-vision"
TASK = "image-classification"
WEIGHTS_FILE = "model.safetensors"
SPEC_VERSION = 1
ARCHITECTURES = ("cnn", "resnet18")
STEMS = ("small", "imagenet")


@dataclass(frozen=True, slots=True)
class CNNConfig:
    channels: int
    height: int
    width: int
    n_labels: int
    filters: tuple[int, ...] = (32, 64)  # output channels of each block
    convs_per_block: int = 2
    dense_units: int = 128
    conv_dropout: float = 0.25  # after each block's pooling
    dense_dropout: float = 0.5  # after the dense hidden layer

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CNNConfig:
        values = dict(data)
        values["filters"] = tuple(values["filters"])
        return cls(**values)


class SmallCNN(nn.Module):
    """Conv blocks, then dense; see the module docstring."""

    def __init__(self, config: CNNConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels, height, width = config.channels, config.height, config.width
        for filters in config.filters:
            for _ in range(config.convs_per_block):
                layers += [
                    nn.Conv2d(channels, filters, kernel_size=3, padding=1, bias=False),
                    nn.BatchNorm2d(filters),
                    nn.ReLU(inplace=True),
                ]
                channels = filters
            layers += [nn.MaxPool2d(2), nn.Dropout(config.conv_dropout)]
            height, width = height // 2, width // 2
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(channels * height * width, config.dense_units),
            nn.ReLU(inplace=True),
            nn.Dropout(config.dense_dropout),
            nn.Linear(config.dense_units, config.n_labels),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.classifier(self.features(images))
        return logits


def smallest_cnn_side(filters: Sequence[int]) -> int:
    """The least height and width a CNN of these blocks takes (each pooling halves it)."""
    return int(2 ** len(filters))


class BasicBlock(nn.Module):
    """ResNet's two 3x3 convolutions with a shortcut (a 1x1 projection when the shape
    changes); parameter names as torchvision's, so weights move between the two."""

    def __init__(self, channels_in: int, channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels_in, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.downsample: nn.Module | None = None
        if stride != 1 or channels_in != channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(channels_in, channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        result: torch.Tensor = self.relu(out + shortcut)
        return result


@dataclass(frozen=True, slots=True)
class ResNetConfig:
    channels: int
    n_labels: int
    stem: str = "small"


def _stage(channels_in: int, channels: int, *, stride: int) -> nn.Sequential:
    return nn.Sequential(
        BasicBlock(channels_in, channels, stride), BasicBlock(channels, channels, 1)
    )


class ResNet18(nn.Module):
    """ResNet-18 (He et al. 2016) as torchvision builds it (`torchvision.models.resnet18`,
    same module names and initialisation), with the stem chosen by `config.stem`.
    torchvision itself is not a dependency: its PyPI wheels are built against CUDA torch,
    and where torch is the CPU build, installing one breaks `import transformers`."""

    def __init__(self, config: ResNetConfig) -> None:
        super().__init__()
        if config.stem == "small":
            self.conv1 = nn.Conv2d(config.channels, 64, 3, stride=1, padding=1, bias=False)
        else:
            self.conv1 = nn.Conv2d(config.channels, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = _stage(64, 64, stride=1)
        self.layer2 = _stage(64, 128, stride=2)
        self.layer3 = _stage(128, 256, stride=2)
        self.layer4 = _stage(256, 512, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, config.n_labels)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(images))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        logits: torch.Tensor = self.fc(torch.flatten(self.avgpool(x), 1))
        return logits


def replace_head(network: nn.Module, n_labels: int) -> None:
    """A new output layer for `n_labels` (fine-tuning a ResNet on other classes)."""
    fc = network.fc
    assert isinstance(fc, nn.Linear)
    network.fc = nn.Linear(fc.in_features, n_labels)


@dataclass(frozen=True, slots=True)
class SavedImageClassifier:
    network: nn.Module
    architecture: str
    config: Mapping[str, Any]
    labels: tuple[str, ...]
    channels: int
    height: int
    width: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    extra: Mapping[str, Any] = field(default_factory=dict)


def build_network(architecture: str, config: Mapping[str, Any]) -> nn.Module:
    if architecture == "cnn":
        return SmallCNN(CNNConfig.from_dict(config))
    if architecture == "resnet18":
        return ResNet18(ResNetConfig(**dict(config)))
    raise ValueError(f"unknown image architecture {architecture!r} (known: {ARCHITECTURES})")


def network_config(network: nn.Module, config: CNNConfig | ResNetConfig) -> dict[str, Any]:
    values = asdict(config)
    if "filters" in values:
        values["filters"] = list(values["filters"])
    return values


def save_image_classifier(directory: Path, saved: SavedImageClassifier) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    save_model(saved.network, str(directory / WEIGHTS_FILE))
    spec = {
        "task": TASK,
        "runtime": RUNTIME,
        "format": RUNTIME,
        "spec_version": SPEC_VERSION,
        "architecture": saved.architecture,
        "config": dict(saved.config),
        "labels": list(saved.labels),
        "channels": saved.channels,
        "height": saved.height,
        "width": saved.width,
        "mean": list(saved.mean),
        "std": list(saved.std),
        **dict(saved.extra),
    }
    (directory / NATIVE_SPEC).write_text(json.dumps(spec, indent=2), encoding="utf-8")


def load_image_classifier(directory: Path) -> SavedImageClassifier:
    """The network (eval mode, CPU) and its facts; safetensors only, no pickle."""
    spec = json.loads((directory / NATIVE_SPEC).read_text(encoding="utf-8"))
    if spec.get("spec_version") != SPEC_VERSION:
        raise ValueError(f"unsupported {NATIVE_SPEC} spec_version {spec.get('spec_version')!r}")
    network = build_network(str(spec["architecture"]), spec["config"])
    load_model(network, str(directory / WEIGHTS_FILE))
    network.eval()
    known = {"task", "runtime", "format", "spec_version", "architecture", "config", "labels"}
    known |= {"channels", "height", "width", "mean", "std"}
    return SavedImageClassifier(
        network=network,
        architecture=str(spec["architecture"]),
        config=spec["config"],
        labels=tuple(str(label) for label in spec["labels"]),
        channels=int(spec["channels"]),
        height=int(spec["height"]),
        width=int(spec["width"]),
        mean=tuple(float(v) for v in spec["mean"]),
        std=tuple(float(v) for v in spec["std"]),
        extra={k: v for k, v in spec.items() if k not in known},
    )


def to_batch(
    images: Sequence[torch.Tensor],
    height: int,
    width: int,
    mean: Sequence[float],
    std: Sequence[float],
) -> torch.Tensor:
    """Images (C x H x W float in [0, 1], any size) resized to height x width (bilinear,
    antialiased when shrinking) and normalized: one N x C x H x W batch."""
    resized = [
        image
        if image.shape[1:] == (height, width)
        else nn.functional.interpolate(
            image[None], size=(height, width), mode="bilinear", antialias=True, align_corners=False
        )[0]
        for image in images
    ]
    batch = torch.stack(resized)
    mean_t = torch.tensor(mean, dtype=batch.dtype).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=batch.dtype).view(1, -1, 1, 1)
    return (batch - mean_t) / std_t
