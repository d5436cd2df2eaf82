"""Best-effort core/v1 Events on pods, so `kubectl describe pod` tells what the runner did."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from .kube import KubeClient, KubeError, ns_path
from .status import now_rfc3339

Json = dict[str, Any]
log = logging.getLogger(__name__)


class EventRecorder:
    def __init__(self, kube: KubeClient, node_name: str) -> None:
        self._kube = kube
        self._node = node_name
        self._tasks: set[asyncio.Task[None]] = set()

    def emit(
        self, pod: Json, reason: str, message: str, *, warning: bool = False,
        container: str = "",
    ) -> None:
        """Fire and forget: an event that cannot be written must not slow a pod down."""
        task = asyncio.get_running_loop().create_task(
            self._post(pod, reason, message, warning, container))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _post(self, pod: Json, reason: str, message: str, warning: bool,
                    container: str) -> None:
        meta = pod["metadata"]
        now = now_rfc3339()
        involved: Json = {
            "apiVersion": "v1", "kind": "Pod", "namespace": meta["namespace"],
            "name": meta["name"], "uid": meta["uid"],
        }
        if container:
            involved["fieldPath"] = f"spec.containers{{{container}}}"
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{meta['name']}.{time.time_ns():x}",
                         "namespace": meta["namespace"]},
            "involvedObject": involved,
            "reason": reason,
            "message": message[:1024],
            "type": "Warning" if warning else "Normal",
            "source": {"component": "kubelet", "host": self._node},
            "reportingComponent": "kubelet",
            "reportingInstance": self._node,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            await self._kube.create(ns_path(meta["namespace"], "events"), body)
        except KubeError as error:
            log.debug("event %s for %s not recorded: %s", reason, meta["name"], error)

    async def drain(self) -> None:
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=5)
