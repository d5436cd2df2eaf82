"""One automatic retrain, from TrainingJob to promotion, as pure decisions on snapshots of
the jobs it created (the I/O is :mod:`.retrain`).

A run's record (``status.retrain.history[]``) moves:

* ``Running`` - the TrainingJob trains; once it Succeeded (so it passed its evaluation
  gate) the OptimizationJob is created from the template, sourced from it; without an
  OptimizationJob template the trained model itself is the candidate;
* ``AwaitingPromotion`` - ``promotion: manual``: the candidate is in
  ``status.candidateModel`` until a person approves it with the annotation
  ``modelloop.dev/approve-promotion: <TrainingJob or OptimizationJob name>`` (metadata,
  not spec, so Argo CD does not fight it);
* ``Promoted`` - ``auto``, or approved: the deployment serves the candidate through its
  rollout strategy, instead of ``spec.model``;
* ``Failed`` / ``Rejected`` - a job failed, the optimization was not accepted, or
  ``spec.model`` changed in Git since the run began (Git wins): the current model keeps
  serving, and the cooldown still counts from the trigger.

Which ``spec.model`` a run started from is written on its jobs (annotation
``modelloop.dev/retrain-source``, a fingerprint), so a promotion never outlives a Git
change of the model, even across operator restarts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from ..api.capture import CaptureSpec
from ..api.common import (
    TRIGGERED_BY_ANNOTATION,
    LocalObjectReference,
    RetrainTrigger,
    TriggerCheck,
)
from ..api.meta import API_VERSION
from ..api.modeldeployment import DeploymentModelSource, ServedModel
from ..api.monitoring import (
    OptimizationJobTemplate,
    Promotion,
    PromotionGate,
    RetrainOutcome,
    RetrainRecord,
    RetrainSpec,
    TrainingJobTemplate,
)
from ..api.optimizationjob import (
    Champion,
    Comparison,
    ComparisonReport,
    Holdout,
    comparison_message,
    parse_comparison,
)
from ..api.trainingjob import CapturedData
from ..builders import labels as lbl
from ..builders.job import Owner, owner_reference
from ..monitor.builtin_checks import CONFIDENCE, DRIFT, ERROR_RATE
from ..monitor.retrain_policy import Permission, Refusal
from ..status import ConditionType
from .sources import SourceState, resolve_served_model, resolve_training_job

SOURCE_ANNOTATION: Final = "modelloop.dev/retrain-source"
"""Fingerprint of the ``spec.model`` a run started from."""
APPROVE_ANNOTATION: Final = "modelloop.dev/approve-promotion"
"""On the ModelDeployment: the name of the run (TrainingJob or OptimizationJob) a person
approves for promotion."""
RETRAIN_COMPONENT: Final = "retrain"
LABELLED_STREAM: Final = "labelled"
"""The capture sink's directory of labelled records (docs/capture.md)."""

FINAL: Final = frozenset({RetrainOutcome.PROMOTED, RetrainOutcome.REJECTED,
                          RetrainOutcome.FAILED})
IN_FLIGHT: Final = frozenset({RetrainOutcome.RUNNING, RetrainOutcome.AWAITING_PROMOTION})


BUILTIN_CHECKS: Final = (DRIFT, CONFIDENCE, ERROR_RATE)
CUSTOM_CHECK_REASON: Final = "custom"
UNKNOWN_REASON: Final = "unknown"


def retrain_reason(checks: Sequence[TriggerCheck]) -> str:
    """Why a retrain started, as a metric label: the built-in checks that failed in a
    fixed order, then ``custom`` for any custom check, joined by ``+`` (``drift``,
    ``drift+custom``); ``unknown`` without any. Custom check names are the users' and
    unbounded, so they never become label values: at most 15 values exist."""
    names = {c.name for c in checks}
    parts: list[str] = [name for name in BUILTIN_CHECKS if name in names]
    if names - set(BUILTIN_CHECKS):
        parts.append(CUSTOM_CHECK_REASON)
    return "+".join(parts) or UNKNOWN_REASON


def _with_run_name(uri: str, name: str) -> str:
    return f"{uri.rstrip('/')}/{name}"


def _metadata(*, owner: Owner, name: str, labels: Mapping[str, str],
              annotations: Mapping[str, str], fingerprint: str) -> dict[str, Any]:
    return {
        "name": name, "namespace": owner.namespace,
        "labels": {**labels, lbl.MANAGED_BY: lbl.MANAGED_BY_VALUE, lbl.PART_OF: "modelloop",
                   lbl.COMPONENT: RETRAIN_COMPONENT, lbl.MODEL_DEPLOYMENT: owner.name},
        "annotations": {**annotations, SOURCE_ANNOTATION: fingerprint},
        "ownerReferences": [owner_reference(owner)],
    }


