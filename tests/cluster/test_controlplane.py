"""The local control plane behaves like a real cluster where our operator depends on it.

Each test names the Kubernetes behaviour it proves: scheduling on extended resources, Job
completion and failure, termination messages, garbage collection, RBAC, PodSecurity, and
the harness's own promises (real version, clean teardown, clear errors).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.objects import apply
from tests.harness.binaries import REPO_ROOT, Binaries, MissingBinariesError, locate
from tests.harness.controlplane import ControlPlane, KubectlError
from tests.harness.processes import ComponentError, free_port

pytestmark = pytest.mark.cluster

Json = dict[str, Any]


def wait_for(what: str, probe: Callable[[], Any], timeout: float = 60) -> Any:
    """Poll until probe returns something truthy; fail with `what` and the last value."""
    deadline = time.monotonic() + timeout
    value: Any = None
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.25)
    pytest.fail(f"timed out after {timeout}s waiting for {what}; last value: {value!r}")


def get(cluster: ControlPlane, *args: str) -> Json:
    result: Json = json.loads(cluster.kubectl("get", *args, "-o", "json").stdout)
    return result


def condition(obj: Json, kind: str) -> Json | None:
    for cond in obj.get("status", {}).get("conditions", []):
        if cond["type"] == kind:
            return dict(cond)
    return None


def pod_template(node: str, *, annotations: dict[str, str] | None = None,
                 gpus: int = 0, restart: str = "Never") -> Json:
    resources: Json = {"requests": {"cpu": "100m", "memory": "64Mi"}}
    if gpus:
        resources["limits"] = {"nvidia.com/gpu": str(gpus)}
    return {
        "metadata": {"labels": {"app": "t"}, "annotations": annotations or {}},
        "spec": {
            "restartPolicy": restart,
            "nodeSelector": {"kubernetes.io/hostname": node},
            "containers": [{"name": "main", "image": "example.invalid/trainer:1",
                            "resources": resources}],
        },
    }


def job(name: str, node: str, *, completions: int = 1, annotations: dict[str, str] | None = None,
        extra_spec: Json | None = None) -> Json:
    return {
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
        "spec": {"completions": completions, "parallelism": completions,
                 "completionMode": "Indexed", "backoffLimit": 0,
                 "template": pod_template(node, annotations=annotations),
                 **(extra_spec or {})},
    }


def job_finished(cluster: ControlPlane, namespace: str, name: str) -> Json | None:
    obj = get(cluster, "job", name, "-n", namespace)
    for kind in ("Complete", "Failed"):
        cond = condition(obj, kind)
        if cond and cond["status"] == "True":
            return obj
    return None


def pods_of_job(cluster: ControlPlane, namespace: str, name: str) -> list[Json]:
    items: list[Json] = get(cluster, "pods", "-n", namespace, "-l",
                            f"batch.kubernetes.io/job-name={name}")["items"]
    return items


@pytest.fixture
def gpu_node(cluster: ControlPlane) -> Iterator[str]:
    """A kwok node with 8 GPUs, a unique label and a GPU taint, deleted after the test."""
    name = f"gpu-{uuid.uuid4().hex[:8]}"
    cluster.add_node(name, gpus=8, cpu="32", memory="256Gi",
                     labels={"modelloop.dev/pool": name},
                     taints=[{"key": "nvidia.com/gpu", "value": "present",
                              "effect": "NoSchedule"}])
    try:
        yield name
    finally:
        cluster.delete_node(name)


def gpu_deployment(name: str, node: str, *, gpus: int, replicas: int) -> Json:
    template = pod_template(node, gpus=gpus, restart="Always")
    template["metadata"]["labels"] = {"app": name}
    template["spec"]["nodeSelector"] = {"modelloop.dev/pool": node}
    template["spec"]["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists",
                                        "effect": "NoSchedule"}]
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "template": template},
    }


# --- the harness itself ---------------------------------------------------------------------

def test_server_reports_the_pinned_kubernetes_version(cluster: ControlPlane) -> None:
    go_mod = (REPO_ROOT / "hack/go/kubernetes/go.mod").read_text()
    pinned = re.search(r"^\s*(?:require\s+)?k8s\.io/kubernetes (v[0-9.]+)\b", go_mod, re.MULTILINE)
    assert pinned, "hack/go/kubernetes/go.mod pins no k8s.io/kubernetes version"
    version = json.loads(cluster.kubectl("version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"] == pinned.group(1)
    assert version["serverVersion"]["minor"] == pinned.group(1).split(".")[1]


def test_kubectl_and_helm_are_ours_not_the_system_ones(cluster: ControlPlane) -> None:
    which = subprocess.run(["bash", "-c", "command -v kubectl; command -v helm"],
                           env=cluster.env, capture_output=True, text=True, check=True)
    assert which.stdout.split() == [str(cluster.kubectl_path), str(cluster.helm_path)]


def test_helm_template_and_install(cluster: ControlPlane, namespace: str,
                                   tmp_path: Path) -> None:
    chart = tmp_path / "demo"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: demo\nversion: 0.1.0\n")
    (chart / "values.yaml").write_text("greeting: hello\n")
    (chart / "templates" / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-cm\n"
        "data:\n  greeting: {{ .Values.greeting | quote }}\n")
    rendered = subprocess.run(
        [str(cluster.helm_path), "template", "r1", str(chart), "--set", "greeting=hi"],
        env=cluster.env, capture_output=True, text=True, check=True)
    assert 'greeting: "hi"' in rendered.stdout and "name: r1-cm" in rendered.stdout
    subprocess.run([str(cluster.helm_path), "install", "r2", str(chart), "-n", namespace],
                   env=cluster.env, capture_output=True, text=True, check=True)
    assert get(cluster, "configmap", "r2-cm", "-n", namespace)["data"] == {"greeting": "hello"}


def test_kwok_leaves_nodes_without_its_annotation_alone(cluster: ControlPlane) -> None:
    # The local pod runner owns such nodes (e.g. local-0); kwok must never mark them Ready.
    foreign = f"foreign-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "-f", "-", input=json.dumps(
        {"apiVersion": "v1", "kind": "Node", "metadata": {"name": foreign}}))
    barrier = f"kwok-{uuid.uuid4().hex[:6]}"
    try:
        # kwok handles node events in order: once it has initialised a node created after
        # the foreign one, it has seen (and skipped) the foreign one.
        cluster.add_node(barrier)
        assert condition(get(cluster, "node", foreign), "Ready") is None
    finally:
        cluster.delete_node(barrier)
        cluster.delete_node(foreign)


def test_restart_apiserver_keeps_state(cluster: ControlPlane, namespace: str) -> None:
    cluster.kubectl("create", "configmap", "survivor", "-n", namespace)
    cluster.restart_apiserver()
    assert get(cluster, "configmap", "survivor", "-n", namespace)["metadata"]["name"]
    cluster.check_alive()


# --- scheduling ------------------------------------------------------------------------------

def test_gpu_pods_are_scheduled_onto_a_node_with_enough_gpus(
        cluster: ControlPlane, namespace: str, gpu_node: str) -> None:
    apply(cluster, namespace, gpu_deployment("fits", gpu_node, gpus=4, replicas=2))

    def running() -> list[Json] | None:
        pods: list[Json] = get(cluster, "pods", "-n", namespace, "-l", "app=fits")["items"]
        ok = len(pods) == 2 and all(p["status"].get("phase") == "Running" for p in pods)
        return pods if ok else None

    pods = wait_for("2 GPU pods Running", running)
    assert {p["spec"]["nodeName"] for p in pods} == {gpu_node}
    cluster.kubectl("rollout", "status", "deployment/fits", "-n", namespace, "--timeout=60s")


def test_gpu_pods_stay_pending_when_no_node_has_enough_gpus(
        cluster: ControlPlane, namespace: str, gpu_node: str) -> None:
    apply(cluster, namespace, gpu_deployment("too-big", gpu_node, gpus=16, replicas=1))

    def unschedulable() -> Json | None:
        pods = get(cluster, "pods", "-n", namespace, "-l", "app=too-big")["items"]
        cond = condition(pods[0], "PodScheduled") if pods else None
        return cond if cond and cond.get("reason") == "Unschedulable" else None

    cond = wait_for("PodScheduled=False/Unschedulable", unschedulable)
    assert cond["status"] == "False"
    assert "Insufficient nvidia.com/gpu" in cond["message"]
    pod = get(cluster, "pods", "-n", namespace, "-l", "app=too-big")["items"][0]
    assert pod["status"]["phase"] == "Pending" and not pod["spec"].get("nodeName")


# --- Jobs and kwok stages ---------------------------------------------------------------------

def test_indexed_job_with_three_completions_completes(
        cluster: ControlPlane, namespace: str, kwok_node: str) -> None:
    apply(cluster, namespace, job("train", kwok_node, completions=3))
    done = wait_for("job to finish", lambda: job_finished(cluster, namespace, "train"))
    assert condition(done, "Complete"), done["status"]
    assert done["status"]["succeeded"] == 3
    assert done["status"]["completedIndexes"] == "0-2"


@pytest.mark.parametrize(("annotations", "exit_code", "reason"), [
    ({"modelloop.dev/kwok-fault": "exit1"}, 1, "Error"),
    ({"modelloop.dev/kwok-fault": "error", "modelloop.dev/kwok-exit-code": "3"}, 3, "Error"),
    ({"modelloop.dev/kwok-fault": "oomkilled"}, 137, "OOMKilled"),
], ids=["exit1", "exit-code-3", "oomkilled"])
def test_faulty_job_fails_with_exit_code_in_pod_status(
        cluster: ControlPlane, namespace: str, kwok_node: str,
        annotations: dict[str, str], exit_code: int, reason: str) -> None:
    message = json.dumps({"v": 1, "kind": "train", "status": "Failed", "exitCode": exit_code})
    apply(cluster, namespace, job("bad", kwok_node, annotations={
        **annotations, "modelloop.dev/kwok-termination-message": message}))
    done = wait_for("job to finish", lambda: job_finished(cluster, namespace, "bad"))
    failed = condition(done, "Failed")
    assert failed and failed["reason"] == "BackoffLimitExceeded", done["status"]
    [pod] = pods_of_job(cluster, namespace, "bad")
    assert pod["status"]["phase"] == "Failed"
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == exit_code
    assert terminated["reason"] == reason
    assert terminated["message"] == message


def test_job_pod_completes_with_termination_message_from_annotation(
        cluster: ControlPlane, namespace: str, kwok_node: str) -> None:
    # What the trainer writes (contracts.md §3): quotes, braces and a newline survive intact.
    summary = json.dumps({"v": 1, "kind": "train", "status": "Succeeded", "exitCode": 0,
                          "message": 'it said "done"\nok', "metrics": {"accuracy": 0.97}})
    apply(cluster, namespace, job("ok", kwok_node, annotations={
        "modelloop.dev/kwok-termination-message": summary}))
    done = wait_for("job to finish", lambda: job_finished(cluster, namespace, "ok"))
    assert condition(done, "Complete")
    [pod] = pods_of_job(cluster, namespace, "ok")
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (0, "Completed")
    assert json.loads(terminated["message"]) == json.loads(summary)


def test_bare_pod_completes_on_request_after_the_given_delay(
        cluster: ControlPlane, namespace: str, kwok_node: str) -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bare"},
           "spec": pod_template(kwok_node)["spec"]}
    pod["metadata"]["annotations"] = {"modelloop.dev/kwok-complete": "true",
                                      "modelloop.dev/kwok-delay": "3s",
                                      "modelloop.dev/kwok-termination-message": "bye"}
    apply(cluster, namespace, pod)

    def phase() -> str:
        return str(get(cluster, "pod", "bare", "-n", namespace)["status"].get("phase"))

    wait_for("pod Running", lambda: phase() == "Running")
    running_since = time.monotonic()
    wait_for("pod Succeeded", lambda: phase() == "Succeeded")
    # kwok counts the delay from when it saw the pod Running; allow for polling slack.
    assert time.monotonic() - running_since >= 2.0
    final = get(cluster, "pod", "bare", "-n", namespace)
    assert final["status"]["containerStatuses"][0]["state"]["terminated"]["message"] == "bye"


def test_job_pod_held_running_completes_when_released(
        cluster: ControlPlane, namespace: str, kwok_node: str) -> None:
    apply(cluster, namespace, job("held", kwok_node, annotations={
        "modelloop.dev/kwok-complete": "false", "modelloop.dev/kwok-delay": "0s"}))
    pod = wait_for("pod Running", lambda: next(
        (p for p in pods_of_job(cluster, namespace, "held")
         if p["status"].get("phase") == "Running"), None))
    time.sleep(2)  # several kwok cycles: a held pod must not complete
    assert job_finished(cluster, namespace, "held") is None
    cluster.kubectl("annotate", "pod", pod["metadata"]["name"], "-n", namespace,
                    "--overwrite", "modelloop.dev/kwok-complete=true")
    done = wait_for("job to finish", lambda: job_finished(cluster, namespace, "held"))
    assert condition(done, "Complete")


def test_disrupted_pod_gets_disruption_target_and_fails_job_by_policy(
        cluster: ControlPlane, namespace: str, kwok_node: str) -> None:
    # FailJob (not Ignore) keeps the test finite: an ignored disruption would be retried, and
    # the replacement pod carries the same fault annotation.
    policy = {"podFailurePolicy": {"rules": [
        {"action": "FailJob", "onPodConditions": [{"type": "DisruptionTarget"}]}]}}
    apply(cluster, namespace, job("preempted", kwok_node, extra_spec=policy,
                                  annotations={"modelloop.dev/kwok-fault": "disrupted"}))
    done = wait_for("job to finish", lambda: job_finished(cluster, namespace, "preempted"))
    failed = condition(done, "Failed")
    assert failed and failed["reason"] == "PodFailurePolicy", done["status"]
    [pod] = pods_of_job(cluster, namespace, "preempted")
    disruption = condition(pod, "DisruptionTarget")
    assert disruption and disruption["status"] == "True"
    assert pod["status"]["phase"] == "Failed"


# --- controllers and API policy ---------------------------------------------------------------

def test_deleting_an_owner_deletes_its_children(
        cluster: ControlPlane, namespace: str, kwok_node: str) -> None:
    deployment = gpu_deployment("owner", kwok_node, gpus=0, replicas=2)
    deployment["spec"]["template"]["spec"]["nodeSelector"] = {
        "kubernetes.io/hostname": kwok_node}
    apply(cluster, namespace, deployment)
    cluster.kubectl("rollout", "status", "deployment/owner", "-n", namespace, "--timeout=60s")
    assert get(cluster, "replicasets", "-n", namespace, "-l", "app=owner")["items"]
    cluster.kubectl("delete", "deployment", "owner", "-n", namespace,
                    "--cascade=background", "--wait=false")

    def children() -> int:
        rs = get(cluster, "replicasets", "-n", namespace, "-l", "app=owner")["items"]
        pods = get(cluster, "pods", "-n", namespace, "-l", "app=owner")["items"]
        return len(rs) + len(pods)

    wait_for("garbage collector to delete ReplicaSet and pods", lambda: children() == 0)


def test_service_account_without_rbac_is_forbidden_to_write(
        cluster: ControlPlane, namespace: str) -> None:
    cluster.kubectl("create", "serviceaccount", "nobody", "-n", namespace)
    as_sa = f"--as=system:serviceaccount:{namespace}:nobody"
    denied = cluster.kubectl("create", "configmap", "x", "-n", namespace, as_sa, check=False)
    assert denied.returncode != 0
    assert "configmaps is forbidden" in denied.stderr
    assert f'"system:serviceaccount:{namespace}:nobody" cannot create' in denied.stderr
    # Control: the same request succeeds once RBAC grants it, so the denial was RBAC's.
    cluster.kubectl("create", "role", "cm-writer", "--verb=create", "--resource=configmaps",
                    "-n", namespace)
    cluster.kubectl("create", "rolebinding", "cm-writer", "--role=cm-writer",
                    f"--serviceaccount={namespace}:nobody", "-n", namespace)
    wait_for("RBAC to allow the write", lambda: cluster.kubectl(
        "create", "configmap", "x", "-n", namespace, as_sa, check=False).returncode == 0)


def test_restricted_namespace_rejects_a_privileged_pod(
        cluster: ControlPlane, namespace: str) -> None:
    cluster.kubectl("label", "namespace", namespace,
                    "pod-security.kubernetes.io/enforce=restricted")
    privileged = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "root"},
                  "spec": {"containers": [{"name": "c", "image": "example.invalid/x:1",
                                           "securityContext": {"privileged": True}}]}}
    with pytest.raises(KubectlError, match=r"violates PodSecurity \"restricted:latest\""):
        apply(cluster, namespace, privileged)
    # Control: a pod that meets the restricted profile is admitted.
    compliant = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "fine"},
                 "spec": {"securityContext": {"runAsNonRoot": True,
                                              "seccompProfile": {"type": "RuntimeDefault"}},
                          "containers": [{"name": "c", "image": "example.invalid/x:1",
                                          "securityContext": {
                                              "allowPrivilegeEscalation": False,
                                              "capabilities": {"drop": ["ALL"]}}}]}}
    apply(cluster, namespace, compliant)


# --- lifecycle: CLI, stale state, crashes (each starts its own control plane) ----------------

@pytest.fixture(scope="module")
def bins() -> Binaries:
    try:
        return locate()
    except MissingBinariesError as err:
        if os.environ.get("MODELLOOP_REQUIRE_CLUSTER") == "1":
            pytest.fail(str(err), pytrace=False)
        pytest.skip(str(err))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tests.harness.controlplane", *args],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
                          check=False)


def test_cli_up_refuses_running_and_stale_dirs_and_down_leaves_nothing(
        bins: Binaries, tmp_path: Path) -> None:
    workdir = tmp_path / "plane"
    up = _cli("up", "--workdir", str(workdir))
    assert up.returncode == 0, up.stderr
    assert "export KUBECONFIG=" in up.stdout
    pids = [c["pid"] for c in json.loads((workdir / "state.json").read_text())["components"]]
    try:
        assert len(pids) == 5 and all(_alive(p) for p in pids)
        again = _cli("up", "--workdir", str(workdir))
        assert again.returncode == 1 and "already running" in again.stderr
        for pid in pids:  # a crash of everything (or a reboot) leaves the dir stale
            os.killpg(pid, signal.SIGKILL)
        wait_for("components to die", lambda: not any(_alive(p) for p in pids), 20)
        stale = _cli("up", "--workdir", str(workdir))
        assert stale.returncode == 1 and "stale work dir" in stale.stderr
    finally:
        down = _cli("down", "--workdir", str(workdir))
    assert down.returncode == 0, down.stderr
    assert not workdir.exists()
    assert not any(_alive(p) for p in pids)


def test_crashing_component_is_named_with_its_log_and_the_rest_is_stopped(
        bins: Binaries, tmp_path: Path) -> None:
    broken = tmp_path / "kube-scheduler"
    broken.write_text("#!/bin/sh\necho 'scheduler: cannot load config' >&2\nexit 7\n")
    broken.chmod(0o755)
    plane = ControlPlane(tmp_path / "plane", dataclasses.replace(bins, kube_scheduler=broken),
                         tie_to_parent=True)
    with pytest.raises(ComponentError) as failure:
        plane.start(timeout=120)
    text = str(failure.value)
    assert "kube-scheduler exited with code 7" in text
    assert "scheduler: cannot load config" in text
    assert all(c.exit_code() is not None for c in plane.components.values())


def test_apiserver_port_in_use_is_a_clear_error(bins: Binaries, tmp_path: Path) -> None:
    import socket

    port = free_port()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        plane = ControlPlane(tmp_path / "plane", bins, tie_to_parent=True,
                             apiserver_port=port)
        with pytest.raises(ComponentError, match=rf"port 127\.0\.0\.1:{port} is already in use"):
            plane.start()
    assert not plane.components
