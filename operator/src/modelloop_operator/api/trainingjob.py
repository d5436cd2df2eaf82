"""TrainingJob: fine-tune a pretrained model on labelled text or images, on one or more nodes.

The operator runs it as an indexed batch/v1 Job (one pod per node, torchrun inside) with a
headless Service for rendezvous, retries the whole gang up to ``runPolicy.backoffLimit``
times, and records metrics, the model URI and its lineage in status. Once Succeeded or
Failed the job never runs again: change the spec by creating a new TrainingJob.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .base import SpecModel, StatusModel
from .common import (
    DatasetSpec,
    ModelArtifact,
    NodeResources,
    OutputSpec,
    PodTemplateOverrides,
    RunPolicy,
    Scheduling,
    SourceURI,
    StorageSpec,
)
from .jobs import JobPhase, JobStatus
from .markers import Rule, k8s
from .meta import AGE_COLUMN, KindInfo, ObjectMeta, PrinterColumn, check_name
from .scalars import IMAGE_MAX_LENGTH as IMAGE_MAX_LENGTH
from .scalars import Image, Timestamp

#: Leaves room for the Job (<name>-a<attempt>) and its pods' hostnames (<job>-<index>).
TRAININGJOB_MAX_NAME_LENGTH = 50

class Task(StrEnum):
    """What the model learns to do."""

    TEXT_CLASSIFICATION = "text-classification"
    IMAGE_CLASSIFICATION = "image-classification"


#: The trainer's per-task defaults (docs/contracts.md), spelled out in the Job's flags.
DEFAULT_LEARNING_RATE: Final = {Task.TEXT_CLASSIFICATION: 5e-5,
                                Task.IMAGE_CLASSIFICATION: 2e-3}
DEFAULT_IMAGE_SIZE: Final = 32
#: builtin:// models and datasets of each task (shipped in the trainer image).
BUILTIN_MODELS: Final = {Task.TEXT_CLASSIFICATION: ("builtin://all-minilm-l6-v2",),
                         Task.IMAGE_CLASSIFICATION: ("builtin://efficientnet-lite0",)}
BUILTIN_DATASETS: Final = {Task.TEXT_CLASSIFICATION: ("builtin://bbc-news",
                                                       "builtin://rotten-tomatoes"),
                           Task.IMAGE_CLASSIFICATION: ("builtin://digits",)}


class EvaluationMetric(StrEnum):
    """Metric computed on the validation data."""

    ACCURACY = "accuracy"
    F1_MACRO = "f1_macro"


class BaseModelSpec(SpecModel):
    """The pretrained model training starts from."""

    uri: SourceURI
    """builtin://all-minilm-l6-v2 (text) or builtin://efficientnet-lite0 (images), shipped
    in the trainer image, or a model directory under file://, pvc://<claim>/<path> or
    s3:// (a Hugging Face model, or a modelloop image artifact)."""


class Hyperparameters(SpecModel):
    """Optimizer and data settings, passed to the trainer as flags."""

    epochs: Annotated[int, Field(ge=1, le=1000)] = 3
    """Passes over the training data."""

    batch_size: Annotated[int, Field(ge=1, le=4096)] = 16
    """Examples per step per process."""

    learning_rate: Annotated[float, Field(gt=0, le=1)] | None = None
    """Peak learning rate of AdamW; when absent 5e-5 for text-classification, 2e-3 for
    image-classification (a new head on a convolutional backbone)."""

    weight_decay: Annotated[float, Field(ge=0, le=1)] = 0.0
    """AdamW weight decay."""

    warmup_ratio: Annotated[float, Field(ge=0, lt=1)] = 0.0
    """Fraction of steps spent warming the learning rate up."""

    gradient_accumulation_steps: Annotated[int, Field(ge=1, le=1024)] = 1
    """Steps whose gradients are summed before an optimizer update."""

    max_length: Annotated[int, Field(ge=8, le=8192)] = 128
    """text-classification: tokens per example; longer texts are truncated."""

    image_size: Annotated[int, Field(ge=16, le=512)] | None = None
    """image-classification only: every image is resized to this many pixels square
    (32 when absent)."""

    seed: Annotated[int, Field(ge=0, le=2**31 - 1)] = 42
    """Random seed, for reproducible runs."""

    checkpoint_every: Annotated[int, Field(ge=1, le=10_000_000)] = 500
    """Optimizer steps between checkpoints; a restarted gang resumes from the last one."""


class EvaluationGate(SpecModel):
    """The bar a trained model must pass; missing it fails the job (no retry)."""

    metric: EvaluationMetric = EvaluationMetric.ACCURACY
    """Metric the gate compares: accuracy or f1_macro."""

    min_score: Annotated[float, Field(ge=0, le=1)] | None = None
    """Lowest acceptable value of the metric on the validation data; no gate when absent."""