def labelled_data(*, capture: CaptureSpec | None, retrain: RetrainSpec,
                  since: datetime | None) -> CapturedData | None:
    """The ``dataset.captured`` of a run's TrainingJob: the capture sink's labelled
    records served since ``since`` (when the served model began serving). The operator
    waits for ``minRows`` before a run starts; the trainer refuses only an empty set."""
    labelled = retrain.data.labelled
    if labelled is None or capture is None:
        return None
    return CapturedData(uri=f"{capture.sink.rstrip('/')}/{LABELLED_STREAM}", since=since,
                        max_rows=labelled.max_rows, min_rows=1,
                        holdout_fraction=labelled.holdout_fraction)


def serving_since(history: Sequence[RetrainRecord],
                  active: ServedModel | None) -> datetime | None:
    """When the served model began serving, if a promotion put it there (its run's finish
    time); None for the spec's own model: then every kept labelled record counts."""
    if active is None:
        return None
    for record in history:
        if (record.outcome is RetrainOutcome.PROMOTED
                and active.version in (record.training_job, record.optimization_job)):
            return record.finished_at
    return None


def enough_labels(retrain: RetrainSpec, *, labelled: float | None,
                  since: datetime | None) -> Permission:
    """Whether enough labelled requests exist to retrain on (always, without
    retrain.data.labelled). ``labelled``: the collector's count (None: unknown)."""
    wanted = retrain.data.labelled
    if wanted is None:
        return Permission(True)
    have = 0 if labelled is None else int(labelled)
    if have >= wanted.min_rows:
        return Permission(True)
    when = f"since {since.isoformat()}" if since is not None else "kept"
    return Permission(False, Refusal.WAITING_FOR_LABELS,
                      f"waiting for labels: {have} labelled requests {when}, "
                      f"retrain.data.labelled.minRows {wanted.min_rows}")


def build_training_job(*, owner: Owner, template: TrainingJobTemplate, name: str,
                       trigger: RetrainTrigger, fingerprint: str,
                       captured: CapturedData | None = None,
                       warm_start: str | None = None) -> dict[str, Any]:
    """The TrainingJob of a run: the template, its output under ``<uri>/<name>`` so runs
    never overwrite each other, owned by and labelled with the deployment, the trigger
    (failed checks and values) for its lineage, the labelled traffic to train on as well,
    and the served model's weights to start from (``warm_start``) if asked."""
    spec = template.spec.model_dump(mode="json", exclude_none=True)
    spec["output"]["uri"] = _with_run_name(spec["output"]["uri"], name)
    if captured is not None:
        spec["dataset"]["captured"] = captured.model_dump(mode="json", exclude_none=True)
    if warm_start is not None:
        spec["model"]["uri"] = warm_start
    annotations = {**template.metadata.annotations,
                   TRIGGERED_BY_ANNOTATION: trigger.model_dump_json(exclude_none=True)}
    return {"apiVersion": API_VERSION, "kind": "TrainingJob",
            "metadata": _metadata(owner=owner, name=name, labels=template.metadata.labels,
                                  annotations=annotations, fingerprint=fingerprint),
            "spec": spec}


def gate_comparison(*, gate: PromotionGate, champion: ServedModel | None,
                    training_job: Mapping[str, Any] | None) -> Comparison | None:
    """The promotion gate as the OptimizationJob's ``comparison``: the served model as
    champion and, when the run trained on labelled traffic, the holdout its TrainingJob
    kept out (same sink, ``since`` and fraction). None when nothing is served or the run
    did not train on labelled traffic (retrain.data.labelled)."""
    spec = (training_job or {}).get("spec", {})
    captured = ((spec.get("dataset") or {}).get("captured")) or None
    if champion is None or champion.archive_uri is None or captured is None:
        return None
    holdout = None
    if captured is not None:
        holdout = Holdout(uri=captured["uri"], since=captured.get("since"),
                          fraction=captured.get("holdoutFraction", 0.2),
                          min_rows=gate.min_holdout_rows)
    return Comparison(champion=Champion(uri=champion.archive_uri, name=champion.version),
                      holdout=holdout, min_improvement=gate.min_improvement,
                      max_original_drop=gate.max_original_drop)


def build_optimization_job(*, owner: Owner, template: OptimizationJobTemplate, name: str,
                           training_job: str, fingerprint: str,
                           comparison: Comparison | None = None) -> dict[str, Any]:
    """The OptimizationJob of a run, sourced from its TrainingJob, gated against the
    served model (``comparison``)."""
    spec = template.spec.model_dump(mode="json", exclude_none=True)
    spec["output"]["uri"] = _with_run_name(spec["output"]["uri"], name)
    spec["source"] = {"trainingJobRef": {"name": training_job}}
    if comparison is not None:
        spec["comparison"] = comparison.model_dump(mode="json", exclude_none=True)
    return {"apiVersion": API_VERSION, "kind": "OptimizationJob",
            "metadata": _metadata(owner=owner, name=name, labels=template.metadata.labels,
                                  annotations=template.metadata.annotations,
                                  fingerprint=fingerprint),
            "spec": spec}


