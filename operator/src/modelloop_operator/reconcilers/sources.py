"""Where a model comes from: resolving an OptimizationJob's or a ModelDeployment's source
from snapshots of the objects it references. Pure; the reconcilers fetch the objects.

A reference is one of three things, and each gets its own answer rather than an
exception, because the callers report them differently:

* **ready** - the model exists: its URI, checksum and lineage;
* **waiting** - the referenced job is missing (``SourceNotFound``: maybe not created yet,
  Argo CD syncs in any order) or still running (``WaitingForSource``); re-checked when that
  job changes and on a timer;
* **failed** - the referenced job ended without a usable model (``SourceFailed``), or
  trained a task this version cannot optimize or serve (``UnsupportedTask``); it never
  will produce one, so a person has to point elsewhere.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from pydantic import ValidationError

from ..api.common import DatasetSpec, Lineage
from ..api.jobs import JobPhase
from ..api.modeldeployment import DeploymentModelSource, ServedModel
from ..api.optimizationjob import OptimizationJobSpec, OptimizationJobStatus
from ..api.trainingjob import Task, TrainingJobSpec, TrainingJobStatus
from ..status import ConditionType, get_condition


class SourceReason:
    """Condition reasons about a source, shared by OptimizationJob and ModelDeployment."""

    NOT_FOUND: Final = "SourceNotFound"
    WAITING: Final = "WaitingForSource"
    FAILED: Final = "SourceFailed"
    UNSUPPORTED_TASK: Final = "UnsupportedTask"
    NOT_READY: Final = "SourceNotReady"


class SourceState(StrEnum):
    """Whether a source can be used now."""

    READY = "Ready"
    WAITING = "Waiting"
    FAILED = "Failed"


@dataclass(frozen=True)
class TrainedModel:
    """A Succeeded TrainingJob's result, as an OptimizationJob needs it."""

    uri: str
    checksum: str | None
    dataset: DatasetSpec | None
    lineage: Lineage


@dataclass(frozen=True)
class Resolution:
    """The answer about one source: ``state`` with a reason and message, and the model
    when ready (``trained`` for an OptimizationJob, ``served`` for a ModelDeployment)."""

    state: SourceState
    reason: str
    message: str
    trained: TrainedModel | None = None
    served: ServedModel | None = None

    @property
    def ready(self) -> bool:
        """Whether the model can be used now."""
        return self.state is SourceState.READY


def _phase(obj: Mapping[str, Any]) -> JobPhase | None:
    raw = (obj.get("status") or {}).get("phase")
    try:
        return JobPhase(raw) if raw else None
    except ValueError:
        return None


def _waiting_or_failed(*, kind: str, name: str, obj: Mapping[str, Any] | None) -> Resolution:
    """The answer for a referenced job that is absent, unfinished or failed."""
    if obj is None:
        return Resolution(SourceState.WAITING, SourceReason.NOT_FOUND,
                          f"{kind} {name} does not exist (yet); waiting for it to be created")
    phase = _phase(obj)
    status = obj.get("status") or {}
    if phase is JobPhase.FAILED:
        why = status.get("message") or "no reason given"
        return Resolution(SourceState.FAILED, SourceReason.FAILED,
                          f"{kind} {name} failed: {why}")
    shown = phase.value if phase is not None else "not started"
    return Resolution(SourceState.WAITING, SourceReason.WAITING,
                      f"waiting for {kind} {name} to succeed (phase {shown})")


def resolve_training_job(*, name: str, obj: Mapping[str, Any] | None) -> Resolution:
    """A TrainingJob as a source: ready once Succeeded with a model URI."""
    if obj is None or _phase(obj) is not JobPhase.SUCCEEDED:
        return _waiting_or_failed(kind="TrainingJob", name=name, obj=obj)
    try:
        status = TrainingJobStatus.model_validate(obj.get("status") or {})
    except ValidationError:
        status = TrainingJobStatus()
    spec: TrainingJobSpec | None
    try:
        spec = TrainingJobSpec.model_validate(obj.get("spec") or {})
    except ValidationError:
        spec = None
    if spec is not None and spec.task != Task.TEXT_CLASSIFICATION:
        return Resolution(SourceState.FAILED, SourceReason.UNSUPPORTED_TASK,
                          f"TrainingJob {name} trained an {spec.task.value} model; "
                          "optimization and serving take text-classification models only "
                          "in this version")
    dataset = spec.dataset if spec is not None else None
    uri = status.model.uri if status.model is not None else None
    if not uri:
        return Resolution(SourceState.FAILED, SourceReason.FAILED,
                          f"TrainingJob {name} succeeded but recorded no model URI")
    lineage = status.lineage or Lineage()
    lineage = lineage.model_copy(update={
        "training_job": lineage.training_job or name,
        "dataset": lineage.dataset or (dataset.uri if dataset is not None else None)})
    trained = TrainedModel(uri=uri, checksum=status.model.checksum if status.model else None,
                           dataset=dataset, lineage=lineage)
    return Resolution(SourceState.READY, "SourceReady",
                      f"TrainingJob {name} succeeded: model {uri}", trained=trained)


