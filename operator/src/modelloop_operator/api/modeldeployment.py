"""ModelDeployment: serve a model with TorchServe, watch it, and retrain it when it drifts.

The operator runs the model servers as Deployments behind a Service, rolls new models out
(rolling or canary), evaluates monitoring checks on Prometheus metrics, and, when allowed,
retrains and re-optimizes the model through TrainingJobs and OptimizationJobs it owns.
It never writes the spec: what it decides is in status.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .base import SpecModel, StatusModel
from .capture import CaptureSpec, CaptureStatus
from .common import (
    Condition,
    Duration,
    LocalObjectReference,
    NodeResources,
    OutputURI,
    PodTemplateOverrides,
    Scheduling,
    StorageSpec,
)

# ServedModel lives in common (RetrainRecord in monitoring uses it too); it is still part
# of this kind's API, so it is re-exported here.
from .common import ServedModel as ServedModel
from .markers import Rule, k8s
from .meta import AGE_COLUMN, KindInfo, ObjectMeta, PrinterColumn, check_name
from .monitoring import AnalysisStatus, MonitoringSpec, RetrainSpec, RetrainStatus
from .scalars import Image

#: Leaves room for <name>-canary, <name>-metrics and retrain jobs (<name>-rt-<hash>).
MODELDEPLOYMENT_MAX_NAME_LENGTH = 40

_FEEDBACK_NEEDS_CAPTURE = (
    "monitoring.accuracy and monitoring.macroF1 need spec.capture: feedback is joined to "
    "captured predictions")
_LABELLED_NEEDS_CAPTURE = (
    "retrain.data.labelled needs spec.capture: the labelled records are the collector's")


class DeploymentModelSource(SpecModel):
    """The model to serve: exactly one of optimizationJobRef, trainingJobRef, archiveUri."""

    model_config = ConfigDict(json_schema_extra=k8s(Rule(
        "[has(self.optimizationJobRef), has(self.trainingJobRef), has(self.archiveUri)]"
        ".exists_one(x, x)",
        "exactly one of optimizationJobRef, trainingJobRef or archiveUri must be set",
    )))

    optimization_job_ref: LocalObjectReference | None = None
    """An Accepted OptimizationJob in the same namespace: its archive is served."""

    training_job_ref: LocalObjectReference | None = None
    """A Succeeded TrainingJob in the same namespace: its model is served unoptimized."""

    archive_uri: OutputURI | None = None
    """A TorchServe archive (.mar) under file://, pvc://<claim>/<path> or s3://."""

    @model_validator(mode="after")
    def _exactly_one(self) -> DeploymentModelSource:
        given = [x for x in (self.optimization_job_ref, self.training_job_ref,
                             self.archive_uri) if x is not None]
        if len(given) != 1:
            raise ValueError(
                "exactly one of optimizationJobRef, trainingJobRef or archiveUri must be set")
        return self


class Autoscaling(SpecModel):
    """A HorizontalPodAutoscaler on CPU; when set it owns the replica count."""

    model_config = ConfigDict(json_schema_extra=k8s(Rule(
        "self.minReplicas <= self.maxReplicas",
        "minReplicas must not be greater than maxReplicas",
    )))

    min_replicas: Annotated[int, Field(ge=1, le=1000)] = 1
    """Fewest replicas."""

    max_replicas: Annotated[int, Field(ge=1, le=1000)]
    """Most replicas."""

    target_cpu_utilization_percentage: Annotated[int, Field(ge=1, le=100)] = Field(
        default=80, alias="targetCPUUtilizationPercentage")
    """Average CPU use, in percent of the request, the autoscaler aims for."""

    @model_validator(mode="after")
    def _min_le_max(self) -> Autoscaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError("minReplicas must not be greater than maxReplicas")
        return self


class RolloutStrategy(StrEnum):
    """How a new model replaces the served one."""

    ROLLING_UPDATE = "RollingUpdate"
    CANARY = "Canary"


class CanaryStep(SpecModel):
    """One canary step: a share of traffic held for canary.interval."""

    weight: Annotated[int, Field(ge=1, le=100)]
    """Percent of replicas (and so of traffic) serving the new model."""


class CanarySpec(SpecModel):
    """Progressive rollout: the new model gets more traffic step by step while the
    monitoring checks hold; any failed check rolls it back."""

    steps: Annotated[list[CanaryStep], Field(min_length=1, max_length=20)]
    """Traffic shares, in order; after the last step the new model takes all traffic."""

    interval: Duration = "5m"
    """Time each step is held and analysed."""

    analysis: bool = True
    """Evaluate spec.monitoring checks on the canary pods at each step."""

    max_accuracy_drop: Annotated[float, Field(ge=0, le=1)] = 0.02
    """With monitoring.accuracy: the canary's live accuracy from feedback must be at least
    the stable track's over the same window minus this, at each step (the check
    accuracyVsStable; Inconclusive until both have accuracy.minSamples labelled requests)."""


