"""The TrainingJob reconciler: read the object, parse its spec, run the gang, and turn
the outcome into status (metrics, model, labels, lineage from the trainer's termination
message).

Called on create, update, resume, every child (Job, pod) event, and a resync timer;
always with just a namespace and a name, because it reads a fresh copy itself: the
reconcile works from one consistent snapshot whatever woke it up.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from pydantic import ValidationError

from ..api import describe_validation_error
from ..api.common import Lineage, ModelArtifact, RetrainTrigger, RunPolicy
from ..api.common import triggered_by as read_triggered_by
from ..api.meta import API_VERSION, GROUP, VERSION
from ..api.trainingjob import (
    TRAININGJOB_KIND,
    DatasetSnapshot,
    TrainingJobSpec,
    TrainingJobStatus,
)
from ..builders.job import GangJobTemplate, Owner, build_job
from ..builders.labels import TRAINING_JOB
from ..builders.training import CONTAINER, SNAPSHOT_DIR, build_training_template
from ..errors import InvalidSpecError
from ..kube import Resource
from ..status import Reason
from .gangjob import GangKind, GangRequest, reconcile_gang
from .observe import AttemptObservation
from .runpolicy import RunDecision, RunRecord, run_conditions
from .runtime import Runtime
from .termination import parse_termination_message

logger = logging.getLogger(__name__)

TRAINING_JOBS: Final = Resource(GROUP, VERSION, TRAININGJOB_KIND.plural, TRAININGJOB_KIND.kind)
TRAINING: Final = GangKind(
    kind=TRAININGJOB_KIND.kind,
    resource=TRAINING_JOBS,
    owner_label=TRAINING_JOB,
    container=CONTAINER,
    # docs/contracts.md: 2 = bad input, 3 = evaluation gate missed. Both would fail the
    # same way on every retry.
    permanent_exit_codes={2: Reason.INVALID_INPUT, 3: Reason.EVALUATION_GATE_MISSED},
)


def _utcnow() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _read_status(raw: object) -> TrainingJobStatus:
    try:
        return TrainingJobStatus.model_validate(raw or {})
    except ValidationError as exc:
        # Only the operator writes status; if it cannot be read, say so and start from
        # what the children show rather than stop serving the object.
        logger.warning("unreadable TrainingJob status, starting afresh: %s", exc)
        return TrainingJobStatus()


def training_status(
    *, old: TrainingJobStatus, decision: RunDecision, observed: AttemptObservation,
    spec: TrainingJobSpec | None, name: str, generation: int | None,
    triggered_by: RetrainTrigger | None, now: datetime,
) -> TrainingJobStatus:
    """The complete new status for ``decision`` (pure)."""
    if decision.sticky:
        return old.model_copy(update={"observed_generation": generation})
    message = decision.message
    metrics, model, labels = dict(old.metrics), old.model, list(old.labels)
    dataset = old.dataset
    if decision.phase.is_terminal and decision.reason == Reason.SUCCEEDED:
        leader = observed.leader
        parsed = parse_termination_message(leader.termination_message if leader else None)
        if parsed.summary is not None:
            metrics = dict(parsed.summary.metrics)
            labels = list(parsed.summary.labels)
            dataset = parse_snapshot(parsed.summary.raw.get("dataset"),
                                     output=spec.output.uri if spec else None)
            model = ModelArtifact(
                uri=parsed.summary.output_uri or (spec.output.uri if spec else None),
                checksum=parsed.summary.checksum)
        else:
            model = ModelArtifact(uri=spec.output.uri if spec else None)
            message = f"{message}; results unknown ({Reason.TERMINATION_MESSAGE_UNREADABLE}: " \
                      f"{parsed.error})"
    decision_for_conditions = replace(decision, message=message)
    lineage = old.lineage
    if spec is not None:
        lineage = Lineage(base_model=spec.model.uri, dataset=spec.dataset.uri,
                          dataset_digest=dataset.digest if dataset is not None else None,
                          training_job=name, triggered_by=triggered_by)
    return TrainingJobStatus(
        phase=decision.phase,
        observed_generation=generation,
        conditions=run_conditions(old.conditions, decision=decision_for_conditions,
                                  generation=generation, now=now),
        attempts=decision.attempt,
        failed_attempts=decision.failed_attempts,
        disruptions=decision.disruptions,
        start_time=decision.start_time,
        completion_time=decision.completion_time,
        lineage=lineage,
        message=message,
        metrics=metrics,
        model=model,
        labels=labels,
        dataset=dataset,
    )


def parse_snapshot(raw: object, *, output: str | None) -> DatasetSnapshot | None:
    """``status.dataset`` from the trainer's ``dataset`` section (digest and row counts);
    None when absent or malformed, never fatal."""
    if not isinstance(raw, Mapping):
        return None
    digest = raw.get("digest")
    rows = raw.get("rows")
    counts = ({str(k): v for k, v in rows.items()
               if isinstance(v, int) and not isinstance(v, bool)}
              if isinstance(rows, Mapping) else {})
    return DatasetSnapshot(
        uri=f"{output.rstrip('/')}/{SNAPSHOT_DIR}" if output else None,
        digest=digest if isinstance(digest, str) and digest else None, rows=counts)


def _template_for(*, runtime: Runtime, owner: Owner,
                  spec: TrainingJobSpec) -> Callable[[int], GangJobTemplate]:
    def build(attempt: int) -> GangJobTemplate:
        return build_training_template(
            owner=owner, spec=spec, attempt=attempt, default_image=runtime.config.trainer_image,
            default_cpu=runtime.config.default_cpu, default_memory=runtime.config.default_memory,
            master_port=runtime.config.master_port)
    return build


async def reconcile_training_job(*, runtime: Runtime, namespace: str, name: str,
                                 trigger: str) -> RunDecision | None:
    """Bring one TrainingJob and its children to the level its spec and history call for.
    Returns the decision (None when the object is gone or being deleted)."""
    key = f"{TRAINING.kind}/{namespace}/{name}"
    async with runtime.locks.hold(key):
        with runtime.metrics.reconciling(kind=TRAINING.kind, trigger=trigger):
            obj = await runtime.kube.get(resource=TRAINING_JOBS, namespace=namespace, name=name)
            if obj is None or obj["metadata"].get("deletionTimestamp"):
                runtime.metrics.set_phase(kind=TRAINING.kind, key=key, phase=None)
                return None
            decision = await _reconcile(runtime=runtime, obj=obj, now=_utcnow())
            runtime.metrics.set_phase(kind=TRAINING.kind, key=key, phase=decision.phase.value)
            return decision


async def _reconcile(*, runtime: Runtime, obj: dict[str, Any], now: datetime) -> RunDecision:
    meta = obj["metadata"]
    old = _read_status(obj.get("status"))
    owner = Owner(api_version=API_VERSION, kind=TRAINING.kind, name=meta["name"],
                  namespace=meta["namespace"], uid=meta["uid"])
    spec: TrainingJobSpec | None = None
    problem: str | None = None
    try:
        spec = TrainingJobSpec.model_validate(obj.get("spec") or {})
    except ValidationError as exc:
        problem = describe_validation_error(exc, prefix="spec")
    template_for: Callable[[int], GangJobTemplate] | None = None
    if spec is not None:
        template_for = _template_for(runtime=runtime, owner=owner, spec=spec)
        try:  # surface builder-level problems (e.g. a name too long) before any write
            build_job(template=template_for(max(old.attempts, 1)), attempt=max(old.attempts, 1),
                      suspend=True)
        except InvalidSpecError as exc:
            problem, template_for = str(exc), None
    request = GangRequest(
        obj=obj, record=RunRecord.from_status(old),
        policy=spec.run_policy if spec is not None else RunPolicy(),
        num_nodes=spec.num_nodes if spec is not None else 1,
        queued=bool(spec is not None and spec.scheduling.queue_name),
        template_for=template_for, spec_problem=problem,
        image_pull_grace=timedelta(seconds=runtime.config.image_pull_grace_seconds))
    triggered_by = read_triggered_by(obj)

    def status_for(decision: RunDecision, observed: AttemptObservation) -> dict[str, Any]:
        new = training_status(old=old, decision=decision, observed=observed, spec=spec,
                              name=meta["name"], generation=meta.get("generation"),
                              triggered_by=triggered_by, now=now)
        return new.model_dump(mode="json", exclude_none=True)

    return await reconcile_gang(kube=runtime.kube, kind=TRAINING, request=request,
                                status_for=status_for, now=now)
