"""Real controllers drive the local node: EndpointSlices, Jobs, PVs, graceful deletion."""

from __future__ import annotations

import functools
import json
import os
import time
import urllib.request
from ipaddress import ip_address, ip_network
from pathlib import Path
from typing import Any

import pytest

from tests.harness.controlplane import ControlPlane
from tests.harness.podrunner import (
    PodRunner,
    local_pv_manifest,
    local_routes_available,
    local_storage_class_manifest,
)
from tests.podrunner.kubehelpers import (
    RUNNER_SELECTOR,
    apply,
    bare_pod,
    condition,
    pod,
    sh,
    terminated,
    wait_for,
    wait_phase,
)


def http_server(name: str, node: str = "local-0") -> dict[str, object]:
    return bare_pod(name, [{
        "name": "web",
        "image": "python:3.11",
        "command": ["python", "-m", "http.server", "8080", "--bind", "$(POD_IP)"],
        "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
        "ports": [{"name": "http", "containerPort": 8080}],
        "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1},
    }], restart="Always", node=node) | {"metadata": {"name": name, "labels": {"app": "web"}}}


def start_ready_servers(cluster: ControlPlane, namespace: str, node: str) -> set[str]:
    """Two HTTP servers on port 8080 of one node; returns their pod IPs once both are Ready."""
    apply(cluster, namespace, http_server("web-a", node), http_server("web-b", node))

    def ready_pod(name: str) -> dict[str, Any] | None:
        obj = pod(cluster, namespace, name)
        return obj if condition(obj, "Ready") == "True" else None

    ready = {name: wait_for(f"{name} Ready", functools.partial(ready_pod, name), timeout=60)
             for name in ("web-a", "web-b")}
    ips = {p["status"]["podIP"] for p in ready.values()}
    assert len(ips) == 2
    for ip in ips:
        with urllib.request.urlopen(f"http://{ip}:8080/", timeout=5) as response:
            assert response.status == 200
    return ips


def test_two_servers_on_one_port_get_their_own_loopback_ips(
        cluster: ControlPlane, namespace: str, pod_runner: PodRunner) -> None:
    ips = start_ready_servers(cluster, namespace, "local-0")
    assert all(ip.startswith("127.") for ip in ips)


# Opt-in: the routed CIDR (198.18.0.0/15) is host-local, but it is not loopback, and this
# project's shared machines and CI send test traffic to loopback addresses only.
@pytest.mark.skipif(os.environ.get("MODELLOOP_PODRUNNER_ROUTED") != "1",
                    reason="routed pod CIDRs are opt-in: set MODELLOOP_PODRUNNER_ROUTED=1")
@pytest.mark.skipif(not local_routes_available(), reason="a local route needs root and `ip`")
def test_routed_pod_ips_appear_in_the_services_endpoint_slice(
        cluster: ControlPlane, namespace: str, pod_runner: PodRunner, tmp_path: Path) -> None:
    # Kubernetes 1.37 rejects loopback addresses in EndpointSlices: a runner with a routed,
    # host-local CIDR is what Services need.
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
               "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}}
    with PodRunner(kubeconfig=cluster.kubeconfig, node_name="local-1", pod_cidr="routed",
                   workdir=tmp_path / "local-1") as routed:
        apply(cluster, namespace, service)
        ips = start_ready_servers(cluster, namespace, "local-1")
        assert all(ip_address(ip) in ip_network(routed.pod_cidr) for ip in ips)
        wait_for("EndpointSlice with both pod IPs", functools.partial(slice_ips, cluster,
                                                                      namespace, ips), timeout=30)
        cluster.kubectl("delete", "pod", "web-a", "web-b", "-n", namespace, "--wait=true")
    cluster.kubectl("delete", "node", "local-1", "--wait=false")


def slice_ips(cluster: ControlPlane, namespace: str, ips: set[str]) -> set[str] | None:
    """The ready addresses of Service web's EndpointSlices, once they are exactly `ips`."""
    slices = cluster.api_get(f"/apis/discovery.k8s.io/v1/namespaces/{namespace}/"
                             "endpointslices?labelSelector=kubernetes.io/service-name=web")
    found = {address for item in slices["items"] for ep in item.get("endpoints") or []
             if (ep.get("conditions") or {}).get("ready") for address in ep["addresses"]}
    return found if found == ips else None


def test_deletion_sends_sigterm_and_leaves_no_process(
        cluster: ControlPlane, namespace: str, pod_runner: PodRunner) -> None:
    script = ("trap 'echo term > /w/term; exit 0' TERM; "
              "sleep 300 & echo $! > /w/kid; echo $$$$ > /w/main; wait")
    spec = bare_pod("victim", [sh("main", script, volumeMounts=[{"name": "w", "mountPath": "/w"}])],
                    restart="Always", volumes=[{"name": "w", "emptyDir": {}}])
    apply(cluster, namespace, spec)
    wait_phase(cluster, namespace, "victim", "Running")
    pod_dir = pod_runner.pod_dir(namespace, "victim")
    assert pod_dir is not None
    files = pod_dir / "volumes" / "w"
    pids = wait_for("pid files", lambda: [int((files / f).read_text()) for f in ("kid", "main")]
                    if (files / "main").exists() and (files / "kid").exists() else None)
    assert all(alive(p) for p in pids)
    cluster.kubectl("delete", "pod", "victim", "-n", namespace, "--wait=true", "--timeout=60s")
    assert (files / "term").read_text() == "term\n"
    deadline = time.monotonic() + 5
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [p for p in pids if alive(p)] == []


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"


