"""The closed loop against a real control plane, a real Prometheus and the operator as a
process: a test metric source drives a ModelDeployment from healthy to Degraded, exactly
one TrainingJob is created, kwok completes the training and optimization pods (their
termination messages carry the results), the new model is promoted, and status shows
history and lineage. Plus: missing data never retrains; a crash between creating the
TrainingJob and recording it leaves exactly one; a failing canary is rolled back.

The metric source is tests/harness/prometheus.py's exporter: its series carry the
``namespace`` and ``pod`` labels Kubernetes service discovery would add, with pod names
shaped like the Deployment's pods (``<deployment>-<hash>-<suffix>``).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.cluster.conftest import RunningOperator
from tests.cluster.objects import apply, condition
from tests.harness.controlplane import ControlPlane
from tests.harness.prometheus import PrometheusServer, TestExporter, prometheus_scraping_exporter

pytestmark = pytest.mark.cluster

Json = dict[str, Any]
NAME = "news"
POD = "news-6b8f9c7d5-k2j4x"
CANARY_POD = "news-canary-5d4c3b2a1-q9w8e"
V1 = "file:///models/v1/model.mar"
V2 = "file:///models/v2/model.mar"
ARCHIVE = "file:///models/retrained/news-rt-1-o/model.mar"
TRAIN_SUMMARY = json.dumps({"v": 1, "kind": "train", "status": "Succeeded", "exitCode": 0,
                            "message": "done", "metrics": {"accuracy": 0.97},
                            "outputUri": "file:///models/retrained/news-rt-1",
                            "checksum": "sha256:0123", "labels": ["a", "b"]},
                           separators=(",", ":"))
OPTIMIZE_SUMMARY = json.dumps({
    "v": 1, "kind": "optimize", "status": "Succeeded", "exitCode": 0, "accepted": True,
    "message": "optimization accepted", "outputUri": "file:///models/retrained/news-rt-1-o",
    "checksum": "sha256:beef", "archiveUri": ARCHIVE,
    "report": {"sizeRatio": 0.64, "speedup": 1.42, "accuracyDrop": 0.004}},
    separators=(",", ":"))


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


def set_drift(prom: tuple[PrometheusServer, TestExporter], namespace: str, psi: float, *,
              samples: float = 1000, pod: str = POD) -> None:
    """The served pods' drift score, visible in Prometheus when this returns."""
    server, exporter = prom
    exporter.set("modelloop_drift_psi", psi, namespace=namespace, pod=pod,
                 model_name="model", distribution="class")
    exporter.set("modelloop_drift_window_samples", samples, namespace=namespace, pod=pod,
                 model_name="model")
    server.wait_for(f'modelloop_drift_psi{{namespace="{namespace}",pod="{pod}"}} == {psi}')
    server.wait_for(f'modelloop_drift_window_samples{{namespace="{namespace}",pod="{pod}"}}'
                    f' == {samples}')


def job_template(node: str, summary: str) -> Json:
    return {"podTemplate": {"metadata": {"annotations": {
                "modelloop.dev/kwok-termination-message": summary,
                "modelloop.dev/kwok-delay": "0s"}}},
            "scheduling": {"nodeSelector": {"kubernetes.io/hostname": node}}}


def model_deployment(*, node: str, prometheus_url: str, retrain: Json | None = None,
                     model: str = V1, **spec: Any) -> Json:
    body: Json = {
        "model": {"archiveUri": model}, "replicas": 1,
        "scheduling": {"nodeSelector": {"kubernetes.io/hostname": node}},
        "monitoring": {"prometheusUrl": prometheus_url, "interval": "1s", "window": "30s",
                       "failureLimit": 2, "minSamples": 300, "drift": {"max": 0.2}},
        **spec}
    if retrain is not None:
        body["retrain"] = retrain
    return {"apiVersion": "modelloop.dev/v1alpha1", "kind": "ModelDeployment",
            "metadata": {"name": NAME}, "spec": body}


def retrain(node: str, **fields: Any) -> Json:
    return {"enabled": True, "promotion": "auto", "cooldown": "1h", "maxPerDay": 3,
            "trainingJobTemplate": {"spec": {
                "model": {"uri": "builtin://all-minilm-l6-v2"},
                "dataset": {"uri": "builtin://bbc-news", "maxSamples": 100},
                "output": {"uri": "file:///models/retrained"},
                **job_template(node, TRAIN_SUMMARY)}},
            "optimizationJobTemplate": {"spec": {
                "techniques": [{"type": "quantization"}],
                "output": {"uri": "file:///models/retrained"},
                **job_template(node, OPTIMIZE_SUMMARY)}},
            **fields}


