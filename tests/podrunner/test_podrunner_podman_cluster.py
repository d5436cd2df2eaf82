"""The runner's podman runtime: pods run from their images with the user, read-only root,
limits and mounts their spec asks for, and report kubelet-like status."""

from __future__ import annotations

import base64
import subprocess
import urllib.request
from collections.abc import Iterator

import pytest

from tests.harness.controlplane import ControlPlane
from tests.harness.podrunner import PodRunner
from tests.harness.podrunner.podman import NODE_LABEL, podman_env
from tests.podrunner.kubehelpers import (
    apply,
    bare_pod,
    condition,
    pod,
    terminated,
    wait_for,
    wait_phase,
)

NODE = "local-podman"
RESTRICTED = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
              "runAsNonRoot": True, "readOnlyRootFilesystem": True}


@pytest.fixture(scope="module")
def podman_runner(cluster: ControlPlane, tmp_path_factory: pytest.TempPathFactory
                  ) -> Iterator[PodRunner]:
    runner = PodRunner(kubeconfig=cluster.kubeconfig, node_name=NODE,
                       workdir=tmp_path_factory.mktemp("podman-runner"), cpu="2",
                       memory="4Gi", backoff_initial=1.0, backoff_max=5.0, runtime="podman")
    with runner:
        yield runner


def _sh(image: str, script: str, **fields: object) -> dict[str, object]:
    return {"name": "main", "image": image, "command": ["sh", "-c", script], **fields}


def _containers_of_node() -> list[str]:
    out = subprocess.run(["podman", "ps", "--all", "--quiet", f"--filter=label={NODE_LABEL}="
                          f"{NODE}"], capture_output=True, text=True, env=podman_env(),
                         check=True)
    return out.stdout.split()


def test_user_read_only_root_volumes_secret_env_and_message(
        cluster: ControlPlane, namespace: str, podman_runner: PodRunner,
        operator_image: str) -> None:
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"},
              "data": {"key": base64.b64encode(b"s3cret").decode()}}
    script = ("id -u > /scratch/uid; touch /etc/x 2>/dev/null || echo ro > /scratch/ro; "
              'echo "$(cat /scratch/uid) $(cat /scratch/ro) $KEY $(hostname)" '
              "> /dev/termination-log")
    container = _sh(operator_image, script, securityContext=RESTRICTED,
                    env=[{"name": "KEY", "valueFrom": {"secretKeyRef": {"name": "creds",
                                                                        "key": "key"}}}],
                    volumeMounts=[{"name": "scratch", "mountPath": "/scratch"}])
    apply(cluster, namespace, secret, bare_pod(
        "restricted", [container], node=NODE, hostname="box",
        securityContext={"runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 1000},
        volumes=[{"name": "scratch", "emptyDir": {}}]))
    done = wait_phase(cluster, namespace, "restricted", "Succeeded", "Failed", timeout=120)
    state = terminated(done)
    assert (state["exitCode"], state["reason"]) == (0, "Completed"), state
    assert state["message"] == "1000 ro s3cret box\n"
    assert state["containerID"].startswith("podman://")
    pod_dir = podman_runner.pod_dir(namespace, "restricted")
    assert pod_dir is not None
    assert not list(pod_dir.rglob("env")), "the env file (secret values) outlives the run"
    wait_for("the container removed", lambda: not _containers_of_node() or None, timeout=30)


def test_memory_limit_is_enforced_as_oomkilled(cluster: ControlPlane, namespace: str,
                                               podman_runner: PodRunner,
                                               operator_image: str) -> None:
    hog = {"name": "main", "image": operator_image,
           "command": ["python3", "-c", "b = bytearray(400 * 2**20); print('survived')"],
           "resources": {"limits": {"memory": "64Mi", "cpu": "1"}}}
    apply(cluster, namespace, bare_pod("hog", [hog], node=NODE))
    done = wait_phase(cluster, namespace, "hog", "Succeeded", "Failed", timeout=120)
    assert done["status"]["phase"] == "Failed"
    state = terminated(done)
    assert (state["exitCode"], state["reason"]) == (137, "OOMKilled"), state


def test_missing_image_waits_with_err_image_never_pull(cluster: ControlPlane, namespace: str,
                                                       podman_runner: PodRunner) -> None:
    missing = {"name": "main", "image": "ghcr.io/modelloop/no-such-image:0.0.0"}
    apply(cluster, namespace, bare_pod("missing", [missing], node=NODE))

    def waiting() -> str | None:
        statuses = pod(cluster, namespace, "missing")["status"].get("containerStatuses") or []
        reason = statuses[0]["state"].get("waiting", {}).get("reason") if statuses else None
        return reason if reason == "ErrImageNeverPull" else None

    assert wait_for("ErrImageNeverPull", waiting, timeout=60) == "ErrImageNeverPull"


def test_server_on_pod_ip_with_probes_then_graceful_delete(
        cluster: ControlPlane, namespace: str, podman_runner: PodRunner,
        operator_image: str) -> None:
    server = {
        "name": "main", "image": operator_image,
        "command": ["python3", "-m", "http.server", "--bind", "$(POD_IP)", "8000",
                    "--directory", "/tmp"],
        "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
        "ports": [{"name": "http", "containerPort": 8000}],
        "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1},
        "livenessProbe": {"exec": {"command": ["test", "-d", "/tmp"]}, "periodSeconds": 2},
        "securityContext": RESTRICTED,
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    apply(cluster, namespace, bare_pod("web", [server], node=NODE,
                                       securityContext={"runAsUser": 1000},
                                       volumes=[{"name": "tmp", "emptyDir": {}}]))

    def is_ready() -> dict[str, object] | None:
        current = pod(cluster, namespace, "web")
        return current if condition(current, "Ready") == "True" else None

    ready = wait_for("web Ready", is_ready, timeout=120)
    ip = ready["status"]["podIP"]  # type: ignore[index]
    with urllib.request.urlopen(f"http://{ip}:8000/", timeout=5) as r:
        assert r.status == 200
    assert _containers_of_node(), "the server runs as a container"
    cluster.kubectl("delete", "pod", "web", "-n", namespace, "--wait=true", "--timeout=60s")
    wait_for("no container left", lambda: not _containers_of_node() or None, timeout=30)