class RolloutSpec(SpecModel):
    """How model changes are rolled out."""

    model_config = ConfigDict(json_schema_extra=k8s(
        # has(self.strategy): the API server also checks these rules against the
        # `default: {}` of rollout, before the strategy default is filled in.
        Rule("!has(self.canary) || (has(self.strategy) && self.strategy == 'Canary')",
             "canary is only allowed with strategy Canary", field_path=".canary"),
        Rule("!has(self.strategy) || self.strategy != 'Canary' || has(self.canary)",
             "strategy Canary needs canary.steps", field_path=".canary"),
    ))

    strategy: RolloutStrategy = RolloutStrategy.ROLLING_UPDATE
    """RollingUpdate or Canary."""

    canary: CanarySpec | None = None
    """Canary steps; only with strategy Canary."""

    @model_validator(mode="after")
    def _canary_matches_strategy(self) -> RolloutSpec:
        if self.strategy is RolloutStrategy.CANARY and self.canary is None:
            raise ValueError("strategy Canary needs canary.steps")
        if self.strategy is not RolloutStrategy.CANARY and self.canary is not None:
            raise ValueError("canary is only allowed with strategy Canary")
        return self


class ServerSpec(SpecModel):
    """TorchServe tuning, written into its config.properties. These values win over the
    model-config.yaml an archive carries (an OptimizationJob's packaging settings): the
    server applies them to the archive before it loads it."""

    workers: Annotated[int, Field(ge=1, le=64)] = 1
    """Worker processes per replica."""

    batch_size: Annotated[int, Field(ge=1, le=1024)] = 8
    """Largest batch formed."""

    max_batch_delay_ms: Annotated[int, Field(ge=0, le=60_000)] = 50
    """How long to wait to fill a batch, in milliseconds."""

    response_timeout_seconds: Annotated[int, Field(ge=1, le=3600)] = 120
    """Time a worker may take for one batch before it is restarted."""

    job_queue_size: Annotated[int, Field(ge=1, le=100_000)] = 100
    """Requests queued per model before new ones are refused (HTTP 503)."""

    max_request_size_bytes: Annotated[int, Field(ge=1024, le=67_108_864)] = 1_048_576
    """Largest request body accepted, in bytes; a larger one is refused with HTTP 413
    before it reaches the model (TorchServe's max_request_size)."""


class ModelDeploymentSpec(SpecModel):
    """What to serve, how many, how to roll out changes, and what to watch."""

    model_config = ConfigDict(json_schema_extra=k8s(Rule(
        "!has(self.retrain) || !self.retrain.enabled || has(self.monitoring)",
        "retrain.enabled needs monitoring: retraining is triggered by failed checks",
        field_path=".retrain",
    ), Rule(
        "!has(self.monitoring) || has(self.capture)"
        " || (!has(self.monitoring.accuracy) && !has(self.monitoring.macroF1))",
        _FEEDBACK_NEEDS_CAPTURE, field_path=".monitoring",
    ), Rule(
        "!has(self.retrain) || !has(self.retrain.data) || !has(self.retrain.data.labelled)"
        " || has(self.capture)",
        _LABELLED_NEEDS_CAPTURE, field_path=".retrain.data.labelled",
    )))

    model: DeploymentModelSource
    """The model to serve. Change it (in Git) to roll out another model."""

    replicas: Annotated[int, Field(ge=0, le=1000)] = 1
    """Model servers; ignored when autoscaling is set."""

    resources: NodeResources = Field(
        default_factory=NodeResources, json_schema_extra=k8s(default={}))
    """Compute per replica."""

    autoscaling: Autoscaling | None = None
    """CPU-based autoscaling."""

    rollout: RolloutSpec = Field(default_factory=RolloutSpec, json_schema_extra=k8s(default={}))
    """Rollout strategy."""

    server: ServerSpec = Field(default_factory=ServerSpec, json_schema_extra=k8s(default={}))
    """TorchServe tuning; wins over the settings packaged in the archive."""

    monitoring: MonitoringSpec | None = None
    """Health checks on Prometheus metrics; none when absent."""

    retrain: RetrainSpec | None = None
    """Automatic retraining; off when absent."""

    capture: CaptureSpec | None = None
    """Request capture and ground-truth feedback; off when absent (docs/capture.md)."""

    image: Image | None = None
    """Server image; the operator's configured server image when absent."""

    scheduling: Scheduling = Field(default_factory=Scheduling, json_schema_extra=k8s(
        default={}))
    """Node selection, tolerations and priority."""

    pod_template: PodTemplateOverrides = Field(default_factory=PodTemplateOverrides)
    """Labels and annotations for the server pods."""

    storage: StorageSpec = Field(default_factory=StorageSpec, json_schema_extra=k8s(
        default={}))
    """Credentials for s3:// archives."""

    @model_validator(mode="after")
    def _retrain_needs_monitoring(self) -> ModelDeploymentSpec:
        if self.retrain is not None and self.retrain.enabled and self.monitoring is None:
            raise ValueError(
                "retrain.enabled needs monitoring: retraining is triggered by failed checks")
        if (self.monitoring is not None and self.capture is None
                and (self.monitoring.accuracy or self.monitoring.macro_f1)):
            raise ValueError(_FEEDBACK_NEEDS_CAPTURE)
        if self.retrain is not None and self.retrain.data.labelled and self.capture is None:
            raise ValueError(_LABELLED_NEEDS_CAPTURE)
        return self