def get(cluster: ControlPlane, namespace: str, kind: str, name: str) -> Json | None:
    result = cluster.kubectl("get", "-n", namespace, kind, name, "-o", "json", check=False)
    return json.loads(result.stdout) if result.returncode == 0 else None


def status(cluster: ControlPlane, namespace: str) -> Json:
    out: Json = (get(cluster, namespace, "modeldeployment", NAME) or {}).get("status") or {}
    return out


def training_jobs(cluster: ControlPlane, namespace: str) -> list[str]:
    out = cluster.kubectl("get", "trainingjobs", "-n", namespace, "-l",
                          f"modelloop.dev/modeldeployment={NAME}", "-o", "json").stdout
    return sorted(o["metadata"]["name"] for o in json.loads(out)["items"])


def wait_status(operator: RunningOperator, cluster: ControlPlane, namespace: str, what: str,
                check: Any, timeout: float = 90) -> Json:
    def probe() -> Json | None:
        st = status(cluster, namespace)
        return st if st and check(st) else None
    found: Json = operator.wait_for(f"ModelDeployment {NAME}: {what}", probe, timeout)
    return found


def events(cluster: ControlPlane, namespace: str) -> list[str]:
    out = cluster.kubectl("get", "events", "-n", namespace, "-o", "json").stdout
    return [e["reason"] for e in json.loads(out)["items"]
            if e["involvedObject"]["name"] == NAME]


def test_degradation_retrains_once_optimizes_and_promotes(
        cluster: ControlPlane, namespace: str, kwok_node: str, operator: RunningOperator,
        prom: tuple[PrometheusServer, TestExporter], metrics_source: TestExporter) -> None:
    set_drift(prom, namespace, 0.05)
    apply(cluster, namespace, model_deployment(node=kwok_node, prometheus_url=prom[0].url,
                                               retrain=retrain(kwok_node)))
    wait_status(operator, cluster, namespace, "Ready and Healthy", lambda s: (
        s.get("phase") == "Ready" and (s.get("analysis") or {}).get("result") == "Healthy"))
    assert training_jobs(cluster, namespace) == []

    set_drift(prom, namespace, 0.31)
    st = wait_status(operator, cluster, namespace, "Degraded",
                     lambda s: condition(s, "Degraded").get("reason") == "AnalysisFailed")
    assert "drift: 0.31 above max 0.2 (1000 samples)" in condition(st, "Degraded")["message"]
    operator.wait_for("the retrain TrainingJob", lambda: training_jobs(cluster, namespace))

    st = wait_status(operator, cluster, namespace, "the retrained model promoted and serving",
                     lambda s: (s.get("activeModel") or {}).get("archiveUri") == ARCHIVE,
                     timeout=120)
    assert training_jobs(cluster, namespace) == ["news-rt-1"]
    record = st["retrain"]["history"][0]
    assert (record["trainingJob"], record["optimizationJob"], record["outcome"]) == (
        "news-rt-1", "news-rt-1-o", "Promoted")
    assert record["checks"] == [{"name": "drift", "value": 0.31, "threshold": 0.2}]
    assert "replaced uri-" in record["message"]
    lineage = st["activeModel"]["lineage"]
    assert (lineage["trainingJob"], lineage["optimizationJob"]) == ("news-rt-1", "news-rt-1-o")
    assert lineage["triggeredBy"]["modelDeployment"] == NAME
    assert lineage["triggeredBy"]["checks"][0]["value"] == 0.31
    tj = get(cluster, namespace, "trainingjob", "news-rt-1")
    assert tj is not None
    assert tj["metadata"]["ownerReferences"][0]["kind"] == "ModelDeployment"
    assert tj["status"]["lineage"]["triggeredBy"]["checks"][0]["name"] == "drift"
    obj = get(cluster, namespace, "modeldeployment", NAME)
    assert obj is not None and obj["spec"]["model"] == {"archiveUri": V1}  # never written

    # Still drifting after the promotion: Degraded again, but the cooldown (1h) holds.
    wait_status(operator, cluster, namespace, "cooling down",
                lambda s: condition(s, "Retraining").get("reason") == "RetrainCoolingDown")
    time.sleep(3)
    assert training_jobs(cluster, namespace) == ["news-rt-1"]
    reasons = events(cluster, namespace)
    for reason in ("AnalysisFailed", "FailureLimitReached", "Degraded", "RetrainTriggered",
                   "RetrainPromoted"):
        assert reason in reasons


