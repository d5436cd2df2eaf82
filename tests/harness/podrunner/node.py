"""The node object and its heartbeats, as the kubelet keeps them.

Registration creates the Node (or adopts an existing one of the same name), then the
status is posted with Ready=True. Liveness has two channels, like the kubelet's: the Lease
`kube-node-lease/<node>` renewed every 10 s (what the node lifecycle controller watches),
and a full status update every minute. The node carries the label
`modelloop.dev/local-runner=true` and no kwok annotation, so kwok leaves it alone.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import platform
import socket
from dataclasses import dataclass
from typing import Any

from .kube import STRATEGIC_MERGE_PATCH, KubeClient, KubeError

Json = dict[str, Any]
log = logging.getLogger(__name__)

RUNNER_LABEL = "modelloop.dev/local-runner"
LEASE_DURATION_S = 40
LEASE_RENEW_S = 10.0
STATUS_REPORT_S = 60.0


def _micro_now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class NodeConfig:
    name: str
    cpu: str
    memory: str
    gpus: int
    pods: int
    host_ip: str
    labels: dict[str, str]


def node_manifest(cfg: NodeConfig) -> Json:
    labels = {
        "kubernetes.io/hostname": cfg.name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "node.kubernetes.io/instance-type": "local-runner",
        RUNNER_LABEL: "true",
        **cfg.labels,
    }
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": cfg.name, "labels": labels},
        "spec": {},
    }


def node_status(cfg: NodeConfig, previous: list[Json] | None = None) -> Json:
    resources: dict[str, str] = {
        "cpu": cfg.cpu,
        "memory": cfg.memory,
        "pods": str(cfg.pods),
        "ephemeral-storage": "100Gi",
    }
    if cfg.gpus:
        resources["nvidia.com/gpu"] = str(cfg.gpus)
    now = _now()
    since = {c["type"]: c.get("lastTransitionTime", now) for c in previous or []}

    def condition(type_: str, status: str, reason: str, message: str) -> Json:
        return {
            "type": type_,
            "status": status,
            "reason": reason,
            "message": message,
            "lastHeartbeatTime": now,
            "lastTransitionTime": since.get(type_, now),
        }

    return {
        "capacity": resources,
        "allocatable": resources,
        "conditions": [
            condition("MemoryPressure", "False", "KubeletHasSufficientMemory",
                      "local runner has sufficient memory available"),
            condition("DiskPressure", "False", "KubeletHasNoDiskPressure",
                      "local runner has no disk pressure"),
            condition("PIDPressure", "False", "KubeletHasSufficientPID",
                      "local runner has sufficient PID available"),
            condition("Ready", "True", "KubeletReady", "modelloop local pod runner is ready"),
        ],
        "addresses": [
            {"type": "InternalIP", "address": cfg.host_ip},
            {"type": "Hostname", "address": cfg.name},
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
        "nodeInfo": {
            "architecture": "amd64",
            "bootID": "",
            "containerRuntimeVersion": "modelloop-local://0.1",
            "kernelVersion": platform.release(),
            "kubeProxyVersion": "",
            "kubeletVersion": "v0.0.0-modelloop-local",
            "machineID": socket.gethostname(),
            "operatingSystem": "linux",
            "osImage": platform.platform(),
            "systemUUID": "",
        },
    }


class NodeAgent:
    """Registers the node and keeps it Ready until `run()` is cancelled."""

    def __init__(self, kube: KubeClient, cfg: NodeConfig) -> None:
        self._kube = kube
        self.cfg = cfg
        self._node_path = f"/api/v1/nodes/{cfg.name}"
        self._lease_path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{cfg.name}"  # noqa: E501

    async def register(self) -> None:
        try:
            await self._kube.create("/api/v1/nodes", node_manifest(self.cfg))
        except KubeError as error:
            if error.status != 409:
                raise
            # Adopt it (a previous run of the runner): reassert our labels.
            await self._kube.patch(self._node_path,
                                   {"metadata": node_manifest(self.cfg)["metadata"]})
        await self.post_status()
        await self.renew_lease()

    async def post_status(self) -> None:
        node = await self._kube.get_or_none(self._node_path)
        if node is None:
            await self._kube.create("/api/v1/nodes", node_manifest(self.cfg))
            node = {}
        previous = (node.get("status") or {}).get("conditions") or []
        await self._kube.patch(
            self._node_path + "/status",
            {"status": node_status(self.cfg, previous)},
            content_type=STRATEGIC_MERGE_PATCH,
        )

    async def renew_lease(self) -> None:
        lease = await self._kube.get_or_none(self._lease_path)
        spec = {
            "holderIdentity": self.cfg.name,
            "leaseDurationSeconds": LEASE_DURATION_S,
            "renewTime": _micro_now(),
        }
        if lease is None:
            node = await self._kube.get(self._node_path)
            await self._kube.create(
                "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
                {
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": {
                        "name": self.cfg.name,
                        "namespace": "kube-node-lease",
                        "ownerReferences": [{
                            "apiVersion": "v1", "kind": "Node",
                            "name": self.cfg.name, "uid": node["metadata"]["uid"],
                        }],
                    },
                    "spec": spec,
                },
            )
        else:
            await self._kube.patch(self._lease_path, {"spec": spec})

    async def run(self) -> None:
        """Heartbeats forever; API errors are logged and retried, never fatal."""
        last_status = asyncio.get_running_loop().time()
        while True:
            await asyncio.sleep(LEASE_RENEW_S)
            try:
                await self.renew_lease()
                if asyncio.get_running_loop().time() - last_status >= STATUS_REPORT_S:
                    await self.post_status()
                    last_status = asyncio.get_running_loop().time()
            except KubeError as error:
                log.warning("node heartbeat failed (will retry): %s", error)
