"""Pure helpers for status: conditions keyed by type, reasons, and the status patch.

Conditions follow the Kubernetes API conventions: one entry per ``type``;
``lastTransitionTime`` moves only when ``status`` changes (so "since when has it been
failing" stays true across reconciles); ``observedGeneration`` says which spec the
condition was computed from. Every reason the operator writes is a constant below, in
one place, so dashboards and tests can rely on the spelling.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Final

from .api.common import Condition, ConditionStatus


class ConditionType:
    """Condition types, shared by all kinds (kind-specific ones noted)."""

    READY: Final = "Ready"
    PROGRESSING: Final = "Progressing"
    DEGRADED: Final = "Degraded"
    SUCCEEDED: Final = "Succeeded"  # jobs
    FAILED: Final = "Failed"  # jobs
    SUSPENDED: Final = "Suspended"  # jobs
    ACCEPTED: Final = "Accepted"  # OptimizationJob


class Reason:
    """CamelCase reasons of conditions and Events."""

    CREATED: Final = "Created"
    PENDING: Final = "Pending"
    RUNNING: Final = "Running"
    RETRYING: Final = "Retrying"
    DISRUPTED: Final = "Disrupted"
    SUSPENDED: Final = "Suspended"
    RESUMED: Final = "Resumed"
    WAITING_FOR_ADMISSION: Final = "WaitingForAdmission"
    SUCCEEDED: Final = "Succeeded"
    FAILED: Final = "Failed"
    BACKOFF_LIMIT_EXCEEDED: Final = "BackoffLimitExceeded"
    DEADLINE_EXCEEDED: Final = "DeadlineExceeded"
    INVALID_SPEC: Final = "InvalidSpec"
    INVALID_INPUT: Final = "InvalidInput"
    EVALUATION_GATE_MISSED: Final = "EvaluationGateMissed"
    OPTIMIZATION_REJECTED: Final = "OptimizationRejected"
    TERMINATION_MESSAGE_UNREADABLE: Final = "TerminationMessageUnreadable"
    UNSCHEDULABLE: Final = "Unschedulable"
    IMAGE_PULL_FAILED: Final = "ImagePullFailed"
    OOM_KILLED: Final = "OOMKilled"
    CHILD_CONFLICT: Final = "ChildConflict"
    CHILD_REJECTED: Final = "ChildRejected"
    CHILDREN_DELETED: Final = "ChildrenDeleted"
    QUEUED: Final = "Queued"


def get_condition(conditions: Sequence[Condition], type_: str) -> Condition | None:
    """The condition of ``type_``, or None."""
    return next((c for c in conditions if c.type == type_), None)


def is_true(conditions: Sequence[Condition], type_: str) -> bool:
    """Whether the condition of ``type_`` exists and is True."""
    found = get_condition(conditions, type_)
    return found is not None and found.status is ConditionStatus.TRUE


def set_condition(
    conditions: Sequence[Condition], *, type_: str, status: bool | ConditionStatus,
    reason: str, message: str = "", observed_generation: int | None, now: datetime,
) -> list[Condition]:
    """A new list with the condition of ``type_`` set; the input is not modified.

    ``lastTransitionTime`` is kept when the status is unchanged, so that re-running a
    reconcile with the same outcome produces an identical list (and no status patch).
    """
    if isinstance(status, bool):
        status = ConditionStatus.TRUE if status else ConditionStatus.FALSE
    old = get_condition(conditions, type_)
    transition = old.last_transition_time if old is not None and old.status is status else now
    new = Condition(type=type_, status=status, reason=reason, message=message,
                    last_transition_time=transition, observed_generation=observed_generation)
    out = [c for c in conditions if c.type != type_]
    out.append(new)
    return sorted(out, key=lambda c: c.type)


def merge_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON merge patch (RFC 7386) that turns ``old`` into ``new``.

    Keys missing from ``new`` become ``None`` (delete), nested objects are diffed key by
    key, and lists are replaced whole. An empty result means nothing changed, which is
    how the reconcilers skip needless status writes.
    """
    patch: dict[str, Any] = {}
    for key in old.keys() - new.keys():
        patch[key] = None
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, Mapping) and isinstance(before, Mapping):
            sub = merge_patch(before, value)
            if sub:
                patch[key] = sub
        elif key not in old or before != value:
            patch[key] = value
    return patch


QUEUED_MESSAGE: Final = "seen by the operator; waiting for its first reconcile"


def queued_status(*, now: datetime) -> dict[str, Any]:
    """The status written the moment the operator first sees an object without one (any
    kind): ``Pending``, ``Progressing=True`` with reason ``Queued``.

    It says "the operator has this object" before the first reconcile reads anything or
    creates a child, which in a burst of thousands of new objects can take a while. It
    deliberately has no ``observedGeneration``: nothing has been computed from the spec
    yet (Argo CD's health checks read that as still progressing). The first reconcile
    replaces all of it."""
    conditions = set_condition([], type_=ConditionType.PROGRESSING, status=True,
                               reason=Reason.QUEUED, message=QUEUED_MESSAGE,
                               observed_generation=None, now=now)
    return {"phase": "Pending",
            "conditions": [c.model_dump(mode="json", exclude_none=True) for c in conditions]}