def test_indexed_job_pinned_to_the_local_node_completes(
        cluster: ControlPlane, namespace: str, pod_runner: PodRunner) -> None:
    job = {
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "gang"},
        "spec": {
            "completions": 2, "parallelism": 2, "completionMode": "Indexed", "backoffLimit": 0,
            "podFailurePolicy": {"rules": [{"action": "Ignore", "onPodConditions": [
                {"type": "DisruptionTarget"}]}]},
            "template": {"spec": {
                "nodeSelector": RUNNER_SELECTOR, "restartPolicy": "Never",
                "containers": [sh("train", "echo rank=$(JOB_COMPLETION_INDEX) > "
                                           "/dev/termination-log")],
            }},
        },
    }
    apply(cluster, namespace, job)

    def complete() -> bool:
        status = cluster.api_get(f"/apis/batch/v1/namespaces/{namespace}/jobs/gang")["status"]
        return any(c["type"] == "Complete" and c["status"] == "True"
                   for c in status.get("conditions") or [])

    wait_for("Job gang Complete", complete, timeout=90)
    pods = cluster.api_get(f"/api/v1/namespaces/{namespace}/pods?labelSelector=job-name=gang")
    messages = sorted(terminated(p)["message"] for p in pods["items"])
    assert messages == ["rank=0\n", "rank=1\n"]


RENDEZVOUS = """
import os, socket, time
if os.environ["JOB_COMPLETION_INDEX"] == "0":
    server = socket.create_server((os.environ["POD_IP"], 8000))
    conn, _ = server.accept()
    conn.sendall(b"hi from rank 0")
    conn.close()
else:
    host = os.environ["MASTER_ADDR"]
    for _ in range(150):
        try:
            conn = socket.create_connection((host, 8000), timeout=1)
            break
        except OSError:
            time.sleep(0.2)
    message = conn.recv(100).decode()
    with open(os.environ["MODELLOOP_TERMINATION_LOG"], "w") as log:
        log.write(f"{message} via {host}")
"""


def test_gang_ranks_reach_rank_zero_by_its_pod_dns_name(
        cluster: ControlPlane, namespace: str, pod_runner: PodRunner) -> None:
    # As the operator's TrainingJobs do: torchrun --master_addr=<job>-0.<svc>.<ns>.svc.
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "dns"},
               "spec": {"clusterIP": "None", "publishNotReadyAddresses": True,
                        "selector": {"job-name": "dns"}}}
    job = {
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "dns"},
        "spec": {
            "completions": 2, "parallelism": 2, "completionMode": "Indexed", "backoffLimit": 0,
            "template": {"spec": {
                "nodeSelector": RUNNER_SELECTOR, "restartPolicy": "Never", "subdomain": "dns",
                "containers": [{
                    "name": "rank", "image": "trainer", "command": ["python", "-c", RENDEZVOUS],
                    "env": [
                        {"name": "MASTER_ADDR", "value": f"dns-0.dns.{namespace}.svc"},
                        {"name": "POD_IP",
                         "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                    ],
                }],
            }},
        },
    }
    apply(cluster, namespace, service, job)

    def complete() -> bool:
        status = cluster.api_get(f"/apis/batch/v1/namespaces/{namespace}/jobs/dns")["status"]
        return any(c["type"] == "Complete" and c["status"] == "True"
                   for c in status.get("conditions") or [])

    wait_for("Job dns Complete", complete, timeout=90)
    pods = cluster.api_get(f"/api/v1/namespaces/{namespace}/pods?labelSelector=job-name=dns")
    by_index = {p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]: p
                for p in pods["items"]}
    rank0_ip = by_index["0"]["status"]["podIP"]
    assert terminated(by_index["1"])["message"] == f"hi from rank 0 via {rank0_ip}"


def test_pvc_bound_to_a_local_dir_pv_is_writable(
        cluster: ControlPlane, namespace: str, pod_runner: PodRunner, tmp_path: Path) -> None:
    host_dir = tmp_path / "pv-models"
    pv_name = f"pv-{namespace}"
    cluster.kubectl("apply", "-f", "-", input=json.dumps(local_storage_class_manifest()))
    cluster.kubectl("apply", "-f", "-", input=json.dumps(
        local_pv_manifest(pv_name, host_dir, claim_ref=(namespace, "models"))))
    try:
        claim = {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                 "metadata": {"name": "models"},
                 "spec": {"storageClassName": "local-dir", "accessModes": ["ReadWriteOnce"],
                          "resources": {"requests": {"storage": "1Gi"}}}}
        script = ("echo weights > /mnt/pvc/models/model.bin && "
                  "cat $MODELLOOP_PVC_ROOT/models/model.bin > /dev/termination-log")
        # As the operator's pods do: the claim at /mnt/pvc/<claim>, MODELLOOP_PVC_ROOT set.
        spec = bare_pod("writer", [sh("main", script, volumeMounts=[
            {"name": "models", "mountPath": "/mnt/pvc/models"}],
            env=[{"name": "MODELLOOP_PVC_ROOT", "value": "/mnt/pvc"}])],
            volumes=[{"name": "models", "persistentVolumeClaim": {"claimName": "models"}}])
        apply(cluster, namespace, claim, spec)
        done = wait_phase(cluster, namespace, "writer", "Succeeded", "Failed", timeout=90)
        assert terminated(done)["message"] == "weights\n"
        assert (host_dir / "model.bin").read_text() == "weights\n"
    finally:
        cluster.kubectl("delete", "pv", pv_name, "--wait=false", check=False)
