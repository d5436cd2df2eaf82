"""ModelDeployment decisions from snapshots: which model a source gives, and the status
(reconcilers/sources.py, reconcilers/deployment_status.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from modelloop_operator.api.modeldeployment import (
    DeploymentModelSource,
    ModelDeploymentPhase,
    ModelDeploymentStatus,
    RolloutStrategy,
    ServedModel,
)
from modelloop_operator.reconcilers.deployment_status import (
    DeploymentObservation,
    ServingObservation,
    invalid_spec_status,
    observe_deployment,
    serving_status,
)
from modelloop_operator.reconcilers.modeldeployment import references
from modelloop_operator.reconcilers.rollout import RolloutPhase, RolloutState
from modelloop_operator.reconcilers.sources import (
    SourceReason,
    SourceState,
    resolve_served_model,
    uri_version,
)
from modelloop_operator.status import get_condition

from .test_optimization_status import training_job

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
V1 = ServedModel(archive_uri="pvc://m/v1/model.mar", version="v1", checksum="sha256:1")
V2 = ServedModel(archive_uri="pvc://m/v2/model.mar", version="v2", checksum="sha256:2")


def optimization_job(*, phase: str, accepted: str | None = "True",
                     archive: str | None = "pvc://models/bbc/opt1/model.mar") -> dict[str, Any]:
    conditions = [] if accepted is None else [{"type": "Accepted", "status": accepted,
                                               "reason": "x", "message": ""}]
    status: dict[str, Any] = {"phase": phase, "conditions": conditions,
                              "message": "accuracy dropped",
                              "model": {"uri": "pvc://models/bbc/opt1", "checksum": "sha256:o"},
                              "lineage": {"trainingJob": "bbc", "dataset": "builtin://bbc-news",
                                          "baseModel": "builtin://all-minilm-l6-v2"}}
    if archive:
        status["archiveUri"] = archive
    return {"metadata": {"name": "bbc-int8"}, "spec": {}, "status": status}


OJ_SOURCE = DeploymentModelSource.model_validate({"optimizationJobRef": {"name": "bbc-int8"}})
TJ_SOURCE = DeploymentModelSource.model_validate({"trainingJobRef": {"name": "bbc"}})


class TestServedModel:
    def test_accepted_optimization_job_serves_its_archive_with_full_lineage(self) -> None:
        found = resolve_served_model(source=OJ_SOURCE,
                                     referenced=optimization_job(phase="Succeeded"))
        assert found.ready and found.served is not None
        served = found.served
        assert served.archive_uri == "pvc://models/bbc/opt1/model.mar"
        assert (served.version, served.source) == ("bbc-int8", "OptimizationJob/bbc-int8")
        assert served.checksum == "sha256:o"
        assert served.lineage is not None
        assert (served.lineage.optimization_job, served.lineage.training_job,
                served.lineage.dataset) == ("bbc-int8", "bbc", "builtin://bbc-news")

    def test_running_optimization_job_is_not_ready(self) -> None:
        found = resolve_served_model(source=OJ_SOURCE, referenced=optimization_job(
            phase="Running", accepted="Unknown", archive=None))
        assert (found.state, found.reason) == (SourceState.WAITING, SourceReason.WAITING)

    def test_missing_optimization_job_is_not_found(self) -> None:
        found = resolve_served_model(source=OJ_SOURCE, referenced=None)
        assert (found.state, found.reason) == (SourceState.WAITING, SourceReason.NOT_FOUND)

    def test_rejected_optimization_job_is_a_failed_source(self) -> None:
        found = resolve_served_model(source=OJ_SOURCE, referenced=optimization_job(
            phase="Failed", accepted="False", archive=None))
        assert (found.state, found.reason) == (SourceState.FAILED, SourceReason.FAILED)
        assert "accuracy dropped" in found.message

    def test_succeeded_training_job_serves_its_model_directory(self) -> None:
        found = resolve_served_model(source=TJ_SOURCE,
                                     referenced=training_job(phase="Succeeded"))
        assert found.served is not None
        assert found.served.archive_uri == "pvc://models/bbc/run1"
        assert found.served.source == "TrainingJob/bbc"

    def test_archive_uri_is_served_as_is_with_a_stable_version(self) -> None:
        source = DeploymentModelSource.model_validate({"archiveUri": "s3://b/m.mar"})
        found = resolve_served_model(source=source, referenced=None)
        assert found.served is not None
        assert found.served.version == uri_version("s3://b/m.mar")
        assert found.served.version == resolve_served_model(
            source=source, referenced=None).served.version  # type: ignore[union-attr]

    def test_who_references_what(self) -> None:
        obj = {"spec": {"model": {"optimizationJobRef": {"name": "bbc-int8"}}}}
        assert references(obj, kind="OptimizationJob", name="bbc-int8")
        assert not references(obj, kind="TrainingJob", name="bbc-int8")


def deployment(*, replicas: int = 2, ready: int = 2, updated: int = 2, generation: int = 1,
               observed: int = 1, uri: str = "pvc://m/v1/model.mar") -> dict[str, Any]:
    return {"metadata": {"generation": generation},
            "spec": {"replicas": replicas, "template": {"metadata": {"annotations": {
                "modelloop.dev/model-uri": uri}}}},
            "status": {"observedGeneration": observed, "replicas": replicas,
                       "readyReplicas": ready, "updatedReplicas": updated,
                       "availableReplicas": ready}}


def observation(*, state: RolloutState, source_found: Any,
                stable: DeploymentObservation) -> ServingObservation:
    return ServingObservation(source=source_found, state=state,
                              strategy=RolloutStrategy.ROLLING_UPDATE, stable=stable,
                              canary=DeploymentObservation(), url="http://bbc.ns.svc:8080",
                              rollout=None)


class TestDeploymentObservation:
    def test_rolled_out_needs_every_replica_updated_and_available(self) -> None:
        assert observe_deployment(deployment()).rolled_out
        assert not observe_deployment(deployment(updated=1)).rolled_out
        assert not observe_deployment(deployment(generation=2)).rolled_out
        assert not observe_deployment(None).rolled_out
        assert observe_deployment(deployment()).model_uri == "pvc://m/v1/model.mar"


class TestStatus:
    def _ready_source(self) -> Any:
        return resolve_served_model(source=OJ_SOURCE,
                                    referenced=optimization_job(phase="Succeeded"))

    def test_serving_and_rolled_out_is_ready(self) -> None:
        obs = observation(state=RolloutState(stable=V1), source_found=self._ready_source(),
                          stable=observe_deployment(deployment()))
        status = serving_status(old=ModelDeploymentStatus(), obs=obs, generation=3, now=NOW)
        assert status.phase is ModelDeploymentPhase.READY
        assert (status.replicas, status.ready_replicas) == (2, 2)
        assert status.url == "http://bbc.ns.svc:8080"
        assert status.active_model == V1
        assert status.observed_generation == 3
        ready = get_condition(status.conditions, "Ready")
        assert ready is not None and ready.status.value == "True"

    def test_missing_source_and_nothing_served_is_not_ready_with_the_reason(self) -> None:
        found = resolve_served_model(source=OJ_SOURCE, referenced=None)
        obs = observation(state=RolloutState(), source_found=found,
                          stable=DeploymentObservation())
        status = serving_status(old=ModelDeploymentStatus(), obs=obs, generation=1, now=NOW)
        assert status.phase is ModelDeploymentPhase.PENDING
        ready = get_condition(status.conditions, "Ready")
        assert ready is not None and ready.status.value == "False"
        assert ready.reason == "SourceNotFound"
        assert status.url is None

    def test_failed_source_and_nothing_served_is_failed(self) -> None:
        found = resolve_served_model(source=OJ_SOURCE, referenced=optimization_job(
            phase="Failed", accepted="False", archive=None))
        obs = observation(state=RolloutState(), source_found=found,
                          stable=DeploymentObservation())
        status = serving_status(old=ModelDeploymentStatus(), obs=obs, generation=1, now=NOW)
        assert status.phase is ModelDeploymentPhase.FAILED
        ready = get_condition(status.conditions, "Ready")
        assert ready is not None and ready.reason == "SourceFailed"

    def test_failed_new_source_keeps_the_old_model_ready_but_degraded(self) -> None:
        found = resolve_served_model(source=OJ_SOURCE, referenced=optimization_job(
            phase="Failed", accepted="False", archive=None))
        obs = observation(state=RolloutState(stable=V1), source_found=found,
                          stable=observe_deployment(deployment()))
        status = serving_status(old=ModelDeploymentStatus(), obs=obs, generation=2, now=NOW)
        ready = get_condition(status.conditions, "Ready")
        degraded = get_condition(status.conditions, "Degraded")
        progressing = get_condition(status.conditions, "Progressing")
        assert ready is not None and ready.status.value == "True"
        assert degraded is not None and degraded.reason == "SourceFailed"
        assert progressing is not None and progressing.status.value == "False"
        assert status.active_model == V1
        assert status.phase is ModelDeploymentPhase.DEGRADED

    def test_rolling_pods_are_progressing(self) -> None:
        obs = observation(state=RolloutState(stable=V1), source_found=self._ready_source(),
                          stable=observe_deployment(deployment(updated=1, ready=1)))
        status = serving_status(old=ModelDeploymentStatus(), obs=obs, generation=1, now=NOW)
        assert status.phase is ModelDeploymentPhase.PROGRESSING
        progressing = get_condition(status.conditions, "Progressing")
        assert progressing is not None and progressing.reason == "RollingUpdate"

    def test_rolled_back_canary_is_degraded(self) -> None:
        state = RolloutState(stable=V1, canary=V2, phase=RolloutPhase.ROLLED_BACK,
                             message="canary v2 rolled back: drift")
        obs = observation(state=state, source_found=self._ready_source(),
                          stable=observe_deployment(deployment()))
        status = serving_status(old=ModelDeploymentStatus(), obs=obs, generation=1, now=NOW)
        degraded = get_condition(status.conditions, "Degraded")
        assert degraded is not None and degraded.reason == "RolledBack"
        assert "drift" in degraded.message

    def test_scaled_to_zero_is_not_ready_for_that_reason(self) -> None:
        obs = observation(state=RolloutState(stable=V1), source_found=self._ready_source(),
                          stable=observe_deployment(deployment(replicas=0, ready=0,
                                                               updated=0)))
        status = serving_status(old=ModelDeploymentStatus(), obs=obs, generation=1, now=NOW)
        ready = get_condition(status.conditions, "Ready")
        assert ready is not None and ready.reason == "ScaledToZero"

    def test_status_keeps_the_monitoring_fields(self) -> None:
        old = ModelDeploymentStatus.model_validate({"analysis": {"consecutiveFailures": 2}})
        obs = observation(state=RolloutState(stable=V1), source_found=self._ready_source(),
                          stable=observe_deployment(deployment()))
        status = serving_status(old=old, obs=obs, generation=1, now=NOW)
        assert status.analysis is not None and status.analysis.consecutive_failures == 2

    def test_invalid_spec_leaves_what_serves_and_says_why(self) -> None:
        old = ModelDeploymentStatus(active_model=V1, ready_replicas=1)
        status = invalid_spec_status(old=old, problem="spec.replicas: bad", generation=4,
                                     now=NOW)
        assert status.phase is ModelDeploymentPhase.FAILED
        assert status.active_model == V1
        ready = get_condition(status.conditions, "Ready")
        assert ready is not None and ready.status.value == "True"
        assert get_condition(status.conditions, "Degraded") is not None
