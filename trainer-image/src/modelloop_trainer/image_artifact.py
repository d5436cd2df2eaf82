"""The image-classification artifact: an EfficientNet state dict plus a small JSON config.

Layout (docs/contracts.md section 4b): `model.safetensors` (the network's state dict, keys as
in `efficientnet_lite_pytorch.EfficientNet`), `config.json` (architecture, classes, labels,
image size, normalisation), `labels.json`, `modelloop.json` (task `image-classification`),
`reference_profile.json` and `metrics.json`. As for text, nothing is unpickled on load.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from modelloop_trainer import __version__
from modelloop_trainer.artifact import (
    CONFIG_FILE,
    ENCODING_FLOAT,
    FORMAT,
    FORMAT_VERSION,
    LABELS_FILE,
    MANIFEST_FILE,
    TASK_IMAGE,
    WEIGHTS_FILE,
    ArtifactContents,
    check_weight_names,
    checked_weights_path,
    read_labels,
    read_manifest,
    read_weights,
    record_fields,
    weights_entry,
    write_json,
    write_sidecars,
)
from modelloop_trainer.errors import ArtifactError
from modelloop_trainer.vision import (
    ARCHITECTURE,
    PIXEL_OFFSET,
    PIXEL_SCALE,
    ImageClassifier,
    build_network,
)

MODEL_TYPE = "efficientnet-lite"


@dataclass
class LoadedImageArtifact:
    """An image classifier in eval mode with the facts needed to feed it."""

    path: Path
    model: ImageClassifier
    labels: list[str]
    image_size: int
    manifest: dict[str, Any]


def image_config(labels: list[str], image_size: int) -> dict[str, Any]:
    """`config.json`: everything a reader needs to rebuild the network and feed it."""
    return {
        "modelType": MODEL_TYPE,
        "architecture": ARCHITECTURE,
        "numClasses": len(labels),
        "labels": labels,
        "imageSize": image_size,
        "channels": 3,
        "colorMode": "RGB",
        "resize": "bilinear",
        "normalization": {"offset": PIXEL_OFFSET, "scale": PIXEL_SCALE},
    }


def save_image_artifact(
    directory: Path, *, model: ImageClassifier, image_size: int, contents: ArtifactContents
) -> dict[str, Any]:
    """Write `model` as an image artifact into `directory`; returns the manifest."""
    labels = list(contents.labels)
    if contents.reference_profile.labels != tuple(labels):
        raise ValueError("reference profile labels differ from the artifact's labels")
    directory.mkdir(parents=True, exist_ok=True)
    state = model.network.state_dict()
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}
    metadata = {"format": "pt", "encoding": ENCODING_FLOAT}
    save_file(tensors, str(directory / WEIGHTS_FILE), metadata=metadata)
    config = image_config(labels, image_size)
    write_json(directory / CONFIG_FILE, config)
    write_sidecars(directory, labels, contents)
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "task": TASK_IMAGE,
        "architecture": ARCHITECTURE,
        "labels": labels,
        "image": {
            "size": image_size,
            "channels": 3,
            "normalization": config["normalization"],
        },
        "weights": weights_entry(directory, ENCODING_FLOAT),
        "quantization": None,
        **record_fields(contents, tensors),
        "createdBy": {"modelloop-trainer": __version__, "torch": torch.__version__},
    }
    write_json(directory / MANIFEST_FILE, manifest)
    return manifest


def is_image_model_dir(directory: Path) -> bool:
    """Whether `directory` holds a modelloop image artifact (its config says efficientnet-lite)."""
    config = directory / CONFIG_FILE
    if not config.is_file():
        return False
    try:
        data = json.loads(config.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("modelType") == MODEL_TYPE


def load_image_artifact(
    path: str | Path, *, device: str | torch.device = "cpu", image_size: int | None = None
) -> LoadedImageArtifact:
    """Load an image artifact (checksum verified) into an ImageClassifier in eval mode.

    `image_size` rebuilds the network for another input size (a warm start with a new
    --image-size); the weights fit any size.
    """
    directory = Path(path)
    manifest = read_manifest(directory)
    if manifest.get("task") != TASK_IMAGE:
        raise ArtifactError(
            f"artifact {directory}: task is {manifest.get('task')!r}, not {TASK_IMAGE!r}"
        )
    weights_path = checked_weights_path(directory, manifest)
    labels = read_labels(directory)
    try:
        config = json.loads((directory / CONFIG_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"artifact {directory}: cannot read {CONFIG_FILE}: {exc}") from exc
    if labels != manifest["labels"] or config.get("labels") != labels:
        raise ArtifactError(
            f"artifact {directory}: {LABELS_FILE}, {CONFIG_FILE} and {MANIFEST_FILE} disagree "
            "on the labels"
        )
    if config.get("architecture") != ARCHITECTURE:
        raise ArtifactError(
            f"artifact {directory}: architecture {config.get('architecture')!r}; this reader "
            f"knows {ARCHITECTURE!r}"
        )
    size = int(image_size or config["imageSize"])
    tensors = read_weights(directory, weights_path)
    network = build_network(len(labels), size)
    check_weight_names(
        directory, network, tensors, fits=f"{ARCHITECTURE} with {len(labels)} classes"
    )
    try:
        network.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise ArtifactError(f"artifact {directory}: weights do not fit: {exc}") from exc
    model = ImageClassifier(network).to(device)
    model.eval()
    return LoadedImageArtifact(
        path=directory, model=model, labels=labels, image_size=size, manifest=manifest
    )
