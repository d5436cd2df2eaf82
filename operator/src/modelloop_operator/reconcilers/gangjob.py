"""Running a gang of trainer-image pods to completion: the generic half of the TrainingJob
and OptimizationJob reconcilers.

A kind supplies what differs (:class:`GangKind`, a :class:`GangRequest` with the pod
template per attempt, and how to turn a decision into its status); this module does the
rest, the same way for every kind:

1. **snapshot** - the attempt's Job, its pods, older attempts' Jobs, the Service;
2. **decide** - :func:`.runpolicy.decide_run` (pure);
3. **status first** - write the new status if it changed, and an Event on a transition.
   Status goes before the children because it is the memory: once ``attempts: n+1`` is
   recorded, a crash cannot make the next reconcile forget that attempt n failed, and
   the deterministic Job name ``<name>-a<n+1>`` makes the creation idempotent;
4. **children** - server-side apply the Service and the attempt's Job (or, once
   terminal, stop and tidy them: never create).

Children deleted by someone else (docs/operator.md, "Children deleted by hand"): a
missing Service is simply applied again; a missing Job is recreated for the same attempt
unless status recorded that attempt as Running, in which case its pods' work is lost
and the attempt counts as failed (reason ``ChildrenDeleted``), retried within
``backoffLimit`` like any other failure. A finished job recreates nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Final

from ..api.common import RunPolicy
from ..api.jobs import JobPhase
from ..builders import labels as lbl
from ..builders.job import (
    GangJobTemplate,
    build_job,
    build_rendezvous_service,
    job_name,
    manifest_hash,
    needs_rendezvous_service,
    service_name,
    with_manifest_hash,
)
from ..errors import UnprocessableError, WaitingError
from ..kube import JOBS, PODS, SERVICES, KubeClient, Object, Resource
from ..status import Reason, merge_patch
from .observe import AttemptObservation, JobOutcome, observe_attempt
from .runpolicy import (
    DEFAULT_IMAGE_PULL_GRACE,
    RunDecision,
    RunRecord,
    decide_run,
    invalid_spec,
)

logger = logging.getLogger(__name__)

WARNING_REASONS = frozenset({
    Reason.RETRYING, Reason.DISRUPTED, Reason.FAILED, Reason.BACKOFF_LIMIT_EXCEEDED,
    Reason.DEADLINE_EXCEEDED, Reason.INVALID_SPEC, Reason.INVALID_INPUT,
    Reason.EVALUATION_GATE_MISSED, Reason.OPTIMIZATION_REJECTED, Reason.CHILD_CONFLICT,
    Reason.IMAGE_PULL_FAILED, Reason.OOM_KILLED,
    Reason.CHILDREN_DELETED, Reason.CHILD_REJECTED,
})


@dataclass(frozen=True)
class GangKind:
    """What the generic runner needs to know about a kind."""

    kind: str
    resource: Resource
    owner_label: str
    container: str
    permanent_exit_codes: Mapping[int, str]


@dataclass(frozen=True)
class GangRequest:
    """One reconcile's inputs from the kind-specific reconciler."""

    obj: Mapping[str, Any]
    record: RunRecord
    policy: RunPolicy
    num_nodes: int
    queued: bool
    template_for: Callable[[int], GangJobTemplate] | None
    """The pod template of attempt n; None when the spec is invalid."""
    spec_problem: str | None = None
    """Why the spec cannot run, when it cannot."""
    image_pull_grace: timedelta = DEFAULT_IMAGE_PULL_GRACE
    """How long a pod may fail to pull its image before the job fails
    (``MODELLOOP_IMAGE_PULL_GRACE_SECONDS``)."""

    @property
    def namespace(self) -> str:
        """The object's namespace."""
        return str(self.obj["metadata"]["namespace"])

    @property
    def name(self) -> str:
        """The object's name."""
        return str(self.obj["metadata"]["name"])

    @property
    def uid(self) -> str:
        """The object's uid: children are ours only if they point to it."""
        return str(self.obj["metadata"]["uid"])


StatusFor = Callable[[RunDecision, AttemptObservation], dict[str, Any]]
"""Builds the kind's complete new status (camelCase JSON) from a decision."""


@dataclass(frozen=True)
class GangSnapshot:
    """The children of one object as observed at the start of a reconcile."""

    job: Object | None
    stale_jobs: tuple[Object, ...]
    pods: tuple[Object, ...]
    service: Object | None
    read_job_name: str | None = None
    job_name_taken: Object | None = None
    """What the read of ``read_job_name`` found when ``job`` is None (someone else's Job,
    ours being deleted, or nothing): creating that Job needs no second read."""


