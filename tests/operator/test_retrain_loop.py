"""The closed loop through the real ModelDeployment reconcile: an in-memory API server
(memory_kube.py, plus create-only creation) and a real Prometheus scraping a test exporter.

The clock is the test's: each pass runs at a chosen ``now``, so "every interval", the
cooldown and the daily budget are exercised without waiting for them; Prometheus answers
with whatever the exporter holds at that moment.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from modelloop_operator.builders.serving import collector_pod_name
from modelloop_operator.config import OperatorConfig
from modelloop_operator.kube import Resource
from modelloop_operator.metrics import OperatorMetrics
from modelloop_operator.reconcilers import modeldeployment as mdep
from modelloop_operator.reconcilers.modeldeployment import (
    DEPLOYMENTS,
    MODEL_DEPLOYMENTS,
    OPTIMIZATION_JOBS,
    TRAINING_JOBS,
    reconcile_model_deployment,
)
from modelloop_operator.reconcilers.runtime import Runtime

from tests.harness.prometheus import PrometheusServer, TestExporter, prometheus_scraping_exporter

from .memory_kube import ClaimingKube

NS = "ml"
NAME = "bbc"
POD = "bbc-7d9f8b6c5-x2x4q"
V1 = "file:///models/v1/model.mar"
T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
OJ_ARCHIVE = "file:///models/retrained/bbc-rt-1-o/model.mar"


@pytest.fixture(scope="module")
def prom(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PrometheusServer,
                                                                       TestExporter]]:
    with prometheus_scraping_exporter(tmp_path_factory.mktemp("prometheus")) as both:
        yield both


@pytest.fixture
def metrics_source(prom: tuple[PrometheusServer, TestExporter]) -> Iterator[TestExporter]:
    prom[1].clear()
    yield prom[1]
    prom[1].clear()


@pytest.fixture
def kube() -> ClaimingKube:
    return ClaimingKube()


@pytest.fixture
def runtime(kube: ClaimingKube) -> Runtime:
    return Runtime(config=OperatorConfig(), kube=kube, metrics=OperatorMetrics())


class Clock:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.now = T0
        monkeypatch.setattr(mdep, "_utcnow", lambda: self.now)

    def tick(self, seconds: float = 1) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    return Clock(monkeypatch)


def drift(exporter: TestExporter, prom: tuple[PrometheusServer, TestExporter], psi: float,
          samples: float = 1000) -> None:
    """Set the served pod's drift score and wait until Prometheus has scraped it."""
    exporter.set("modelloop_drift_psi", psi, namespace=NS, pod=POD, model_name="model",
                 distribution="class")
    exporter.set("modelloop_drift_window_samples", samples, namespace=NS, pod=POD,
                 model_name="model")
    prom[0].wait_for(f'modelloop_drift_psi{{namespace="{NS}"}} == {psi}')
    prom[0].wait_for(f'modelloop_drift_window_samples{{namespace="{NS}"}} == {samples}')


def deployment(prometheus_url: str, *, retrain: dict[str, Any] | None = None,
               **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": {"archiveUri": V1}, "replicas": 2,
        "monitoring": {"prometheusUrl": prometheus_url, "interval": "1s", "window": "10s",
                       "failureLimit": 2, "minSamples": 300, "drift": {"max": 0.2}},
        **spec}
    if retrain is not None:
        body["retrain"] = retrain
    return {"apiVersion": "modelloop.dev/v1alpha1", "kind": "ModelDeployment",
            "metadata": {"name": NAME, "namespace": NS, "generation": 1}, "spec": body}


def retrain_spec(**fields: Any) -> dict[str, Any]:
    return {"enabled": True, "promotion": "auto", "cooldown": "1h", "maxPerDay": 3,
            "trainingJobTemplate": {
                "metadata": {"labels": {"team": "news"}},
                "spec": {"model": {"uri": "builtin://all-minilm-l6-v2"},
                         "dataset": {"uri": "builtin://bbc-news"},
                         "output": {"uri": "file:///models/retrained"}}},
            "optimizationJobTemplate": {
                "spec": {"techniques": [{"type": "quantization"}],
                         "output": {"uri": "file:///models/retrained"}}},
            **fields}


async def reconcile(runtime: Runtime) -> str | None:
    return await reconcile_model_deployment(runtime=runtime, namespace=NS, name=NAME,
                                            trigger="test")


def status(kube: ClaimingKube) -> dict[str, Any]:
    obj = kube.stored(MODEL_DEPLOYMENTS, NS, NAME)
    assert obj is not None
    out: dict[str, Any] = obj.get("status") or {}
    return out


