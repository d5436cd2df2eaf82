"""The health checks read the conditions the operator really writes: job conditions built by
the operator's own run_conditions() helper, for every phase and reason a job can be in, and
a ModelDeployment's status built by serving_status() for every rollout phase, show in Argo
CD as the health a user expects."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from modelloop_operator.api.jobs import JobPhase
from modelloop_operator.api.modeldeployment import (
    CanaryStep,
    DeploymentModelSource,
    ModelDeploymentStatus,
    RolloutPhase,
    RolloutStrategy,
    ServedModel,
)
from modelloop_operator.reconcilers.deployment_status import (
    DeploymentObservation,
    ServingObservation,
    observe_deployment,
    serving_status,
)
from modelloop_operator.reconcilers.rollout import RolloutState, to_status
from modelloop_operator.reconcilers.runpolicy import RunDecision, run_conditions
from modelloop_operator.reconcilers.sources import resolve_served_model
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


# --- ModelDeployment: the rollout phase the operator writes, as Argo CD health ------------

V1 = ServedModel(archive_uri="pvc://m/v1/model.mar", version="v1", checksum="sha256:1")
V2 = ServedModel(archive_uri="pvc://m/v2/model.mar", version="v2", checksum="sha256:2")
STEPS = [CanaryStep(weight=25), CanaryStep(weight=50)]


@pytest.mark.parametrize(("phase", "step", "health"), [
    (RolloutPhase.IDLE, None, "Healthy"),
    (RolloutPhase.PROGRESSING, 0, "Progressing"),
    (RolloutPhase.PROMOTING, 2, "Progressing"),
    (RolloutPhase.ROLLED_BACK, None, "Degraded"),
])
def test_operator_written_rollout_phase_maps_to_argo_health(
        phase: RolloutPhase, step: int | None, health: str) -> None:
    """health.lua reads the conditions, not ``status.rollout.phase``: the operator's
    conditions already say the same (a rolled-back canary sets Degraded=True, reason
    RolledBack), so both agree for every phase."""
    idle = phase is RolloutPhase.IDLE
    state = RolloutState(stable=V1, canary=None if idle else V2, phase=phase, step=step,
                         last_step_time=NOW, message=f"canary v2: {phase}")
    ready = observe_deployment({
        "metadata": {"generation": 1},
        "spec": {"replicas": 2, "template": {"metadata": {"annotations": {
            "modelloop.dev/model-uri": V1.archive_uri}}}},
        "status": {"observedGeneration": 1, "replicas": 2, "readyReplicas": 2,
                   "updatedReplicas": 2, "availableReplicas": 2}})
    obs = ServingObservation(
        source=resolve_served_model(source=DeploymentModelSource(archive_uri=V2.archive_uri),
                                    referenced=None),
        state=state, strategy=RolloutStrategy.CANARY, stable=ready,
        canary=DeploymentObservation(), url="http://news.team-a.svc:8080",
        rollout=to_status(state, strategy=RolloutStrategy.CANARY, steps=STEPS))
    status = serving_status(old=ModelDeploymentStatus(), obs=obs, generation=4, now=NOW)
    written = status.model_dump(mode="json", exclude_none=True)
    assert written.get("rollout", {}).get("phase") == (None if idle else phase.value)
    obj = {"apiVersion": "modelloop.dev/v1alpha1", "kind": "ModelDeployment",
           "metadata": {"name": "news", "namespace": "team-a", "generation": 4},
           "status": written}
    result = run_health((CHECKS / "ModelDeployment" / "health.lua").read_text(), obj)
    assert result.status == health
    if not idle:
        assert "canary v2" in result.message
