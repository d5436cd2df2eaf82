"""The OptimizationJob reconciler: wait for the source model, run ``modelloop-optimize`` as
a gang of one, and turn its report into status (``report``, ``Accepted``, ``archiveUri``).

The run itself is the TrainingJob's machinery (:mod:`.gangjob`, :mod:`.runpolicy`): the
same attempts, backoff, deadline, suspension and sticky terminal phases. What is specific
here is the step before (the source must exist and have succeeded) and the verdict after:
exit code 4 means "measured and rejected", a final outcome that retrying cannot change.

Called like the TrainingJob reconciler: on create, update, resume, child events, a timer,
and whenever the referenced TrainingJob changes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from pydantic import ValidationError

from ..api import describe_validation_error
from ..api.common import ConditionStatus, Lineage, ModelArtifact, RunPolicy
from ..api.jobs import JobPhase
from ..api.meta import API_VERSION, GROUP, VERSION
from ..api.optimizationjob import (
    OPTIMIZATIONJOB_KIND,
    Acceptance,
    ModelProfile,
    OptimizationJobSpec,
    OptimizationJobStatus,
    OptimizationReport,
    comparison_message,
    parse_comparison,
)
from ..api.trainingjob import TRAININGJOB_KIND
from ..builders.job import GangJobTemplate, Owner, build_job
from ..builders.labels import OPTIMIZATION_JOB
from ..builders.optimization import (
    CONTAINER,
    OptimizationInputs,
    build_optimization_template,
    expected_archive_uri,
)
from ..errors import InvalidSpecError
from ..kube import KubeClient, Resource
from ..status import ConditionType, Reason, set_condition
from .gangjob import GangKind, GangRequest, reconcile_gang, write_status
from .observe import AttemptObservation, JobOutcome, PodOutcome
from .runpolicy import RunDecision, RunRecord, run_conditions
from .runtime import Runtime
from .sources import Resolution, SourceReason, SourceState, resolve_optimization_source
from .termination import parse_termination_message

logger = logging.getLogger(__name__)

OPTIMIZATION_JOBS: Final = Resource(GROUP, VERSION, OPTIMIZATIONJOB_KIND.plural,
                                    OPTIMIZATIONJOB_KIND.kind)
TRAINING_JOBS: Final = Resource(GROUP, VERSION, TRAININGJOB_KIND.plural, TRAININGJOB_KIND.kind)

OPTIMIZATION: Final = GangKind(
    kind=OPTIMIZATIONJOB_KIND.kind,
    resource=OPTIMIZATION_JOBS,
    owner_label=OPTIMIZATION_JOB,
    container=CONTAINER,
    # docs/contracts.md: 2 = bad input, 4 = measured and rejected. Neither changes on retry.
    permanent_exit_codes={2: Reason.INVALID_INPUT, 4: Reason.OPTIMIZATION_REJECTED},
)


class AcceptedReason:
    """Reasons of the Accepted condition."""

    ACCEPTED: Final = "WithinBudget"
    REJECTED: Final = Reason.OPTIMIZATION_REJECTED
    PENDING: Final = "NotMeasuredYet"
    NOT_MEASURED: Final = "NotMeasured"


def _utcnow() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _read_status(raw: object) -> OptimizationJobStatus:
    try:
        return OptimizationJobStatus.model_validate(raw or {})
    except ValidationError as exc:
        logger.warning("unreadable OptimizationJob status, starting afresh: %s", exc)
        return OptimizationJobStatus()


def _float(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _profile(raw: object) -> ModelProfile | None:
    if not isinstance(raw, Mapping):
        return None
    size = raw.get("sizeBytes")
    return ModelProfile(
        size_bytes=int(size) if isinstance(size, int) and not isinstance(size, bool)
        and size >= 0 else None,
        latency_p50_ms=_float(raw.get("latencyP50Ms")),
        latency_p99_ms=_float(raw.get("latencyP99Ms")),
        throughput=_float(raw.get("throughput")),
        accuracy=_float(raw.get("accuracy")),
        f1_macro=_float(raw.get("f1_macro", raw.get("f1Macro"))),
    )


def parse_report(raw: object) -> OptimizationReport | None:
    """The ``report`` of the optimizer's termination message as a status model; fields
    that are missing or not numbers are left out, never fatal."""
    if not isinstance(raw, Mapping):
        return None
    return OptimizationReport(
        baseline=_profile(raw.get("baseline")), optimized=_profile(raw.get("optimized")),
        size_ratio=_float(raw.get("sizeRatio")), speedup=_float(raw.get("speedup")),
        accuracy_drop=_float(raw.get("accuracyDrop")),
        comparison=parse_comparison(raw.get("comparison")))


def accepted_message(*, report: OptimizationReport | None, acceptance: Acceptance) -> str:
    """The verdict in numbers, e.g. ``accuracy drop 0.40 pts <= 1.00 budget, speedup
    1.42x``: what a person checks first in ``kubectl describe``."""
    if report is None:
        return "no report"
    parts: list[str] = []
    budget = acceptance.max_accuracy_drop * 100
    if report.accuracy_drop is not None:
        drop = report.accuracy_drop * 100
        sign = "<=" if report.accuracy_drop <= acceptance.max_accuracy_drop + 1e-12 else ">"
        parts.append(f"accuracy drop {drop:.2f} pts {sign} {budget:.2f} budget")
    if report.speedup is not None:
        text = f"speedup {report.speedup:.2f}x"
        if acceptance.min_speedup is not None:
            sign = ">=" if report.speedup >= acceptance.min_speedup else "<"
            text += f" {sign} {acceptance.min_speedup:.2f}x minimum"
        parts.append(text)
    if report.size_ratio is not None:
        parts.append(f"size {report.size_ratio:.2f}x of the original")
    if report.comparison is not None:
        parts.append(comparison_message(report.comparison))
    return ", ".join(parts) or "empty report"


def _result_pod(decision: RunDecision, observed: AttemptObservation) -> PodOutcome | None:
    """The pod whose termination message holds the report: the succeeded one, or the one
    that exited with "rejected"."""
    if decision.reason == Reason.SUCCEEDED:
        return observed.leader
    if decision.reason == Reason.OPTIMIZATION_REJECTED:
        return observed.first_failure
    return None


def _accepted_condition(*, decision: RunDecision, accepted: bool | None,
                        report: OptimizationReport | None, spec: OptimizationJobSpec | None,
                        note: str) -> tuple[ConditionStatus, str, str]:
    acceptance = spec.acceptance if spec is not None else Acceptance()
    numbers = accepted_message(report=report, acceptance=acceptance)
    if accepted is True:
        return ConditionStatus.TRUE, AcceptedReason.ACCEPTED, numbers
    if accepted is False:
        text = numbers + (f" ({note})" if note else "")
        return ConditionStatus.FALSE, AcceptedReason.REJECTED, text
    if decision.terminal:
        return (ConditionStatus.FALSE, AcceptedReason.NOT_MEASURED,
                f"the optimization ended without a verdict ({decision.reason})")
    return ConditionStatus.UNKNOWN, AcceptedReason.PENDING, "the optimization has not finished"


def optimization_status(
    *, old: OptimizationJobStatus, decision: RunDecision, observed: AttemptObservation,
    spec: OptimizationJobSpec | None, name: str, generation: int | None,
    source: Resolution | None, now: datetime,
) -> OptimizationJobStatus:
    """The complete new status for ``decision`` (pure). ``source`` is the resolved source
    (None when the spec is invalid)."""
    if decision.sticky:
        return old.model_copy(update={"observed_generation": generation})
    message = decision.message
    report, model, archive_uri = old.report, old.model, old.archive_uri
    accepted: bool | None = None
    note = ""
    pod = _result_pod(decision, observed)
    if pod is not None:
        parsed = parse_termination_message(pod.termination_message)
        if parsed.summary is not None:
            raw = parsed.summary.raw
            report = parse_report(raw.get("report"))
            accepted = raw.get("accepted") if isinstance(raw.get("accepted"), bool) else None
            note = parsed.summary.message
            model = ModelArtifact(uri=parsed.summary.output_uri or (
                spec.output.uri if spec else None), checksum=parsed.summary.checksum)
            archive = raw.get("archiveUri")
            archive_uri = archive if isinstance(archive, str) and archive else None
        else:
            message = f"{message}; results unknown ({Reason.TERMINATION_MESSAGE_UNREADABLE}: " \
                      f"{parsed.error})"
        if decision.reason == Reason.SUCCEEDED:
            # Exit code 0 means accepted (docs/contracts.md) even if the message was lost.
            accepted = True if accepted is None else accepted
            if accepted and archive_uri is None and spec is not None:
                archive_uri = expected_archive_uri(spec)
        elif decision.reason == Reason.OPTIMIZATION_REJECTED:
            accepted = False
    if accepted is not True:
        archive_uri = None  # only an accepted model is published for serving
    conditions = run_conditions(old.conditions, decision=replace(decision, message=message),
                                generation=generation, now=now)
    status, reason, text = _accepted_condition(decision=decision, accepted=accepted,
                                               report=report, spec=spec, note=note)
    conditions = set_condition(conditions, type_=ConditionType.ACCEPTED, status=status,
                               reason=reason, message=text, observed_generation=generation,
                               now=now)
    if decision.reason == Reason.OPTIMIZATION_REJECTED:
        message = f"rejected: {text}"
    lineage = old.lineage
    if source is not None and source.trained is not None:
        lineage = source.trained.lineage.model_copy(update={"optimization_job": name})
    return OptimizationJobStatus(
        phase=decision.phase, observed_generation=generation, conditions=conditions,
        attempts=decision.attempt, failed_attempts=decision.failed_attempts,
        disruptions=decision.disruptions, start_time=decision.start_time,
        completion_time=decision.completion_time, lineage=lineage, message=message,
        report=report, model=model, archive_uri=archive_uri)


def source_decision(*, record: RunRecord, source: Resolution, now: datetime) -> RunDecision:
    """The run decision while the source is not usable: Pending while it may still come,
    Failed (terminal, nothing ever started) once it cannot."""
    base = RunDecision(
        phase=record.phase or JobPhase.PENDING, reason=source.reason, message=source.message,
        attempt=record.attempt, failed_attempts=record.failed_attempts,
        disruptions=record.disruptions, start_time=record.start_time,
        completion_time=record.completion_time)
    if source.state is SourceState.FAILED:
        return replace(base, phase=JobPhase.FAILED, completion_time=now,
                       stop_job=record.attempt > 0)
    return replace(base, phase=JobPhase.PENDING)


def lost_source(source: Resolution, *, record: RunRecord) -> Resolution:
    """A source that vanished after an attempt started (a Succeeded TrainingJob never goes
    back, so it was deleted) fails the job: the next attempt could not be built, and
    waiting would leave a running Job unaccounted for."""
    if source.state is not SourceState.WAITING or record.attempt == 0:
        return source
    return Resolution(SourceState.FAILED, SourceReason.FAILED,
                      f"{source.message}; it was the source of attempt {record.attempt}")


def waiting_status(*, old: OptimizationJobStatus, decision: RunDecision,
                   spec: OptimizationJobSpec, name: str, generation: int | None,
                   now: datetime) -> OptimizationJobStatus:
    """Status while the source is missing, unfinished or failed (pure):
    ``Progressing=False`` with the source's reason, so nobody mistakes waiting for
    working."""
    new = optimization_status(old=old, decision=decision,
                              observed=AttemptObservation(outcome=JobOutcome.ABSENT), spec=spec,
                              name=name, generation=generation, source=None, now=now)
    conditions = set_condition(new.conditions, type_=ConditionType.PROGRESSING, status=False,
                               reason=decision.reason, message=decision.message,
                               observed_generation=generation, now=now)
    lineage = new.lineage or Lineage(optimization_job=name)
    ref = spec.source.training_job_ref
    if ref is not None:
        lineage = lineage.model_copy(update={"training_job": ref.name})
    return new.model_copy(update={"conditions": conditions, "lineage": lineage})


def _template_for(*, runtime: Runtime, owner: Owner, spec: OptimizationJobSpec,
                  inputs: OptimizationInputs) -> Callable[[int], GangJobTemplate]:
    def build(_attempt: int) -> GangJobTemplate:
        return build_optimization_template(
            owner=owner, spec=spec, inputs=inputs, default_image=runtime.config.trainer_image,
            default_cpu=runtime.config.default_cpu,
            default_memory=runtime.config.default_memory,
            rendezvous_port=runtime.config.master_port)
    return build


def inputs_for(*, spec: OptimizationJobSpec, source: Resolution) -> OptimizationInputs | None:
    """The optimizer's inputs: the source's model, and the evaluation data from the spec
    or else from the TrainingJob (None when neither names any: the job cannot run)."""
    if source.trained is None:
        return None
    dataset = spec.evaluation.dataset or source.trained.dataset
    if dataset is None:
        return None
    return OptimizationInputs(model_uri=source.trained.uri, dataset=dataset)


async def reconcile_optimization_job(*, runtime: Runtime, namespace: str, name: str,
                                     trigger: str) -> RunDecision | None:
    """Bring one OptimizationJob and its children to the level its spec, source and history
    call for. Returns the decision (None when the object is gone or being deleted)."""
    key = f"{OPTIMIZATION.kind}/{namespace}/{name}"
    async with runtime.locks.hold(key):
        with runtime.metrics.reconciling(kind=OPTIMIZATION.kind, trigger=trigger):
            obj = await runtime.kube.get(resource=OPTIMIZATION_JOBS, namespace=namespace,
                                         name=name)
            if obj is None or obj["metadata"].get("deletionTimestamp"):
                runtime.metrics.set_phase(kind=OPTIMIZATION.kind, key=key, phase=None)
                return None
            decision = await _reconcile(runtime=runtime, obj=obj, now=_utcnow())
            runtime.metrics.set_phase(kind=OPTIMIZATION.kind, key=key,
                                      phase=decision.phase.value)
            return decision


async def _reconcile(*, runtime: Runtime, obj: dict[str, Any], now: datetime) -> RunDecision:
    meta = obj["metadata"]
    old = _read_status(obj.get("status"))
    record = RunRecord.from_status(old)
    owner = Owner(api_version=API_VERSION, kind=OPTIMIZATION.kind, name=meta["name"],
                  namespace=meta["namespace"], uid=meta["uid"])
    spec: OptimizationJobSpec | None = None
    problem: str | None = None
    try:
        spec = OptimizationJobSpec.model_validate(obj.get("spec") or {})
    except ValidationError as exc:
        problem = describe_validation_error(exc, prefix="spec")

    source: Resolution | None = None
    template_for: Callable[[int], GangJobTemplate] | None = None
    terminal = record.phase is not None and record.phase.is_terminal
    if spec is not None and not terminal:
        ref = spec.source.training_job_ref
        training_job = None if ref is None else await runtime.kube.get(
            resource=TRAINING_JOBS, namespace=meta["namespace"], name=ref.name)
        source = lost_source(resolve_optimization_source(spec=spec, training_job=training_job),
                             record=record)
        if not source.ready:
            decision = source_decision(record=record, source=source, now=now)
            new = waiting_status(old=old, decision=decision, spec=spec, name=meta["name"],
                                 generation=meta.get("generation"), now=now)
            await write_status(kube=runtime.kube, kind=OPTIMIZATION, obj=obj,
                               status=new.model_dump(mode="json", exclude_none=True),
                               decision=decision)
            return decision
        inputs = inputs_for(spec=spec, source=source)
        if inputs is None:
            problem = ("spec.evaluation.dataset is required: the source has no dataset to "
                       "evaluate on")
        else:
            template_for = _template_for(runtime=runtime, owner=owner, spec=spec, inputs=inputs)
            try:  # surface builder-level problems before any write
                build_job(template=template_for(max(record.attempt, 1)),
                          attempt=max(record.attempt, 1), suspend=True)
            except InvalidSpecError as exc:
                problem, template_for = str(exc), None

    request = GangRequest(
        obj=obj, record=record,
        policy=spec.run_policy if spec is not None else RunPolicy(),
        num_nodes=1, queued=bool(spec is not None and spec.scheduling.queue_name),
        template_for=template_for, spec_problem=problem,
        image_pull_grace=timedelta(seconds=runtime.config.image_pull_grace_seconds))

    def status_for(decision: RunDecision, observed: AttemptObservation) -> dict[str, Any]:
        new = optimization_status(old=old, decision=decision, observed=observed, spec=spec,
                                  name=meta["name"], generation=meta.get("generation"),
                                  source=source, now=now)
        return new.model_dump(mode="json", exclude_none=True)

    return await reconcile_gang(kube=runtime.kube, kind=OPTIMIZATION, request=request,
                                status_for=status_for, now=now)


def references_training_job(obj: Mapping[str, Any], training_job: str) -> bool:
    """Whether an OptimizationJob (raw) names ``training_job`` as its source: who to
    wake up when a TrainingJob changes."""
    source = (obj.get("spec") or {}).get("source") or {}
    return bool((source.get("trainingJobRef") or {}).get("name") == training_job)


async def optimization_jobs_using(kube: KubeClient, *, namespace: str,
                                  training_job: str) -> list[str]:
    """Names of the OptimizationJobs in ``namespace`` whose source is ``training_job``."""
    found = await kube.list(resource=OPTIMIZATION_JOBS, namespace=namespace, labels={})
    return [o["metadata"]["name"] for o in found if references_training_job(o, training_job)]
