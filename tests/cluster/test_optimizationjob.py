"""OptimizationJob against a real control plane, with the operator running as a process.

URIs are file:// here: a pvc:// URI makes the pods wait for a claim the test has no
reason to create (the scheduler checks claims, kwok does not care about the paths).

The source TrainingJob and the optimizer pod are played by kwok: pod annotations in
``spec.podTemplate`` say what the program "did" (tests/harness/README.md), including the
termination message the operator reads the report from.
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
OWNER_LABEL = "modelloop.dev/optimizationjob"
SMALL = {"cpu": "100m", "memory": "128Mi"}
"""Pod size: the shared kwok node must not fill up with pods of slowly deleted namespaces."""
TRAIN_SUMMARY = json.dumps({"v": 1, "kind": "train", "status": "Succeeded", "exitCode": 0,
                            "message": "done", "metrics": {"accuracy": 0.97},
                            "outputUri": "file:///models/bbc/run1", "checksum": "sha256:0123",
                            "labels": ["business", "sport"]}, separators=(",", ":"))
REPORT = {"baseline": {"sizeBytes": 90_000_000, "latencyP50Ms": 20.0, "latencyP99Ms": 31.0,
                       "throughput": 77.0, "accuracy": 0.97, "f1_macro": 0.96},
          "optimized": {"sizeBytes": 58_000_000, "latencyP50Ms": 14.1, "latencyP99Ms": 22.0,
                        "throughput": 109.3, "accuracy": 0.966, "f1_macro": 0.955},
          "sizeRatio": 0.64, "speedup": 1.42, "accuracyDrop": 0.004}


def optimize_summary(*, accepted: bool) -> str:
    report = REPORT if accepted else {**REPORT, "accuracyDrop": 0.031}
    return json.dumps({
        "v": 1, "kind": "optimize", "status": "Succeeded" if accepted else "Rejected",
        "exitCode": 0 if accepted else 4, "accepted": accepted,
        "message": "optimization accepted" if accepted else "accuracy dropped 3.1 points",
        "outputUri": "pvc://models/bbc/opt1", "checksum": "sha256:beef",
        "archiveUri": "pvc://models/bbc/opt1/model.mar" if accepted else None,
        "report": report}, separators=(",", ":"))


def training_job(name: str, *, node: str, annotations: dict[str, str]) -> Json:
    return {"apiVersion": "modelloop.dev/v1alpha1", "kind": "TrainingJob",
            "metadata": {"name": name},
            "spec": {"model": {"uri": "builtin://all-minilm-l6-v2"},
                     "dataset": {"uri": "builtin://bbc-news", "maxSamples": 100},
                     "output": {"uri": "file:///models/bbc/run1"},
                     "podTemplate": {"metadata": {"annotations": annotations}},
                     "resources": SMALL,
                     "scheduling": {"nodeSelector": {"kubernetes.io/hostname": node}}}}


def optimization_job(name: str, *, source: str, node: str,
                     annotations: dict[str, str]) -> Json:
    return {"apiVersion": "modelloop.dev/v1alpha1", "kind": "OptimizationJob",
            "metadata": {"name": name},
            "spec": {"source": {"trainingJobRef": {"name": source}},
                     "techniques": [{"type": "quantization"}],
                     "output": {"uri": "file:///models/bbc/opt1"},
                     "podTemplate": {"metadata": {"annotations": annotations}},
                     "resources": SMALL,
                     "scheduling": {"nodeSelector": {"kubernetes.io/hostname": node}}}}


def status(cluster: ControlPlane, namespace: str, kind: str, name: str) -> Json:
    result = cluster.kubectl("get", "-n", namespace, kind, name, "-o", "json", check=False)
    if result.returncode != 0:
        return {}
    out: Json = json.loads(result.stdout).get("status") or {}
    return out


def jobs(cluster: ControlPlane, namespace: str, name: str) -> list[str]:
    out = cluster.kubectl("get", "jobs", "-n", namespace, "-l", f"{OWNER_LABEL}={name}",
                          "-o", "json").stdout
    return sorted(j["metadata"]["name"] for j in json.loads(out)["items"])


def describe(cluster: ControlPlane, namespace: str) -> str:
    """Status of every object of the test, for failure messages."""
    out = cluster.kubectl("get", "trainingjobs,optimizationjobs,jobs,pods", "-n", namespace,
                          "-o", "json", check=False).stdout
    lines = []
    for item in json.loads(out or '{"items": []}')["items"]:
        lines.append(f"{item['kind']} {item['metadata']['name']}: "
                     f"{json.dumps(item.get('status'))[:1500]}")
    return "\n".join(lines)


def wait_status(operator: RunningOperator, cluster: ControlPlane, namespace: str, name: str,
                what: str, check: Any, timeout: float = 45) -> Json:
    def probe() -> Json | None:
        st = status(cluster, namespace, "optimizationjob", name)
        return st if check(st) else None
    try:
        result: Json = operator.wait_for(f"OptimizationJob {name}: {what}", probe, timeout)
    except pytest.fail.Exception:
        print(describe(cluster, namespace))
        raise
    return result


def test_waits_for_its_training_job_then_runs_and_is_accepted(
        cluster: ControlPlane, namespace: str, kwok_node: str,
        operator: RunningOperator) -> None:
    accepted = {"modelloop.dev/kwok-termination-message": optimize_summary(accepted=True),
                "modelloop.dev/kwok-delay": "0s"}
    apply(cluster, namespace, optimization_job("bbc-int8", source="bbc", node=kwok_node,
                                               annotations=accepted))
    st = wait_status(operator, cluster, namespace, "bbc-int8", "SourceNotFound",
                     lambda s: condition(s, "Progressing").get("reason") == "SourceNotFound")
    assert st["phase"] == "Pending"
    assert condition(st, "Progressing")["status"] == "False"
    assert "TrainingJob bbc" in condition(st, "Progressing")["message"]
    assert jobs(cluster, namespace, "bbc-int8") == []

    # The TrainingJob appears and runs: the OptimizationJob notices without a resync.
    apply(cluster, namespace, training_job("bbc", node=kwok_node, annotations={
        "modelloop.dev/kwok-complete": "false",
        "modelloop.dev/kwok-termination-message": TRAIN_SUMMARY}))
    # Waiting names the TrainingJob's phase; Running also means its pod exists, so the
    # annotation below reaches it (a pod created later would keep "complete: false").
    st = wait_status(operator, cluster, namespace, "bbc-int8", "WaitingForSource, Running",
                     lambda s: condition(s, "Progressing").get("reason") == "WaitingForSource"
                     and "(phase Running)" in condition(s, "Progressing").get("message", ""))
    assert jobs(cluster, namespace, "bbc-int8") == []

    cluster.kubectl("annotate", "pods", "-n", namespace, "-l", "modelloop.dev/trainingjob=bbc",
                    "--overwrite", "modelloop.dev/kwok-complete=true")
    st = wait_status(operator, cluster, namespace, "bbc-int8", "Succeeded",
                     lambda s: s.get("phase") == "Succeeded", timeout=60)
    assert jobs(cluster, namespace, "bbc-int8") == ["bbc-int8-a1"]
    verdict = condition(st, "Accepted")
    assert verdict["status"] == "True"
    assert "accuracy drop 0.40 pts <= 1.00 budget, speedup 1.42x" in verdict["message"]
    assert st["archiveUri"] == "pvc://models/bbc/opt1/model.mar"
    assert st["report"]["speedup"] == 1.42
    assert st["report"]["optimized"]["latencyP50Ms"] == 14.1
    assert st["lineage"] == {"baseModel": "builtin://all-minilm-l6-v2",
                             "dataset": "builtin://bbc-news", "trainingJob": "bbc",
                             "optimizationJob": "bbc-int8"}
    assert condition(st, "Ready")["status"] == "True"

    # The optimizer was pointed at the TrainingJob's model and dataset.
    job = json.loads(cluster.kubectl("get", "job", "bbc-int8-a1", "-n", namespace, "-o",
                                     "json").stdout)
    command = job["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[0] == "modelloop-optimize"
    assert "--model-uri=file:///models/bbc/run1" in command
    assert "--dataset-uri=builtin://bbc-news" in command


def test_rejection_is_final_with_the_report_in_status(
        cluster: ControlPlane, namespace: str, kwok_node: str,
        operator: RunningOperator) -> None:
    apply(cluster, namespace, training_job("bbc", node=kwok_node, annotations={
        "modelloop.dev/kwok-termination-message": TRAIN_SUMMARY,
        "modelloop.dev/kwok-delay": "0s"}))
    apply(cluster, namespace, optimization_job("bbc-prune", source="bbc", node=kwok_node,
                                               annotations={
        "modelloop.dev/kwok-fault": "exit1", "modelloop.dev/kwok-exit-code": "4",
        "modelloop.dev/kwok-delay": "0s",
        "modelloop.dev/kwok-termination-message": optimize_summary(accepted=False)}))
    st = wait_status(operator, cluster, namespace, "bbc-prune", "Failed",
                     lambda s: s.get("phase") == "Failed", timeout=60)
    verdict = condition(st, "Accepted")
    assert (verdict["status"], verdict["reason"]) == ("False", "OptimizationRejected")
    assert "3.10 pts > 1.00 budget" in verdict["message"]
    assert condition(st, "Failed")["reason"] == "OptimizationRejected"
    assert st["report"]["accuracyDrop"] == 0.031
    assert "archiveUri" not in st
    assert st["attempts"] == 1 and st.get("failedAttempts", 0) == 0
    assert jobs(cluster, namespace, "bbc-prune") == ["bbc-prune-a1"]  # never retried


def test_a_failed_training_job_fails_the_optimization_clearly(
        cluster: ControlPlane, namespace: str, kwok_node: str,
        operator: RunningOperator) -> None:
    apply(cluster, namespace, training_job("bbc", node=kwok_node, annotations={
        "modelloop.dev/kwok-fault": "exit1", "modelloop.dev/kwok-exit-code": "3",
        "modelloop.dev/kwok-delay": "0s"}))
    apply(cluster, namespace, optimization_job("bbc-int8", source="bbc", node=kwok_node,
                                               annotations={}))
    st = wait_status(operator, cluster, namespace, "bbc-int8", "SourceFailed",
                     lambda s: s.get("phase") == "Failed", timeout=60)
    failed = condition(st, "Failed")
    assert (failed["status"], failed["reason"]) == ("True", "SourceFailed")
    assert "TrainingJob bbc failed" in failed["message"]
    assert jobs(cluster, namespace, "bbc-int8") == []


def test_an_image_model_is_trained_but_not_optimized(
        cluster: ControlPlane, namespace: str, kwok_node: str,
        operator: RunningOperator) -> None:
    images = training_job("digits", node=kwok_node, annotations={
        "modelloop.dev/kwok-termination-message": TRAIN_SUMMARY,
        "modelloop.dev/kwok-delay": "0s"})
    images["spec"].update(task="image-classification",
                          model={"uri": "builtin://efficientnet-lite0"},
                          dataset={"uri": "builtin://digits"},
                          hyperparameters={"imageSize": 48})
    apply(cluster, namespace, images)
    apply(cluster, namespace, optimization_job("digits-int8", source="digits", node=kwok_node,
                                               annotations={}))
    st = wait_status(operator, cluster, namespace, "digits-int8", "UnsupportedTask",
                     lambda s: s.get("phase") == "Failed", timeout=60)
    failed = condition(st, "Failed")
    assert (failed["status"], failed["reason"]) == ("True", "UnsupportedTask")
    assert "trained an image-classification model" in failed["message"]
    assert jobs(cluster, namespace, "digits-int8") == []
    # The TrainingJob itself ran with the image task's flags.
    out = cluster.kubectl("get", "jobs", "-n", namespace, "-l",
                          "modelloop.dev/trainingjob=digits", "-o", "json").stdout
    [job] = json.loads(out)["items"]
    command = job["spec"]["template"]["spec"]["containers"][0]["command"]
    assert {"--task=image-classification", "--image-size=48",
            "--learning-rate=0.002"} <= set(command)
    assert not [flag for flag in command if flag.startswith("--max-length")]
