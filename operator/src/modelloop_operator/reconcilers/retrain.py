"""Automatic retrains of a ModelDeployment: adopt, advance, trigger, and say which model a
promotion serves. The I/O half of :mod:`.retrain_runs` (decisions) and
:mod:`..monitor.retrain_policy` (budget and names).

Called once per ModelDeployment reconcile, under the object's lock. Exactly one
TrainingJob per trigger holds across restarts because nothing here relies on memory: the
runs are the union of ``status.retrain.history`` and the TrainingJobs this deployment
controls (listed by label, checked by ownerReference), the next name is derived from
both, and creation is create-only (AlreadyExists = someone already claimed that run).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from ..api.common import RetrainTrigger, triggered_by
from ..api.meta import GROUP, VERSION
from ..api.modeldeployment import ModelDeploymentSpec, ServedModel
from ..api.monitoring import (
    AnalysisStatus,
    Promotion,
    RetrainOutcome,
    RetrainRecord,
    RetrainStatus,
)
from ..api.optimizationjob import OPTIMIZATIONJOB_KIND
from ..api.trainingjob import TRAININGJOB_KIND
from ..builders import labels as lbl
from ..builders.job import Owner
from ..errors import ConflictError, WaitingError
from ..kube import KubeClient, Object, Resource
from ..monitor.analysis import failed_checks
from ..monitor.retrain_policy import (
    KnownRun,
    Permission,
    may_retrain,
    next_run,
    optimization_job_name,
    run_number,
    source_fingerprint,
    training_job_name,
)
from .gangjob import controlled_by
from .retrain_runs import (
    APPROVE_ANNOTATION,
    FINAL,
    IN_FLIGHT,
    RunStep,
    advance_run,
    build_optimization_job,
    build_training_job,
    enough_labels,
    fingerprint_of,
    gate_comparison,
    labelled_data,
    retrain_reason,
    served_by_run,
    serving_since,
)
from .rollout import same_model
from .sources import SourceState

logger = logging.getLogger(__name__)

TRAINING_JOBS: Final = Resource(GROUP, VERSION, TRAININGJOB_KIND.plural, TRAININGJOB_KIND.kind)
OPTIMIZATION_JOBS: Final = Resource(GROUP, VERSION, OPTIMIZATIONJOB_KIND.plural,
                                    OPTIMIZATIONJOB_KIND.kind)
HISTORY_LIMIT: Final = 20

_OUTCOME_EVENTS: Final[dict[RetrainOutcome, tuple[str, str]]] = {
    RetrainOutcome.AWAITING_PROMOTION: ("Normal", "RetrainAwaitingPromotion"),
    RetrainOutcome.PROMOTED: ("Normal", "RetrainPromoted"),
    RetrainOutcome.REJECTED: ("Warning", "RetrainRejected"),
    RetrainOutcome.FAILED: ("Warning", "RetrainFailed"),
}


@dataclass(frozen=True)
class LoopEvent:
    """An Event to post on the ModelDeployment once its status is written."""

    type_: str
    reason: str
    message: str


@dataclass(frozen=True)
class RetrainProgress:
    """What one pass over the retrains found and did."""

    status: RetrainStatus | None
    candidate: ServedModel | None = None
    """A model awaiting manual promotion."""
    promoted: ServedModel | None = None
    """The model a promotion serves instead of spec.model (None: serve the spec's)."""
    refusal: Permission | None = None
    """Why a Degraded deployment did not retrain this time."""
    events: tuple[LoopEvent, ...] = field(default_factory=tuple)
    started: tuple[str, ...] = ()
    """One reason (:func:`.retrain_runs.retrain_reason`) per TrainingJob this pass created:
    what ``modelloop_retrains_total`` counts. Not a run an earlier pass created and this
    one found (adopted after a crash, or AlreadyExists)."""


def _created_at(obj: Mapping[str, Any]) -> datetime | None:
    raw = obj.get("metadata", {}).get("creationTimestamp")
    try:
        return datetime.fromisoformat(raw.replace("Z", "+00:00")) if raw else None
    except ValueError:
        return None


async def _owned_runs(kube: KubeClient, *, owner: Owner) -> dict[str, Object]:
    """The retrain TrainingJobs this deployment controls, by name."""
    found = await kube.list(resource=TRAINING_JOBS, namespace=owner.namespace,
                            labels={lbl.MODEL_DEPLOYMENT: owner.name})
    return {o["metadata"]["name"]: o for o in found
            if controlled_by(o, owner.uid)
            and run_number(o["metadata"]["name"], deployment=owner.name) is not None}


async def _create_owned(kube: KubeClient, *, resource: Resource, manifest: Mapping[str, Any],
                        owner: Owner) -> bool:
    """Create a run's job; False when it already existed and is ours (claimed earlier)."""
    meta = manifest["metadata"]
    try:
        await kube.create(resource=resource, manifest=manifest)
        return True
    except ConflictError:
        existing = await kube.get(resource=resource, namespace=meta["namespace"],
                                  name=meta["name"])
        if existing is not None and controlled_by(existing, owner.uid):
            return False
        raise WaitingError(
            f"{resource.kind} {meta['namespace']}/{meta['name']} exists and is not owned by "
            f"ModelDeployment {owner.name}; delete or rename it", delay=30) from None


def _adopt(history: list[RetrainRecord], runs: Mapping[str, Object], *,
           deployment: str) -> list[LoopEvent]:
    """Runs the API server has and status lacks (created just before a crash, or status
    lost): recorded, not recreated. Only runs newer than every recorded one: older ones
    were trimmed from the history on purpose (it keeps 20) and are finished."""
    recorded = {r.training_job for r in history}
    newest = max((run_number(r.training_job, deployment=deployment) or 0 for r in history),
                 default=0)
    events = []
    for name, obj in runs.items():
        if name in recorded or (run_number(name, deployment=deployment) or 0) <= newest:
            continue
        trigger = triggered_by(obj)
        history.append(RetrainRecord(
            training_job=name, triggered_at=_created_at(obj),
            checks=list(trigger.checks) if trigger is not None else [],
            message="adopted: created before its record reached status"))
        events.append(LoopEvent("Normal", "RetrainAdopted",
                                f"TrainingJob {name} found without a record; tracking it"))
    history.sort(key=lambda r: (r.triggered_at is not None, r.triggered_at), reverse=True)
    return events


async def _advance(kube: KubeClient, *, owner: Owner, spec: ModelDeploymentSpec,
                   record: RetrainRecord, runs: Mapping[str, Object], fingerprint: str,
                   approved: str | None, active: ServedModel | None,
                   now: datetime) -> RunStep:
    retrain = spec.retrain
    template = retrain.optimization_job_template if retrain is not None else None
    tj = runs.get(record.training_job)
    oj = (await kube.get(resource=OPTIMIZATION_JOBS, namespace=owner.namespace,
                         name=record.optimization_job) if record.optimization_job else None)
    started_from = fingerprint_of(tj) or fingerprint_of(oj)
    step = advance_run(record, training_job=tj, optimization_job=oj,
                       optimize=template is not None,
                       promotion=retrain.promotion if retrain is not None else Promotion.MANUAL,
                       approved=approved, current=started_from in (None, fingerprint),
                       now=now)
    if step.create_optimization and template is not None:
        run = run_number(record.training_job, deployment=owner.name)
        assert run is not None  # only runs named by us are tracked
        name = optimization_job_name(deployment=owner.name, run=run)
        assert retrain is not None
        comparison = gate_comparison(gate=retrain.gate, champion=active, training_job=tj)
        await _create_owned(kube, resource=OPTIMIZATION_JOBS, owner=owner,
                            manifest=build_optimization_job(
                                owner=owner, template=template, name=name,
                                training_job=record.training_job, fingerprint=fingerprint,
                                comparison=comparison))
        against = (f", gated against {active.version}" if comparison is not None
                   and active is not None else "")
        step = RunStep(record.model_copy(update={
            "optimization_job": name,
            "message": f"TrainingJob {record.training_job} succeeded; optimizing in "
                       f"{name}{against}"}))
    return step


async def _promoted_model(kube: KubeClient, *, owner: Owner, history: Sequence[RetrainRecord],
                          runs: Mapping[str, Object], fingerprint: str) -> ServedModel | None:
    """The newest promoted run's model, if that run started from today's spec.model."""
    for record in history:
        if record.outcome is not RetrainOutcome.PROMOTED:
            continue
        oj = (await kube.get(resource=OPTIMIZATION_JOBS, namespace=owner.namespace,
                             name=record.optimization_job) if record.optimization_job else None)
        tj = runs.get(record.training_job)
        if (fingerprint_of(oj) or fingerprint_of(tj)) != fingerprint:
            return None  # a Git change of the model since: the spec wins
        state, _, served = served_by_run(record, training_job=tj, optimization_job=oj)
        return served if state is SourceState.READY else None
    return None


async def drive_retrains(*, kube: KubeClient, owner: Owner, spec: ModelDeploymentSpec,
                         old: RetrainStatus | None, analysis: AnalysisStatus | None,
                         degraded: bool, annotations: Mapping[str, str],
                         active: ServedModel | None, now: datetime,
                         labelled_rows: float | None = None) -> RetrainProgress:
    """One pass: adopt unrecorded runs, advance the unfinished ones, start a new one when
    Degraded, the budget allows and (with retrain.data.labelled) ``labelled_rows``
    labelled requests reach minRows, and find the promoted model."""
    if spec.retrain is None and (old is None or not old.history):
        return RetrainProgress(status=old)
    status = old or RetrainStatus()
    fingerprint = source_fingerprint(spec.model)
    runs = await _owned_runs(kube, owner=owner)
    history = list(status.history)
    events = _adopt(history, runs, deployment=owner.name)
    approved = annotations.get(APPROVE_ANNOTATION, "").strip() or None

    candidate: ServedModel | None = None
    for i, record in enumerate(history):
        if record.outcome in FINAL:
            continue
        step = await _advance(kube, owner=owner, spec=spec, record=record, runs=runs,
                              fingerprint=fingerprint, approved=approved, active=active,
                              now=now)
        new = step.record
        if new.outcome is RetrainOutcome.PROMOTED and step.candidate is not None:
            was = active.version if active is not None else "nothing"
            new = new.model_copy(update={"message": f"{new.message}; replaced {was}",
                                         "previous_model": active})
        if new.outcome is not record.outcome and new.outcome in _OUTCOME_EVENTS:
            type_, reason = _OUTCOME_EVENTS[new.outcome]
            events.append(LoopEvent(type_, reason, f"{new.training_job}: {new.message}"))
        if new.outcome is RetrainOutcome.AWAITING_PROMOTION and candidate is None:
            candidate = step.candidate
        history[i] = new

    # Before a new run is created, so that nothing after the create can fail and lose
    # its count in ``started`` (a new run is Running: it never changes the answer).
    promoted = await _promoted_model(kube, owner=owner, history=history, runs=runs,
                                     fingerprint=fingerprint)
    last_triggered = status.last_triggered
    refusal: Permission | None = None
    started: tuple[str, ...] = ()
    # The pass that promotes a new model: the failures at hand are the replaced model's,
    # so they never start another run, even with the cooldown over.
    promoting = promoted is not None and not same_model(promoted, active)
    if degraded and spec.retrain is not None and not promoting:
        # Trimmed from the history, still listed: finished (at most maxInFlight <= 10 of
        # the 20 newest are not), and still counted against maxPerDay.
        trimmed = [KnownRun(name=name, triggered_at=_created_at(obj), finished=True)
                   for name, obj in runs.items()
                   if name not in {r.training_job for r in history}]
        known = [*trimmed, *(KnownRun(name=r.training_job, triggered_at=r.triggered_at,
                                      finished=r.outcome in FINAL) for r in history)]
        permission = may_retrain(spec.retrain, runs=known, last_triggered=last_triggered,
                                 now=now)
        since = serving_since(history, active)
        if permission.allowed:
            permission = enough_labels(spec.retrain, labelled=labelled_rows, since=since)
        if permission.allowed:
            record, event, created = await _trigger(
                kube, owner=owner, spec=spec, analysis=analysis,
                names=[*runs, *(r.training_job for r in history)], fingerprint=fingerprint,
                active=active, since=since, now=now)
            history.insert(0, record)
            events.append(event)
            last_triggered = now
            if created:
                started = (retrain_reason(record.checks),)
        else:
            refusal = permission

    history = history[:HISTORY_LIMIT]
    return RetrainProgress(
        status=RetrainStatus(history=history, last_triggered=last_triggered,
                             in_flight=sum(r.outcome in IN_FLIGHT for r in history)),
        candidate=candidate, promoted=promoted, refusal=refusal, events=tuple(events),
        started=started)


async def _warm_start_uri(kube: KubeClient, *, owner: Owner,
                          active: ServedModel | None) -> str | None:
    """The served model's own trained weights (its TrainingJob's output), if it has any."""
    job = active.lineage.training_job if active is not None and active.lineage else None
    if job is None:
        return None
    obj = await kube.get(resource=TRAINING_JOBS, namespace=owner.namespace, name=job)
    uri = ((obj or {}).get("status", {}).get("model") or {}).get("uri")
    return uri if isinstance(uri, str) and uri else None


async def _trigger(kube: KubeClient, *, owner: Owner, spec: ModelDeploymentSpec,
                   analysis: AnalysisStatus | None, names: Sequence[str], fingerprint: str,
                   active: ServedModel | None, since: datetime | None,
                   now: datetime) -> tuple[RetrainRecord, LoopEvent, bool]:
    assert spec.retrain is not None and spec.retrain.training_job_template is not None
    run = next_run(deployment=owner.name, names=names)
    name = training_job_name(deployment=owner.name, run=run)
    checks = failed_checks(analysis)
    trigger = RetrainTrigger(model_deployment=owner.name, checks=checks, at=now)
    captured = labelled_data(capture=spec.capture, retrain=spec.retrain, since=since)
    warm = (await _warm_start_uri(kube, owner=owner, active=active)
            if spec.retrain.data.warm_start else None)
    created = await _create_owned(kube, resource=TRAINING_JOBS, owner=owner,
                                  manifest=build_training_job(
                                      owner=owner, template=spec.retrain.training_job_template,
                                      name=name, trigger=trigger, fingerprint=fingerprint,
                                      captured=captured, warm_start=warm))
    shown = ", ".join(f"{c.name}={c.value:.4g}" if c.value is not None else c.name
                      for c in checks) or "failed checks"
    data = ""
    if captured is not None:
        data += f"; base data + labelled traffic from {captured.uri}"
    if spec.retrain.data.warm_start:
        data += (f"; warm start from {warm}" if warm is not None
                 else "; warm start asked, but the served model has no TrainingJob output:"
                      " from the base model")
    message = (f"TrainingJob {name} created: {shown}{data}" if created
               else f"TrainingJob {name} already existed (claimed by an earlier pass)")
    logger.info("ModelDeployment %s/%s: %s", owner.namespace, owner.name, message)
    record = RetrainRecord(training_job=name, triggered_at=now, checks=checks, message=message)
    return record, LoopEvent("Normal", "RetrainTriggered", message), created
