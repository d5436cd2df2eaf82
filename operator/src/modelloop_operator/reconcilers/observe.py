"""What the cluster says about one attempt: its batch/v1 Job and that Job's pods.

Turning raw Job and Pod JSON into a small frozen :class:`AttemptObservation` keeps the
run-policy decisions (:mod:`.runpolicy`) free of Kubernetes field paths, and makes every
case (a disrupted pod, a pod killed before it wrote a message) easy to build in a unit
test. Pure; no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from .pod_diagnosis import PodProblem, diagnose_pod
from .termination import parse_termination_message

COMPLETION_INDEX: Final = "batch.kubernetes.io/job-completion-index"
DISRUPTION_TARGET: Final = "DisruptionTarget"


class JobOutcome(StrEnum):
    """Where a Job stands, from its conditions."""

    ABSENT = "Absent"
    ACTIVE = "Active"
    COMPLETE = "Complete"
    FAILED = "Failed"


@dataclass(frozen=True)
class PodOutcome:
    """One pod of an attempt, reduced to what the run policy and the status need."""

    name: str
    index: int | None
    phase: str
    disrupted: bool
    exit_code: int | None = None
    reason: str | None = None
    termination_message: str | None = None
    disruption_reason: str | None = None
    """The DisruptionTarget condition's reason (PreemptionByScheduler,
    EvictionByEvictionAPI, DeletionByTaintManager, TerminationByKubelet, ...)."""
    problem: PodProblem | None = None
    """Why a Pending pod is not running (unschedulable, image pull, ...)."""


@dataclass(frozen=True)
class AttemptObservation:
    """One attempt's Job and pods, as observed in one snapshot."""

    outcome: JobOutcome
    suspended: bool = False
    active: int = 0
    ready: int = 0
    job_reason: str | None = None
    job_message: str | None = None
    ttl_seconds_after_finished: int | None = None
    pods: tuple[PodOutcome, ...] = ()

    @property
    def exists(self) -> bool:
        """Whether the attempt's Job exists."""
        return self.outcome is not JobOutcome.ABSENT

    @property
    def disrupted(self) -> bool:
        """Whether any pod was preempted or evicted (condition DisruptionTarget)."""
        return any(pod.disrupted for pod in self.pods)

    @property
    def first_failure(self) -> PodOutcome | None:
        """The failed, non-disrupted pod with the lowest index: the likely root cause
        (the other ranks usually fail only because this one went away)."""
        failed = [p for p in self.pods if p.phase == "Failed" and not p.disrupted]
        return min(failed, key=_order, default=None)

    @property
    def stuck(self) -> PodOutcome | None:
        """The Pending pod with a problem and the lowest index: what holds the gang up."""
        return min((p for p in self.pods if p.problem is not None), key=_order, default=None)

    @property
    def leader(self) -> PodOutcome | None:
        """The succeeded pod of rank 0 (or the lowest index), whose message holds the
        results."""
        done = [p for p in self.pods if p.phase == "Succeeded"]
        return min(done, key=_order, default=None)


def _order(pod: PodOutcome) -> tuple[int, str]:
    return (pod.index if pod.index is not None else 1 << 30, pod.name)


def _true_conditions(obj: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    conditions = obj.get("status", {}).get("conditions") or []
    return {c.get("type", ""): c for c in conditions if c.get("status") == "True"}


def _index(pod: Mapping[str, Any]) -> int | None:
    meta = pod.get("metadata", {})
    raw = (meta.get("annotations") or {}).get(COMPLETION_INDEX) or (
        meta.get("labels") or {}).get(COMPLETION_INDEX)
    try:
        return int(raw) if raw is not None else None
    except ValueError:
        return None


def _program_exit_code(message: str | None) -> int | None:
    """The trainer's own non-zero exit code from its termination message, if it wrote one.

    Under torchrun the container's exit code is torchrun's, 1 whenever a worker fails; the
    worker's code (2 bad input, 3 gate missed, 4 rejected: docs/contracts.md) is what tells
    a permanent failure from a retryable one, and only the message carries it.
    """
    parsed = parse_termination_message(message)
    code = parsed.summary.exit_code if parsed.summary is not None else None
    return code if code else None


def observe_pod(pod: Mapping[str, Any], *, container: str | None = None) -> PodOutcome:
    """Reduce one pod: phase, disruption, and the terminated state of ``container`` (the
    first container when None)."""
    status = pod.get("status", {})
    statuses = status.get("containerStatuses") or []
    chosen = next((s for s in statuses if container is None or s.get("name") == container),
                  None)
    terminated = ((chosen or {}).get("state") or {}).get("terminated") or {}
    exit_code = terminated.get("exitCode")
    if isinstance(exit_code, int) and exit_code != 0:
        exit_code = _program_exit_code(terminated.get("message")) or exit_code
    disruption = _true_conditions(pod).get(DISRUPTION_TARGET)
    return PodOutcome(
        name=pod.get("metadata", {}).get("name", ""),
        index=_index(pod),
        phase=status.get("phase", "Unknown"),
        disrupted=disruption is not None,
        exit_code=exit_code if isinstance(exit_code, int) else None,
        reason=terminated.get("reason"),
        termination_message=terminated.get("message"),
        disruption_reason=(disruption or {}).get("reason"),
        problem=diagnose_pod(pod),
    )


def observe_attempt(*, job: Mapping[str, Any] | None, pods: Sequence[Mapping[str, Any]],
                    container: str | None = None) -> AttemptObservation:
    """Summarise an attempt's Job (None when absent) and its pods."""
    observed_pods = tuple(sorted((observe_pod(p, container=container) for p in pods),
                                 key=_order))
    if job is None:
        return AttemptObservation(outcome=JobOutcome.ABSENT, pods=observed_pods)
    spec = job.get("spec", {})
    status = job.get("status", {})
    conditions = _true_conditions(job)
    reason = message = None
    if "Complete" in conditions:
        outcome = JobOutcome.COMPLETE
    elif "Failed" in conditions or "FailureTarget" in conditions:
        # FailureTarget comes first (pods may still be terminating); for us the attempt
        # has failed either way, and its pods go with the Job when we delete it.
        outcome = JobOutcome.FAILED
        failed = conditions.get("Failed") or conditions["FailureTarget"]
        reason, message = failed.get("reason"), failed.get("message")
    else:
        outcome = JobOutcome.ACTIVE
    ttl = spec.get("ttlSecondsAfterFinished")
    return AttemptObservation(
        outcome=outcome,
        suspended=bool(spec.get("suspend")),
        active=int(status.get("active") or 0),
        ready=int(status.get("ready") or 0),
        job_reason=reason,
        job_message=message,
        ttl_seconds_after_finished=ttl if isinstance(ttl, int) else None,
        pods=observed_pods,
    )