class ModelDeploymentPhase(StrEnum):
    """Summary of the deployment's state, for printer columns."""

    PENDING = "Pending"
    PROGRESSING = "Progressing"
    READY = "Ready"
    DEGRADED = "Degraded"
    FAILED = "Failed"


class RolloutPhase(StrEnum):
    """Where a rollout stands."""

    IDLE = "Idle"
    """One model (the stable one) serves everything; status.rollout is then absent."""

    PROGRESSING = "Progressing"
    """A canary serves the target model to the share of traffic of the current step."""

    PROMOTING = "Promoting"
    """Every step passed: the stable servers roll to the target model."""

    ROLLED_BACK = "RolledBack"
    """The target failed its analysis; the stable model serves everything and the target
    is not tried again until spec.model names another model."""


class RolloutStatus(StatusModel):
    """Progress of the current rollout."""

    phase: RolloutPhase | None = None
    """Idle, Progressing, Promoting or RolledBack. Absent in status written before this
    field existed."""

    stable_model: ServedModel | None = None
    """The model the stable servers run while the rollout lasts (the rollback target)."""

    strategy: Annotated[str, Field(max_length=64)] | None = None
    """Strategy in use."""

    step: Annotated[int, Field(ge=0)] | None = None
    """Index of the current canary step."""

    canary_weight: Annotated[int, Field(ge=0, le=100)] | None = None
    """Percent of replicas serving the new model."""

    target: ServedModel | None = None
    """The model being rolled out."""

    step_started_at: datetime | None = None
    """When the current step began."""

    message: Annotated[str, Field(max_length=1024)] = ""
    """Details (e.g. why the rollout was aborted)."""


class ModelDeploymentStatus(StatusModel):
    """What the operator observed and decided. Written only by the operator."""

    phase: ModelDeploymentPhase | None = None
    """Pending, Progressing, Ready, Degraded or Failed."""

    observed_generation: Annotated[int, Field(ge=0)] | None = None
    """The metadata.generation this status describes."""

    conditions: Annotated[list[Condition], Field(max_length=32)] = Field(
        default_factory=list,
        json_schema_extra=k8s(list_type="map", list_map_keys=("type",)))
    """One per type: Ready, Progressing, Degraded, Retraining."""

    url: Annotated[str, Field(max_length=1024)] | None = None
    """Inference endpoint inside the cluster (http://<service>.<namespace>:8080)."""

    replicas: Annotated[int, Field(ge=0)] = 0
    """Server pods."""

    ready_replicas: Annotated[int, Field(ge=0)] = 0
    """Server pods with a worker ready to answer."""

    active_model: ServedModel | None = None
    """The model now served. After an automatic promotion it differs from spec.model."""

    candidate_model: ServedModel | None = None
    """A retrained model waiting for manual promotion."""

    rollout: RolloutStatus | None = None
    """The rollout in progress, if any."""

    analysis: AnalysisStatus | None = None
    """The latest monitoring evaluation."""

    retrain: RetrainStatus | None = None
    """Automatic retrains."""

    capture: CaptureStatus | None = None
    """The collector of captures and feedback, when spec.capture is set."""

    message: Annotated[str, Field(max_length=32768)] = ""
    """Last human-readable explanation."""


class ModelDeployment(BaseModel):
    """A whole ModelDeployment object as the API server returns it."""

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    api_version: Literal["modelloop.dev/v1alpha1"] = Field(
        default="modelloop.dev/v1alpha1", alias="apiVersion")
    kind: Literal["ModelDeployment"] = "ModelDeployment"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: ModelDeploymentSpec
    status: ModelDeploymentStatus = Field(default_factory=ModelDeploymentStatus)

    @model_validator(mode="after")
    def _name_fits(self) -> ModelDeployment:
        check_name(self.metadata.name, kind="ModelDeployment",
                   max_length=MODELDEPLOYMENT_MAX_NAME_LENGTH)
        return self


MODELDEPLOYMENT_KIND = KindInfo(
    kind="ModelDeployment",
    plural="modeldeployments",
    singular="modeldeployment",
    short_names=("mdep",),
    max_name_length=MODELDEPLOYMENT_MAX_NAME_LENGTH,
    description=__doc__ or "",
    spec_model=ModelDeploymentSpec,
    status_model=ModelDeploymentStatus,
    printer_columns=(
        PrinterColumn(name="Phase", type="string", json_path=".status.phase",
                      description="Pending, Progressing, Ready, Degraded or Failed."),
        PrinterColumn(name="Model", type="string", json_path=".status.activeModel.version",
                      description="The model now served."),
        PrinterColumn(name="Rollout", type="string", json_path=".status.rollout.phase",
                      description="Progressing, Promoting or RolledBack; empty when idle."),
        PrinterColumn(name="Ready", type="integer", json_path=".status.readyReplicas",
                      description="Servers ready to answer."),
        PrinterColumn(name="URL", type="string", json_path=".status.url",
                      description="Inference endpoint inside the cluster."),
        AGE_COLUMN,
    ),
)
