"""OptimizationJob: compress a trained model, measure it, and package it for serving.

Techniques run in order (quantization, pruning, distillation), then the optimized model is
compared with the original on the evaluation data. It is Accepted when the accuracy drop
stays within ``acceptance.maxAccuracyDrop`` (and the speedup reaches ``minSpeedup`` when
set); only then is the TorchServe archive published for ModelDeployments to serve.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from .base import SpecModel, StatusModel
from .common import (
    DatasetSpec,
    LocalObjectReference,
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
from .scalars import Image, Timestamp, TrainedModelURI, check_pattern

#: Leaves room for the Job (<name>-a<attempt>) and its pod names.
OPTIMIZATIONJOB_MAX_NAME_LENGTH = 50

ARCHIVE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]*$"


class OptimizationSource(SpecModel):
    """The model to optimize: exactly one of trainingJobRef or modelUri."""

    model_config = ConfigDict(json_schema_extra=k8s(Rule(
        "[has(self.trainingJobRef), has(self.modelUri)].exists_one(x, x)",
        "exactly one of trainingJobRef or modelUri must be set",
    )))

    training_job_ref: LocalObjectReference | None = None
    """A TrainingJob in the same namespace; the job waits until it has Succeeded and
    optimizes its output model."""

    model_uri: TrainedModelURI | None = None
    """A trained model directory (modelloop-train output) under file://,
    pvc://<claim>/<path> or s3://. builtin:// is refused: it names untrained base models;
    train one with a TrainingJob first."""

    @model_validator(mode="after")
    def _exactly_one(self) -> OptimizationSource:
        if (self.training_job_ref is None) == (self.model_uri is None):
            raise ValueError("exactly one of trainingJobRef or modelUri must be set")
        return self


class TechniqueType(StrEnum):
    """A compression technique."""

    QUANTIZATION = "quantization"
    PRUNING = "pruning"
    DISTILLATION = "distillation"


class QuantizationDtype(StrEnum):
    """Weight type after dynamic quantization."""

    INT8 = "int8"


#: Parameters each technique accepts, with the value used when a parameter is absent.
TECHNIQUE_DEFAULTS: dict[TechniqueType, dict[str, Any]] = {
    TechniqueType.QUANTIZATION: {"dtype": "int8", "embeddings": False},
    TechniqueType.PRUNING: {"amount": 0.3, "structured": False},
    TechniqueType.DISTILLATION: {"studentLayers": 3, "epochs": 1, "temperature": 2.0},
}


def _only_for(kind: TechniqueType) -> Rule:
    names = list(TECHNIQUE_DEFAULTS[kind])
    absent = " && ".join(f"!has(self.{n})" for n in names)
    return Rule(f"self.type == '{kind.value}' || ({absent})",
                f"{', '.join(names)} apply only to type {kind.value}")


class OptimizationTechnique(SpecModel):
    """One step of the optimization pipeline. Only the parameters of its own type may be
    set; absent ones take the defaults listed with each field."""

    model_config = ConfigDict(json_schema_extra=k8s(*(_only_for(t) for t in TechniqueType)))

    type: TechniqueType
    """quantization, pruning or distillation."""

    dtype: QuantizationDtype | None = None
    """quantization: weight type (default int8; dynamic quantization of Linear layers)."""

    embeddings: bool | None = None
    """quantization: also quantize the embedding tables (default false): far smaller,
    slightly less accurate."""

    amount: Annotated[float, Field(gt=0, lt=1)] | None = None
    """pruning: fraction of weights removed (default 0.3)."""

    structured: bool | None = None
    """pruning: remove whole rows/heads instead of single weights (default false)."""

    student_layers: Annotated[int, Field(ge=1, le=48)] | None = None
    """distillation: transformer layers of the student (default 3)."""

    epochs: Annotated[int, Field(ge=1, le=100)] | None = None
    """distillation: passes over the data (default 1)."""

    temperature: Annotated[float, Field(gt=0, le=100)] | None = None
    """distillation: softmax temperature of the teacher's targets (default 2.0)."""

    @model_validator(mode="after")
    def _only_own_parameters(self) -> OptimizationTechnique:
        for kind, params in TECHNIQUE_DEFAULTS.items():
            if kind is self.type:
                continue
            given = [p for p in params if getattr(self, _snake(p)) is not None]
            if given:
                raise ValueError(
                    f"{', '.join(params)} apply only to type {kind.value} "
                    f"(got {', '.join(given)} on type {self.type.value})")
        return self

    def to_trainer_json(self) -> dict[str, Any]:
        """The technique as ``modelloop-optimize --techniques`` expects it, defaults filled
        in (docs/contracts.md section 2)."""
        out: dict[str, Any] = {"type": self.type.value}
        for param, default in TECHNIQUE_DEFAULTS[self.type].items():
            value = getattr(self, _snake(param))
            out[param] = default if value is None else (
                value.value if isinstance(value, StrEnum) else value)
        return out


