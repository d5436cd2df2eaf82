"""Types shared by TrainingJob, OptimizationJob and ModelDeployment.

Spec pieces (dataset, resources, scheduling, run policy, storage, output) are written by
users; status pieces (conditions, lineage) by the operator. The scalar types (URIs,
durations, quantities) live in :mod:`.scalars` and are re-exported here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Final

from pydantic import AfterValidator, ConfigDict, Field, model_validator

from .base import SpecModel, StatusModel
from .markers import Rule, k8s
from .scalars import (
    DURATION_PATTERN,
    INT64_MAX,
    LABEL_VALUE_PATTERN,
    OUTPUT_URI_SCHEMES,
    QUALIFIED_NAME_MAX_LENGTH,
    QUALIFIED_NAME_PATTERN,
    SOURCE_URI_SCHEMES,
    Annotations,
    Duration,
    HttpURL,
    Labels,
    LabelValue,
    ObjectName,
    OutputURI,
    Quantity,
    SourceURI,
    check_pattern,
    check_uri,
    parse_duration,
    pvc_claim,
    uri_scheme,
)

__all__ = [
    "DURATION_PATTERN",
    "OUTPUT_URI_SCHEMES",
    "SOURCE_URI_SCHEMES",
    "Condition",
    "ConditionStatus",
    "DatasetSpec",
    "Duration",
    "HttpURL",
    "LabelValue",
    "Lineage",
    "LocalObjectReference",
    "ModelArtifact",
    "NodeResources",
    "ObjectName",
    "OutputSpec",
    "OutputURI",
    "PodMetadata",
    "PodTemplateOverrides",
    "Quantity",
    "RetrainTrigger",
    "RunPolicy",
    "Scheduling",
    "SourceURI",
    "StorageSpec",
    "Toleration",
    "TriggerCheck",
    "check_uri",
    "parse_duration",
    "pvc_claim",
    "uri_scheme",
]

ShortString = Annotated[str, Field(max_length=256)]
Message = Annotated[str, Field(max_length=32768)]


class LocalObjectReference(SpecModel):
    """A reference to an object of a known kind in the same namespace as the referrer.

    Cross-namespace references are deliberately impossible: a team can only build on
    what it can already read.
    """

    name: ObjectName
    """Name of the object."""


# --- spec pieces ------------------------------------------------------------------------

class DatasetSpec(SpecModel):
    """Labelled data for training or evaluation.

    ``builtin://bbc-news`` (BBC News, 2,225 articles, 5 topics),
    ``builtin://rotten-tomatoes`` (movie-review snippets, fresh/rotten) and
    ``builtin://digits`` (scikit-learn's 1,797 8x8 digit images, 10 classes) are research
    datasets shipped in the trainer image, for demos and tests only; check their licences
    before any other use. Other URIs point to a ``.jsonl`` or ``.csv`` file, or for images
    also to a folder of ``<label>/<image>`` files.
    """

    uri: SourceURI
    """Training data: builtin://bbc-news, builtin://rotten-tomatoes, builtin://digits, a
    file.jsonl/.csv, or an image folder, under file://, pvc://<claim>/<path> or s3://."""

    text_field: Annotated[str, Field(min_length=1, max_length=128)] = "text"
    """Column (CSV) or key (JSON lines) holding the text. Image JSON lines hold the key
    "image" (base64 PNG or JPEG bytes) or "path" (relative to the file) instead."""

    label_field: Annotated[str, Field(min_length=1, max_length=128)] = "label"
    """Column or key holding the label."""

    validation_uri: SourceURI | None = None
    """Separate validation file; when absent, validationSplit of the data is held out."""

    validation_split: Annotated[float, Field(gt=0, lt=1)] = 0.1
    """Fraction of the data held out for validation when validationUri is not set."""

    max_samples: Annotated[int, Field(ge=1, le=100_000_000)] | None = None
    """Cap on the number of training examples (demos, smoke tests); all when absent."""


class NodeResources(SpecModel):
    """Compute for one node (one pod). Requests equal limits so that pods get the
    Guaranteed QoS class and a gang is not torn apart by CPU throttling or eviction."""

    gpus: Annotated[int, Field(ge=0, le=64)] = 0
    """NVIDIA GPUs per node (nvidia.com/gpu); also the number of processes per node."""

    cpu: Quantity | None = None
    """CPU per node, e.g. 4 or 500m; the operator's default when absent."""

    memory: Quantity | None = None
    """Memory per node, e.g. 16Gi; the operator's default when absent."""


class TolerationOperator(StrEnum):
    """How a toleration matches a taint's value."""

    EXISTS = "Exists"
    EQUAL = "Equal"