def resolve_optimization_source(
    *, spec: OptimizationJobSpec, training_job: Mapping[str, Any] | None,
) -> Resolution:
    """The model an OptimizationJob optimizes. ``training_job`` is the snapshot of
    ``spec.source.trainingJobRef`` (None when absent or when the source is a URI)."""
    ref = spec.source.training_job_ref
    if ref is None:
        assert spec.source.model_uri is not None  # the spec validator guarantees one
        lineage = Lineage(base_model=spec.source.model_uri)
        trained = TrainedModel(uri=spec.source.model_uri, checksum=None, dataset=None,
                               lineage=lineage)
        return Resolution(SourceState.READY, "SourceReady",
                          f"model {spec.source.model_uri}", trained=trained)
    return resolve_training_job(name=ref.name, obj=training_job)


def uri_version(uri: str) -> str:
    """A short, stable name for a model known only by its URI (a label value)."""
    return "uri-" + hashlib.sha256(uri.encode()).hexdigest()[:12]


def _accepted(status: OptimizationJobStatus) -> bool | None:
    found = get_condition(status.conditions, ConditionType.ACCEPTED)
    if found is None:
        return None
    return found.status.value == "True"


def _served_from_optimization(*, name: str, obj: Mapping[str, Any] | None) -> Resolution:
    if obj is None or _phase(obj) not in (JobPhase.SUCCEEDED, JobPhase.FAILED):
        return _waiting_or_failed(kind="OptimizationJob", name=name, obj=obj)
    try:
        status = OptimizationJobStatus.model_validate(obj.get("status") or {})
    except ValidationError:
        status = OptimizationJobStatus()
    accepted = _accepted(status)
    if _phase(obj) is JobPhase.FAILED or accepted is False:
        why = status.message or "not accepted"
        return Resolution(SourceState.FAILED, SourceReason.FAILED,
                          f"OptimizationJob {name} produced no servable model: {why}")
    if not status.archive_uri:
        return Resolution(SourceState.FAILED, SourceReason.FAILED,
                          f"OptimizationJob {name} succeeded but recorded no archive URI")
    lineage = (status.lineage or Lineage()).model_copy(update={"optimization_job": name})
    served = ServedModel(
        archive_uri=status.archive_uri, version=name, source=f"OptimizationJob/{name}",
        checksum=status.model.checksum if status.model is not None else None, lineage=lineage)
    return Resolution(SourceState.READY, "SourceReady",
                      f"OptimizationJob {name} accepted: archive {status.archive_uri}",
                      served=served)


def _served_from_training(*, name: str, obj: Mapping[str, Any] | None) -> Resolution:
    found = resolve_training_job(name=name, obj=obj)
    if found.trained is None:
        return found
    model = found.trained
    served = ServedModel(archive_uri=model.uri, version=name, source=f"TrainingJob/{name}",
                         checksum=model.checksum, lineage=model.lineage)
    return Resolution(SourceState.READY, "SourceReady", found.message, served=served)


def resolve_served_model(*, source: DeploymentModelSource,
                         referenced: Mapping[str, Any] | None) -> Resolution:
    """The model a ModelDeployment's spec asks for. ``referenced`` is the snapshot of the
    OptimizationJob or TrainingJob it names (None when absent or for an archiveUri)."""
    if source.optimization_job_ref is not None:
        return _served_from_optimization(name=source.optimization_job_ref.name, obj=referenced)
    if source.training_job_ref is not None:
        return _served_from_training(name=source.training_job_ref.name, obj=referenced)
    assert source.archive_uri is not None  # the spec validator guarantees exactly one
    uri = source.archive_uri
    served = ServedModel(archive_uri=uri, version=uri_version(uri), source=uri,
                         lineage=Lineage())
    return Resolution(SourceState.READY, "SourceReady", f"archive {uri}", served=served)

