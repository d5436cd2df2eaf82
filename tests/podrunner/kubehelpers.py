"""Small helpers for the pod runner's cluster tests: apply, read and wait on objects."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any, TypeVar

from tests.harness.controlplane import ControlPlane

Json = dict[str, Any]
T = TypeVar("T")

# By hostname, not by the runner label: a test may start a second runner (local-1).
RUNNER_SELECTOR = {"kubernetes.io/hostname": "local-0"}


def apply(cluster: ControlPlane, namespace: str, *objects: Json) -> None:
    for obj in objects:
        cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(obj))


def get(cluster: ControlPlane, path: str) -> Json:
    return cluster.api_get(path)


def pod(cluster: ControlPlane, namespace: str, name: str) -> Json:
    return cluster.api_get(f"/api/v1/namespaces/{namespace}/pods/{name}")


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 60.0,
             interval: float = 0.25) -> T:
    """Polls until `probe` returns something truthy; fails with `what` and the last value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = probe()
        except Exception as error:  # transient API errors while objects appear
            last = error
        else:
            if last:
                result: T = last
                return result
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}")


def wait_phase(cluster: ControlPlane, namespace: str, name: str, *phases: str,
               timeout: float = 60.0) -> Json:
    def check() -> Json | None:
        obj = pod(cluster, namespace, name)
        return obj if obj.get("status", {}).get("phase") in phases else None

    return wait_for(f"pod {namespace}/{name} phase in {phases}", check, timeout)


def bare_pod(name: str, containers: list[Json], *, restart: str = "Never", node: str = "local-0",
             **spec: Any) -> Json:
    """A pod pinned to a runner's node."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "nodeSelector": {"kubernetes.io/hostname": node},
            "restartPolicy": restart,
            "terminationGracePeriodSeconds": 5,
            "containers": containers,
            **spec,
        },
    }


def sh(name: str, script: str, **fields: Any) -> Json:
    return {"name": name, "image": "busybox", "command": ["sh", "-c", script], **fields}


def terminated(pod_obj: Json, container: str = "", init: bool = False) -> Json:
    key = "initContainerStatuses" if init else "containerStatuses"
    for status in pod_obj["status"].get(key, []):
        if not container or status["name"] == container:
            state: Json = status["state"]["terminated"]
            return state
    raise AssertionError(f"no status for container {container!r}")


def condition(pod_obj: Json, type_: str) -> str:
    for cond in pod_obj["status"].get("conditions", []):
        if cond["type"] == type_:
            return str(cond["status"])
    return ""
