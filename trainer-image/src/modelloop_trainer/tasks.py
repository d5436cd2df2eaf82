"""What differs between tasks (`--task`): reading examples, the model, its inputs, its artifact.

train.py runs one recipe (data, snapshot, resume, loop, evaluation, gate) for every task; a
`Task` loads a dataset's examples, and the `TaskModel` it builds knows how to turn examples
into training batches (loop.LoopData), predict probabilities, profile and save the model.
An example's input is a string for every task (text, or a base64 PNG for images), so
splits, snapshots and label handling are shared.
"""

from __future__ import annotations

import argparse
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from modelloop_trainer.artifact import TASK_IMAGE, TASK_TEXT, ArtifactContents, save_artifact
from modelloop_trainer.datasets import Examples, load_examples
from modelloop_trainer.errors import InputError
from modelloop_trainer.evaluate import predict_proba
from modelloop_trainer.image_artifact import (
    is_image_model_dir,
    load_image_artifact,
    save_image_artifact,
)
from modelloop_trainer.image_data import input_pixels, load_image_examples
from modelloop_trainer.loop import LoopData, TokenizedExamples
from modelloop_trainer.models import (
    DEFAULT_MODEL_URI,
    load_classifier,
    load_tokenizer,
    resolve_model_dir,
)
from modelloop_trainer.profile import ReferenceProfile, build_reference_profile
from modelloop_trainer.reference import model_reference_profile
from modelloop_trainer.storage import fetch, parse_uri
from modelloop_trainer.vision import (
    DEFAULT_IMAGE_MODEL_URI,
    ImageClassifier,
    ImageTensors,
    check_builtin,
    load_pretrained,
    predict_image_proba,
    pretrained_weights_file,
    stack_pixels,
)

TASKS = (TASK_TEXT, TASK_IMAGE)


def tokenize(
    tokenizer: Any, texts: Sequence[str], labels: list[int], max_length: int
) -> TokenizedExamples:
    encoded = tokenizer(list(texts), truncation=True, max_length=max_length)
    return TokenizedExamples(
        input_ids=[list(ids) for ids in encoded["input_ids"]],
        labels=labels,
        pad_token_id=int(tokenizer.pad_token_id or 0),
    )


@dataclass(frozen=True)
class ProfileInputs:
    """What a drift reference is built from: validation predictions and the trained-for data."""

    probabilities: torch.Tensor
    targets: Sequence[int]
    data: Examples
    label_names: Sequence[str]
    batch_size: int
    device: torch.device
    seed: int


class TaskModel(ABC):
    """A model being trained, with the preprocessing that belongs to it."""

    model: nn.Module

    @abstractmethod
    def encode(self, examples: Examples, label_ids: list[int]) -> LoopData:
        """Training examples as the loop's batch source."""

    @abstractmethod
    def predict_proba(
        self, inputs: Sequence[str], *, batch_size: int, device: torch.device
    ) -> torch.Tensor:
        """Softmax probabilities (N x K, float32, CPU)."""

    @abstractmethod
    def reference_profile(self, inputs: ProfileInputs) -> ReferenceProfile:
        """The drift reference saved with the model (reference.py for its definition)."""

    @abstractmethod
    def save(self, directory: Path, contents: ArtifactContents) -> dict[str, Any]:
        """Write the artifact; returns its manifest."""


class Task(ABC):
    name: str
    input_field: str  # the key of an example's input in the dataset snapshot
    base_model: str  # the default --model-uri, named when a warm start is refused
    min_batch_size: int  # the fewest examples one training micro-batch may hold

    @abstractmethod
    def load_examples(self, uri: str) -> Examples:
        """All examples behind a dataset URI, in a fixed order."""

    @abstractmethod
    def load_model(self, model_dir: Path, uri: str, label_names: Sequence[str]) -> TaskModel:
        """The model to train: a warm start or a base model with a fresh head."""

    @abstractmethod
    def resolve_model(self, uri: str) -> Path:
        """A local path holding the model behind `uri`."""