def test_missing_data_is_inconclusive_and_never_retrains(
        cluster: ControlPlane, namespace: str, kwok_node: str, operator: RunningOperator,
        prom: tuple[PrometheusServer, TestExporter], metrics_source: TestExporter) -> None:
    set_drift(prom, namespace, 0.9, samples=20)  # terrible, on 20 predictions: noise
    apply(cluster, namespace, model_deployment(node=kwok_node, prometheus_url=prom[0].url,
                                               retrain=retrain(kwok_node)))
    wait_status(operator, cluster, namespace, "Inconclusive",
                lambda s: (s.get("analysis") or {}).get("result") == "Inconclusive")
    time.sleep(4)  # several intervals
    st = status(cluster, namespace)
    assert st["analysis"]["consecutiveFailures"] == 0
    assert st["analysis"]["checks"][0]["message"] == "only 20 samples, 300 needed"
    assert condition(st, "Degraded")["status"] == "False"
    assert training_jobs(cluster, namespace) == []


def test_a_crash_between_creating_and_recording_leaves_exactly_one(
        cluster: ControlPlane, namespace: str, kwok_node: str, operator: RunningOperator,
        prom: tuple[PrometheusServer, TestExporter], metrics_source: TestExporter) -> None:
    """The run the operator created just before it was killed exists, its record does
    not: after the restart it is adopted, not created again."""
    set_drift(prom, namespace, 0.05)
    never_finishes = retrain(kwok_node)
    never_finishes["trainingJobTemplate"]["spec"]["podTemplate"]["metadata"]["annotations"][
        "modelloop.dev/kwok-complete"] = "false"
    apply(cluster, namespace, model_deployment(node=kwok_node, prometheus_url=prom[0].url,
                                               retrain=never_finishes))
    wait_status(operator, cluster, namespace, "Healthy",
                lambda s: (s.get("analysis") or {}).get("result") == "Healthy")
    operator.kill()
    try:
        obj = get(cluster, namespace, "modeldeployment", NAME)
        assert obj is not None
        # What the killed operator had created: its TrainingJob, exactly as it builds it.
        tj = {"apiVersion": "modelloop.dev/v1alpha1", "kind": "TrainingJob",
              "metadata": {"name": "news-rt-1", "labels": {
                  "modelloop.dev/modeldeployment": NAME,
                  "app.kubernetes.io/managed-by": "modelloop"},
                  "annotations": {"modelloop.dev/triggered-by": json.dumps(
                      {"modelDeployment": NAME,
                       "checks": [{"name": "drift", "value": 0.31, "threshold": 0.2}]})},
                  "ownerReferences": [{"apiVersion": "modelloop.dev/v1alpha1",
                                       "kind": "ModelDeployment", "name": NAME,
                                       "uid": obj["metadata"]["uid"], "controller": True,
                                       "blockOwnerDeletion": True}]},
              "spec": never_finishes["trainingJobTemplate"]["spec"]}
        apply(cluster, namespace, tj)
        set_drift(prom, namespace, 0.31)
    finally:
        operator.start()
    wait_status(operator, cluster, namespace, "the run adopted", lambda s: any(
        h["trainingJob"] == "news-rt-1" for h in (s.get("retrain") or {}).get("history", [])))
    wait_status(operator, cluster, namespace, "Degraded",
                lambda s: condition(s, "Degraded").get("reason") == "AnalysisFailed")
    time.sleep(3)
    assert training_jobs(cluster, namespace) == ["news-rt-1"]
    st = status(cluster, namespace)
    assert condition(st, "Retraining")["reason"] == "RetrainRunning"
    assert st["retrain"]["inFlight"] == 1

    # A real crash now, mid-loop: still one.
    operator.restart(crash=True)
    time.sleep(3)
    assert training_jobs(cluster, namespace) == ["news-rt-1"]


def test_a_canary_failing_its_checks_is_rolled_back(
        cluster: ControlPlane, namespace: str, kwok_node: str, operator: RunningOperator,
        prom: tuple[PrometheusServer, TestExporter], metrics_source: TestExporter) -> None:
    set_drift(prom, namespace, 0.05)
    rollout = {"strategy": "Canary",
               "canary": {"steps": [{"weight": 50}], "interval": "2s", "analysis": True}}
    apply(cluster, namespace, model_deployment(node=kwok_node, prometheus_url=prom[0].url,
                                               replicas=2, rollout=rollout))
    wait_status(operator, cluster, namespace, "Ready on v1", lambda s: (
        s.get("phase") == "Ready" and (s.get("activeModel") or {}).get("archiveUri") == V1))
    set_drift(prom, namespace, 0.45, pod=CANARY_POD)  # the canary drifts, stable does not
    apply(cluster, namespace, model_deployment(node=kwok_node, prometheus_url=prom[0].url,
                                               replicas=2, rollout=rollout, model=V2))
    st = wait_status(operator, cluster, namespace, "rolled back", lambda s: (
        condition(s, "Degraded").get("reason") == "RolledBack"))
    assert "canary checks failed: drift: 0.45 above max 0.2" in st["rollout"]["message"]
    assert st["activeModel"]["archiveUri"] == V1
    operator.wait_for("canary Deployment deleted",
                      lambda: get(cluster, namespace, "deployment", f"{NAME}-canary") is None)