class TaintEffect(StrEnum):
    """The taint effect a toleration matches."""

    NO_SCHEDULE = "NoSchedule"
    PREFER_NO_SCHEDULE = "PreferNoSchedule"
    NO_EXECUTE = "NoExecute"


# A taint key (a qualified name), or empty: with operator Exists it matches every taint.
_TOLERATION_KEY_PATTERN = "^(" + QUALIFIED_NAME_PATTERN.strip("^$") + ")?$"


class Toleration(SpecModel):
    """A pod toleration (core/v1 Toleration), copied as-is onto the pods. The rules are
    the ones the API server applies to pods, so that a toleration admitted here never
    makes the operator's Job or Deployment invalid."""

    model_config = ConfigDict(json_schema_extra=k8s(
        Rule("self.operator != 'Exists' || !has(self.value) || self.value == ''",
             "value must be empty when operator is Exists", field_path=".value"),
        Rule("self.operator == 'Exists' || (has(self.key) && self.key != '')",
             "key is required unless operator is Exists", field_path=".key"),
        Rule("!has(self.tolerationSeconds) || (has(self.effect) && self.effect == 'NoExecute')",
             "tolerationSeconds needs effect NoExecute", field_path=".tolerationSeconds"),
    ))

    key: Annotated[str, AfterValidator(lambda v: check_pattern(
        v, _TOLERATION_KEY_PATTERN, "a taint key such as nvidia.com/gpu")), Field(
        max_length=QUALIFIED_NAME_MAX_LENGTH,
        json_schema_extra={"pattern": _TOLERATION_KEY_PATTERN})] | None = None
    """Taint key to match; empty with operator Exists matches every taint."""

    operator: TolerationOperator = TolerationOperator.EQUAL
    """Exists or Equal."""

    value: Annotated[str, AfterValidator(lambda v: check_pattern(
        v, LABEL_VALUE_PATTERN, "a label value")), Field(
        max_length=63, json_schema_extra={"pattern": LABEL_VALUE_PATTERN})] | None = None
    """Taint value to match with operator Equal."""

    effect: TaintEffect | None = None
    """Taint effect to match; all effects when absent."""

    toleration_seconds: Annotated[int, Field(ge=0, le=INT64_MAX)] | None = None
    """For NoExecute: how long the pod stays bound after the taint appears."""

    @model_validator(mode="after")
    def _valid_for_pods(self) -> Toleration:
        if self.operator is TolerationOperator.EXISTS and self.value:
            raise ValueError("value must be empty when operator is Exists")
        if self.operator is not TolerationOperator.EXISTS and not self.key:
            raise ValueError("key is required unless operator is Exists")
        if self.toleration_seconds is not None and self.effect is not TaintEffect.NO_EXECUTE:
            raise ValueError("tolerationSeconds needs effect NoExecute")
        return self


class Scheduling(SpecModel):
    """Where pods may run and how a batch queue admits them."""

    node_selector: Labels = Field(default_factory=dict)
    """Node labels every pod requires."""

    tolerations: Annotated[list[Toleration], Field(max_length=32)] = Field(
        default_factory=list)
    """Taints the pods tolerate (e.g. nvidia.com/gpu on GPU nodes)."""

    priority_class_name: ObjectName | None = None
    """PriorityClass of the pods."""

    queue_name: LabelValue | None = None
    """Kueue LocalQueue: set as label kueue.x-k8s.io/queue-name. A job's Job is created
    suspended for Kueue to admit the whole gang at once; a ModelDeployment's Deployments
    and their pods carry the label for Kueue's Deployment integration."""


class RunPolicy(SpecModel):
    """How a job is retried, bounded in time, cleaned up and paused."""

    backoff_limit: Annotated[int, Field(ge=0, le=100, json_schema_extra=k8s(
        immutable=True))] = 2
    """Restarts of the whole gang before the job fails. A node failure restarts every
    node, since torchrun cannot continue with one rank missing."""

    active_deadline_seconds: Annotated[int, Field(ge=1, le=31_536_000)] | None = Field(
        default=None, json_schema_extra=k8s(immutable=True))
    """Wall-clock limit for the whole job, all attempts included."""

    ttl_seconds_after_finished: Annotated[int, Field(ge=0, le=31_536_000)] | None = None
    """Delete the job's pods this long after it finished; the resource and its status stay.
    May be changed at any time."""

    suspend: bool = False
    """Stop (delete) running pods and hold; set back to false to resume from the last
    checkpoint. May be changed at any time."""


class PodMetadata(SpecModel):
    """Labels and annotations added to every pod the operator creates for this resource."""

    labels: Labels = Field(default_factory=dict)
    """Extra pod labels. The operator's own labels (app.kubernetes.io/*, modelloop.dev/*)
    win over a user label with the same key."""

    annotations: Annotations = Field(default_factory=dict)
    """Extra pod annotations (sidecar injection, cost attribution...)."""