def condition(kube: ClaimingKube, type_: str) -> dict[str, Any]:
    return next((c for c in status(kube).get("conditions", []) if c["type"] == type_), {})


def finish_training(kube: ClaimingKube, name: str, *, ok: bool = True) -> None:
    obj = kube.stored(TRAINING_JOBS, NS, name)
    assert obj is not None
    obj["status"] = ({"phase": "Succeeded",
                      "model": {"uri": f"file:///models/retrained/{name}",
                                "checksum": "sha256:aa"},
                      "lineage": {"trainingJob": name, "triggeredBy": json.loads(
                          obj["metadata"]["annotations"]["modelloop.dev/triggered-by"])}}
                     if ok else {"phase": "Failed", "message": "evaluation gate missed"})


def finish_optimization(kube: ClaimingKube, name: str, *, accepted: bool = True) -> None:
    obj = kube.stored(OPTIMIZATION_JOBS, NS, name)
    assert obj is not None
    obj["status"] = {
        "phase": "Succeeded" if accepted else "Failed",
        "conditions": [{"type": "Accepted", "status": "True" if accepted else "False",
                        "reason": "Accepted" if accepted else "OptimizationRejected"}],
        "archiveUri": OJ_ARCHIVE if accepted else None, "model": {"checksum": "sha256:bb"},
        "message": "" if accepted else "accuracy dropped 3.1 points",
        "lineage": {"trainingJob": "bbc-rt-1", "optimizationJob": name}}


def served_uri(kube: ClaimingKube) -> str:
    dep = kube.stored(DEPLOYMENTS, NS, NAME)
    assert dep is not None
    uri: str = dep["spec"]["template"]["metadata"]["annotations"]["modelloop.dev/model-uri"]
    return uri


async def degrade(runtime: Runtime, clock: Clock, evaluations: int = 2) -> None:
    for _ in range(evaluations):
        clock.tick()
        await reconcile(runtime)


# --- analysis ---------------------------------------------------------------------------

async def test_healthy_metrics_leave_it_ready(kube: ClaimingKube, runtime: Runtime,
                                              clock: Clock, prom: Any,
                                              metrics_source: TestExporter) -> None:
    drift(metrics_source, prom, 0.05)
    kube.put(MODEL_DEPLOYMENTS, deployment(prom[0].url))
    await reconcile(runtime)
    analysis = status(kube)["analysis"]
    assert analysis["result"] == "Healthy"
    assert analysis["checks"][0] == {"name": "drift", "result": "Healthy", "value": 0.05,
                                     "samples": 1000.0, "max": 0.2,
                                     "message": "0.05 within bounds (1000 samples)"}
    assert condition(kube, "Degraded")["status"] == "False"