def _snake(camel: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in camel)


class OptimizationEvaluation(SpecModel):
    """Data the original and optimized models are compared on."""

    dataset: DatasetSpec | None = None
    """Evaluation data. Optional when the source is a TrainingJob: its validation data is
    used."""


class Acceptance(SpecModel):
    """The budget an optimized model must stay within to be Accepted."""

    max_accuracy_drop: Annotated[float, Field(ge=0, le=1)] = 0.01
    """Largest accuracy loss accepted, as a fraction (0.01 = one point)."""

    min_speedup: Annotated[float, Field(gt=0, le=1000)] | None = None
    """Smallest throughput ratio optimized/original accepted; no speed bar when absent."""


class PackagingFormat(StrEnum):
    """Serving runtime the archive is built for."""

    TORCHSERVE = "torchserve"


class Packaging(SpecModel):
    """How the optimized model is packaged for the server. batchSize, workers,
    maxBatchDelayMs and responseTimeoutSeconds go into the archive's model-config.yaml:
    defaults for the archive served on its own (torchserve --models x.mar). A
    ModelDeployment serving the archive replaces them with its own spec.server values."""

    format: PackagingFormat = PackagingFormat.TORCHSERVE
    """Serving runtime: torchserve (a .mar archive)."""

    archive_name: Annotated[str, AfterValidator(lambda v: check_pattern(
        v, ARCHIVE_NAME_PATTERN, "letters, digits, '_' and '-', starting with a letter or digit"
    )), Field(min_length=1, max_length=63,
              json_schema_extra={"pattern": ARCHIVE_NAME_PATTERN})] = "model"
    """Model name inside the archive and in inference URLs (/predictions/<name>)."""

    batch_size: Annotated[int, Field(ge=1, le=1024)] = 8
    """Largest batch the server forms; a ModelDeployment's server.batchSize wins."""

    workers: Annotated[int, Field(ge=1, le=64)] = 1
    """Worker processes per server; a ModelDeployment's server.workers wins."""

    max_batch_delay_ms: Annotated[int, Field(ge=0, le=60_000)] = 50
    """How long the server waits to fill a batch, in milliseconds; a ModelDeployment's
    server.maxBatchDelayMs wins."""

    response_timeout_seconds: Annotated[int, Field(ge=1, le=3600)] = 120
    """Time a worker may take for one batch before it is restarted; a ModelDeployment's
    server.responseTimeoutSeconds wins."""


class Champion(SpecModel):
    """The model a candidate must beat: usually the one being served."""

    uri: SourceURI
    """Its TorchServe archive (.mar) or model directory."""

    name: Annotated[str, Field(max_length=253)] | None = None
    """Its name in the report (e.g. the version being served)."""


class Holdout(SpecModel):
    """Recent labelled production traffic no candidate trained on: the labelled records of
    a capture sink, the requests whose id hashes below fraction (the split TrainingJobs'
    dataset.captured use)."""

    uri: SourceURI
    """The labelled/ directory of a capture sink."""

    since: Timestamp | None = None
    """Only requests served at or after this time."""

    fraction: Annotated[float, Field(gt=0, lt=1)] = 0.2
    """The holdout fraction the candidate's TrainingJob kept out (dataset.captured
    .holdoutFraction)."""

    min_rows: Annotated[int, Field(ge=1, le=10_000_000)] = 20
    """Fewest holdout rows for a comparison; fewer is not Accepted (never promoted blind)."""


class Comparison(SpecModel):
    """Champion/challenger: the optimized candidate and the champion evaluated on the same
    data, the original evaluation data and the holdout. The run is Accepted only if both
    rules hold (on accuracy)."""

    champion: Champion
    """The model to compare with."""

    holdout: Holdout | None = None
    """Recent labelled traffic; only the original-data rule applies without it."""

    min_improvement: Annotated[float, Field(ge=-1, le=1)] = 0.0
    """Candidate holdout accuracy minus the champion's must be at least this (0: not
    worse on recent traffic)."""

    max_original_drop: Annotated[float, Field(ge=0, le=1)] = 0.01
    """Champion accuracy on the original evaluation data minus the candidate's must be at
    most this (0.01 = one point)."""


