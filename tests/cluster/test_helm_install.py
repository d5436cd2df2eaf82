"""`helm install` of the chart against the real control plane: the operator runs from its
image (the tag the chart derives from its appVersion) as a pod of a podman-runtime node,
with the in-cluster credentials of its ServiceAccount, and reconciles a TrainingJob.

It takes over from the session's operator for the test, as a rollout would.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import pytest

from tests.cluster.conftest import RunningOperator
from tests.cluster.objects import apply, condition, get, training_job
from tests.cluster.test_trainingjob import SUMMARY
from tests.harness.binaries import REPO_ROOT, locate
from tests.harness.controlplane import ControlPlane
from tests.harness.podrunner import PodRunner
from tests.harness.processes import free_port
from tests.podrunner.kubehelpers import wait_for

pytestmark = pytest.mark.cluster

NODE = "local-helm"
CHART = REPO_ROOT / "charts" / "modelloop"


@pytest.fixture
def helm_node(cluster: ControlPlane, tmp_path_factory: pytest.TempPathFactory
              ) -> Iterator[PodRunner]:
    runner = PodRunner(kubeconfig=cluster.kubeconfig, node_name=NODE,
                       workdir=tmp_path_factory.mktemp("helm-node"), cpu="2", memory="4Gi",
                       runtime="podman", backoff_initial=2.0, backoff_max=10.0)
    with runner:
        yield runner


def _helm(cluster: ControlPlane, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(locate().helm), "--kubeconfig", str(cluster.kubeconfig),
                             *args], capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, f"helm {' '.join(args)}:\n{result.stdout}{result.stderr}"
    return result


def test_helm_install_runs_the_operator_image_in_cluster(
        cluster: ControlPlane, namespace: str, kwok_node: str, operator: RunningOperator,
        operator_image: str, helm_node: PodRunner) -> None:
    release_ns = f"{namespace}-op"
    operator.stop()
    try:
        _helm(cluster, "install", "modelloop", str(CHART), "--namespace", release_ns,
              "--create-namespace", "--set", "crds.enabled=false",
              "--set", f"nodeSelector.kubernetes\\.io/hostname={NODE}",
              # Host network: ports nothing else on this machine holds.
              "--set", f"metrics.port={free_port()}", "--set", f"livenessProbe.port={free_port()}",
              "--set", f"watchNamespaces={{{namespace}}}", "--wait", "--timeout", "180s")
        pods = json.loads(cluster.kubectl("get", "pods", "-n", release_ns, "-o", "json").stdout)
        (pod,) = pods["items"]
        assert pod["spec"]["containers"][0]["image"] == operator_image
        assert pod["status"]["containerStatuses"][0]["containerID"].startswith("podman://")
        kwok = {"modelloop.dev/kwok-delay": "0s",
                "modelloop.dev/kwok-termination-message": SUMMARY}
        apply(cluster, namespace, training_job("helm", node=kwok_node, annotations=kwok))

        def succeeded() -> dict[str, object] | None:
            tj = get(cluster, namespace, "trainingjob", "helm") or {}
            status = tj.get("status") or {}
            return tj if status.get("phase") == "Succeeded" else None

        try:
            done = wait_for("TrainingJob helm Succeeded", succeeded, timeout=120)
        except AssertionError:
            log = helm_node.log_path(release_ns, pod["metadata"]["name"], "operator")
            tail = log.read_text()[-3000:] if log is not None and log.exists() else ""
            raise AssertionError(f"operator pod log:\n{tail}") from None
        assert condition(done["status"], "Ready")["status"] == "True"  # type: ignore[arg-type]
        log = helm_node.log_path(release_ns, pod["metadata"]["name"], "operator")
        assert log is not None
        text = log.read_text()
        assert "403" not in text and "Traceback" not in text, text[-3000:]
    finally:
        subprocess.run([str(locate().helm), "--kubeconfig", str(cluster.kubeconfig),
                        "uninstall", "modelloop", "--namespace", release_ns, "--wait"],
                       capture_output=True, timeout=120, check=False)
        operator.start()