class PodTemplateOverrides(SpecModel):
    """What a user may add to the operator's pod template. Deliberately narrow: the pod
    spec itself is the operator's, so that gangs, probes and mounts stay correct."""

    metadata: PodMetadata = Field(default_factory=PodMetadata)
    """Pod labels and annotations."""


class StorageSpec(SpecModel):
    """Credentials for s3:// URIs, never inline: a Secret or a ServiceAccount."""

    secret_name: ObjectName | None = None
    """Secret in the same namespace whose keys become environment variables of the pods
    (e.g. AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL)."""

    service_account_name: ObjectName | None = None
    """ServiceAccount the pods run as (e.g. one bound to a cloud IAM role)."""


class OutputSpec(SpecModel):
    """Where an artifact is written."""

    uri: OutputURI
    """Output location: file://, pvc://<claim>/<path> or s3://."""


# --- status pieces ----------------------------------------------------------------------

class ConditionStatus(StrEnum):
    """Kubernetes condition status."""

    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(StatusModel):
    """One observation about the resource, as in the Kubernetes API conventions."""

    type: Annotated[str, Field(min_length=1, max_length=316)]
    """Ready, Progressing, Degraded, or a kind-specific type (Succeeded, Failed,
    Suspended, Accepted, Retraining)."""

    status: ConditionStatus
    """True, False or Unknown."""

    reason: Annotated[str, Field(max_length=1024)] = ""
    """CamelCase machine-readable cause."""

    message: Message = ""
    """Human-readable details."""

    last_transition_time: datetime | None = None
    """When status last changed."""

    observed_generation: Annotated[int, Field(ge=0)] | None = None
    """The metadata.generation this condition was computed from."""


class ModelArtifact(StatusModel):
    """A model written by a job."""

    uri: ShortString | None = None
    """Where the model is."""

    checksum: ShortString | None = None
    """sha256:<hex> of the weights, so a deployment can prove what it serves."""


class TriggerCheck(StatusModel):
    """A monitoring check that failed and so triggered a retrain."""

    name: ShortString
    """Check name (drift, confidence, errorRate or a custom check)."""

    value: float | None = None
    """Observed value."""

    threshold: float | None = None
    """The bound it crossed."""


class RetrainTrigger(StatusModel):
    """Why an automatic retrain happened."""

    model_deployment: ShortString | None = None
    """The ModelDeployment whose monitoring triggered it."""

    checks: Annotated[list[TriggerCheck], Field(max_length=64)] = Field(default_factory=list)
    """The failed checks."""

    at: datetime | None = None
    """When the retrain was triggered."""


TRIGGERED_BY_ANNOTATION: Final = "modelloop.dev/triggered-by"
"""The JSON RetrainTrigger on a TrainingJob the ModelDeployment controller created; the
TrainingJob reconciler copies it into ``status.lineage.triggeredBy``."""


def triggered_by(obj: Mapping[str, Any]) -> RetrainTrigger | None:
    """The trigger an object's annotation records; None when absent or unreadable."""
    raw = ((obj.get("metadata") or {}).get("annotations") or {}).get(TRIGGERED_BY_ANNOTATION)
    try:
        return RetrainTrigger.model_validate(json.loads(raw)) if raw else None
    except ValueError:  # pydantic's ValidationError is one
        return None


class Lineage(StatusModel):
    """Where a model came from: enough to reproduce it and to explain why it exists."""

    base_model: ShortString | None = None
    """URI of the pretrained model training started from."""

    dataset: ShortString | None = None
    """URI of the training data."""

    dataset_digest: ShortString | None = None
    """sha256:<hex> of the data the TrainingJob actually trained on (its snapshot)."""

    training_job: ShortString | None = None
    """TrainingJob that produced the weights."""

    optimization_job: ShortString | None = None
    """OptimizationJob that compressed and packaged them."""

    triggered_by: RetrainTrigger | None = None
    """Set when an automatic retrain created the job; absent for jobs a person created."""


class ServedModel(StatusModel):
    """A model the deployment serves or could serve."""

    archive_uri: Annotated[str, Field(max_length=1024)] | None = None
    """The archive the servers load."""

    version: Annotated[str, Field(max_length=253)] | None = None
    """Short name for the model: the job it came from, or the archive's checksum prefix."""

    source: Annotated[str, Field(max_length=512)] | None = None
    """What produced it: OptimizationJob/<name>, TrainingJob/<name> or the URI."""

    checksum: Annotated[str, Field(max_length=256)] | None = None
    """sha256:<hex> of the weights."""

    lineage: Lineage | None = None
    """Base model, dataset, jobs, and the retrain trigger if any."""