def fingerprint_of(obj: Mapping[str, Any] | None) -> str | None:
    """The ``spec.model`` fingerprint a run's job carries."""
    if obj is None:
        return None
    return (obj.get("metadata", {}).get("annotations") or {}).get(SOURCE_ANNOTATION)


@dataclass(frozen=True)
class RunStep:
    """The record after one look, and what to do for it."""

    record: RetrainRecord
    create_optimization: bool = False
    candidate: ServedModel | None = None


def _end(record: RetrainRecord, outcome: RetrainOutcome, message: str,
         now: datetime) -> RunStep:
    return RunStep(record.model_copy(update={"outcome": outcome, "finished_at": now,
                                             "message": message[:1024]}))


def _rejected(optimization_job: Mapping[str, Any] | None) -> bool:
    """Whether the OptimizationJob ran and its report was not accepted (as opposed to
    failing to run)."""
    conditions = (optimization_job or {}).get("status", {}).get("conditions") or []
    return any(c.get("type") == ConditionType.ACCEPTED and c.get("status") == "False"
               for c in conditions)


def served_by_run(record: RetrainRecord, *, training_job: Mapping[str, Any] | None,
                  optimization_job: Mapping[str, Any] | None) -> tuple[SourceState,
                                                                       str, ServedModel | None]:
    """The model a run produced: through its OptimizationJob when it has one, else its
    TrainingJob's own output."""
    if record.optimization_job is not None:
        source = DeploymentModelSource(
            optimization_job_ref=LocalObjectReference(name=record.optimization_job))
        found = resolve_served_model(source=source, referenced=optimization_job)
    else:
        source = DeploymentModelSource(
            training_job_ref=LocalObjectReference(name=record.training_job))
        found = resolve_served_model(source=source, referenced=training_job)
    return found.state, found.message, found.served


def advance_run(record: RetrainRecord, *, training_job: Mapping[str, Any] | None,
                optimization_job: Mapping[str, Any] | None, optimize: bool,
                promotion: Promotion, approved: str | None, current: bool,
                now: datetime) -> RunStep:
    """The next state of an unfinished run (finished ones are returned unchanged).
    ``current``: the run started from today's ``spec.model``."""
    if record.outcome in FINAL:
        return RunStep(record)
    if not current:
        return _end(record, RetrainOutcome.REJECTED,
                    "spec.model changed since this retrain began; the spec wins", now)
    if training_job is None:
        return _end(record, RetrainOutcome.FAILED,
                    f"TrainingJob {record.training_job} was deleted", now)
    trained = resolve_training_job(name=record.training_job, obj=training_job)
    if trained.state is SourceState.FAILED:
        return _end(record, RetrainOutcome.FAILED, trained.message, now)
    if trained.state is SourceState.WAITING:
        return RunStep(record)
    if optimize and (record.optimization_job is None or optimization_job is None):
        return RunStep(record, create_optimization=True)
    state, message, served = served_by_run(record, training_job=training_job,
                                           optimization_job=optimization_job)
    record = record.model_copy(update={"dataset_digest": _digest_of(training_job),
                                       "gate": gate_of(optimization_job)})
    if state is SourceState.FAILED:
        rejected = _rejected(optimization_job)
        return _end(record, RetrainOutcome.REJECTED if rejected else RetrainOutcome.FAILED,
                    message, now)
    if state is SourceState.WAITING or served is None:
        return RunStep(record)
    gate = f"; gate {comparison_message(record.gate)}" if record.gate is not None else ""
    names = {record.training_job, record.optimization_job} - {None}
    if promotion is Promotion.AUTO or (approved is not None and approved in names):
        how = "automatic promotion" if promotion is Promotion.AUTO else f"approved ({approved})"
        return RunStep(record.model_copy(update={
            "outcome": RetrainOutcome.PROMOTED, "finished_at": now,
            "message": f"{served.version} promoted: {how}{gate}"[:1024]}), candidate=served)
    return RunStep(record.model_copy(update={
        "outcome": RetrainOutcome.AWAITING_PROMOTION,
        "message": (f"{served.version} is ready{gate}; approve it with the annotation "
                    f"{APPROVE_ANNOTATION}: {served.version}")[:1024]}), candidate=served)


def gate_of(optimization_job: Mapping[str, Any] | None) -> ComparisonReport | None:
    """The promotion gate's figures from a run's OptimizationJob status."""
    report = (optimization_job or {}).get("status", {}).get("report") or {}
    return parse_comparison(report.get("comparison"))


def _digest_of(training_job: Mapping[str, Any] | None) -> str | None:
    digest = ((training_job or {}).get("status", {}).get("dataset") or {}).get("digest")
    return digest if isinstance(digest, str) and digest else None
