"""ModelDeployment against a real control plane, with the operator running as a process.

kwok runs the server pods and marks them Ready (there is no real TorchServe here; the
local pod runner's end-to-end tests cover that), so this tier proves the children, their
shape, and how scaling, model changes, canary steps, bad sources and deletion converge.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.cluster.conftest import RunningOperator
from tests.cluster.objects import apply, condition
from tests.harness.controlplane import ControlPlane

pytestmark = pytest.mark.cluster

Json = dict[str, Any]
V1 = "file:///models/v1/bbc.mar"
V2 = "file:///models/v2/bbc.mar"
SMALL = {"cpu": "100m", "memory": "128Mi"}
"""Pod size: the shared kwok node must not fill up with pods of slowly deleted namespaces."""
SECRET = "s3-creds-k7q2z"
"""A Secret name distinctive enough to grep for."""


def model_deployment(name: str, *, node: str, model: Json, replicas: int = 2,
                     **spec: Any) -> Json:
    return {"apiVersion": "modelloop.dev/v1alpha1", "kind": "ModelDeployment",
            "metadata": {"name": name},
            "spec": {"model": model, "replicas": replicas, "resources": SMALL,
                     "scheduling": {"nodeSelector": {"kubernetes.io/hostname": node}},
                     **spec}}


def get(cluster: ControlPlane, namespace: str, kind: str, name: str) -> Json | None:
    result = cluster.kubectl("get", "-n", namespace, kind, name, "-o", "json", check=False)
    if result.returncode != 0:
        return None
    obj: Json = json.loads(result.stdout)
    return obj


def status(cluster: ControlPlane, namespace: str, name: str) -> Json:
    obj = get(cluster, namespace, "modeldeployment", name) or {}
    out: Json = obj.get("status") or {}
    return out


def describe(cluster: ControlPlane, namespace: str) -> str:
    """Status of every object of the test, for failure messages."""
    out = cluster.kubectl("get", "modeldeployments,optimizationjobs,deployments,pods", "-n",
                          namespace, "-o", "json", check=False).stdout
    lines = []
    for item in json.loads(out or '{"items": []}')["items"]:
        lines.append(f"{item['kind']} {item['metadata']['name']}: "
                     f"{json.dumps(item.get('status'))[:1500]}")
    return "\n".join(lines)


def wait_status(operator: RunningOperator, cluster: ControlPlane, namespace: str, name: str,
                what: str, check: Any, timeout: float = 45) -> Json:
    def probe() -> Json | None:
        st = status(cluster, namespace, name)
        return st if st and check(st) else None
    try:
        result: Json = operator.wait_for(f"ModelDeployment {name}: {what}", probe, timeout)
    except pytest.fail.Exception:
        print(describe(cluster, namespace))
        raise
    return result


def model_uri(dep: Json | None) -> str | None:
    if dep is None:
        return None
    uri: str | None = dep["spec"]["template"]["metadata"]["annotations"].get(
        "modelloop.dev/model-uri")
    return uri


def ready_with(uri: str, replicas: int) -> Any:
    def check(st: Json) -> bool:
        return bool(st.get("phase") == "Ready" and st.get("readyReplicas") == replicas
                    and (st.get("activeModel") or {}).get("archiveUri") == uri)
    return check


def test_children_have_the_right_shape_and_scaling_and_model_changes_converge(
        cluster: ControlPlane, namespace: str, kwok_node: str,
        operator: RunningOperator) -> None:
    apply(cluster, namespace, model_deployment("bbc", node=kwok_node,
                                               model={"archiveUri": V1}))
    st = wait_status(operator, cluster, namespace, "bbc", "Ready with 2 replicas",
                     ready_with(V1, 2))
    assert st["url"] == f"http://bbc.{namespace}.svc:8080"
    assert condition(st, "Ready")["status"] == "True"

    dep = get(cluster, namespace, "deployment", "bbc")
    assert dep is not None
    pod = dep["spec"]["template"]
    container = pod["spec"]["containers"][0]
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == \
        {"http": 8080, "metrics": 8082, "health": 8090}
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert container["startupProbe"]["httpGet"]["port"] == "health"
    assert pod["metadata"]["labels"]["modelloop.dev/track"] == "stable"
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == "8082"

    svc = get(cluster, namespace, "service", "bbc")
    assert svc is not None and [p["port"] for p in svc["spec"]["ports"]] == [8080]
    metrics = get(cluster, namespace, "service", "bbc-metrics")
    assert metrics is not None and [p["port"] for p in metrics["spec"]["ports"]] == [8082]
    config = get(cluster, namespace, "configmap", "bbc-config")
    assert config is not None
    assert "load_models=bbc=bbc.mar" in config["data"]["config.properties"]

    # Scaling.
    cluster.kubectl("patch", "modeldeployment", "bbc", "-n", namespace, "--type=merge",
                    "-p", json.dumps({"spec": {"replicas": 3}}))
    wait_status(operator, cluster, namespace, "bbc", "3 replicas", ready_with(V1, 3))

    # A new model rolls the Deployment (RollingUpdate).
    cluster.kubectl("patch", "modeldeployment", "bbc", "-n", namespace, "--type=merge",
                    "-p", json.dumps({"spec": {"model": {"archiveUri": V2}}}))
    wait_status(operator, cluster, namespace, "bbc", "serving v2", ready_with(V2, 3))
    assert model_uri(get(cluster, namespace, "deployment", "bbc")) == V2

    # The spec was never written by the operator (GitOps).
    obj = get(cluster, namespace, "modeldeployment", "bbc")
    assert obj is not None and obj["spec"]["model"] == {"archiveUri": V2}

    # Deleting the ModelDeployment deletes its children (ownerReferences).
    cluster.kubectl("delete", "modeldeployment", "bbc", "-n", namespace, "--wait=true",
                    "--timeout=60s")
    operator.wait_for("children garbage-collected", lambda: all(
        get(cluster, namespace, kind, name) is None for kind, name in (
            ("deployment", "bbc"), ("service", "bbc"), ("service", "bbc-metrics"),
            ("configmap", "bbc-config"))), timeout=60)


def test_canary_steps_then_promotion(cluster: ControlPlane, namespace: str, kwok_node: str,
                                     operator: RunningOperator) -> None:
    rollout = {"strategy": "Canary",
               "canary": {"steps": [{"weight": 25}], "interval": "3s", "analysis": False}}
    apply(cluster, namespace, model_deployment("bbc", node=kwok_node, replicas=4,
                                               model={"archiveUri": V1}, rollout=rollout))
    wait_status(operator, cluster, namespace, "bbc", "Ready on v1", ready_with(V1, 4))

    cluster.kubectl("patch", "modeldeployment", "bbc", "-n", namespace, "--type=merge",
                    "-p", json.dumps({"spec": {"model": {"archiveUri": V2}}}))
    st = wait_status(operator, cluster, namespace, "bbc", "canary at 25%",
                     lambda s: (s.get("rollout") or {}).get("canaryWeight") == 25)
    assert st["activeModel"]["archiveUri"] == V1  # stable still serves v1
    assert st["rollout"]["target"]["archiveUri"] == V2
    canary = get(cluster, namespace, "deployment", "bbc-canary")
    stable = get(cluster, namespace, "deployment", "bbc")
    assert canary is not None and stable is not None
    assert (stable["spec"]["replicas"], canary["spec"]["replicas"]) == (3, 1)
    assert model_uri(canary) == V2 and model_uri(stable) == V1
    assert canary["spec"]["template"]["metadata"]["labels"]["modelloop.dev/track"] == "canary"

    # After the interval the last step passes, stable takes v2 and the canary goes.
    st = wait_status(operator, cluster, namespace, "bbc", "promoted", ready_with(V2, 4),
                     timeout=60)
    assert "rollout" not in st
    operator.wait_for("canary Deployment deleted",
                      lambda: get(cluster, namespace, "deployment", "bbc-canary") is None)
    assert model_uri(get(cluster, namespace, "deployment", "bbc")) == V2


def test_serves_an_accepted_optimization_job_once_its_chain_has_run(
        cluster: ControlPlane, namespace: str, kwok_node: str,
        operator: RunningOperator) -> None:
    """Missing, then unfinished sources are clear conditions (no crash loop, nothing
    created); once TrainingJob and OptimizationJob have run, the archive is served with
    its lineage."""
    apply(cluster, namespace, model_deployment("bbc", node=kwok_node,
                                               model={"optimizationJobRef": {"name": "opt"}}))
    st = wait_status(operator, cluster, namespace, "bbc", "SourceNotFound",
                     lambda s: condition(s, "Ready").get("reason") == "SourceNotFound")
    assert condition(st, "Ready")["status"] == "False"
    assert "OptimizationJob opt" in condition(st, "Ready")["message"]
    assert st["phase"] == "Pending"
    assert get(cluster, namespace, "deployment", "bbc") is None

    # An OptimizationJob that cannot start (its TrainingJob is missing) is "not ready".
    node = {"nodeSelector": {"kubernetes.io/hostname": kwok_node}}
    quick = {"metadata": {"annotations": {"modelloop.dev/kwok-delay": "0s"}}}
    apply(cluster, namespace, {
        "apiVersion": "modelloop.dev/v1alpha1", "kind": "OptimizationJob",
        "metadata": {"name": "opt"},
        "spec": {"source": {"trainingJobRef": {"name": "train"}},
                 "techniques": [{"type": "quantization"}],
                 "packaging": {"archiveName": "bbc"},
                 "output": {"uri": "file:///models/opt"}, "scheduling": node,
                 "resources": SMALL,
                 "podTemplate": quick}})
    st = wait_status(operator, cluster, namespace, "bbc", "WaitingForSource",
                     lambda s: condition(s, "Ready").get("reason") == "WaitingForSource")
    assert "OptimizationJob opt" in condition(st, "Ready")["message"]
    assert get(cluster, namespace, "deployment", "bbc") is None
    operator.check_running()

    # The chain runs (kwok completes both jobs; no termination message: exit code 0
    # alone means accepted, and the archive is where modelloop-optimize puts it).
    apply(cluster, namespace, {
        "apiVersion": "modelloop.dev/v1alpha1", "kind": "TrainingJob",
        "metadata": {"name": "train"},
        "spec": {"model": {"uri": "builtin://all-minilm-l6-v2"},
                 "dataset": {"uri": "builtin://bbc-news"},
                 "output": {"uri": "file:///models/train"}, "scheduling": node,
                 "resources": SMALL,
                 "podTemplate": quick}})
    st = wait_status(operator, cluster, namespace, "bbc", "serving the archive",
                     ready_with("file:///models/opt/bbc.mar", 2), timeout=90)
    active = st["activeModel"]
    assert (active["version"], active["source"]) == ("opt", "OptimizationJob/opt")
    assert active["lineage"]["trainingJob"] == "train"
    assert active["lineage"]["optimizationJob"] == "opt"
    assert active["lineage"]["dataset"] == "builtin://bbc-news"
    dep = get(cluster, namespace, "deployment", "bbc")
    assert dep is not None
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert labels["modelloop.dev/model-version"] == "opt"


def test_the_storage_secret_name_never_reaches_status_events_or_logs(
        cluster: ControlPlane, namespace: str, kwok_node: str,
        operator: RunningOperator) -> None:
    apply(cluster, namespace, model_deployment(
        "bbc", node=kwok_node, replicas=1, model={"archiveUri": "s3://bucket/bbc/bbc.mar"},
        storage={"secretName": SECRET}))
    # kwok does not run init containers' programs; the pod only needs to exist.
    operator.wait_for("Deployment created",
                      lambda: get(cluster, namespace, "deployment", "bbc"))
    wait_status(operator, cluster, namespace, "bbc", "status written",
                lambda s: s.get("activeModel"))
    dep = get(cluster, namespace, "deployment", "bbc")
    assert dep is not None
    init = dep["spec"]["template"]["spec"]["initContainers"][0]
    assert init["envFrom"] == [{"secretRef": {"name": SECRET}}]  # referenced, where needed

    assert SECRET not in json.dumps(status(cluster, namespace, "bbc"))
    events = cluster.kubectl("get", "events", "-n", namespace, "-o", "json").stdout
    assert SECRET not in events
    assert SECRET not in operator.log.read_text()


def test_capture_runs_one_collector_and_switching_it_off_removes_it(
        cluster: ControlPlane, namespace: str, kwok_node: str,
        operator: RunningOperator) -> None:
    capture = {"sink": "file:///captures/bbc", "sampleRate": 0.5}
    apply(cluster, namespace, model_deployment(
        "cap", node=kwok_node, model={"archiveUri": V1}, replicas=1, capture=capture,
        monitoring={"prometheusUrl": "http://prometheus.invalid:9090", "interval": "1h",
                    "accuracy": {"min": 0.8, "minSamples": 10}}))
    st = wait_status(operator, cluster, namespace, "cap", "the collector ready",
                     lambda s: (s.get("capture") or {}).get("ready") is True, timeout=90)
    assert st["capture"]["feedbackUrl"] == (
        f"http://cap-feedback.{namespace}.svc:8080/v1/models/cap/feedback")
    assert st["capture"]["sink"] == capture["sink"]
    sts = get(cluster, namespace, "statefulset", "cap-collector")
    assert sts is not None and sts["spec"]["replicas"] == 1
    assert sts["metadata"]["ownerReferences"][0]["kind"] == "ModelDeployment"
    assert sts["spec"]["template"]["spec"]["containers"][0]["command"] == ["modelloop-collect"]
    svc = get(cluster, namespace, "service", "cap-feedback")
    assert svc is not None and svc["spec"]["clusterIP"] == "None"
    dep = get(cluster, namespace, "deployment", "cap")
    assert dep is not None
    env = {e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0]
           ["env"]}
    assert env["MODELLOOP_CAPTURE_URL"] == (
        f"http://cap-collector-0.cap-feedback.{namespace}.svc:8080/v1/capture")
    assert env["MODELLOOP_CAPTURE_SAMPLE_RATE"] == "0.5"

    # Off again (monitoring without feedback checks): the collector goes, the sink stays.
    obj = get(cluster, namespace, "modeldeployment", "cap")
    assert obj is not None
    spec = obj["spec"]
    spec.pop("capture")
    spec["monitoring"] = {"prometheusUrl": "http://prometheus.invalid:9090", "interval": "1h",
                          "drift": {"max": 0.2}}
    cluster.kubectl("patch", "modeldeployment", "cap", "-n", namespace, "--type=json", "-p",
                    json.dumps([{"op": "replace", "path": "/spec", "value": spec}]))
    operator.wait_for("collector removed", lambda: get(
        cluster, namespace, "statefulset", "cap-collector") is None and get(
        cluster, namespace, "service", "cap-feedback") is None, timeout=60)
    wait_status(operator, cluster, namespace, "cap", "no capture status",
                lambda s: "capture" not in s)
    dep = get(cluster, namespace, "deployment", "cap")
    assert dep is not None and "MODELLOOP_CAPTURE_URL" not in json.dumps(dep["spec"])


def test_feedback_checks_without_capture_are_refused_at_admission(
        cluster: ControlPlane, namespace: str, kwok_node: str) -> None:
    manifest = model_deployment("nocap", node=kwok_node, model={"archiveUri": V1},
                                monitoring={"prometheusUrl": "http://p:9090",
                                            "accuracy": {"min": 0.8}})
    result = cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(manifest),
                             check=False)
    assert result.returncode != 0
    assert "need spec.capture" in result.stderr, result.stderr
