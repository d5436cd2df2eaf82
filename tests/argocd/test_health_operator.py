"""The health checks read the conditions the operator really writes: job conditions built by
the operator's own run_conditions() helper, for every phase and reason a job can be in,
show in Argo CD as the health a user expects."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from modelloop_operator.api.jobs import JobPhase
from modelloop_operator.reconcilers.runpolicy import RunDecision, run_conditions
from modelloop_operator.status import Reason

from tests.argocd.argo_lua import run_health

CHECKS = Path(__file__).resolve().parents[2] / "argocd/resource_customizations/modelloop.dev"
NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)

CASES = [
    (JobPhase.PENDING, Reason.CREATED, "Progressing"),
    (JobPhase.PENDING, Reason.WAITING_FOR_ADMISSION, "Progressing"),
    (JobPhase.PENDING, Reason.RETRYING, "Progressing"),
    (JobPhase.PENDING, Reason.DISRUPTED, "Progressing"),
    (JobPhase.RUNNING, Reason.RUNNING, "Progressing"),
    (JobPhase.SUSPENDED, Reason.SUSPENDED, "Suspended"),
    (JobPhase.SUCCEEDED, Reason.SUCCEEDED, "Healthy"),
    (JobPhase.FAILED, Reason.BACKOFF_LIMIT_EXCEEDED, "Degraded"),
    (JobPhase.FAILED, Reason.DEADLINE_EXCEEDED, "Degraded"),
    (JobPhase.FAILED, Reason.INVALID_SPEC, "Degraded"),
    (JobPhase.FAILED, Reason.INVALID_INPUT, "Degraded"),
    (JobPhase.FAILED, Reason.EVALUATION_GATE_MISSED, "Degraded"),
    (JobPhase.FAILED, Reason.OPTIMIZATION_REJECTED, "Degraded"),
]


@pytest.mark.parametrize("kind", ["TrainingJob", "OptimizationJob"])
@pytest.mark.parametrize(("phase", "reason", "health"), CASES)
def test_operator_written_job_status_maps_to_argo_health(kind: str, phase: JobPhase,
                                                        reason: str, health: str) -> None:
    decision = RunDecision(phase=phase, reason=reason, message=f"because {reason}",
                           attempt=1, failed_attempts=0, disruptions=0, start_time=NOW,
                           completion_time=None)
    conditions = run_conditions([], decision=decision, generation=4, now=NOW)
    obj = {"apiVersion": "modelloop.dev/v1alpha1", "kind": kind,
           "metadata": {"name": "x", "namespace": "team-a", "generation": 4},
           "status": {"phase": str(phase), "observedGeneration": 4,
                      "conditions": [c.model_dump(mode="json", exclude_none=True)
                                     for c in conditions]}}
    result = run_health((CHECKS / kind / "health.lua").read_text(), obj)
    assert result.status == health
    assert result.message == f"{reason}: because {reason}"
