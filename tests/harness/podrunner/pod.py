"""One pod's life on the local node, from admission to the final delete.

Sequence (the kubelet's): give the pod an address and a directory, set up volumes
(retried while e.g. a claim is unbound), run init containers one by one, then all
containers at once, restarting them per `restartPolicy`, and publish status whenever it
changes. Deletion (a `deletionTimestamp`) stops every process with the grace period,
posts the terminal status, then deletes the pod with grace 0 and a UID precondition, as
the kubelet does; a pod that vanished (force delete) is just killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any

from .container import ContainerRunner, RunnerSettings
from .envvars import PodRuntimeFields
from .events import EventRecorder
from .ipam import LoopbackPool
from .kube import STRATEGIC_MERGE_PATCH, KubeClient, KubeError, ns_path
from .names import NameRegistry
from .paths import PathMap
from .status import ContainerRecord, PodView, build_status, compute_phase, now_rfc3339
from .volumes import VolumeBuilder, VolumeError, pod_mount_map, rewrite_config_files

Json = dict[str, Any]
log = logging.getLogger(__name__)

VOLUME_RETRY_S = 2.0
TERMINAL = ("Succeeded", "Failed")


def pod_key(pod: Json) -> str:
    meta = pod["metadata"]
    return f"{meta['namespace']}/{meta['name']}"


def _resource_version(pod: Json) -> int:
    try:
        return int(pod["metadata"].get("resourceVersion", "0"))
    except (TypeError, ValueError):
        return 0


class PodWorker:
    def __init__(
        self,
        kube: KubeClient,
        settings: RunnerSettings,
        events: EventRecorder,
        pool: LoopbackPool,
        pod: Json,
        names: NameRegistry,
        loopback_pool: LoopbackPool | None = None,
    ) -> None:
        self.kube = kube
        self.names = names
        self.settings = settings
        self.events = events
        self._pool = pool
        # Pod-private "127.0.0.1" aliases: the pod pool itself when it is loopback.
        self._loopback_pool = loopback_pool or pool
        self.pod = pod
        meta = pod["metadata"]
        self.uid: str = meta["uid"]
        self.pod_dir: Path = (
            settings.workdir / "pods" / f"{meta['namespace']}_{meta['name']}_{self.uid}"
        )
        self.data_dir: Path = settings.short_root / self.uid[:13]
        self.pod_ip = ""
        self.loopback_ip = ""
        self.volumes: dict[str, Path] = {}
        self.stopping = False
        self._gone = False
        self._update = asyncio.Event()
        self._dirty = asyncio.Event()
        self._sandbox_ready = False
        self._start_time = (pod.get("status") or {}).get("startTime") or now_rfc3339()
        self._terminal_phase = ""
        self._reason = ""
        self._message = ""
        self._last_sent: Json | None = None
        self._owns_ip = False
        self._deadline: asyncio.Task[None] | None = None
        spec = pod["spec"]
        has_init = bool(spec.get("initContainers"))
        self._init = [
            ContainerRunner(self, c, ContainerRecord(c["name"], c.get("image", ""),
                                                     "PodInitializing"), init=True)
            for c in spec.get("initContainers") or []
        ]
        self._main = [
            ContainerRunner(self, c, ContainerRecord(
                c["name"], c.get("image", ""),
                "PodInitializing" if has_init else "ContainerCreating"), init=False)
            for c in spec.get("containers") or []
        ]

    # --- inputs from the watch -------------------------------------------------------
    def update(self, pod: Json) -> None:
        if _resource_version(pod) >= _resource_version(self.pod):
            self.pod = pod
        self._update.set()

    def gone(self) -> None:
        self._gone = True
        self._update.set()

    def changed(self) -> None:
        self._dirty.set()

    @property
    def _deletion_requested(self) -> bool:
        return bool(self.pod["metadata"].get("deletionTimestamp"))

    @property
    def _runners(self) -> list[ContainerRunner]:
        return self._init + self._main

    # --- the worker ------------------------------------------------------------------
    async def run(self) -> None:
        status = self.pod.get("status") or {}
        adopted_terminal = status.get("phase") in TERMINAL
        publisher = asyncio.create_task(self._publisher())
        lifecycle: asyncio.Task[None] | None = None
        if not adopted_terminal:
            lifecycle = asyncio.create_task(self._lifecycle())
        try:
            while not (self._gone or self._deletion_requested):
                self._update.clear()
                waiter = asyncio.create_task(self._update.wait())
                pending = {waiter} | ({lifecycle} if lifecycle and not lifecycle.done() else set())
                try:
                    await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waiter.cancel()
                if lifecycle is not None and lifecycle.done() and not lifecycle.cancelled():
                    error = lifecycle.exception()
                    if error is not None:
                        log.error("pod %s: runner error", pod_key(self.pod), exc_info=error)
                        self._message = f"local runner error: {error!r}"
                        self.changed()
                        lifecycle = None
            grace = 0.0 if self._gone else self._deletion_grace()
            await self.shutdown(grace, "pod deleted")
            if lifecycle is not None:
                lifecycle.cancel()
                await asyncio.gather(lifecycle, return_exceptions=True)
            await self._kill_all()
            publisher.cancel()
            await asyncio.gather(publisher, return_exceptions=True)
            if not self._gone:
                if not adopted_terminal:
                    self._terminal_phase = self._terminal_phase or self._phase_after_kill()
                    await self._publish_retrying()
                await self._final_delete()
        finally:
            publisher.cancel()
            if lifecycle is not None:
                lifecycle.cancel()
            if self._deadline is not None:
                self._deadline.cancel()
            await self._kill_all()
            self._release_ip()

    def _deletion_grace(self) -> float:
        meta, spec = self.pod["metadata"], self.pod["spec"]
        grace = meta.get("deletionGracePeriodSeconds")
        if grace is None:
            grace = spec.get("terminationGracePeriodSeconds", 30)
        return float(grace)

    async def shutdown(self, grace: float, reason: str) -> None:
        """Stops every container (SIGTERM, `grace` seconds, SIGKILL); no restarts after."""
        self.stopping = True
        await asyncio.gather(*(r.stop(grace, reason) for r in self._runners),
                             return_exceptions=True)

    async def _kill_all(self) -> None:
        self.stopping = True
        await asyncio.gather(*(r.stop(0, "killed") for r in self._runners),
                             return_exceptions=True)

    def _phase_after_kill(self) -> str:
        phase = self._phase()
        if phase in TERMINAL:
            return phase
        done = all(r.record.terminated is not None and r.record.terminated.exit_code == 0
                   for r in self._main)
        return "Succeeded" if done else "Failed"

    async def _lifecycle(self) -> None:
        spec = self.pod["spec"]
        self._assign_ip()
        self.pod_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "v").mkdir(parents=True, exist_ok=True)
        volumes_link = self.pod_dir / "volumes"
        if not volumes_link.is_symlink():
            volumes_link.symlink_to(self.data_dir / "v")
        self._sandbox_ready = True
        self.changed()
        await self._setup_volumes()
        deadline = spec.get("activeDeadlineSeconds")
        if deadline is not None:
            self._deadline = asyncio.create_task(self._deadline_exceeded(float(deadline)))
        policy = spec.get("restartPolicy", "Always")
        for runner in self._init:
            state = await runner.run_until_done(policy)
            if self.stopping:
                return
            if state is None or state.exit_code != 0:
                self._finish()
                return
        for runner in self._main:
            if runner.record.waiting_reason == "PodInitializing":
                runner.record.waiting_reason = "ContainerCreating"
        self.changed()
        await asyncio.gather(*(r.run_until_done(policy) for r in self._main))
        self._finish()

    def _finish(self) -> None:
        phase = self._phase()
        if phase in TERMINAL:
            self._terminal_phase = phase
            self._release_ip()
        self.changed()

    async def _deadline_exceeded(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        if self.stopping or self._terminal_phase:
            return
        self._reason = "DeadlineExceeded"
        self._message = "Pod was active on the node longer than the specified deadline"
        self._terminal_phase = "Failed"
        self.events.emit(self.pod, "DeadlineExceeded", self._message, warning=True)
        await self.shutdown(float(self.pod["spec"].get("terminationGracePeriodSeconds", 30)),
                             "deadline exceeded")
        self.changed()

    def _assign_ip(self) -> None:
        if self.pod["spec"].get("hostNetwork"):
            self.pod_ip = self.settings.host_ip
            self.loopback_ip = "127.0.0.1"
            return
        self.pod_ip = self._pool.allocate()
        self.loopback_ip = self._loopback_pool.allocate()
        self._owns_ip = True
        self.names.register(*self._dns_key(), self.pod_ip)

    def _dns_key(self) -> tuple[str, str, str]:
        """(namespace, subdomain, hostname): the pod's `<hostname>.<subdomain>.<ns>.svc`."""
        spec = self.pod["spec"]
        return (self.pod["metadata"]["namespace"], spec.get("subdomain", ""),
                spec.get("hostname", ""))

    def _release_ip(self) -> None:
        if self._owns_ip:
            self.names.unregister(*self._dns_key(), self.pod_ip)
            self._pool.release(self.pod_ip)
            self._loopback_pool.release(self.loopback_ip)
            self._owns_ip = False

    async def _setup_volumes(self) -> None:
        runtime = PodRuntimeFields(pod_ip=self.pod_ip, host_ip=self.settings.host_ip)
        last_error = ""
        while True:
            try:
                builder = VolumeBuilder(
                    self.kube, self.pod, self.data_dir, runtime, self.settings.node_allocatable)
                self.volumes = await builder.build_all()
                # Real containers see their mounts: only the pod's 127.0.0.1 is rewritten.
                mounts = (PathMap() if self.settings.runtime == "podman" else pod_mount_map(
                    self.pod, self.volumes, self.settings.image_paths))
                rewrite_config_files(builder.config_dirs, mounts, self.loopback_ip)
                break
            except (VolumeError, KubeError) as error:
                message = str(error)
                if message != last_error:
                    last_error = message
                    self.events.emit(self.pod, "FailedMount", message, warning=True)
                    for runner in self._runners:
                        runner.record.waiting_message = message
                    self.changed()
                await asyncio.sleep(VOLUME_RETRY_S)
        for runner in self._runners:
            runner.record.waiting_message = ""
        self.changed()

    # --- status ----------------------------------------------------------------------
    def _phase(self) -> str:
        if self._terminal_phase:
            return self._terminal_phase
        policy = self.pod["spec"].get("restartPolicy", "Always")
        return compute_phase(policy, [r.record for r in self._init],
                             [r.record for r in self._main])

    def _status(self) -> Json:
        gates = [g["conditionType"] for g in self.pod["spec"].get("readinessGates") or []]
        view = PodView(
            phase=self._phase(),
            pod_ip=self.pod_ip,
            host_ip=self.settings.host_ip,
            start_time=self._start_time,
            sandbox_ready=self._sandbox_ready,
            init=[r.record for r in self._init],
            main=[r.record for r in self._main],
            readiness_gates=gates,
            reason=self._reason,
            message=self._message,
        )
        return build_status(view, (self.pod.get("status") or {}).get("conditions") or [])

    async def _publish(self) -> None:
        status = self._status()
        if status == self._last_sent:
            return
        meta = self.pod["metadata"]
        # The UID in the patch is a precondition: never write into a recreated namesake.
        body = {"metadata": {"uid": self.uid}, "status": status}
        result = await self.kube.patch(
            ns_path(meta["namespace"], "pods", meta["name"], "status"), body,
            content_type=STRATEGIC_MERGE_PATCH)
        self._last_sent = status
        self.update(result)

    async def _publisher(self) -> None:
        while True:
            await self._dirty.wait()
            await asyncio.sleep(0.05)  # coalesce bursts of changes into one patch
            self._dirty.clear()
            try:
                await self._publish()
            except KubeError as error:
                if error.status in (404, 409, 422):
                    log.info("pod %s: status not written: %s", pod_key(self.pod), error)
                    if error.status != 422:
                        return
                    continue
                log.warning("pod %s: status update failed, retrying: %s",
                            pod_key(self.pod), error)
                await asyncio.sleep(1.0)
                self._dirty.set()

    async def _publish_retrying(self) -> None:
        for _ in range(5):
            try:
                await self._publish()
                return
            except KubeError as error:
                if error.status in (404, 409, 422):
                    return
                await asyncio.sleep(0.5)

    async def _final_delete(self) -> None:
        meta = self.pod["metadata"]
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0,
                "preconditions": {"uid": self.uid}}
        with contextlib.suppress(KubeError):
            await self.kube.delete(ns_path(meta["namespace"], "pods", meta["name"]), body)