class OptimizationJobSettings(SpecModel):
    """Everything about an optimization except its source. A ModelDeployment's retrain
    template uses this part; the operator fills in the source."""

    techniques: Annotated[list[OptimizationTechnique], Field(
        min_length=1, max_length=8)] = Field(json_schema_extra=k8s(immutable=True))
    """Techniques applied in order."""

    evaluation: OptimizationEvaluation = Field(
        default_factory=OptimizationEvaluation,
        json_schema_extra=k8s(immutable=True, default={}))
    """Evaluation data."""

    acceptance: Acceptance = Field(
        default_factory=Acceptance, json_schema_extra=k8s(immutable=True, default={}))
    """Accuracy and speed budget."""

    packaging: Packaging = Field(
        default_factory=Packaging, json_schema_extra=k8s(immutable=True, default={}))
    """Serving archive settings: defaults for the archive served on its own; a
    ModelDeployment serving it uses its own server settings instead."""

    output: OutputSpec = Field(json_schema_extra=k8s(immutable=True))
    """Where the optimized model, report.json and the archive are written."""

    resources: NodeResources = Field(
        default_factory=NodeResources, json_schema_extra=k8s(immutable=True, default={}))
    """Compute for the optimization pod."""

    image: Image | None = Field(
        default=None, json_schema_extra=k8s(immutable=True))
    """Trainer image; the operator's configured trainer image when absent."""

    scheduling: Scheduling = Field(
        default_factory=Scheduling, json_schema_extra=k8s(immutable=True, default={}))
    """Node selection, tolerations, priority and Kueue queue."""

    pod_template: PodTemplateOverrides = Field(
        default_factory=PodTemplateOverrides, json_schema_extra=k8s(immutable=True))
    """Labels and annotations for the pod."""

    run_policy: RunPolicy = Field(default_factory=RunPolicy, json_schema_extra=k8s(default={}))
    """Retries, deadline, cleanup and suspension."""

    storage: StorageSpec = Field(
        default_factory=StorageSpec, json_schema_extra=k8s(immutable=True, default={}))
    """Credentials for s3:// URIs."""


class OptimizationJobSpec(OptimizationJobSettings):
    """What to optimize, how, and the budget it must stay within.

    Everything but runPolicy.suspend and runPolicy.ttlSecondsAfterFinished is immutable.
    """

    model_config = ConfigDict(json_schema_extra=k8s(Rule(
        "has(self.source.trainingJobRef)"
        " || (has(self.evaluation) && has(self.evaluation.dataset))",
        "evaluation.dataset is required when the source is a modelUri",
        field_path=".evaluation",
    )))

    source: OptimizationSource = Field(json_schema_extra=k8s(immutable=True))
    """The model to optimize."""

    comparison: Comparison | None = Field(default=None, json_schema_extra=k8s(immutable=True))
    """Compare the result with a champion before accepting it; automatic retraining sets
    it to the model being served."""

    @model_validator(mode="after")
    def _dataset_known(self) -> OptimizationJobSpec:
        if self.source.training_job_ref is None and self.evaluation.dataset is None:
            raise ValueError("evaluation.dataset is required when the source is a modelUri")
        return self


OptimizationJobPhase = JobPhase
"""Pending, Running, Succeeded, Failed or Suspended (shared with TrainingJob)."""


class ModelProfile(StatusModel):
    """Measurements of one model on the evaluation data."""

    size_bytes: Annotated[int, Field(ge=0)] | None = None
    """Size of the weights on disk."""

    latency_p50_ms: float | None = None
    """Median latency of one batch, in milliseconds."""

    latency_p99_ms: float | None = None
    """99th-percentile latency, in milliseconds."""

    throughput: float | None = None
    """Examples per second."""

    accuracy: float | None = None
    """Accuracy on the evaluation data."""

    f1_macro: float | None = None
    """Macro-averaged F1 on the evaluation data."""


class Figures(StatusModel):
    """One model's figures on one dataset."""

    accuracy: float | None = None
    """Fraction classified correctly."""

    macro_f1: float | None = None
    """Macro-averaged F1."""

    samples: Annotated[int, Field(ge=0)] | None = None
    """Examples evaluated."""

    per_class_recall: Annotated[dict[str, float], Field(json_schema_extra=k8s(
        max_properties=64))] = Field(default_factory=dict)
    """Recall of each true label."""