def controlled_by(obj: Mapping[str, Any], uid: str) -> bool:
    """Whether ``obj`` has a controller ownerReference to ``uid``."""
    refs = obj.get("metadata", {}).get("ownerReferences") or []
    return any(ref.get("uid") == uid and ref.get("controller") for ref in refs)


FINISHED_CONDITIONS = frozenset({"Complete", "Failed", "FailureTarget", "SuccessCriteriaMet"})


def _finished(job: Mapping[str, Any]) -> bool:
    conditions = job.get("status", {}).get("conditions") or []
    return any(c.get("type") in FINISHED_CONDITIONS and c.get("status") == "True"
               for c in conditions)


def starting(job: Mapping[str, Any], *, num_nodes: int) -> bool:
    """Whether an unsuspended Job has fewer ready pods than the gang: its pods are read
    then, so that one that cannot be scheduled or cannot pull its image is named in the
    job's conditions (:mod:`.pod_diagnosis`) instead of being waited for silently."""
    if job.get("spec", {}).get("suspend"):
        return False
    return int(job.get("status", {}).get("ready") or 0) < num_nodes


def pods_matter(job: Mapping[str, Any], *, num_nodes: int) -> bool:
    """Whether the run policy needs the attempt's pods: once the Job has finished (exit
    codes, termination messages, disruptions), or while a multi-node gang runs (a
    disrupted rank breaks the gang). A single running pod is seen through the Job's
    own ``status.ready``; pods not all ready yet are read to tell why (:func:`starting`)."""
    return _finished(job) or num_nodes > 1 or starting(job, num_nodes=num_nodes)


def being_deleted(job: Mapping[str, Any]) -> bool:
    """Whether an unfinished Job is on its way out (someone deleted it, e.g. with
    foreground propagation): its pods are going, so it counts as deleted already. A
    finished one still tells how the attempt ended, so it is observed as usual."""
    return bool(job.get("metadata", {}).get("deletionTimestamp")) and not _finished(job)


def job_lost(*, record: RunRecord, observed: AttemptObservation) -> bool:
    """Whether the attempt's Job was deleted by someone else while it ran.

    Only a Running attempt counts: status says its pods ran, so their work is lost. A
    Job missing while status says Pending or Suspended cannot be told apart from one
    the operator had not created yet (a crash between recording the attempt and
    creating its Job), and nothing ran in it: it is simply created (again).
    """
    return record.phase is JobPhase.RUNNING and observed.outcome is JobOutcome.ABSENT


def lost_job_observation(*, observed: AttemptObservation, job: str) -> AttemptObservation:
    """The observation of a lost Job: a failed attempt with a reason that says why, so
    the run policy retries it within ``backoffLimit`` or fails the job."""
    return replace(observed, outcome=JobOutcome.FAILED, job_reason=Reason.CHILDREN_DELETED,
                   job_message=f"its Job {job} was deleted while it was running "
                               f"({Reason.CHILDREN_DELETED})")


async def take_snapshot(*, kube: KubeClient, kind: GangKind, request: GangRequest,
                        attempt: int) -> GangSnapshot:
    """Read the children with as few requests as the decision needs.

    The attempt's Job is read by its deterministic name: listing the namespace's Jobs on
    every reconcile made a burst of N jobs cost O(N^2) on the API server (the benchmark
    saw list requests time out at 500). Older attempts are listed only when there can be
    any: from attempt 2 on (status records an attempt before its Job is created, so a
    first attempt has no elders, finished or not: after a restart, 1,000 finished jobs
    listed the namespace's Jobs 1,000 times for nothing). Pods are listed only when
    :func:`pods_matter` and the job has not finished yet.
    """
    ns, name = request.namespace, request.name
    owned = {lbl.MANAGED_BY: lbl.MANAGED_BY_VALUE, kind.owner_label: name}
    current_name = job_name(name=name, attempt=attempt)
    read = await kube.get(resource=JOBS, namespace=ns, name=current_name)
    current = read
    if current is not None and not controlled_by(current, request.uid):
        current = None  # someone else's Job: never observed, deleted or adopted
    if current is not None and being_deleted(current):
        current = None
    stale: tuple[Object, ...] = ()
    record = request.record
    if attempt > 1:
        stale = tuple(j for j in await kube.list(resource=JOBS, namespace=ns, labels=owned)
                      if controlled_by(j, request.uid)
                      and j["metadata"]["name"] != current_name)
    pods: list[Object] = []
    # A finished job's status is sticky: nothing its pods say can change it, so the
    # events that follow the end (the pods', the TTL's) cost no pod list.
    finished = record.phase is not None and record.phase.is_terminal
    if current is not None and not finished and pods_matter(current,
                                                          num_nodes=request.num_nodes):
        pods = await kube.list(resource=PODS, namespace=ns,
                               labels={**owned, lbl.ATTEMPT: str(attempt)})
    # A single node needs no rendezvous (rank 0 is local): no Service to read or write.
    service = await kube.get(resource=SERVICES, namespace=ns, name=service_name(name=name)) \
        if needs_rendezvous_service(request.num_nodes) else None
    return GangSnapshot(job=current, stale_jobs=stale, pods=tuple(pods), service=service,
                        read_job_name=current_name,
                        job_name_taken=read if current is None else None)