class CapturedData(SpecModel):
    """Labelled production traffic added to the training data: the labelled records a
    ModelDeployment's collector keeps (docs/capture.md). A seeded hash of each request id
    keeps holdoutFraction of them out of training for the promotion gate; the rest join
    the base dataset's training and validation splits. The data actually used is written
    to <output>/dataset/ with its sha256 digest (status.dataset)."""

    uri: SourceURI
    """The labelled/ directory of a capture sink, e.g. pvc://captures/bbc/labelled."""

    since: Timestamp | None = None
    """Only requests served at or after this time; all kept records when absent."""

    max_rows: Annotated[int, Field(ge=1, le=10_000_000)] = 20_000
    """Most captured rows trained on (the newest are kept)."""

    min_rows: Annotated[int, Field(ge=1, le=10_000_000)] = 1
    """Fewest captured rows (training plus validation); fewer fails the job."""

    holdout_fraction: Annotated[float, Field(ge=0, lt=1)] = 0.2
    """Fraction of the labelled requests never trained on, kept for the promotion gate."""


class TrainingDataset(DatasetSpec):
    """The base dataset, and optionally labelled production traffic on top of it."""

    captured: CapturedData | None = None
    """Labelled captured traffic to train on as well; set by automatic retraining
    (spec.retrain.data), or by hand."""


class DatasetSnapshot(StatusModel):
    """The data a run trained on, as written to <output>/dataset/."""

    uri: Annotated[str, Field(max_length=1024)] | None = None
    """Where the snapshot is."""

    digest: Annotated[str, Field(max_length=128)] | None = None
    """sha256:<hex> of the training and validation files: the same digest, the same data."""

    rows: Annotated[dict[str, int], Field(json_schema_extra=k8s(max_properties=16))] = (
        Field(default_factory=dict))
    """Row counts: baseTrain, capturedTrain, baseValidation, capturedValidation, holdout,
    skipped."""


def _other_tasks_builtins(table: Mapping[Task, tuple[str, ...]], task: Task) -> list[str]:
    return [uri for other, uris in table.items() if other != task for uri in uris]


def _cel_list(items: list[str]) -> str:
    return "[" + ", ".join(f"'{item}'" for item in items) + "]"


IMAGE_SIZE_MESSAGE: Final = "hyperparameters.imageSize is for task image-classification only"
CAPTURED_IMAGES_MESSAGE: Final = (
    "dataset.captured (labelled traffic) is for task text-classification only: image "
    "models are not served yet, so there is no captured traffic to train on")
BUILTIN_MODEL_MESSAGE: Final = (
    "model.uri is a builtin model of another task: builtin://all-minilm-l6-v2 is for "
    "text-classification, builtin://efficientnet-lite0 for image-classification")
BUILTIN_DATASET_MESSAGE: Final = (
    "dataset.uri is a builtin dataset of another task: builtin://bbc-news and "
    "builtin://rotten-tomatoes are text, builtin://digits is images")


def _task_rules() -> list[Rule]:
    rules = [Rule("self.task == 'image-classification' || !has(self.hyperparameters) || "
                  "!has(self.hyperparameters.imageSize)", IMAGE_SIZE_MESSAGE,
                  field_path=".hyperparameters.imageSize"),
             Rule("self.task != 'image-classification' || !has(self.dataset.captured)",
                  CAPTURED_IMAGES_MESSAGE, field_path=".dataset.captured")]
    for table, field, message in ((BUILTIN_MODELS, "model", BUILTIN_MODEL_MESSAGE),
                                  (BUILTIN_DATASETS, "dataset", BUILTIN_DATASET_MESSAGE)):
        refused = " || ".join(
            f"(self.task == '{task.value}' && self.{field}.uri in "
            f"{_cel_list(_other_tasks_builtins(table, task))})" for task in Task)
        rules.append(Rule(f"!({refused})", message, field_path=f".{field}.uri"))
    return rules