class ComparedModel(StatusModel):
    """A model's figures on the original evaluation data and on the holdout."""

    name: Annotated[str, Field(max_length=253)] | None = None
    """The model."""

    original: Figures | None = None
    """On the original evaluation data."""

    holdout: Figures | None = None
    """On the holdout of recent labelled traffic."""


class ComparisonReport(StatusModel):
    """Candidate versus champion, and the verdict."""

    champion: ComparedModel | None = None
    """The model compared with."""

    candidate: ComparedModel | None = None
    """This run's model."""

    passed: bool | None = None
    """Whether every rule held."""

    reasons: Annotated[list[Annotated[str, Field(max_length=512)]], Field(
        max_length=16)] = Field(default_factory=list)
    """Each failed rule with its figures."""


def parse_comparison(raw: object) -> ComparisonReport | None:
    """The champion/challenger section, or None when absent or malformed (never fatal)."""
    if not isinstance(raw, Mapping):
        return None
    try:
        return ComparisonReport.model_validate(raw)
    except ValueError:
        return None


def _figure(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def comparison_message(comparison: ComparisonReport) -> str:
    """Candidate against champion in numbers, e.g. ``vs bbc-v1: holdout accuracy 0.870
    vs 0.650 (n=120), original 0.930 vs 0.940``."""
    champion = comparison.champion or ComparedModel()
    candidate = comparison.candidate or ComparedModel()
    parts = []
    for key in ("holdout", "original"):
        mine, theirs = getattr(candidate, key), getattr(champion, key)
        if mine is None and theirs is None:
            continue
        mine, theirs = mine or Figures(), theirs or Figures()
        parts.append(f"{key} accuracy {_figure(mine.accuracy)} vs {_figure(theirs.accuracy)}"
                     + (f" (n={mine.samples})" if mine.samples is not None else ""))
    verdict = "passed" if comparison.passed else "failed"
    return f"vs {champion.name or 'champion'} {verdict}: " + ", ".join(parts)



class OptimizationReport(StatusModel):
    """Original versus optimized model."""

    baseline: ModelProfile | None = None
    """The original model."""

    optimized: ModelProfile | None = None
    """The optimized model."""

    size_ratio: float | None = None
    """optimized size / original size."""

    speedup: float | None = None
    """optimized throughput / original throughput."""

    accuracy_drop: float | None = None
    """original accuracy - optimized accuracy, as a fraction."""

    comparison: ComparisonReport | None = None
    """Champion/challenger figures, when spec.comparison is set."""


class OptimizationJobStatus(JobStatus):
    """What the operator observed. The Accepted condition says whether the budget held."""

    report: OptimizationReport | None = None
    """Measurements of both models."""

    model: ModelArtifact | None = None
    """The optimized model directory."""

    archive_uri: Annotated[str, Field(max_length=1024)] | None = None
    """The serving archive (.mar); set only when the model was Accepted."""


class OptimizationJob(BaseModel):
    """A whole OptimizationJob object as the API server returns it."""

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    api_version: Literal["modelloop.dev/v1alpha1"] = Field(
        default="modelloop.dev/v1alpha1", alias="apiVersion")
    kind: Literal["OptimizationJob"] = "OptimizationJob"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: OptimizationJobSpec
    status: OptimizationJobStatus = Field(default_factory=OptimizationJobStatus)

    @model_validator(mode="after")
    def _name_fits(self) -> OptimizationJob:
        check_name(self.metadata.name, kind="OptimizationJob",
                   max_length=OPTIMIZATIONJOB_MAX_NAME_LENGTH)
        return self


OPTIMIZATIONJOB_KIND = KindInfo(
    kind="OptimizationJob",
    plural="optimizationjobs",
    singular="optimizationjob",
    short_names=("oj",),
    max_name_length=OPTIMIZATIONJOB_MAX_NAME_LENGTH,
    description=__doc__ or "",
    spec_model=OptimizationJobSpec,
    status_model=OptimizationJobStatus,
    printer_columns=(
        PrinterColumn(name="Phase", type="string", json_path=".status.phase",
                      description="Pending, Running, Succeeded, Failed or Suspended."),
        PrinterColumn(name="Accepted", type="string",
                      json_path='.status.conditions[?(@.type=="Accepted")].status',
                      description="Whether the optimized model stayed within the budget."),
        PrinterColumn(name="Speedup", type="number", json_path=".status.report.speedup",
                      description="Optimized throughput / original throughput."),
        AGE_COLUMN,
    ),
)
