"""The operator's own metrics registry."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from modelloop_operator.api.common import TriggerCheck
from modelloop_operator.config import OperatorConfig
from modelloop_operator.metrics import OperatorMetrics
from modelloop_operator.reconcilers import modeldeployment
from modelloop_operator.reconcilers.modeldeployment import (
    MODEL_DEPLOYMENTS,
    reconcile_model_deployment,
)
from modelloop_operator.reconcilers.retrain_runs import retrain_reason
from modelloop_operator.reconcilers.runtime import Runtime
from prometheus_client import generate_latest

from .memory_kube import ClaimingKube


def sample(metrics: OperatorMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_each_instance_has_its_own_registry() -> None:
    first, second = OperatorMetrics(), OperatorMetrics()
    with first.reconciling(kind="TrainingJob", trigger="create"):
        pass
    assert sample(first, "modelloop_reconcile_total", kind="TrainingJob", trigger="create") == 1
    assert sample(second, "modelloop_reconcile_total", kind="TrainingJob",
                  trigger="create") is None


def test_errors_are_counted_by_type_and_re_raised() -> None:
    metrics = OperatorMetrics()
    with pytest.raises(KeyError), metrics.reconciling(kind="TrainingJob", trigger="timer"):
        raise KeyError("x")
    assert sample(metrics, "modelloop_reconcile_errors_total", kind="TrainingJob",
                  error="KeyError") == 1
    assert sample(metrics, "modelloop_reconcile_duration_seconds_count",
                  kind="TrainingJob") == 1


def test_objects_by_phase_follow_each_object() -> None:
    metrics = OperatorMetrics()
    metrics.set_phase(kind="TrainingJob", key="a", phase="Running")
    metrics.set_phase(kind="TrainingJob", key="b", phase="Running")
    metrics.set_phase(kind="TrainingJob", key="a", phase="Succeeded")
    assert sample(metrics, "modelloop_objects", kind="TrainingJob", phase="Running") == 1
    assert sample(metrics, "modelloop_objects", kind="TrainingJob", phase="Succeeded") == 1
    metrics.set_phase(kind="TrainingJob", key="b", phase=None)
    assert sample(metrics, "modelloop_objects", kind="TrainingJob", phase="Running") == 0


def test_process_and_platform_series_are_on_the_operators_registry() -> None:
    names = {metric.name for metric in OperatorMetrics().registry.collect()}
    assert {"process_cpu_seconds", "process_resident_memory_bytes", "process_start_time_seconds",
            "process_open_fds", "python_info", "python_gc_objects_collected"} <= names
    assert (sample(OperatorMetrics(), "process_resident_memory_bytes") or 0) > 0


def test_retrains_are_counted_by_namespace_and_reason() -> None:
    metrics = OperatorMetrics()
    metrics.retrain_started(namespace="team-a", reason="drift")
    metrics.retrain_started(namespace="team-a", reason="drift")
    metrics.retrain_started(namespace="team-b", reason="drift+custom")
    assert sample(metrics, "modelloop_retrains_total", model_namespace="team-a",
                  reason="drift") == 2
    assert sample(metrics, "modelloop_retrains_total", model_namespace="team-b",
                  reason="drift+custom") == 1
    assert "modelloop_retrains_total" in generate_latest(metrics.registry).decode()


@pytest.mark.parametrize(("failed", "reason"), [
    (["drift"], "drift"),
    (["errorRate", "drift"], "drift+errorRate"),
    (["p99-latency"], "custom"),
    (["p99-latency", "queue-depth", "confidence"], "confidence+custom"),
    (["confidence", "drift", "errorRate", "mine"], "drift+confidence+errorRate+custom"),
    ([], "unknown"),
])
def test_the_retrain_reason_never_carries_a_custom_check_name(failed: list[str],
                                                              reason: str) -> None:
    assert retrain_reason([TriggerCheck(name=name, value=1.0) for name in failed]) == reason


# --- counted once per TrainingJob created, through the ModelDeployment reconcile ----------

NS, NAME = "ml", "bbc"
T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def degraded_deployment() -> dict[str, Any]:
    """A ModelDeployment whose last evaluation (just now: the next is not due, so no
    Prometheus is asked) failed its drift and a custom check, past the failure limit."""
    checks = [{"name": "drift", "result": "Unhealthy", "value": 0.31, "max": 0.2},
              {"name": "p99-latency", "result": "Unhealthy", "value": 2.5, "max": 1.0}]
    return {
        "apiVersion": "modelloop.dev/v1alpha1", "kind": "ModelDeployment",
        "metadata": {"name": NAME, "namespace": NS, "generation": 1},
        "spec": {
            "model": {"archiveUri": "file:///models/v1/model.mar"},
            "monitoring": {"prometheusUrl": "http://127.0.0.1:9", "interval": "1h",
                           "failureLimit": 2, "drift": {"max": 0.2},
                           "checks": [{"name": "p99-latency", "query": "vector(1)",
                                       "max": 1.0}]},
            "retrain": {"enabled": True, "cooldown": "1h", "trainingJobTemplate": {"spec": {
                "model": {"uri": "builtin://all-minilm-l6-v2"},
                "dataset": {"uri": "builtin://bbc-news"},
                "output": {"uri": "file:///models/retrained"}}}}},
        "status": {"analysis": {"time": T0.strftime("%Y-%m-%dT%H:%M:%SZ"),
                                "result": "Unhealthy", "consecutiveFailures": 3,
                                "checks": checks}}}


def retrains(metrics: OperatorMetrics) -> float:
    return sample(metrics, "modelloop_retrains_total", model_namespace=NS,
                  reason="drift+custom") or 0.0


async def reconcile(runtime: Runtime) -> None:
    await reconcile_model_deployment(runtime=runtime, namespace=NS, name=NAME, trigger="test")


def forget_retrains(kube: ClaimingKube) -> None:
    """What a crash between the create and the status write leaves: no record of the run."""
    obj = kube.stored(MODEL_DEPLOYMENTS, NS, NAME)
    assert obj is not None
    del obj["status"]["retrain"]


@pytest.fixture
def runtime(monkeypatch: pytest.MonkeyPatch) -> Runtime:
    monkeypatch.setattr(modeldeployment, "_utcnow", lambda: T0)
    kube = ClaimingKube()
    kube.put(MODEL_DEPLOYMENTS, degraded_deployment())
    return Runtime(config=OperatorConfig(), kube=kube, metrics=OperatorMetrics())


def created_training_jobs(kube: ClaimingKube) -> list[str]:
    return sorted(name for plural, _, name in kube.objects if plural == "trainingjobs")


async def test_a_created_retrain_is_counted_once_with_its_reason(runtime: Runtime) -> None:
    kube = runtime.kube
    assert isinstance(kube, ClaimingKube)
    await reconcile(runtime)
    assert created_training_jobs(kube) == ["bbc-rt-1"]
    assert retrains(runtime.metrics) == 1
    await reconcile(runtime)  # still Degraded, but in flight and cooling down
    assert created_training_jobs(kube) == ["bbc-rt-1"]
    assert retrains(runtime.metrics) == 1


async def test_an_adopted_retrain_is_not_counted_again(runtime: Runtime) -> None:
    kube = runtime.kube
    assert isinstance(kube, ClaimingKube)
    await reconcile(runtime)
    forget_retrains(kube)
    await reconcile(runtime)
    assert ("Normal", "RetrainAdopted") in kube.events
    assert created_training_jobs(kube) == ["bbc-rt-1"]
    assert retrains(runtime.metrics) == 1


async def test_a_create_answered_already_exists_is_not_counted(runtime: Runtime) -> None:
    kube = runtime.kube
    assert isinstance(kube, ClaimingKube)
    await reconcile(runtime)
    forget_retrains(kube)
    kube.hidden.add("bbc-rt-1")  # claimed by an earlier pass our list did not see
    await reconcile(runtime)
    assert [w for w in kube.writes if w[0] == "create"] == [
        ("create", "trainingjobs", "bbc-rt-1"), ("create", "trainingjobs", "bbc-rt-1")]
    assert retrains(runtime.metrics) == 1
