"""The OptimizationJob reconcile over an in-memory API, for what it shares with the
TrainingJob's through the gang runner: children deleted by hand follow the same policy
(docs/operator.md, "Children deleted by hand")."""

from __future__ import annotations

from typing import Any

import pytest
from modelloop_operator.config import OperatorConfig
from modelloop_operator.kube import JOBS
from modelloop_operator.metrics import OperatorMetrics
from modelloop_operator.reconcilers.optimizationjob import (
    OPTIMIZATION_JOBS,
    reconcile_optimization_job,
)
from modelloop_operator.reconcilers.runtime import Runtime

from .memory_kube import MemoryKube

NS = "team-a"


@pytest.fixture
def kube() -> MemoryKube:
    return MemoryKube()


@pytest.fixture
def runtime(kube: MemoryKube) -> Runtime:
    return Runtime(config=OperatorConfig(), kube=kube, metrics=OperatorMetrics())


def create(kube: MemoryKube, **spec: Any) -> None:
    kube.put(OPTIMIZATION_JOBS, {
        "apiVersion": "modelloop.dev/v1alpha1", "kind": "OptimizationJob",
        "metadata": {"name": "opt", "namespace": NS, "generation": 1},
        "spec": {"source": {"modelUri": "pvc://models/run1"},
                 "evaluation": {"dataset": {"uri": "builtin://bbc-news"}},
                 "techniques": [{"type": "quantization"}],
                 "output": {"uri": "pvc://models/opt1"}, **spec}})


def status(kube: MemoryKube) -> dict[str, Any]:
    obj = kube.stored(OPTIMIZATION_JOBS, NS, "opt")
    assert obj is not None
    out: dict[str, Any] = obj.get("status", {})
    return out


async def reconcile(runtime: Runtime) -> None:
    await reconcile_optimization_job(runtime=runtime, namespace=NS, name="opt", trigger="test")


async def start_running(runtime: Runtime, kube: MemoryKube, **spec: Any) -> None:
    create(kube, **spec)
    await reconcile(runtime)
    job = kube.stored(JOBS, NS, "opt-a1")
    assert job is not None
    job["status"] = {"active": 1, "ready": 1}
    await reconcile(runtime)
    assert status(kube)["phase"] == "Running"


async def test_a_running_optimizations_job_deleted_by_hand_is_a_failed_attempt(
        runtime: Runtime, kube: MemoryKube) -> None:
    await start_running(runtime, kube, runPolicy={"backoffLimit": 1})
    del kube.objects[("jobs", NS, "opt-a1")]
    await reconcile(runtime)
    st = status(kube)
    assert (st["phase"], st["attempts"], st["failedAttempts"]) == ("Pending", 2, 1)
    assert next(c for c in st["conditions"] if c["type"] == "Progressing")["reason"] == \
        "ChildrenDeleted"
    assert ("Warning", "ChildrenDeleted") in kube.events
    assert kube.stored(JOBS, NS, "opt-a2") is not None
    assert kube.stored(JOBS, NS, "opt-a1") is None


async def test_past_the_backoff_limit_it_fails_without_a_verdict(
        runtime: Runtime, kube: MemoryKube) -> None:
    await start_running(runtime, kube, runPolicy={"backoffLimit": 0})
    del kube.objects[("jobs", NS, "opt-a1")]
    await reconcile(runtime)
    st = status(kube)
    assert st["phase"] == "Failed"
    accepted = next(c for c in st["conditions"] if c["type"] == "Accepted")
    assert (accepted["status"], accepted["reason"]) == ("False", "NotMeasured")
    assert kube.stored(JOBS, NS, "opt-a1") is None
