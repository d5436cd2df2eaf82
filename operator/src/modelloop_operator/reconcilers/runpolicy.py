"""The gang run policy, as pure decisions: given what status remembers and what the
cluster shows, what should the job be now?

Shared by every kind that runs a batch/v1 Job of trainer-image pods (TrainingJob,
OptimizationJob). The rules, in the order they are checked:

1. A terminal phase (Succeeded, Failed) is sticky: nothing is ever started again.
2. A complete Job means success.
3. Past ``activeDeadlineSeconds`` (counted from ``status.startTime``, which is reset when
   a suspended job resumes, as Kubernetes does for Jobs) the job fails with
   ``DeadlineExceeded`` and the running Job is stopped.
4. A failed attempt whose pods were disrupted (condition ``DisruptionTarget``: preemption,
   eviction) restarts the gang as a new attempt without using the backoff budget. For a
   gang of several nodes a disruption restarts it at once, because torchrun cannot go on
   with one rank missing; a single node is simply replaced by the Job controller.
5. An exit code that means "will fail the same way again" (bad input, evaluation gate
   missed) fails the job without a retry.
6. Any other failure uses one unit of ``backoffLimit``: restart the gang as attempt n+1
   (it resumes from the last checkpoint), or fail once the budget is spent. OOMKilled is
   retried like any crash (as a Job or Kubeflow Trainer would; the memory a step needs can
   depend on the data it meets), but a job whose last attempt was OOMKilled fails with the
   reason ``OOMKilled``, which says what to change: ``resources.memory``.
7. Otherwise the current attempt should exist: suspended when the user asks, or while a
   Kueue queue has not admitted it yet.
8. A Pending pod that cannot start says why in the job's conditions
   (:mod:`.pod_diagnosis`), without using the backoff budget:

   - ``Unschedulable`` (the scheduler's message, e.g. ``0/3 nodes are available: 3
     Insufficient nvidia.com/gpu``): the job stays Pending, as a Job does, because
     capacity may come (an autoscaler, other jobs finishing); ``activeDeadlineSeconds``
     bounds the wait. Resources are immutable: to ask for less, recreate the job.
   - ``ImagePullFailed`` (ErrImagePull, ImagePullBackOff, ...): Pending while the kubelet
     retries, then Failed once the pod has been unable to pull for the image-pull grace
     (``MODELLOOP_IMAGE_PULL_GRACE_SECONDS``, like Knative's progress deadline or
     Tekton's image-pull timeout), because a pod waiting for its image holds its GPUs and
     the image is part of the immutable spec. The Job is deleted; no retry. An image
     reference that cannot be parsed (InvalidImageName) fails at once.
   - any other waiting reason (e.g. CreateContainerConfigError: a missing Secret) keeps
     the reason ``Pending`` with the kubelet's message.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from ..api.common import Condition, RunPolicy
from ..api.jobs import JobPhase, JobStatus
from ..status import ConditionType, Reason, set_condition
from .observe import AttemptObservation, JobOutcome, PodOutcome
from .pod_diagnosis import NEVER_PULLABLE, ProblemKind
from .termination import parse_termination_message

DEFAULT_IMAGE_PULL_GRACE = timedelta(minutes=5)
"""How long a pod may fail to pull its image before the job fails (operator default)."""

OOM_KILLED = "OOMKilled"
"""The terminated reason the kubelet reports for a container the OOM killer ended."""

DISRUPTIONS: Mapping[str, str] = {
    "PreemptionByScheduler": "preempted by the scheduler for a higher-priority pod",
    "EvictionByEvictionAPI": "evicted through the Eviction API (node drain)",
    "DeletionByTaintManager": "deleted for a NoExecute taint on its node",
    "TerminationByKubelet": "terminated by the kubelet (node pressure or shutdown)",
    "DeletionByPodGC": "deleted by the pod garbage collector (its node is gone)",
}
"""What each DisruptionTarget reason of Kubernetes means, in words."""


@dataclass(frozen=True)
class RunRecord:
    """What the status remembers between reconciles (and across operator restarts)."""

    phase: JobPhase | None = None
    attempt: int = 0
    failed_attempts: int = 0
    disruptions: int = 0
    start_time: datetime | None = None
    completion_time: datetime | None = None

    @classmethod
    def from_status(cls, status: JobStatus) -> RunRecord:
        """The run-policy part of a job's status."""
        return cls(phase=status.phase, attempt=status.attempts,
                   failed_attempts=status.failed_attempts, disruptions=status.disruptions,
                   start_time=status.start_time, completion_time=status.completion_time)