class TextModel(TaskModel):
    def __init__(
        self, model: nn.Module, tokenizer: PreTrainedTokenizerBase, max_length: int
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = max_length

    def encode(self, examples: Examples, label_ids: list[int]) -> LoopData:
        return tokenize(self.tokenizer, examples.texts, label_ids, self.max_length)

    def predict_proba(
        self, inputs: Sequence[str], *, batch_size: int, device: torch.device
    ) -> torch.Tensor:
        return predict_proba(
            self.model,
            self.tokenizer,
            inputs,
            max_length=self.max_length,
            batch_size=batch_size,
            device=device,
        )

    def reference_profile(self, inputs: ProfileInputs) -> ReferenceProfile:
        return model_reference_profile(
            self.model,
            self.tokenizer,
            inputs.probabilities,
            inputs.targets,
            inputs.data,
            inputs.label_names,
            max_length=self.max_length,
            batch_size=inputs.batch_size,
            device=inputs.device,
            seed=inputs.seed,
        )

    def save(self, directory: Path, contents: ArtifactContents) -> dict[str, Any]:
        return save_artifact(
            directory, model=self.model, tokenizer=self.tokenizer, contents=contents
        )


class TextClassification(Task):
    name = TASK_TEXT
    input_field = "text"
    base_model = DEFAULT_MODEL_URI
    min_batch_size = 1

    def __init__(self, args: argparse.Namespace) -> None:
        self.text_field = str(args.text_field)
        self.label_field = str(args.label_field)
        self.max_length = int(args.max_length)

    def load_examples(self, uri: str) -> Examples:
        return load_examples(uri, self.text_field, self.label_field)

    def resolve_model(self, uri: str) -> Path:
        return resolve_model_dir(uri)

    def load_model(self, model_dir: Path, uri: str, label_names: Sequence[str]) -> TaskModel:
        if is_image_model_dir(model_dir):
            raise InputError(f"model {uri}: is an image model; use --task {TASK_IMAGE}")
        tokenizer = load_tokenizer(model_dir, uri)
        return TextModel(load_classifier(model_dir, uri, label_names), tokenizer, self.max_length)


class ImageModel(TaskModel):
    model: ImageClassifier

    def __init__(self, model: ImageClassifier, image_size: int) -> None:
        self.model = model
        self.image_size = image_size

    def pixels(self, inputs: Sequence[str], what: str) -> torch.Tensor:
        tensors = [
            input_pixels(value, f"{what} example {i}", self.image_size)
            for i, value in enumerate(inputs)
        ]
        return stack_pixels(tensors, self.image_size)

    def encode(self, examples: Examples, label_ids: list[int]) -> LoopData:
        return ImageTensors(pixels=self.pixels(examples.texts, "training"), labels=label_ids)

    def predict_proba(
        self, inputs: Sequence[str], *, batch_size: int, device: torch.device
    ) -> torch.Tensor:
        return predict_image_proba(
            self.model, self.pixels(inputs, "input"), batch_size=batch_size, device=device
        )

    def reference_profile(self, inputs: ProfileInputs) -> ReferenceProfile:
        # Confidence and class sections only: the input-drift section bins text embeddings,
        # and the server has no image capture path yet.
        index = {name: i for i, name in enumerate(inputs.label_names)}
        return build_reference_profile(
            inputs.probabilities,
            inputs.label_names,
            targets=torch.tensor(list(inputs.targets)),
            data_labels=[index[label] for label in inputs.data.labels] or None,
        )

    def save(self, directory: Path, contents: ArtifactContents) -> dict[str, Any]:
        return save_image_artifact(
            directory, model=self.model, image_size=self.image_size, contents=contents
        )


class ImageClassification(Task):
    name = TASK_IMAGE
    input_field = "image"
    base_model = DEFAULT_IMAGE_MODEL_URI
    min_batch_size = 2  # BatchNorm needs two examples where a feature map is 1 x 1

    def __init__(self, args: argparse.Namespace) -> None:
        self.label_field = str(args.label_field)
        self.image_size = int(args.image_size)

    def load_examples(self, uri: str) -> Examples:
        return load_image_examples(uri, self.label_field, self.image_size)

    def resolve_model(self, uri: str) -> Path:
        if uri.startswith("builtin://"):
            check_builtin(uri)
            return pretrained_weights_file(uri).parent
        path = fetch(parse_uri(uri))
        if not is_image_model_dir(path):
            raise InputError(
                f"model {uri}: not an image model (no config.json with modelType "
                "efficientnet-lite); use builtin://efficientnet-lite0 or a modelloop image model"
            )
        return path

    def load_model(self, model_dir: Path, uri: str, label_names: Sequence[str]) -> TaskModel:
        if uri.startswith("builtin://"):
            model = load_pretrained(uri, len(label_names), self.image_size)
            return ImageModel(model, self.image_size)
        # A modelloop image model: train.check_warm_start has checked its labels already.
        loaded = load_image_artifact(model_dir, image_size=self.image_size)
        return ImageModel(loaded.model, self.image_size)


def task_for(args: argparse.Namespace) -> Task:
    if args.task == TASK_IMAGE:
        return ImageClassification(args)
    return TextClassification(args)
