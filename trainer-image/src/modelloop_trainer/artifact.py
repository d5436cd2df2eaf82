"""The model artifact directory: the one format written by train and optimize, read by the server.

See docs/artifact-format.md for the layout. This module is its only writer (`save_artifact`)
and only reader (`load_artifact`): the server image installs this package rather than
re-implementing the format, so the two sides cannot drift apart.

Every artifact is a Hugging Face-style directory (config.json, model.safetensors, tokenizer
files) plus our own files: `modelloop.json` (the manifest: format version, label names,
max_length, how the weights are encoded, checksums, the techniques applied), `labels.json`
and `reference_profile.json`. Nothing is ever unpickled: weights are safetensors, the rest
is JSON, so loading an artifact from an untrusted bucket cannot run code.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedTokenizerBase,
)

from modelloop_trainer import __version__
from modelloop_trainer.errors import ArtifactError
from modelloop_trainer.evaluate import predict_proba, predict_proba_and_embeddings
from modelloop_trainer.profile import ReferenceProfile
from modelloop_trainer.quantized_state import export_tensors, rebuild_quantized

FORMAT = "modelloop-artifact"
FORMAT_VERSION = 1
MANIFEST_FILE = "modelloop.json"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
LABELS_FILE = "labels.json"
METRICS_FILE = "metrics.json"
PROFILE_FILE = "reference_profile.json"

ENCODING_FLOAT = "float"
TASK_TEXT = "text-classification"
TASK_IMAGE = "image-classification"
ENCODING_DYNAMIC_INT8 = "dynamic-int8"


@dataclass
class LoadedArtifact:
    """A ready-to-run classifier: the module in eval mode and everything needed to call it."""

    path: Path
    model: nn.Module
    tokenizer: PreTrainedTokenizerBase
    labels: list[str]
    max_length: int
    reference_profile: ReferenceProfile
    manifest: dict[str, Any]

    def predict_proba(self, texts: Sequence[str]) -> torch.Tensor:
        """Softmax probabilities (len(texts) x len(labels)), float32 on the CPU."""
        return predict_proba(
            self.model,
            self.tokenizer,
            texts,
            max_length=self.max_length,
            batch_size=max(1, len(texts)),
            device=_device_of(self.model),
        )

    def predict_with_embeddings(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """`predict_proba` plus each text's pooled embedding (len(texts) x hidden size, float32
        on the CPU) from the same forward pass: what the input-drift profile bins."""
        return predict_proba_and_embeddings(
            self.model,
            self.tokenizer,
            texts,
            max_length=self.max_length,
            batch_size=max(1, len(texts)),
            device=_device_of(self.model),
        )


@dataclass
class ArtifactContents:
    """What `save_artifact` writes, apart from the model and tokenizer themselves."""

    labels: Sequence[str]
    max_length: int  # text models only (image models record their image size instead)
    reference_profile: ReferenceProfile
    metrics: Mapping[str, Any] | None = None
    techniques: Sequence[Mapping[str, Any]] = ()
    lineage: Mapping[str, Any] = field(default_factory=dict)
    # The data the model was trained on: {"digest": "sha256:...", "rows": {...}}, the
    # trainer's `<output>/dataset/snapshot.json` digest and row counts. Omitted if None.
    dataset: Mapping[str, Any] | None = None


def save_artifact(
    directory: Path,
    *,
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    contents: ArtifactContents,
) -> dict[str, Any]:
    """Write `model` (float or dynamically quantized) as an artifact into `directory`.

    Returns the manifest. The model's config must already carry id2label/label2id matching
    `contents.labels` (the trainer sets them when it builds the head).
    """
    labels = list(contents.labels)
    config = getattr(model, "config", None)
    if config is None:
        raise ValueError("save_artifact needs a transformers model (it has no .config)")
    config_labels = [config.id2label[i] for i in range(len(config.id2label))]
    if config_labels != labels:
        raise ValueError(f"model config labels {config_labels} differ from {labels}")
    if contents.reference_profile.labels != tuple(labels):
        raise ValueError("reference profile labels differ from the artifact's labels")
    directory.mkdir(parents=True, exist_ok=True)

    tensors, kinds = export_tensors(model)
    encoding = ENCODING_DYNAMIC_INT8 if kinds else ENCODING_FLOAT
    # Tied weights (one tensor under two names) would make safetensors refuse to save; our
    # classifiers have none, and cloning keeps that an explicit copy if one ever appears.
    tensors = {k: v.detach().cpu().clone() for k, v in tensors.items()}
    metadata = {"format": "pt", "encoding": encoding}
    save_file(tensors, str(directory / WEIGHTS_FILE), metadata=metadata)
    config.save_pretrained(str(directory))
    tokenizer.save_pretrained(str(directory))
    write_sidecars(directory, labels, contents)

    manifest: dict[str, Any] = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "task": TASK_TEXT,
        "architecture": type(model).__name__,
        "labels": labels,
        "maxLength": contents.max_length,
        "weights": weights_entry(directory, encoding),
        "quantization": (
            {"scheme": ENCODING_DYNAMIC_INT8, "backend": "torch.ao.quantization", "modules": kinds}
            if kinds
            else None
        ),
        **record_fields(contents, tensors),
        "createdBy": {
            "modelloop-trainer": __version__,
            "torch": torch.__version__,
            "transformers": _transformers_version(),
        },
    }
    write_json(directory / MANIFEST_FILE, manifest)
    return manifest


def write_sidecars(directory: Path, labels: Sequence[str], contents: ArtifactContents) -> None:
    """The files every task's artifact carries beside its weights: labels, profile, metrics."""
    write_json(directory / LABELS_FILE, list(labels))
    contents.reference_profile.save(directory / PROFILE_FILE)
    if contents.metrics is not None:
        write_json(directory / METRICS_FILE, dict(contents.metrics))


