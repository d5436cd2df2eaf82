"""Small builders of Job and Pod JSON as the API server returns them, for unit tests of
observation and run-policy decisions."""

from __future__ import annotations

from typing import Any


def job(*, name: str = "bbc-a1", complete: bool = False, failed: str | None = None,
        failure_target: bool = False, suspend: bool = False, active: int = 0, ready: int = 0,
        ttl: int | None = None) -> dict[str, Any]:
    conditions: list[dict[str, Any]] = []
    if complete:
        conditions.append({"type": "Complete", "status": "True"})
    if failure_target:
        conditions.append({"type": "FailureTarget", "status": "True",
                           "reason": "PodFailurePolicy", "message": "pod failed"})
    if failed is not None:
        conditions.append({"type": "Failed", "status": "True", "reason": failed,
                           "message": "Job has reached the specified backoff limit"})
    spec: dict[str, Any] = {"suspend": suspend}
    if ttl is not None:
        spec["ttlSecondsAfterFinished"] = ttl
    return {"metadata": {"name": name}, "spec": spec,
            "status": {"conditions": conditions, "active": active, "ready": ready}}


def pod(*, index: int, phase: str = "Running", exit_code: int | None = None,
        reason: str | None = None, message: str | None = None, disrupted: bool = False,
        container: str = "trainer", job_name: str = "bbc-a1") -> dict[str, Any]:
    state: dict[str, Any] = {"running": {}}
    if exit_code is not None:
        terminated: dict[str, Any] = {"exitCode": exit_code}
        if reason is not None:
            terminated["reason"] = reason
        if message is not None:
            terminated["message"] = message
        state = {"terminated": terminated}
    conditions = [{"type": "Ready", "status": "True" if phase == "Running" else "False"}]
    if disrupted:
        conditions.append({"type": "DisruptionTarget", "status": "True",
                           "reason": "PreemptionByScheduler"})
    return {
        "metadata": {"name": f"{job_name}-{index}-xyz",
                     "annotations": {"batch.kubernetes.io/job-completion-index": str(index)}},
        "status": {"phase": phase, "conditions": conditions,
                   "containerStatuses": [{"name": container, "state": state}]},
    }
