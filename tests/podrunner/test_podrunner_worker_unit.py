"""A PodWorker against an in-memory API: processes, env, paths, status and deletion."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.harness.podrunner.container import image_entrypoint
from tests.harness.podrunner.events import EventRecorder
from tests.harness.podrunner.ipam import LoopbackPool
from tests.harness.podrunner.names import NameRegistry
from tests.harness.podrunner.pod import PodWorker
from tests.harness.podrunner.runner import RunnerOptions, build_settings
from tests.podrunner.fakekube import FakeKube

Json = dict[str, Any]
NS = "team-a"


def make_pod(name: str, containers: list[Json], **spec: Any) -> Json:
    return {
        "metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}",
                     "resourceVersion": "1"},
        "spec": {"nodeName": "local-0", "restartPolicy": "Never",
                 "terminationGracePeriodSeconds": 5, "containers": containers, **spec},
        "status": {"phase": "Pending"},
    }


class Harness:
    def __init__(self, tmp_path: Path, pod: Json, objects: dict[str, Json] | None = None):
        path = f"/api/v1/namespaces/{NS}/pods/{pod['metadata']['name']}"
        self.kube = FakeKube({path: pod, **(objects or {})})
        options = RunnerOptions(kubeconfig="unused", workdir=tmp_path, backoff_initial=0.2,
                                backoff_max=1.0)
        settings = build_settings(options, tmp_path, short_root=tmp_path / "data")
        self.pool = LoopbackPool("127.78.1.0/24")
        self.names = NameRegistry()
        self.worker = PodWorker(self.kube, settings, EventRecorder(self.kube, "local-0"),
                                self.pool, pod, self.names)
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Harness:
        self.task = asyncio.create_task(self.worker.run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.worker.gone()
        assert self.task is not None
        await asyncio.wait_for(self.task, 20)

    async def until(self, what: str, check: Callable[[Json], bool], limit_s: float = 15) -> Json:
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            status = self.kube.last_status()
            if status and check(status):
                return status
            await asyncio.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}: {self.kube.last_status()}")


def phase_in(*phases: str) -> Callable[[Json], bool]:
    return lambda status: status.get("phase") in phases


async def test_paths_env_and_termination_message(tmp_path: Path) -> None:
    script = ("echo $(GREETING) $MODELLOOP_TERMINATION_LOG > /data/out; "
              "cat /etc/cfg/k > /dev/termination-log; pwd >> /dev/termination-log")
    container = {
        "name": "main", "image": "busybox", "command": ["sh", "-c", script],
        "workingDir": "/workspace",
        "env": [{"name": "GREETING", "value": "hi"},
                {"name": "OUT", "value": "/data/out"}],
        "volumeMounts": [{"name": "data", "mountPath": "/data"},
                         {"name": "cfg", "mountPath": "/etc/cfg"}],
    }
    pod = make_pod("paths", [container], volumes=[
        {"name": "data", "emptyDir": {}},
        {"name": "cfg", "configMap": {"name": "cfg"}},
    ])
    cfg = {f"/api/v1/namespaces/{NS}/configmaps/cfg": {"data": {
        "k": "from-configmap", "config.properties": "model_store=/data/models\nx=/database\n"}}}
    async with Harness(tmp_path, pod, cfg) as h:
        status = await h.until("Succeeded", phase_in("Succeeded", "Failed"))
    state = status["containerStatuses"][0]["state"]["terminated"]
    assert status["phase"] == "Succeeded", state
    pod_dir = tmp_path / "pods" / f"{NS}_paths_uid-paths"
    root = pod_dir / "containers" / "main" / "root"
    assert state["message"] == f"from-configmap{root / 'workspace'}\n"
    out = (pod_dir / "volumes" / "data" / "out").read_text()  # a link to the short data dir
    assert out == f"hi {pod_dir / 'containers' / 'main' / 'termination-log'}\n"
    assert (root / "data").resolve() == (pod_dir / "volumes" / "data").resolve()
    # Mount paths inside ConfigMap files point at the host directories too.
    config = (pod_dir / "volumes" / "cfg" / "config.properties").read_text()
    volumes = (pod_dir / "volumes").resolve()
    assert config == f"model_store={volumes / 'data'}/models\nx=/database\n"
    assert status["podIP"].startswith("127.78.1.")
    assert h.worker.pod_ip not in h.pool.taken  # released when the pod ended


async def test_config_error_then_restart_policy_never_fails(tmp_path: Path) -> None:
    container = {"name": "main", "image": "x", "command": ["sh", "-c", "exit 4"],
                 "env": [{"name": "K", "valueFrom": {"configMapKeyRef": {"name": "later",
                                                                          "key": "k"}}}]}
    pod = make_pod("cfgerr", [container])
    async with Harness(tmp_path, pod) as h:
        status = await h.until("CreateContainerConfigError", lambda s: s["containerStatuses"][0][
            "state"].get("waiting", {}).get("reason") == "CreateContainerConfigError")
        assert status["phase"] == "Pending"
        assert 'configmap "later" not found' in status["containerStatuses"][0]["state"][
            "waiting"]["message"]
        h.kube.objects[f"/api/v1/namespaces/{NS}/configmaps/later"] = {"data": {"k": "v"}}
        status = await h.until("Failed", phase_in("Failed"))
    assert status["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 4


async def test_always_restarts_then_deletion_kills_and_deletes(tmp_path: Path) -> None:
    container = {"name": "main", "image": "x", "command": ["sh", "-c",
                 "n=$(cat /w/n 2>/dev/null || echo 0); echo $((n+1)) > /w/n; "
                 "[ $n -ge 1 ] && exec sleep 300; exit 1"],
                 "volumeMounts": [{"name": "w", "mountPath": "/w"}]}
    pod = make_pod("always", [container], restartPolicy="Always",
                   volumes=[{"name": "w", "emptyDir": {}}])
    h = Harness(tmp_path, pod)
    task = asyncio.create_task(h.worker.run())
    status = await h.until("running after one restart", lambda s: s["containerStatuses"][0][
        "restartCount"] == 1 and "running" in s["containerStatuses"][0]["state"])
    assert status["phase"] == "Running"
    assert status["containerStatuses"][0]["lastState"]["terminated"]["exitCode"] == 1
    ready = {c["type"]: c["status"] for c in status["conditions"]}
    assert ready["Ready"] == "True"  # no readiness probe: ready once running
    deleting = dict(pod, metadata=dict(pod["metadata"], deletionTimestamp="2026-01-01T00:00:00Z",
                                       deletionGracePeriodSeconds=2, resourceVersion="999"))
    h.worker.update(deleting)
    await asyncio.wait_for(task, 20)
    final = h.kube.last_status()
    assert final["phase"] == "Failed"
    assert final["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 143
    path, body = h.kube.deleted[-1]
    assert path.endswith("/pods/always")
    assert body is not None and body["gracePeriodSeconds"] == 0
    assert body["preconditions"] == {"uid": "uid-always"}


async def test_readiness_probe_gates_ready(tmp_path: Path) -> None:
    container = {
        "name": "web", "image": "python", "ports": [{"name": "http", "containerPort": 18080}],
        "command": ["python", "-m", "http.server", "18080", "--bind", "$(POD_IP)"],
        "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
        "readinessProbe": {"httpGet": {"port": "http", "path": "/"}, "periodSeconds": 1},
    }
    pod = make_pod("web", [container], restartPolicy="Always")
    async with Harness(tmp_path, pod) as h:
        running = await h.until("running", lambda s: "running" in s["containerStatuses"][0][
            "state"])
        assert running["containerStatuses"][0]["ready"] is False
        status = await h.until("ready", lambda s: s["containerStatuses"][0]["ready"])
        conditions = {c["type"]: c["status"] for c in status["conditions"]}
        assert conditions["Ready"] == "True" and conditions["ContainersReady"] == "True"


async def test_active_deadline(tmp_path: Path) -> None:
    container = {"name": "main", "image": "x", "command": ["sleep", "300"]}
    pod = make_pod("deadline", [container], activeDeadlineSeconds=1)
    async with Harness(tmp_path, pod) as h:
        status = await h.until("Failed", phase_in("Failed"))
    assert status["reason"] == "DeadlineExceeded"


async def test_pod_dns_names_wait_for_the_pod_then_become_its_ip(tmp_path: Path) -> None:
    container = {"name": "main", "image": "x", "command": [
        "sh", "-c", "echo $(MASTER) > /dev/termination-log"],
        "env": [{"name": "MASTER", "value": "gang-0.gang.team-a.svc:29500"}]}
    pod = make_pod("gang-1", [container], hostname="gang-1", subdomain="gang")
    async with Harness(tmp_path, pod) as h:
        status = await h.until("waiting for the name", lambda s: "gang-0.gang.team-a.svc" in
                               s["containerStatuses"][0]["state"].get("waiting", {}).get(
                                   "message", ""))
        assert status["phase"] == "Pending"
        h.names.register(NS, "gang", "gang-0", "127.78.1.200")
        status = await h.until("Succeeded", phase_in("Succeeded", "Failed"))
    assert status["containerStatuses"][0]["state"]["terminated"]["message"] == \
        "127.78.1.200:29500\n"
    assert h.names.lookup(NS, "gang", "gang-1") is None  # released with the pod


async def test_files_baked_into_the_images_are_mapped(tmp_path: Path) -> None:
    container = {"name": "main", "image": "server", "command": [
        "sh", "-c", "test -f /opt/modelloop/metrics.yaml && echo $HF_HUB_OFFLINE > "
                    "/dev/termination-log"]}
    async with Harness(tmp_path, make_pod("image", [container])) as h:
        status = await h.until("Succeeded", phase_in("Succeeded", "Failed"))
    assert status["containerStatuses"][0]["state"]["terminated"]["message"] == "1\n"


async def test_pod_loopback_is_private_and_not_the_pod_ip(tmp_path: Path) -> None:
    container = {"name": "main", "image": "x", "command": [
        "sh", "-c", "echo $(ADMIN) > /dev/termination-log"],
        "env": [{"name": "ADMIN", "value": "http://127.0.0.1:8081"}]}
    async with Harness(tmp_path, make_pod("lo", [container])) as h:
        status = await h.until("Succeeded", phase_in("Succeeded", "Failed"))
        alias = h.worker.loopback_ip
    assert alias.startswith("127.78.1.") and alias != status["podIP"]
    assert status["containerStatuses"][0]["state"]["terminated"]["message"] == \
        f"http://{alias}:8081\n"


def test_image_entrypoints() -> None:
    entry = {"python": ["python3"], "ghcr.io/x/trainer": ["modelloop-train"]}
    assert image_entrypoint("python:3.11-slim", entry) == ["python3"]
    assert image_entrypoint("docker.io/library/python@sha256:ab", entry) == ["python3"]
    assert image_entrypoint("ghcr.io/x/trainer:v1", entry) == ["modelloop-train"]
    assert image_entrypoint("busybox", entry) is None
    assert sys.executable  # the venv python is what `python` resolves to first