@dataclass(frozen=True)
class RunDecision:
    """The state a job should be in, and what to do with its Job to get there."""

    phase: JobPhase
    reason: str
    message: str
    attempt: int
    failed_attempts: int
    disruptions: int
    start_time: datetime | None
    completion_time: datetime | None
    run_job: bool = False
    """The Job of ``attempt`` must exist (apply it)."""
    suspend_job: bool = False
    """...with ``spec.suspend`` set (no pods)."""
    stop_job: bool = False
    """Delete the Job of ``attempt`` now (deadline, invalid spec)."""
    sticky: bool = False
    """The job was already terminal: status keeps what it said (only the children are
    tidied)."""

    @property
    def terminal(self) -> bool:
        """Succeeded or Failed."""
        return self.phase.is_terminal

    def starts_new_attempt(self, record: RunRecord) -> bool:
        """Whether this decision moves to a new attempt: status must record it before
        the new Job is created, so that a restart in between cannot lose the count."""
        return self.attempt != record.attempt


def deadline_passed(*, policy: RunPolicy, start_time: datetime | None, now: datetime) -> bool:
    """Whether ``activeDeadlineSeconds`` has run out since ``start_time``."""
    if policy.active_deadline_seconds is None or start_time is None:
        return False
    return now >= start_time + timedelta(seconds=policy.active_deadline_seconds)


def describe_failure(*, attempt: int, observed: AttemptObservation) -> str:
    """One line on why an attempt failed: the root-cause pod, its exit code and reason,
    and the trainer's own message when its termination message is readable."""
    pod: PodOutcome | None = observed.first_failure
    if pod is None:
        why = observed.job_message or observed.job_reason or "no failed pod left to inspect"
        return f"attempt {attempt} failed: {why}"
    code = "unknown exit code" if pod.exit_code is None else f"exit code {pod.exit_code}"
    text = f"attempt {attempt} failed: pod {pod.name} ended with {code}"
    if pod.reason:
        text += f" ({pod.reason})"
    parsed = parse_termination_message(pod.termination_message)
    if parsed.summary is not None and parsed.summary.message:
        text += f": {parsed.summary.message}"
    return text


def _is_running(observed: AttemptObservation) -> bool:
    return observed.ready > 0 or any(p.phase == "Running" for p in observed.pods)


