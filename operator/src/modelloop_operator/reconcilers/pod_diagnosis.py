"""Why a job's pod is not running yet: the scheduler's and the kubelet's own words.

A pod that cannot be scheduled (too many GPUs asked for, a taint nobody tolerates) or
whose image cannot be pulled stays ``Pending`` without ever failing, so the Job above it
never fails either: without a look at the pod the job would wait silently forever. This
module reads one Pending pod and names the problem, with the message that explains it
(``0/3 nodes are available: 3 Insufficient nvidia.com/gpu``); the run policy
(:mod:`.runpolicy`) decides what to do about it. Pure; no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Final

IMAGE_PULL_REASONS: Final = frozenset({
    "ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull", "InvalidImageName",
    "RegistryUnavailable", "SignatureValidationFailed",
})
"""Waiting reasons of a container whose image the kubelet cannot get."""

NEVER_PULLABLE: Final = frozenset({"InvalidImageName"})
"""Image problems no retry of the kubelet can fix (the reference cannot be parsed)."""

STARTING_REASONS: Final = frozenset({"ContainerCreating", "PodInitializing"})
"""Waiting reasons of a container that is simply on its way."""


class ProblemKind(StrEnum):
    """What keeps a pod from running."""

    UNSCHEDULABLE = "Unschedulable"
    IMAGE_PULL = "ImagePull"
    CONTAINER_WAITING = "ContainerWaiting"
    """Any other waiting reason (e.g. CreateContainerConfigError: a missing Secret)."""


@dataclass(frozen=True)
class PodProblem:
    """One Pending pod's problem, as the scheduler or the kubelet reported it."""

    kind: ProblemKind
    reason: str
    """The scheduler's or kubelet's reason (Unschedulable, ImagePullBackOff, ...)."""
    message: str
    container: str | None = None
    image: str | None = None
    since: datetime | None = None
    """For image problems: when the pod was bound to its node (the kubelet has been
    trying to pull since then); for scheduling: when PodScheduled turned False."""

    def describe(self) -> str:
        """The problem in one line, in the words of whoever reported it."""
        if self.kind is ProblemKind.UNSCHEDULABLE:
            return f"cannot be scheduled: {self.message or self.reason}"
        what = f"container {self.container}" if self.container else "a container"
        if self.kind is ProblemKind.IMAGE_PULL:
            head = f"cannot pull image {self.image!r}" if self.image else "cannot pull its image"
            return f"{head} ({self.reason}: {self.message})" if self.message \
                else f"{head} ({self.reason})"
        tail = f": {self.message}" if self.message else ""
        return f"{what} is waiting ({self.reason}{tail})"


def parse_time(value: object) -> datetime | None:
    """An RFC 3339 timestamp from the API server, or None."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def _condition(status: Mapping[str, Any], type_: str) -> Mapping[str, Any] | None:
    return next((c for c in status.get("conditions") or [] if c.get("type") == type_), None)


def _waiting_problem(status: Mapping[str, Any], scheduled: Mapping[str, Any] | None,
                     ) -> PodProblem | None:
    """The first container (init containers first: they run first) that waits for a
    reason other than just starting."""
    for entry in [*(status.get("initContainerStatuses") or []),
                  *(status.get("containerStatuses") or [])]:
        waiting = (entry.get("state") or {}).get("waiting") or {}
        reason = waiting.get("reason")
        if not reason or reason in STARTING_REASONS:
            continue
        image_problem = reason in IMAGE_PULL_REASONS
        return PodProblem(
            kind=ProblemKind.IMAGE_PULL if image_problem else ProblemKind.CONTAINER_WAITING,
            reason=str(reason), message=str(waiting.get("message") or ""),
            container=entry.get("name"), image=entry.get("image"),
            since=parse_time((scheduled or {}).get("lastTransitionTime"))
            or parse_time(status.get("startTime")))
    return None


def diagnose_pod(pod: Mapping[str, Any]) -> PodProblem | None:
    """What keeps a Pending pod from running, or None (not Pending, or just starting).

    Reads what Kubernetes itself writes: the ``PodScheduled=False`` condition with reason
    ``Unschedulable`` and the scheduler's message, and the containers' ``waiting`` state
    (``ErrImagePull``, ``ImagePullBackOff``, ``CreateContainerConfigError``...).
    """
    if pod.get("metadata", {}).get("deletionTimestamp"):
        return None
    status = pod.get("status") or {}
    if status.get("phase", "Pending") != "Pending":
        return None
    scheduled = _condition(status, "PodScheduled")
    if scheduled is not None and scheduled.get("status") == "False" \
            and scheduled.get("reason") == "Unschedulable":
        return PodProblem(kind=ProblemKind.UNSCHEDULABLE, reason="Unschedulable",
                          message=" ".join(str(scheduled.get("message") or "").split()),
                          since=parse_time(scheduled.get("lastTransitionTime")))
    if scheduled is not None and scheduled.get("status") != "True":
        return None
    return _waiting_problem(status, scheduled)