class TrainingJobSpec(SpecModel):
    """What to train, on what data, with which resources.

    Everything but runPolicy.suspend and runPolicy.ttlSecondsAfterFinished is immutable:
    a TrainingJob is a record of one training run. Task-specific fields are checked
    against spec.task (imageSize, the builtin:// models and datasets of each task).
    """

    model_config = ConfigDict(json_schema_extra=k8s(*_task_rules()))

    model: BaseModelSpec = Field(json_schema_extra=k8s(immutable=True))
    """Base (pretrained) model."""

    task: Task = Field(default=Task.TEXT_CLASSIFICATION, json_schema_extra=k8s(immutable=True))
    """What the model learns: text-classification or image-classification (a fine-tuned
    EfficientNet-Lite0 by default; docs/trainer.md)."""

    dataset: TrainingDataset = Field(json_schema_extra=k8s(immutable=True))
    """Training (and validation) data."""

    hyperparameters: Hyperparameters = Field(
        default_factory=Hyperparameters, json_schema_extra=k8s(immutable=True, default={}))
    """Optimizer and data settings."""

    num_nodes: Annotated[int, Field(ge=1, le=256)] = Field(
        default=1, json_schema_extra=k8s(immutable=True))
    """Nodes (pods) in the gang; torchrun runs resources.gpus processes on each (one when
    there are no GPUs)."""

    resources: NodeResources = Field(
        default_factory=NodeResources, json_schema_extra=k8s(immutable=True, default={}))
    """Compute per node."""

    image: Image | None = Field(
        default=None, json_schema_extra=k8s(immutable=True))
    """Trainer image; the operator's configured trainer image when absent."""

    scheduling: Scheduling = Field(
        default_factory=Scheduling, json_schema_extra=k8s(immutable=True, default={}))
    """Node selection, tolerations, priority and Kueue queue."""

    pod_template: PodTemplateOverrides = Field(
        default_factory=PodTemplateOverrides, json_schema_extra=k8s(immutable=True))
    """Labels and annotations for the pods."""

    run_policy: RunPolicy = Field(default_factory=RunPolicy, json_schema_extra=k8s(default={}))
    """Retries, deadline, cleanup and suspension."""

    evaluation: EvaluationGate = Field(
        default_factory=EvaluationGate, json_schema_extra=k8s(immutable=True, default={}))
    """Metric and minimum score the model must reach."""

    output: OutputSpec = Field(json_schema_extra=k8s(immutable=True))
    """Where the trained model is written."""

    storage: StorageSpec = Field(
        default_factory=StorageSpec, json_schema_extra=k8s(immutable=True, default={}))
    """Credentials for s3:// URIs."""

    @model_validator(mode="after")
    def _fields_fit_the_task(self) -> TrainingJobSpec:
        if self.task != Task.IMAGE_CLASSIFICATION and self.hyperparameters.image_size is not None:
            raise ValueError(IMAGE_SIZE_MESSAGE)
        if self.task == Task.IMAGE_CLASSIFICATION and self.dataset.captured is not None:
            raise ValueError(CAPTURED_IMAGES_MESSAGE)
        if self.model.uri in _other_tasks_builtins(BUILTIN_MODELS, self.task):
            raise ValueError(BUILTIN_MODEL_MESSAGE)
        if self.dataset.uri in _other_tasks_builtins(BUILTIN_DATASETS, self.task):
            raise ValueError(BUILTIN_DATASET_MESSAGE)
        return self

    @property
    def learning_rate(self) -> float:
        """The learning rate the trainer is given: the spec's, else the task's default."""
        given = self.hyperparameters.learning_rate
        return DEFAULT_LEARNING_RATE[self.task] if given is None else given


TrainingJobPhase = JobPhase
"""Pending, Running, Succeeded, Failed or Suspended (shared with OptimizationJob)."""


class TrainingJobStatus(JobStatus):
    """What the operator observed. Written only by the operator."""

    metrics: Annotated[dict[str, float], Field(json_schema_extra=k8s(
        max_properties=64))] = Field(default_factory=dict)
    """Final validation metrics (accuracy, f1_macro, loss...)."""

    model: ModelArtifact | None = None
    """The trained model: URI and checksum."""

    labels: Annotated[list[Annotated[str, Field(max_length=256)]], Field(
        max_length=10_000)] = Field(default_factory=list)
    """Class labels the model predicts, in output order."""

    dataset: DatasetSnapshot | None = None
    """The data actually trained on, with its digest."""


class TrainingJob(BaseModel):
    """A whole TrainingJob object as the API server returns it."""

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    api_version: Literal["modelloop.dev/v1alpha1"] = Field(
        default="modelloop.dev/v1alpha1", alias="apiVersion")
    kind: Literal["TrainingJob"] = "TrainingJob"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: TrainingJobSpec
    status: TrainingJobStatus = Field(default_factory=TrainingJobStatus)

    @model_validator(mode="after")
    def _name_fits(self) -> TrainingJob:
        check_name(self.metadata.name, kind="TrainingJob",
                   max_length=TRAININGJOB_MAX_NAME_LENGTH)
        return self


TRAININGJOB_KIND = KindInfo(
    kind="TrainingJob",
    plural="trainingjobs",
    singular="trainingjob",
    short_names=("tj",),
    max_name_length=TRAININGJOB_MAX_NAME_LENGTH,
    description=__doc__ or "",
    spec_model=TrainingJobSpec,
    status_model=TrainingJobStatus,
    printer_columns=(
        PrinterColumn(name="Phase", type="string", json_path=".status.phase",
                      description="Pending, Running, Succeeded, Failed or Suspended."),
        PrinterColumn(name="Accuracy", type="number", json_path=".status.metrics.accuracy",
                      description="Validation accuracy of the trained model."),
        PrinterColumn(name="Attempts", type="integer", json_path=".status.attempts",
                      description="Number of the current attempt."),
        AGE_COLUMN,
    ),
)