def decide_run(
    *, policy: RunPolicy, record: RunRecord, observed: AttemptObservation, now: datetime,
    num_nodes: int, queued: bool, permanent_exit_codes: Mapping[int, str],
    image_pull_grace: timedelta = DEFAULT_IMAGE_PULL_GRACE,
) -> RunDecision:
    """The next state of a job; see the module docstring for the rules.

    ``observed`` describes the Job of ``record.attempt`` (absent before the first one);
    ``queued`` says a Kueue queue admits the Job (it is created suspended and Kueue
    unsuspends it); ``permanent_exit_codes`` maps exit codes not worth retrying to the
    reason reported; ``image_pull_grace`` is how long a pod may fail to pull its image.
    """
    attempt = max(record.attempt, 1)
    same = RunDecision(
        phase=record.phase or JobPhase.PENDING, reason=Reason.PENDING, message="",
        attempt=attempt, failed_attempts=record.failed_attempts,
        disruptions=record.disruptions, start_time=record.start_time,
        completion_time=record.completion_time)

    if record.phase is not None and record.phase.is_terminal:
        # Sticky. A Job still running here means we stopped half-way (e.g. crashed after
        # writing Failed/DeadlineExceeded but before deleting it): finish stopping it.
        return replace(same, attempt=record.attempt, sticky=True,
                       stop_job=observed.outcome is JobOutcome.ACTIVE)

    if observed.outcome is JobOutcome.COMPLETE:
        return replace(same, phase=JobPhase.SUCCEEDED, reason=Reason.SUCCEEDED,
                       message=f"attempt {attempt} completed", completion_time=now)

    # The clock stops while suspended and restarts on resume (as for Kubernetes Jobs).
    clock = None if record.phase is JobPhase.SUSPENDED else record.start_time
    if deadline_passed(policy=policy, start_time=clock, now=now):
        return replace(
            same, phase=JobPhase.FAILED, reason=Reason.DEADLINE_EXCEEDED, completion_time=now,
            stop_job=observed.exists,
            message=f"activeDeadlineSeconds ({policy.active_deadline_seconds}) exceeded "
                    f"during attempt {attempt}")

    gang_broken = observed.disrupted and num_nodes > 1 and observed.outcome is JobOutcome.ACTIVE
    if observed.outcome is JobOutcome.FAILED or gang_broken:
        if observed.disrupted:
            return replace(
                same, phase=JobPhase.PENDING, reason=Reason.DISRUPTED, attempt=attempt + 1,
                disruptions=record.disruptions + 1, run_job=True,
                suspend_job=policy.suspend or queued,
                message=f"attempt {attempt} was disrupted ({describe_disruptions(observed)}); "
                        f"restarting the gang as attempt {attempt + 1}, which does not count "
                        f"against backoffLimit")
        detail = describe_failure(attempt=attempt, observed=observed)
        root = observed.first_failure
        code = root.exit_code if root is not None else None
        if code is not None and code in permanent_exit_codes:
            return replace(same, phase=JobPhase.FAILED, reason=permanent_exit_codes[code],
                           completion_time=now,
                           message=f"{detail}; not retried: exit code {code} would fail "
                                   f"the same way again")
        failed = record.failed_attempts + 1
        if failed > policy.backoff_limit:
            oom = root is not None and root.reason == OOM_KILLED
            hint = "; the last one ran out of memory: raise resources.memory" if oom else ""
            return replace(same, phase=JobPhase.FAILED,
                           reason=Reason.OOM_KILLED if oom else Reason.BACKOFF_LIMIT_EXCEEDED,
                           failed_attempts=failed, completion_time=now,
                           message=f"{detail}; {failed} failed attempts exceed backoffLimit "
                                   f"{policy.backoff_limit}{hint}")
        return replace(
            same, phase=JobPhase.PENDING, reason=Reason.RETRYING, attempt=attempt + 1,
            failed_attempts=failed, run_job=True, suspend_job=policy.suspend or queued,
            message=f"{detail}; retrying as attempt {attempt + 1} "
                    f"({failed} of {policy.backoff_limit} retries used)")

    if policy.suspend:
        return replace(same, phase=JobPhase.SUSPENDED, reason=Reason.SUSPENDED,
                       run_job=True, suspend_job=True,
                       message=f"suspended by spec.runPolicy.suspend (attempt {attempt})")
    if queued and (not observed.exists or observed.suspended):
        return replace(same, phase=JobPhase.PENDING, reason=Reason.WAITING_FOR_ADMISSION,
                       run_job=True, suspend_job=True,
                       message=f"attempt {attempt} waits for its Kueue queue to admit it")

    resumed = record.phase is JobPhase.SUSPENDED
    start = now if record.start_time is None or resumed else record.start_time
    stuck = observed.stuck
    if stuck is not None and not resumed:
        return _stuck_pod(same, pod=stuck, attempt=attempt, start=start, now=now,
                          image_pull_grace=image_pull_grace)
    if _is_running(observed):
        return replace(same, phase=JobPhase.RUNNING, reason=Reason.RUNNING, run_job=True,
                       start_time=start, message=f"attempt {attempt} is running")
    return replace(same, phase=JobPhase.PENDING,
                   reason=Reason.RESUMED if resumed else Reason.CREATED,
                   run_job=True, start_time=start,
                   message=f"attempt {attempt} is starting")