def weights_entry(directory: Path, encoding: str) -> dict[str, Any]:
    """The manifest's `weights` section for the weights file just written into `directory`."""
    path = directory / WEIGHTS_FILE
    return {
        "file": WEIGHTS_FILE,
        "encoding": encoding,
        "sha256": sha256_file(path),
        "sizeBytes": path.stat().st_size,
    }


def record_fields(
    contents: ArtifactContents, tensors: Mapping[str, torch.Tensor]
) -> dict[str, Any]:
    """The manifest's record of how the model was made, the same for every task."""
    return {
        "parameters": sum(int(v.numel()) for v in tensors.values()),
        "techniques": [dict(t) for t in contents.techniques],
        "lineage": dict(contents.lineage),
        **({"dataset": dict(contents.dataset)} if contents.dataset is not None else {}),
    }


def load_artifact(
    path: str | Path, *, device: str | torch.device = "cpu", verify_checksum: bool = True
) -> LoadedArtifact:
    """Load an artifact directory into a ready-to-run model in eval mode.

    Raises ArtifactError naming the directory and what is wrong with it. Quantized artifacts
    run on the CPU only (dynamic int8 kernels are CPU kernels).
    """
    directory = Path(path)
    manifest = read_manifest(directory)
    if manifest.get("task", TASK_TEXT) != TASK_TEXT:
        raise ArtifactError(
            f"artifact {directory}: is a {manifest['task']} model; load_artifact reads text "
            "classifiers (image models: modelloop_trainer.image_artifact.load_image_artifact)"
        )
    weights = manifest["weights"]
    weights_path = checked_weights_path(directory, manifest, verify_checksum=verify_checksum)
    labels = read_labels(directory)
    if labels != manifest["labels"]:
        raise ArtifactError(f"artifact {directory}: {LABELS_FILE} disagrees with {MANIFEST_FILE}")

    try:
        config = AutoConfig.from_pretrained(str(directory), local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ArtifactError(
            f"artifact {directory}: cannot read config or tokenizer: {exc}"
        ) from exc
    if int(config.num_labels) != len(labels):
        raise ArtifactError(
            f"artifact {directory}: config has {config.num_labels} labels, "
            f"{LABELS_FILE} has {len(labels)}"
        )
    tensors = read_weights(directory, weights_path)

    model: nn.Module = AutoModelForSequenceClassification.from_config(  # type: ignore[no-untyped-call]
        config
    )
    if weights["encoding"] == ENCODING_DYNAMIC_INT8:
        if torch.device(device).type != "cpu":
            raise ArtifactError(
                f"artifact {directory}: dynamic int8 weights run on the CPU only, not {device}"
            )
        quantization = manifest.get("quantization") or {}
        rebuild_quantized(model, tensors, quantization.get("modules", {}), source=str(directory))
    elif weights["encoding"] == ENCODING_FLOAT:
        check_weight_names(directory, model, tensors, fits="the config")
        model.load_state_dict(tensors, strict=True)
    else:
        raise ArtifactError(
            f"artifact {directory}: unknown weights encoding {weights['encoding']!r}"
        )
    model.to(device)
    model.eval()
    return LoadedArtifact(
        path=directory,
        model=model,
        tokenizer=tokenizer,
        labels=labels,
        max_length=int(manifest["maxLength"]),
        reference_profile=ReferenceProfile.load(directory / PROFILE_FILE),
        manifest=manifest,
    )


def checked_weights_path(
    directory: Path, manifest: Mapping[str, Any], *, verify_checksum: bool = True
) -> Path:
    """The manifest's weights file, present and (by default) matching its checksum."""
    name = str(manifest["weights"]["file"])
    path = directory / name
    if not path.is_file():
        raise ArtifactError(f"artifact {directory}: weights file {name} is missing")
    if verify_checksum and sha256_file(path) != manifest["weights"]["sha256"]:
        raise ArtifactError(
            f"artifact {directory}: {name} does not match the checksum in "
            f"{MANIFEST_FILE} (corrupt or partially copied)"
        )
    return path


def read_weights(directory: Path, path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise ArtifactError(f"artifact {directory}: cannot read {path.name}: {exc}") from exc


def check_weight_names(
    directory: Path, model: nn.Module, tensors: Mapping[str, torch.Tensor], *, fits: str
) -> None:
    """The saved tensors are exactly `model`'s state (`fits`: what they must fit, for the
    message)."""
    expected = set(model.state_dict())
    if set(tensors) != expected:
        missing, extra = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
        raise ArtifactError(
            f"artifact {directory}: weights do not fit {fits} "
            f"(missing {missing[:3]}, unexpected {extra[:3]})"
        )


def read_manifest(directory: Path) -> dict[str, Any]:
    """The artifact's manifest, checked for format and version."""
    if not directory.is_dir():
        raise ArtifactError(f"artifact {directory}: not a directory")
    path = directory / MANIFEST_FILE
    if not path.is_file():
        raise ArtifactError(
            f"artifact {directory}: no {MANIFEST_FILE} "
            "(not a modelloop artifact, or incompletely copied)"
        )
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ArtifactError(
            f"artifact {directory}: {MANIFEST_FILE} is not valid JSON: {exc}"
        ) from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ArtifactError(f"artifact {directory}: {MANIFEST_FILE} is not a {FORMAT} manifest")
    if manifest.get("version") != FORMAT_VERSION:
        raise ArtifactError(
            f"artifact {directory}: format version {manifest.get('version')!r}, this reader "
            f"understands {FORMAT_VERSION}"
        )
    # maxLength belongs to text models; an image model has its "image" settings instead.
    task_key = "image" if manifest.get("task") == TASK_IMAGE else "maxLength"
    for key in ("labels", task_key, "weights"):
        if key not in manifest:
            raise ArtifactError(f"artifact {directory}: {MANIFEST_FILE} lacks {key!r}")
    return manifest


def read_labels(directory: Path) -> list[str]:
    path = directory / LABELS_FILE
    try:
        labels = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ArtifactError(f"artifact {directory}: {LABELS_FILE} is missing") from exc
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"artifact {directory}: {LABELS_FILE} is not valid JSON") from exc
    if not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels):
        raise ArtifactError(
            f"artifact {directory}: {LABELS_FILE} must be a non-empty list of strings"
        )
    return labels


def sha256_file(path: Path) -> str:
    """`sha256:<hex>` of a file, the checksum form used in manifests and termination messages."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return f"sha256:{digest.hexdigest()}"


def weights_size_bytes(directory: Path) -> int:
    """Size on disk of the weights file: the figure optimization reports compare."""
    name = str(read_manifest(directory)["weights"]["file"])
    return (directory / name).stat().st_size


def write_json(path: Path, data: Any) -> None:
    """Indented JSON with a final newline, as every artifact file is written."""
    path.write_text(json.dumps(data, indent=2) + "\n")


def _device_of(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _transformers_version() -> str:
    import transformers

    return str(transformers.__version__)