async def test_failure_limit_failures_degrade_with_values_and_recovery_clears(
        kube: ClaimingKube, runtime: Runtime, clock: Clock, prom: Any,
        metrics_source: TestExporter) -> None:
    drift(metrics_source, prom, 0.31)
    kube.put(MODEL_DEPLOYMENTS, deployment(prom[0].url))
    await reconcile(runtime)
    assert status(kube)["analysis"]["consecutiveFailures"] == 1
    assert condition(kube, "Degraded")["status"] == "False"
    await reconcile(runtime)  # same instant: not due, not counted twice
    assert status(kube)["analysis"]["consecutiveFailures"] == 1
    clock.tick()
    await reconcile(runtime)
    degraded = condition(kube, "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "AnalysisFailed")
    assert "drift: 0.31 above max 0.2 (1000 samples)" in degraded["message"]
    assert status(kube)["phase"] == "Degraded"
    since = degraded["lastTransitionTime"]
    clock.tick()
    await reconcile(runtime)
    assert condition(kube, "Degraded")["lastTransitionTime"] == since
    assert ("Warning", "Degraded") in kube.events
    assert ("Warning", "FailureLimitReached") in kube.events
    drift(metrics_source, prom, 0.04)
    clock.tick()
    await reconcile(runtime)
    assert condition(kube, "Degraded")["status"] == "False"
    assert status(kube)["analysis"]["consecutiveFailures"] == 0
    assert ("Normal", "AnalysisRecovered") in kube.events


async def test_missing_data_is_inconclusive_and_never_retrains(
        kube: ClaimingKube, runtime: Runtime, clock: Clock, prom: Any,
        metrics_source: TestExporter) -> None:
    drift(metrics_source, prom, 0.9, samples=12)  # awful, but on 12 predictions
    kube.put(MODEL_DEPLOYMENTS, deployment(prom[0].url, retrain=retrain_spec()))
    await degrade(runtime, clock, evaluations=5)
    analysis = status(kube)["analysis"]
    assert analysis["result"] == "Inconclusive"
    assert analysis["consecutiveFailures"] == 0
    assert analysis["checks"][0]["message"] == "only 12 samples, 300 needed"
    assert kube.created(TRAINING_JOBS, NS) == []
    assert condition(kube, "Degraded")["status"] == "False"


async def test_unreachable_prometheus_is_inconclusive(kube: ClaimingKube, runtime: Runtime,
                                                      clock: Clock) -> None:
    kube.put(MODEL_DEPLOYMENTS, deployment("http://127.0.0.1:9", retrain=retrain_spec()))
    await degrade(runtime, clock, evaluations=3)
    check = status(kube)["analysis"]["checks"][0]
    assert check["result"] == "Inconclusive"
    assert "unreachable" in check["message"]
    assert kube.created(TRAINING_JOBS, NS) == []


# --- retraining -------------------------------------------------------------------------

async def test_degraded_creates_exactly_one_owned_training_job_with_lineage(
        kube: ClaimingKube, runtime: Runtime, clock: Clock, prom: Any,
        metrics_source: TestExporter) -> None:
    drift(metrics_source, prom, 0.31)
    kube.put(MODEL_DEPLOYMENTS, deployment(prom[0].url, retrain=retrain_spec()))
    await degrade(runtime, clock, evaluations=6)
    assert kube.created(TRAINING_JOBS, NS) == ["bbc-rt-1"]
    tj = kube.stored(TRAINING_JOBS, NS, "bbc-rt-1")
    assert tj is not None
    meta = tj["metadata"]
    assert meta["ownerReferences"][0]["uid"] == "uid-bbc"
    assert meta["ownerReferences"][0]["controller"] is True
    assert meta["labels"]["modelloop.dev/modeldeployment"] == NAME
    assert meta["labels"]["team"] == "news"
    trigger = json.loads(meta["annotations"]["modelloop.dev/triggered-by"])
    assert trigger["modelDeployment"] == NAME
    assert trigger["checks"] == [{"name": "drift", "value": 0.31, "threshold": 0.2}]
    assert tj["spec"]["output"]["uri"] == "file:///models/retrained/bbc-rt-1"
    retrain = status(kube)["retrain"]
    assert retrain["inFlight"] == 1
    assert retrain["history"][0]["trainingJob"] == "bbc-rt-1"
    assert retrain["history"][0]["outcome"] == "Running"
    assert condition(kube, "Retraining")["status"] == "True"
    assert ("Normal", "RetrainTriggered") in kube.events


async def test_a_run_created_before_a_crash_is_adopted_not_repeated(
        kube: ClaimingKube, runtime: Runtime, clock: Clock, prom: Any,
        metrics_source: TestExporter) -> None:
    drift(metrics_source, prom, 0.31)
    kube.put(MODEL_DEPLOYMENTS, deployment(prom[0].url, retrain=retrain_spec()))
    await degrade(runtime, clock)
    assert kube.created(TRAINING_JOBS, NS) == ["bbc-rt-1"]
    # The crash: status loses everything about the run (as if never written).
    obj = kube.stored(MODEL_DEPLOYMENTS, NS, NAME)
    assert obj is not None
    del obj["status"]["retrain"]
    await degrade(runtime, clock, evaluations=4)
    assert kube.created(TRAINING_JOBS, NS) == ["bbc-rt-1"]
    history = status(kube)["retrain"]["history"]
    assert [h["trainingJob"] for h in history] == ["bbc-rt-1"]
    assert history[0]["checks"] == [{"name": "drift", "value": 0.31, "threshold": 0.2}]
    assert ("Normal", "RetrainAdopted") in kube.events


async def test_already_exists_is_a_claim_not_a_second_run(
        kube: ClaimingKube, runtime: Runtime, clock: Clock, prom: Any,
        metrics_source: TestExporter) -> None:
    drift(metrics_source, prom, 0.31)
    kube.put(MODEL_DEPLOYMENTS, deployment(prom[0].url, retrain=retrain_spec()))
    await degrade(runtime, clock)
    obj = kube.stored(MODEL_DEPLOYMENTS, NS, NAME)
    assert obj is not None
    del obj["status"]["retrain"]
    kube.hidden.add("bbc-rt-1")  # a concurrent pass created it; our list did not see it
    await degrade(runtime, clock, evaluations=1)
    assert [w for w in kube.writes if w[0] == "create"] == [
        ("create", "trainingjobs", "bbc-rt-1"), ("create", "trainingjobs", "bbc-rt-1")]
    assert len([k for k in kube.objects if k[0] == "trainingjobs"]) == 1
    assert "already existed" in status(kube)["retrain"]["history"][0]["message"]


async def test_success_optimizes_then_auto_promotes_with_lineage_and_history(
        kube: ClaimingKube, runtime: Runtime, clock: Clock, prom: Any,
        metrics_source: TestExporter) -> None:
    drift(metrics_source, prom, 0.31)
    kube.put(MODEL_DEPLOYMENTS, deployment(prom[0].url, retrain=retrain_spec()))
    await degrade(runtime, clock)
    assert served_uri(kube) == V1
    finish_training(kube, "bbc-rt-1")
    clock.tick()
    await reconcile(runtime)
    oj = kube.stored(OPTIMIZATION_JOBS, NS, "bbc-rt-1-o")
    assert oj is not None
    assert oj["spec"]["source"] == {"trainingJobRef": {"name": "bbc-rt-1"}}
    assert oj["spec"]["output"]["uri"] == "file:///models/retrained/bbc-rt-1-o"
    assert oj["metadata"]["ownerReferences"][0]["uid"] == "uid-bbc"
    finish_optimization(kube, "bbc-rt-1-o")
    clock.tick()
    await reconcile(runtime)
    assert served_uri(kube) == OJ_ARCHIVE
    record = status(kube)["retrain"]["history"][0]
    assert record["outcome"] == "Promoted"
    assert record["optimizationJob"] == "bbc-rt-1-o"
    assert "replaced uri-" in record["message"]
    assert record["previousModel"]["archiveUri"] == V1  # the rollback target, typed
    assert status(kube)["retrain"]["inFlight"] == 0
    assert ("Normal", "RetrainPromoted") in kube.events
    # The rolling update finishes: the promoted model is status.activeModel.
    dep = kube.stored(DEPLOYMENTS, NS, NAME)
    assert dep is not None
    dep["metadata"]["generation"] = 2
    dep["status"] = {"observedGeneration": 2, "replicas": 2, "readyReplicas": 2,
                     "updatedReplicas": 2, "availableReplicas": 2}
    clock.tick()
    await reconcile(runtime)
    active = status(kube)["activeModel"]
    assert active["archiveUri"] == OJ_ARCHIVE
    assert active["lineage"]["optimizationJob"] == "bbc-rt-1-o"
    spec = kube.stored(MODEL_DEPLOYMENTS, NS, NAME)
    assert spec is not None and spec["spec"]["model"] == {"archiveUri": V1}  # GitOps


async def test_cooldown_and_daily_budget_hold_under_repeated_degradation(
        kube: ClaimingKube, runtime: Runtime, clock: Clock, prom: Any,
        metrics_source: TestExporter) -> None:
    drift(metrics_source, prom, 0.31)
    kube.put(MODEL_DEPLOYMENTS, deployment(
        prom[0].url, retrain=retrain_spec(cooldown="10m", maxPerDay=2,
                                          optimizationJobTemplate=None)))
    created_at: list[datetime] = []
    for _ in range(60 * 6):  # six hours of degradation, one pass a minute
        clock.tick(60)
        before = len(kube.created(TRAINING_JOBS, NS))
        await reconcile(runtime)
        names = kube.created(TRAINING_JOBS, NS)
        if len(names) > before:
            created_at.append(clock.now)
            finish_training(kube, names[-1], ok=False)  # fails at once: only budget limits
    assert kube.created(TRAINING_JOBS, NS) == ["bbc-rt-1", "bbc-rt-2"]
    assert created_at[1] - created_at[0] >= timedelta(minutes=10)
    assert condition(kube, "Retraining")["reason"] == "RetrainDailyLimit"
    assert [h["outcome"] for h in status(kube)["retrain"]["history"]] == ["Failed", "Failed"]
    assert served_uri(kube) == V1


async def test_rejected_optimization_keeps_the_model_and_the_cooldown(
        kube: ClaimingKube, runtime: Runtime, clock: Clock, prom: Any,
        metrics_source: TestExporter) -> None:
    drift(metrics_source, prom, 0.31)
    kube.put(MODEL_DEPLOYMENTS, deployment(prom[0].url, retrain=retrain_spec()))
    await degrade(runtime, clock)
    finish_training(kube, "bbc-rt-1")
    clock.tick()
    await reconcile(runtime)
    finish_optimization(kube, "bbc-rt-1-o", accepted=False)
    await degrade(runtime, clock, evaluations=5)
    record = status(kube)["retrain"]["history"][0]
    assert record["outcome"] == "Rejected"
    assert "accuracy dropped" in record["message"]
    assert "previousModel" not in record  # nothing was replaced
    assert served_uri(kube) == V1
    assert kube.created(TRAINING_JOBS, NS) == ["bbc-rt-1"]  # cooldown 1h
    assert condition(kube, "Retraining")["reason"] == "RetrainCoolingDown"


async def test_manual_promotion_waits_for_the_annotation(
        kube: ClaimingKube, runtime: Runtime, clock: Clock, prom: Any,
        metrics_source: TestExporter) -> None:
    drift(metrics_source, prom, 0.31)
    kube.put(MODEL_DEPLOYMENTS, deployment(prom[0].url,
                                           retrain=retrain_spec(promotion="manual")))
    await degrade(runtime, clock)
    finish_training(kube, "bbc-rt-1")
    clock.tick()
    await reconcile(runtime)
    finish_optimization(kube, "bbc-rt-1-o")
    await degrade(runtime, clock, evaluations=3)
    assert served_uri(kube) == V1
    assert status(kube)["candidateModel"]["archiveUri"] == OJ_ARCHIVE
    retraining = condition(kube, "Retraining")
    assert (retraining["status"], retraining["reason"]) == ("True", "AwaitingPromotion")
    assert "modelloop.dev/approve-promotion: bbc-rt-1-o" in retraining["message"]
    obj = kube.stored(MODEL_DEPLOYMENTS, NS, NAME)
    assert obj is not None
    obj["metadata"]["annotations"] = {"modelloop.dev/approve-promotion": "bbc-rt-1-o"}
    clock.tick()
    await reconcile(runtime)
    assert served_uri(kube) == OJ_ARCHIVE
    record = status(kube)["retrain"]["history"][0]
    assert record["outcome"] == "Promoted"
    assert record["previousModel"]["archiveUri"] == V1
    assert "candidateModel" not in status(kube)


async def test_a_git_change_of_the_model_wins_over_a_promotion(
        kube: ClaimingKube, runtime: Runtime, clock: Clock, prom: Any,
        metrics_source: TestExporter) -> None:
    drift(metrics_source, prom, 0.31)
    kube.put(MODEL_DEPLOYMENTS, deployment(prom[0].url, retrain=retrain_spec()))
    await degrade(runtime, clock)
    finish_training(kube, "bbc-rt-1")
    clock.tick()
    await reconcile(runtime)
    finish_optimization(kube, "bbc-rt-1-o")
    clock.tick()
    await reconcile(runtime)
    assert served_uri(kube) == OJ_ARCHIVE
    obj = kube.stored(MODEL_DEPLOYMENTS, NS, NAME)
    assert obj is not None
    obj["spec"]["model"] = {"archiveUri": "file:///models/v2/model.mar"}
    obj["metadata"]["generation"] = 2
    clock.tick()
    await reconcile(runtime)
    assert served_uri(kube) == "file:///models/v2/model.mar"


async def test_a_git_change_rejects_a_run_in_flight(
        kube: ClaimingKube, runtime: Runtime, clock: Clock, prom: Any,
        metrics_source: TestExporter) -> None:
    drift(metrics_source, prom, 0.31)
    kube.put(MODEL_DEPLOYMENTS, deployment(prom[0].url, retrain=retrain_spec()))
    await degrade(runtime, clock)
    obj = kube.stored(MODEL_DEPLOYMENTS, NS, NAME)
    assert obj is not None
    obj["spec"]["model"] = {"archiveUri": "file:///models/v2/model.mar"}
    clock.tick()
    await reconcile(runtime)
    record = status(kube)["retrain"]["history"][0]
    assert record["outcome"] == "Rejected"
    assert "spec.model changed" in record["message"]


async def test_a_git_rollout_restarts_the_failure_count(
        kube: ClaimingKube, runtime: Runtime, clock: Clock, prom: Any,
        metrics_source: TestExporter) -> None:
    drift(metrics_source, prom, 0.31)
    kube.put(MODEL_DEPLOYMENTS, deployment(prom[0].url))
    obj = kube.stored(MODEL_DEPLOYMENTS, NS, NAME)
    assert obj is not None
    obj["spec"]["monitoring"]["failureLimit"] = 3
    await degrade(runtime, clock)
    assert status(kube)["analysis"]["consecutiveFailures"] == 2
    obj["spec"]["model"] = {"archiveUri": "file:///models/v2/model.mar"}
    await degrade(runtime, clock, evaluations=1)
    assert status(kube)["analysis"]["consecutiveFailures"] == 0
    await degrade(runtime, clock, evaluations=2)  # v2 drifts too: counted from zero
    assert status(kube)["analysis"]["consecutiveFailures"] == 2
    assert condition(kube, "Degraded")["status"] == "False"
    await degrade(runtime, clock, evaluations=1)
    assert status(kube)["activeModel"]["archiveUri"] == "file:///models/v2/model.mar"
    assert condition(kube, "Degraded")["status"] == "True"


async def test_old_failures_do_not_retrain_without_fresh_evidence(
        kube: ClaimingKube, runtime: Runtime, clock: Clock, prom: Any,
        metrics_source: TestExporter) -> None:
    drift(metrics_source, prom, 0.31)
    kube.put(MODEL_DEPLOYMENTS, deployment(
        prom[0].url, retrain=retrain_spec(cooldown="1s", optimizationJobTemplate=None)))
    await degrade(runtime, clock)
    assert kube.created(TRAINING_JOBS, NS) == ["bbc-rt-1"]
    finish_training(kube, "bbc-rt-1", ok=False)
    drift(metrics_source, prom, 0.31, samples=12)  # e.g. a restarted pod's empty window
    await degrade(runtime, clock, evaluations=4)
    assert condition(kube, "Degraded")["status"] == "True"  # Inconclusive keeps the count
    assert kube.created(TRAINING_JOBS, NS) == ["bbc-rt-1"]
    drift(metrics_source, prom, 0.31)
    await degrade(runtime, clock, evaluations=1)
    assert kube.created(TRAINING_JOBS, NS) == ["bbc-rt-1", "bbc-rt-2"]


async def test_a_trimmed_history_neither_readopts_nor_refills_the_daily_budget(
        kube: ClaimingKube, runtime: Runtime, clock: Clock, prom: Any,
        metrics_source: TestExporter) -> None:
    drift(metrics_source, prom, 0.31)
    kube.put(MODEL_DEPLOYMENTS, deployment(
        prom[0].url, retrain=retrain_spec(cooldown="1m", maxPerDay=22,
                                          optimizationJobTemplate=None)))
    for _ in range(60):  # two hours, a pass every two minutes, each run failing at once
        clock.tick(120)
        before = set(kube.created(TRAINING_JOBS, NS))
        await reconcile(runtime)
        for name in set(kube.created(TRAINING_JOBS, NS)) - before:
            finish_training(kube, name, ok=False)
    assert len(kube.created(TRAINING_JOBS, NS)) == 22
    history = status(kube)["retrain"]["history"]
    assert len(history) == 20
    assert history[0]["trainingJob"] == "bbc-rt-22"
    assert history[-1]["trainingJob"] == "bbc-rt-3"
    assert ("Normal", "RetrainAdopted") not in kube.events
    assert condition(kube, "Retraining")["reason"] == "RetrainDailyLimit"


# --- after a promotion ------------------------------------------------------------------

PODS = Resource("", "v1", "pods", "Pod")


def run_pod(kube: ClaimingKube, name: str) -> None:
    """A Running pod of the stable Deployment's current template (what the ReplicaSet
    controller would create)."""
    dep = kube.stored(DEPLOYMENTS, NS, NAME)
    assert dep is not None
    template = copy.deepcopy(dep["spec"]["template"]["metadata"])
    kube.put(PODS, {"metadata": {"name": name, "namespace": NS, **template},
                    "status": {"phase": "Running"}})


def finish_rollout(kube: ClaimingKube, generation: int) -> None:
    dep = kube.stored(DEPLOYMENTS, NS, NAME)
    assert dep is not None
    dep["metadata"]["generation"] = generation
    dep["status"] = {"observedGeneration": generation, "replicas": 2, "readyReplicas": 2,
                     "updatedReplicas": 2, "availableReplicas": 2}


async def promote_retrained_model(kube: ClaimingKube, runtime: Runtime, clock: Clock) -> None:
    """Degraded by drift -> bbc-rt-1 trains -> bbc-rt-1-o is accepted and auto-promoted,
    while the v1 pod still runs."""
    await degrade(runtime, clock, evaluations=1)
    run_pod(kube, "bbc-v1-pod")
    finish_rollout(kube, 1)
    await degrade(runtime, clock, evaluations=2)
    assert condition(kube, "Degraded")["status"] == "True"
    finish_training(kube, "bbc-rt-1")
    clock.tick()
    await reconcile(runtime)
    finish_optimization(kube, "bbc-rt-1-o")
    clock.tick()
    await reconcile(runtime)
    assert served_uri(kube) == OJ_ARCHIVE


async def test_a_promotion_restarts_the_failure_count_and_leaves_degraded(
        kube: ClaimingKube, runtime: Runtime, clock: Clock, prom: Any,
        metrics_source: TestExporter) -> None:
    drift(metrics_source, prom, 0.31)
    kube.put(MODEL_DEPLOYMENTS, deployment(prom[0].url, retrain=retrain_spec()))
    await promote_retrained_model(kube, runtime, clock)

    # The promotion pass: the replaced model's failures are dropped at once.
    st = status(kube)
    assert st["analysis"]["consecutiveFailures"] == 0
    degraded = condition(kube, "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("False", "ModelPromoted")
    assert "promoted bbc-rt-1-o" in degraded["message"]
    assert st["phase"] == "Progressing"
    assert ("Normal", "ModelPromoted") in kube.events

    # Rolling update: the v1 pod (still drifting) and the new pod run side by side. No
    # verdict on that mix: Inconclusive, the count stays at 0, no second retrain.
    run_pod(kube, "bbc-rt-pod")
    await degrade(runtime, clock, evaluations=4)
    st = status(kube)
    assert st["analysis"]["result"] == "Inconclusive"
    assert st["analysis"]["consecutiveFailures"] == 0
    assert "bbc-v1-pod still serve(s) another model" in st["analysis"]["checks"][0]["message"]
    assert condition(kube, "Degraded")["reason"] == "ModelPromoted"
    assert st["phase"] == "Progressing"
    assert kube.created(TRAINING_JOBS, NS) == ["bbc-rt-1"]

    # The old pod is gone and the rollout done: Progressing (evaluating) until the new
    # model's own analysis is Healthy, then Ready.
    del kube.objects[("pods", NS, "bbc-v1-pod")]
    finish_rollout(kube, 2)
    drift(metrics_source, prom, 0.31, samples=12)  # the new pod's window is filling
    await degrade(runtime, clock, evaluations=1)
    progressing = condition(kube, "Progressing")
    assert (progressing["status"], progressing["reason"]) == ("True",
                                                              "EvaluatingPromotedModel")
    assert "waiting for its first Healthy analysis" in progressing["message"]
    assert status(kube)["phase"] == "Progressing"
    drift(metrics_source, prom, 0.04)
    await degrade(runtime, clock, evaluations=1)
    st = status(kube)
    assert (st["phase"], st["analysis"]["result"]) == ("Ready", "Healthy")
    assert condition(kube, "Degraded")["reason"] == "AsExpected"
    assert condition(kube, "Progressing")["status"] == "False"
    assert ("Normal", "AnalysisRecovered") in kube.events


async def test_a_promoted_model_that_drifts_too_is_degraded_on_its_own_count(
        kube: ClaimingKube, runtime: Runtime, clock: Clock, prom: Any,
        metrics_source: TestExporter) -> None:
    drift(metrics_source, prom, 0.31)
    kube.put(MODEL_DEPLOYMENTS, deployment(prom[0].url, retrain=retrain_spec()))
    await promote_retrained_model(kube, runtime, clock)
    del kube.objects[("pods", NS, "bbc-v1-pod")]
    run_pod(kube, "bbc-rt-pod")
    finish_rollout(kube, 2)
    await degrade(runtime, clock, evaluations=1)
    assert status(kube)["analysis"]["consecutiveFailures"] == 1
    assert condition(kube, "Degraded")["status"] == "False"
    await degrade(runtime, clock, evaluations=1)
    degraded = condition(kube, "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "AnalysisFailed")
    assert status(kube)["phase"] == "Degraded"
    assert kube.created(TRAINING_JOBS, NS) == ["bbc-rt-1"]  # cooldown 1h: no second run


async def test_the_promoting_pass_never_starts_another_retrain_on_old_failures(
        kube: ClaimingKube, runtime: Runtime, clock: Clock, prom: Any,
        metrics_source: TestExporter) -> None:
    """Even with the cooldown already over, the failures that promoted a model are the
    replaced model's: the pass that promotes starts no second run."""
    drift(metrics_source, prom, 0.31)
    kube.put(MODEL_DEPLOYMENTS, deployment(prom[0].url, retrain=retrain_spec(cooldown="1s")))
    await promote_retrained_model(kube, runtime, clock)
    assert condition(kube, "Degraded")["reason"] == "ModelPromoted"
    assert kube.created(TRAINING_JOBS, NS) == ["bbc-rt-1"]

SINK = "pvc://captures/bbc"


def gate_report(*, passed: bool) -> dict[str, Any]:
    """A comparison section as modelloop-optimize writes it."""
    return {
        "champion": {"name": "uri-1", "original": {"accuracy": 0.94, "samples": 100},
                     "holdout": {"accuracy": 0.62, "samples": 80}},
        "candidate": {"original": {"accuracy": 0.935, "samples": 100},
                      "holdout": {"accuracy": 0.88 if passed else 0.5, "samples": 80}},
        "passed": passed,
        "reasons": [] if passed else ["holdout accuracy 0.500 < champion 0.620 + "
                                      "minImprovement 0.000 (n=80)"]}


# --- labelled data and the promotion gate --------------------------------------------------

def feedback(exporter: TestExporter, prom: Any, count: float) -> None:
    """The collector's feedback counter, as Prometheus scrapes it."""
    pod = collector_pod_name(name=NAME)
    exporter.set("modelloop_feedback_total", count, namespace=NS, pod=pod,
                 model_version="uri-1", label="tech", predicted="tech", correct="true")
    prom[0].wait_for(f'modelloop_feedback_total{{pod="{pod}"}} == {count}')


def labelled_deployment(url: str) -> dict[str, Any]:
    return deployment(url, retrain=retrain_spec(data={"labelled": {"minRows": 100}}),
                      capture={"sink": SINK})


async def test_retraining_waits_for_labels_then_trains_on_them_and_the_gate_rejects(
        kube: ClaimingKube, runtime: Runtime, clock: Clock, prom: Any,
        metrics_source: TestExporter) -> None:
    drift(metrics_source, prom, 0.31)
    feedback(metrics_source, prom, 40)
    kube.put(MODEL_DEPLOYMENTS, labelled_deployment(prom[0].url))
    await degrade(runtime, clock, evaluations=3)
    assert kube.created(TRAINING_JOBS, NS) == []
    retraining = condition(kube, "Retraining")
    assert (retraining["status"], retraining["reason"]) == ("False", "RetrainWaitingForLabels")
    assert "40 labelled requests kept, retrain.data.labelled.minRows 100" in (
        retraining["message"])

    feedback(metrics_source, prom, 130)
    await degrade(runtime, clock, evaluations=1)
    assert kube.created(TRAINING_JOBS, NS) == ["bbc-rt-1"]
    tj = kube.stored(TRAINING_JOBS, NS, "bbc-rt-1")
    assert tj is not None
    assert tj["spec"]["dataset"]["captured"] == {
        "uri": f"{SINK}/labelled", "maxRows": 20000, "minRows": 1, "holdoutFraction": 0.2}
    assert "base data + labelled traffic from pvc://captures/bbc/labelled" in (
        status(kube)["retrain"]["history"][0]["message"])

    finish_training(kube, "bbc-rt-1")
    clock.tick()
    await reconcile(runtime)
    oj = kube.stored(OPTIMIZATION_JOBS, NS, "bbc-rt-1-o")
    assert oj is not None
    gate = oj["spec"]["comparison"]
    assert gate["champion"]["uri"] == V1
    assert gate["holdout"] == {"uri": f"{SINK}/labelled", "fraction": 0.2, "minRows": 20}
    assert (gate["minImprovement"], gate["maxOriginalDrop"]) == (0.0, 0.01)

    oj["status"] = {"phase": "Failed", "message": "not accepted", "conditions": [
        {"type": "Accepted", "status": "False", "reason": "OptimizationRejected",
         "message": "vs uri-1 failed: holdout accuracy 0.500 vs 0.620 (n=80)"}],
        "report": {"comparison": gate_report(passed=False)}}
    for _ in range(2):  # a second pass (a restart) records and applies nothing new
        clock.tick()
        await reconcile(runtime)
    record = status(kube)["retrain"]["history"][0]
    assert record["outcome"] == "Rejected"
    assert record["gate"]["passed"] is False
    assert record["gate"]["candidate"]["holdout"]["accuracy"] == 0.5
    assert served_uri(kube) == V1
    assert [e for e in kube.events if e[1] == "RetrainRejected"] == [
        ("Warning", "RetrainRejected")]


async def test_warm_start_trains_from_the_served_models_own_weights(
        kube: ClaimingKube, runtime: Runtime, clock: Clock, prom: Any,
        metrics_source: TestExporter) -> None:
    drift(metrics_source, prom, 0.31)
    kube.put(MODEL_DEPLOYMENTS, deployment(prom[0].url, retrain=retrain_spec(
        data={"warmStart": True})))
    await degrade(runtime, clock)
    tj = kube.stored(TRAINING_JOBS, NS, "bbc-rt-1")
    assert tj is not None
    # The spec's model is an archive URI, with no TrainingJob behind it: the base model.
    assert tj["spec"]["model"]["uri"] == "builtin://all-minilm-l6-v2"
    assert "warm start asked, but the served model has no TrainingJob output" in (
        status(kube)["retrain"]["history"][0]["message"])