def describe_disruptions(observed: AttemptObservation) -> str:
    """Which pods were disrupted and by what: preemption and eviction read differently
    to whoever has to act (PriorityClasses vs node drains and spot capacity)."""
    parts = []
    for pod in observed.pods:
        if pod.disrupted:
            why = DISRUPTIONS.get(pod.disruption_reason or "",
                                  pod.disruption_reason or "preempted or evicted")
            parts.append(f"{pod.name}: {why}")
    return "; ".join(parts)


def _stuck_pod(same: RunDecision, *, pod: PodOutcome, attempt: int, start: datetime,
               now: datetime, image_pull_grace: timedelta) -> RunDecision:
    """A Pending pod that cannot start (rule 8): say why, and fail only for an image
    that stays unpullable past the grace."""
    problem = pod.problem
    assert problem is not None
    text = f"attempt {attempt}: pod {pod.name} {problem.describe()}"
    if problem.kind is ProblemKind.UNSCHEDULABLE:
        return replace(same, phase=JobPhase.PENDING, reason=Reason.UNSCHEDULABLE,
                       run_job=True, start_time=start,
                       message=f"{text}; the job stays Pending until the pod fits "
                               f"(resources are immutable: to ask for less, delete and "
                               f"recreate the job)")
    if problem.kind is ProblemKind.CONTAINER_WAITING:
        return replace(same, phase=JobPhase.PENDING, reason=Reason.PENDING, run_job=True,
                       start_time=start, message=text)
    grace = int(image_pull_grace.total_seconds())
    waited = now - problem.since if problem.since is not None else timedelta(0)
    if problem.reason in NEVER_PULLABLE or waited >= image_pull_grace:
        why = "the image reference is invalid" if problem.reason in NEVER_PULLABLE \
            else f"still failing after {int(waited.total_seconds())} s (grace {grace} s)"
        return replace(same, phase=JobPhase.FAILED, reason=Reason.IMAGE_PULL_FAILED,
                       completion_time=now, stop_job=True, start_time=start,
                       message=f"{text}; {why}; not retried: the image is part of the "
                               f"spec, fix it in a new object")
    return replace(same, phase=JobPhase.PENDING, reason=Reason.IMAGE_PULL_FAILED,
                   run_job=True, start_time=start,
                   message=f"{text}; the kubelet keeps retrying; the job fails if the image "
                           f"cannot be pulled within {grace} s of the pod's start")


def invalid_spec(*, record: RunRecord, message: str, now: datetime) -> RunDecision:
    """Fail for a spec that cannot run (it slipped past admission): no retry loop; a
    Job already running for it is stopped."""
    return RunDecision(
        phase=JobPhase.FAILED, reason=Reason.INVALID_SPEC, message=message,
        attempt=record.attempt, failed_attempts=record.failed_attempts,
        disruptions=record.disruptions, start_time=record.start_time,
        completion_time=now, stop_job=record.attempt > 0)


def run_conditions(
    conditions: Sequence[Condition], *, decision: RunDecision, generation: int | None,
    now: datetime,
) -> list[Condition]:
    """The five job conditions for ``decision``: Ready (the summary Argo CD reads: True
    only once the result exists), Progressing, Succeeded, Failed, Suspended."""
    phase, reason, message = decision.phase, decision.reason, decision.message
    out = list(conditions)
    for type_, status in (
        (ConditionType.READY, phase is JobPhase.SUCCEEDED),
        (ConditionType.PROGRESSING, phase in (JobPhase.PENDING, JobPhase.RUNNING)),
        (ConditionType.SUCCEEDED, phase is JobPhase.SUCCEEDED),
        (ConditionType.FAILED, phase is JobPhase.FAILED),
        (ConditionType.SUSPENDED, phase is JobPhase.SUSPENDED),
    ):
        out = set_condition(out, type_=type_, status=status, reason=reason, message=message,
                            observed_generation=generation, now=now)
    return out