def test_a_canary_passing_its_checks_is_promoted(
        cluster: ControlPlane, namespace: str, kwok_node: str, operator: RunningOperator,
        prom: tuple[PrometheusServer, TestExporter], metrics_source: TestExporter) -> None:
    set_drift(prom, namespace, 0.05)
    set_drift(prom, namespace, 0.03, pod=CANARY_POD)
    rollout = {"strategy": "Canary",
               "canary": {"steps": [{"weight": 50}], "interval": "2s", "analysis": True}}
    apply(cluster, namespace, model_deployment(node=kwok_node, prometheus_url=prom[0].url,
                                               replicas=2, rollout=rollout))
    wait_status(operator, cluster, namespace, "Ready on v1", lambda s: (
        s.get("phase") == "Ready" and (s.get("activeModel") or {}).get("archiveUri") == V1))
    apply(cluster, namespace, model_deployment(node=kwok_node, prometheus_url=prom[0].url,
                                               replicas=2, rollout=rollout, model=V2))
    wait_status(operator, cluster, namespace, "promoted to v2", lambda s: (
        (s.get("activeModel") or {}).get("archiveUri") == V2 and "rollout" not in s))


def set_feedback(prom: tuple[PrometheusServer, TestExporter], namespace: str, *,
                 version: str, correct: float, wrong: float) -> None:
    """The collector's feedback counters for one model version, as Prometheus has them."""
    server, exporter = prom
    pod = f"{NAME}-collector-0"
    for flag, count in (("true", correct), ("false", wrong)):
        exporter.set("modelloop_feedback_total", count, namespace=namespace, pod=pod,
                     model_version=version, label="sport",
                     predicted="sport" if flag == "true" else "tech", correct=flag)
        server.wait_for(f'modelloop_feedback_total{{pod="{pod}",model_version="{version}",'
                        f'correct="{flag}"}} == {count}')


def test_a_canary_less_accurate_than_stable_on_feedback_is_rolled_back(
        cluster: ControlPlane, namespace: str, kwok_node: str, operator: RunningOperator,
        prom: tuple[PrometheusServer, TestExporter], metrics_source: TestExporter) -> None:
    """Both tracks clear accuracy.min (0.6) on their own; the canary is 0.20 below the
    stable track's live accuracy over the same window, beyond maxAccuracyDrop 0.05."""
    from modelloop_operator.reconcilers.sources import uri_version

    set_drift(prom, namespace, 0.05)
    set_drift(prom, namespace, 0.05, pod=CANARY_POD)
    rollout = {"strategy": "Canary",
               "canary": {"steps": [{"weight": 50}], "interval": "2s", "analysis": True,
                          "maxAccuracyDrop": 0.05}}
    spec: Json = {"replicas": 2, "rollout": rollout,
                  "capture": {"sink": "file:///captures/news"}}
    mdep = model_deployment(node=kwok_node, prometheus_url=prom[0].url, **spec)
    mdep["spec"]["monitoring"]["accuracy"] = {"min": 0.6, "minSamples": 50}
    apply(cluster, namespace, mdep)
    wait_status(operator, cluster, namespace, "Ready on v1", lambda s: (
        s.get("phase") == "Ready" and (s.get("activeModel") or {}).get("archiveUri") == V1))
    # Counters that grow within the window: accuracy is an increase() over it.
    for version in (V1, V2):
        set_feedback(prom, namespace, version=uri_version(version), correct=0, wrong=0)
    time.sleep(3)
    set_feedback(prom, namespace, version=uri_version(V1), correct=90, wrong=10)
    set_feedback(prom, namespace, version=uri_version(V2), correct=70, wrong=30)
    mdep["spec"]["model"] = {"archiveUri": V2}
    apply(cluster, namespace, mdep)
    st = wait_status(operator, cluster, namespace, "rolled back", lambda s: (
        condition(s, "Degraded").get("reason") == "RolledBack"))
    # increase() extrapolates over the window: the figures are close to 0.7 and 0.9.
    assert re.search(r"accuracyVsStable: canary accuracy 0\.(69|70)\d < stable 0\.(89|90)\d "
                     r"- maxAccuracyDrop 0\.05", st["rollout"]["message"]), st["rollout"]

    assert st["activeModel"]["archiveUri"] == V1