def _transition(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    return any(old.get(k) != new.get(k) for k in ("phase", "attempts"))


async def write_status(*, kube: KubeClient, kind: GangKind, obj: Mapping[str, Any],
                       status: Mapping[str, Any], decision: RunDecision) -> bool:
    """Patch status if it changed (guarded by resourceVersion) and post an Event on a
    phase or attempt transition. Returns whether anything was written."""
    old = obj.get("status") or {}
    patch = merge_patch(old, status)
    if not patch:
        return False
    meta = obj["metadata"]
    await kube.merge_patch(
        resource=kind.resource, namespace=meta["namespace"], name=meta["name"],
        subresource="status",
        patch={"metadata": {"resourceVersion": meta["resourceVersion"]}, "status": patch})
    if _transition(old, status) and not decision.sticky:
        warning = decision.reason in WARNING_REASONS
        await kube.post_event(involved=obj, type_="Warning" if warning else "Normal",
                              reason=decision.reason, message=decision.message)
    return True


async def _apply_service(*, kube: KubeClient, request: GangRequest, snapshot: GangSnapshot,
                         template: GangJobTemplate) -> None:
    desired = build_rendezvous_service(template=template)
    current = snapshot.service
    if current is not None and not controlled_by(current, request.uid):
        raise WaitingError(f"Service {request.namespace}/{desired['metadata']['name']} exists and "
                      f"is not owned by this {request.obj['kind']}; rename or delete it",
                      delay=30)
    if current is not None and all(
            current["spec"].get(k) == desired["spec"][k] for k in ("selector", "clusterIP")):
        return  # up to date: spare the API server a no-op write
    await kube.apply(resource=SERVICES, manifest=desired)


async def _apply_job(*, kube: KubeClient, request: GangRequest, snapshot: GangSnapshot,
                     decision: RunDecision, template: GangJobTemplate) -> None:
    desired = with_manifest_hash(build_job(template=template, attempt=decision.attempt,
                                           suspend=decision.suspend_job))
    name = desired["metadata"]["name"]
    if snapshot.job is not None and manifest_hash(snapshot.job) == manifest_hash(desired):
        return  # exactly what we applied last time: spare the API server a no-op apply
    exists = snapshot.job is not None
    if snapshot.job is None:
        existing = snapshot.job_name_taken if snapshot.read_job_name == name else \
            await kube.get(resource=JOBS, namespace=request.namespace, name=name)
        if existing is not None and not controlled_by(existing, request.uid):
            raise WaitingError(f"Job {request.namespace}/{name} exists and is not owned by this "
                          f"{request.obj['kind']}; delete it", delay=30)
        exists = existing is not None
    try:
        await kube.apply(resource=JOBS, manifest=desired)
    except UnprocessableError:
        if not exists:
            # Refused on creation (an admission policy, a validation the builders missed):
            # there is nothing to steer, and the API server's message says why.
            raise
        # A Job's pod template is immutable. It can only differ from what we build if an
        # older operator version created it: keep that attempt running and only steer
        # the one field we change while it runs.
        logger.warning("Job %s/%s differs from the desired template; updating only "
                       "spec.suspend", request.namespace, name)
        await kube.merge_patch(resource=JOBS, namespace=request.namespace, name=name,
                               patch={"spec": {"suspend": decision.suspend_job}})


async def _tidy_terminal(*, kube: KubeClient, request: GangRequest, snapshot: GangSnapshot,
                         decision: RunDecision) -> None:
    """After the end: stop a Job still running, drop the rendezvous Service and older
    attempts, and hand ttlSecondsAfterFinished to the Job itself (the Job controller
    deletes it and its pods on time, even while the operator is down). Never creates."""
    ns = request.namespace
    if snapshot.job is not None and decision.stop_job:
        await kube.delete(resource=JOBS, namespace=ns, name=snapshot.job["metadata"]["name"])
    elif snapshot.job is not None:
        ttl = request.policy.ttl_seconds_after_finished
        if snapshot.job["spec"].get("ttlSecondsAfterFinished") != ttl:
            await kube.merge_patch(resource=JOBS, namespace=ns,
                                   name=snapshot.job["metadata"]["name"],
                                   patch={"spec": {"ttlSecondsAfterFinished": ttl}})
    for stale in snapshot.stale_jobs:
        await kube.delete(resource=JOBS, namespace=ns, name=stale["metadata"]["name"])
    if snapshot.service is not None and controlled_by(snapshot.service, request.uid):
        await kube.delete(resource=SERVICES, namespace=ns,
                          name=snapshot.service["metadata"]["name"])


async def reconcile_gang(*, kube: KubeClient, kind: GangKind, request: GangRequest,
                         status_for: StatusFor, now: datetime) -> RunDecision:
    """One level-based pass over a gang job; safe to call any number of times."""
    record = request.record
    snapshot = await take_snapshot(kube=kube, kind=kind, request=request,
                                   attempt=max(record.attempt, 1))
    observed = observe_attempt(job=snapshot.job, pods=snapshot.pods, container=kind.container)
    lost = job_lost(record=record, observed=observed)
    if lost:
        observed = lost_job_observation(
            observed=observed, job=job_name(name=request.name, attempt=record.attempt))
    if request.spec_problem is not None or request.template_for is None:
        if record.phase is not None and record.phase.is_terminal:
            decision = decide_run(policy=request.policy, record=record, observed=observed,
                                  now=now, num_nodes=request.num_nodes, queued=request.queued,
                                  permanent_exit_codes=kind.permanent_exit_codes,
                                  image_pull_grace=request.image_pull_grace)
        else:
            decision = invalid_spec(record=record, now=now,
                                    message=request.spec_problem or "invalid spec")
    else:
        decision = decide_run(policy=request.policy, record=record, observed=observed, now=now,
                              num_nodes=request.num_nodes, queued=request.queued,
                              permanent_exit_codes=kind.permanent_exit_codes,
                              image_pull_grace=request.image_pull_grace)
    if lost and decision.reason == Reason.RETRYING:
        decision = replace(decision, reason=Reason.CHILDREN_DELETED)

    await write_status(kube=kube, kind=kind, obj=request.obj,
                       status=status_for(decision, observed), decision=decision)

    if decision.terminal:
        await _tidy_terminal(kube=kube, request=request, snapshot=snapshot, decision=decision)
        return decision
    assert request.template_for is not None  # an invalid spec always decides Failed
    # Older attempts go first: their pods must not linger next to the new gang.
    for stale in snapshot.stale_jobs:
        await kube.delete(resource=JOBS, namespace=request.namespace,
                          name=stale["metadata"]["name"])
    if decision.starts_new_attempt(record) and snapshot.job is not None:
        await kube.delete(resource=JOBS, namespace=request.namespace,
                          name=snapshot.job["metadata"]["name"])
        snapshot = GangSnapshot(job=None, stale_jobs=(), pods=(), service=snapshot.service)
    template = request.template_for(decision.attempt)
    try:
        if needs_rendezvous_service(request.num_nodes):
            await _apply_service(kube=kube, request=request, snapshot=snapshot,
                                 template=template)
        await _apply_job(kube=kube, request=request, snapshot=snapshot, decision=decision,
                         template=template)
    except UnprocessableError as exc:
        await _report_blocked(kube=kube, kind=kind, request=request, status_for=status_for,
                              observed=observed, decision=decision,
                              reason=Reason.CHILD_REJECTED,
                              message=f"the API server refused a child of this job: {exc}")
        raise WaitingError(str(exc), delay=BLOCKED_RETRY_SECONDS) from exc
    except WaitingError as exc:  # a foreign object holds a child's name
        await _report_blocked(kube=kube, kind=kind, request=request, status_for=status_for,
                              observed=observed, decision=decision,
                              reason=Reason.CHILD_CONFLICT, message=str(exc))
        raise
    return decision


BLOCKED_RETRY_SECONDS: Final = 30
"""Retry period while a child cannot be created (refused, or its name is taken)."""


async def _report_blocked(*, kube: KubeClient, kind: GangKind, request: GangRequest,
                          status_for: StatusFor, observed: AttemptObservation,
                          decision: RunDecision, reason: str, message: str) -> None:
    """Say in status why the job's child cannot be created (an admission policy or a
    validation the schema cannot express refused it; a foreign object has its name).
    The job keeps its phase and is retried: lifting the policy or deleting the foreign
    object lets it go on, and nothing the user asked for is lost."""
    blocked = replace(decision, reason=reason,
                      message=f"{message}; retrying every {BLOCKED_RETRY_SECONDS} s")
    fresh = await kube.get(resource=kind.resource, namespace=request.namespace,
                           name=request.name)
    if fresh is not None:  # the status written above moved resourceVersion on
        await write_status(kube=kube, kind=kind, obj=fresh,
                           status=status_for(blocked, observed), decision=blocked)


def is_terminal_phase(phase: object) -> bool:
    """Whether a raw ``status.phase`` value is final (for watch filters)."""
    return phase in (JobPhase.SUCCEEDED.value, JobPhase.FAILED.value)
