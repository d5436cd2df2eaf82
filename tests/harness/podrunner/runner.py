"""The pod runner: a node agent plus one PodWorker per pod bound to the node.

The watch is the only input: list pods with `fieldSelector=spec.nodeName=<node>`, then
watch from the list's resourceVersion; on any watch error (410 Gone included) it relists
and reconciles, so missed events cannot leave a pod unhandled. Each pod is isolated in its
own task: one bad pod is logged, never fatal for the others.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .container import RunnerSettings
from .events import EventRecorder
from .images import PROJECT_IMAGE_ENV, project_image_paths
from .ipam import LocalRoute, LoopbackPool, random_pod_cidr, random_routed_cidr
from .kube import KubeClient, KubeError
from .names import NameRegistry
from .node import NodeAgent, NodeConfig
from .pod import PodWorker, pod_key
from .podman import remove_node_containers

Json = dict[str, Any]
log = logging.getLogger(__name__)

WATCH_TIMEOUT_S = 240
RELIST_BACKOFF_S = 1.0
STOP_GRACE_S = 5.0

# Host variables a container may need that are not part of any pod spec (caches, Java).
DEFAULT_INHERITED_ENV = (
    "HOME", "LANG", "LC_ALL", "TZ", "USER", "JAVA_HOME", "HF_HOME", "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE", "TORCH_HOME", "XDG_CACHE_HOME", "SSL_CERT_FILE",
    "REQUESTS_CA_BUNDLE",
)


RUNTIMES = ("process", "podman")


@dataclass
class RunnerOptions:
    """Everything `PodRunner` and the CLI accept; see README-podrunner.md."""

    kubeconfig: str
    node_name: str = "local-0"
    workdir: Path | None = None
    cpu: str = "2"
    memory: str = "8Gi"
    gpus: int = 0
    max_pods: int = 110
    extra_path: Sequence[str] = ()
    pod_cidr: str | None = None
    host_ip: str = "127.0.0.1"
    labels: Mapping[str, str] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)
    inherit_env: Sequence[str] = DEFAULT_INHERITED_ENV
    entrypoints: Mapping[str, Sequence[str]] = field(default_factory=dict)
    backoff_initial: float = 10.0
    backoff_max: float = 300.0
    context: str | None = None
    # None: this project's images (images.py); {} for none.
    image_paths: Mapping[str, str] | None = None
    # "process": local processes; "podman": each container is a `podman run` of its image.
    runtime: str = "process"


def container_search_path(extra: Sequence[str]) -> str:
    """PATH for containers: extra dirs, this interpreter's venv bin, then the host's PATH."""
    parts = [str(Path(p).resolve()) for p in extra]
    parts.append(str(Path(sys.executable).parent))
    repo_venv = Path(__file__).resolve().parents[3] / ".venv" / "bin"
    if repo_venv.is_dir():
        parts.append(str(repo_venv))
    parts.extend(os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin").split(os.pathsep))
    seen: dict[str, None] = {}
    for part in parts:
        if part:
            seen.setdefault(part, None)
    return os.pathsep.join(seen)


def build_settings(options: RunnerOptions, workdir: Path,
                   short_root: Path | None = None) -> RunnerSettings:
    if options.runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {RUNTIMES}, got {options.runtime!r}")
    containers = options.runtime == "podman"
    base_env = dict(PROJECT_IMAGE_ENV) if options.image_paths is None else {}
    base_env.update({k: os.environ[k] for k in options.inherit_env if k in os.environ})
    if containers:
        base_env = {}  # the image holds its environment; the host's stays out
    base_env.update(options.env)
    image_paths = (project_image_paths() if options.image_paths is None
                   else dict(options.image_paths))
    if containers:
        image_paths = {}
    allocatable = {"cpu": options.cpu, "memory": options.memory, "ephemeral-storage": "100Gi"}
    if options.gpus:
        allocatable["nvidia.com/gpu"] = str(options.gpus)
    return RunnerSettings(
        node_name=options.node_name,
        host_ip=options.host_ip,
        workdir=workdir,
        search_path=container_search_path(options.extra_path),
        base_env=base_env,
        node_allocatable=allocatable,
        backoff_initial=options.backoff_initial,
        backoff_max=options.backoff_max,
        entrypoints={k: list(v) for k, v in options.entrypoints.items()},
        image_paths=image_paths,
        short_root=short_root or Path(tempfile.mkdtemp(prefix="mlp-", dir="/tmp")),
        runtime=options.runtime,
    )


class AsyncPodRunner:
    """The runner inside an event loop: `await start()`, then `await stop()`."""

    def __init__(self, options: RunnerOptions) -> None:
        self.options = options
        self.workdir = Path(options.workdir or tempfile.mkdtemp(prefix="modelloop-podrunner-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        if options.pod_cidr == "routed":
            self.pod_cidr = random_routed_cidr()
        else:
            self.pod_cidr = options.pod_cidr or random_pod_cidr()
        routed = not ipaddress.ip_network(self.pod_cidr).is_loopback
        # A non-loopback pod CIDR (EndpointSlices need one) is made host-local by a route.
        self.route = LocalRoute(self.pod_cidr) if routed else None
        self.pool = LoopbackPool(self.pod_cidr, routed=routed)
        # Each pod's private "127.0.0.1" (loopback.py) must stay in 127/8.
        self.loopback_pool = LoopbackPool(random_pod_cidr()) if routed else self.pool
        self.settings = build_settings(options, self.workdir)
        self.names = NameRegistry()
        self._kube: KubeClient | None = None
        self._workers: dict[str, PodWorker] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._finished: set[str] = set()  # uids handled to the end, until the API drops them
        self._background: list[asyncio.Task[None]] = []

    @property
    def kube(self) -> KubeClient:
        if self._kube is None:
            raise RuntimeError("runner not started")
        return self._kube

    async def start(self) -> None:
        if self.settings.runtime == "podman":
            await asyncio.to_thread(remove_node_containers, self.options.node_name)
        if self.route is not None:
            self.route.add()
        self._kube = await KubeClient.from_kubeconfig(self.options.kubeconfig,
                                                      self.options.context)
        self.events = EventRecorder(self._kube, self.options.node_name)
        node = NodeAgent(self._kube, NodeConfig(
            name=self.options.node_name, cpu=self.options.cpu, memory=self.options.memory,
            gpus=self.options.gpus, pods=self.options.max_pods, host_ip=self.options.host_ip,
            labels=dict(self.options.labels)))
        await node.register()
        await self._wait_schedulable()
        self._background = [
            asyncio.create_task(node.run(), name="node-heartbeat"),
            asyncio.create_task(self._watch_pods(), name="pod-watch"),
        ]
        log.info("pod runner: node %s registered, pod CIDR %s, workdir %s",
                 self.options.node_name, self.pod_cidr, self.workdir)

    async def _wait_schedulable(self) -> None:
        """Waits until the node lifecycle controller lifts the `not-ready` taint.

        TaintNodesByCondition adds it when the Node is created; until it is gone the
        scheduler would not place pods here, and tests would race the controller.
        """
        path = f"/api/v1/nodes/{self.options.node_name}"
        while True:
            node = await self.kube.get(path)
            taints = (node.get("spec") or {}).get("taints") or []
            if not any(t.get("key") == "node.kubernetes.io/not-ready" for t in taints):
                return
            await asyncio.sleep(0.5)

    async def stop(self) -> None:
        """Stops every pod's processes (short grace) and the watch; the Node stays."""
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        for worker in list(self._workers.values()):
            worker.stopping = True
        await asyncio.gather(
            *(w.shutdown(STOP_GRACE_S, "runner stopping") for w in self._workers.values()),
            return_exceptions=True)
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        if self._kube is not None:
            await self.events.drain()
            await self._kube.close()
            self._kube = None
        if self.route is not None:
            self.route.remove()
        if self.settings.runtime == "podman":
            await asyncio.to_thread(remove_node_containers, self.options.node_name)
        # Pod volumes live here (short socket paths); the pod dirs keep logs.
        shutil.rmtree(self.settings.short_root, ignore_errors=True)

    # --- pods ------------------------------------------------------------------------
    def worker_for(self, namespace: str, name: str) -> PodWorker | None:
        for worker in self._workers.values():
            meta = worker.pod["metadata"]
            if meta["namespace"] == namespace and meta["name"] == name:
                return worker
        return None

    def _upsert(self, pod: Json) -> None:
        uid = pod["metadata"]["uid"]
        if uid in self._finished:
            return
        worker = self._workers.get(uid)
        if worker is not None:
            worker.update(pod)
            return
        worker = PodWorker(self.kube, self.settings, self.events, self.pool, pod, self.names,
                           self.loopback_pool)
        self._workers[uid] = worker
        task = asyncio.create_task(self._run_worker(worker), name=f"pod {pod_key(pod)}")
        self._tasks[uid] = task

    async def _run_worker(self, worker: PodWorker) -> None:
        try:
            await worker.run()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("pod %s: worker failed", pod_key(worker.pod))
        finally:
            self._finished.add(worker.uid)
            self._workers.pop(worker.uid, None)
            self._tasks.pop(worker.uid, None)

    def _remove(self, uid: str) -> None:
        self._finished.discard(uid)
        worker = self._workers.get(uid)
        if worker is not None:
            worker.gone()

    def _reconcile(self, pods: list[Json]) -> None:
        present = {p["metadata"]["uid"] for p in pods}
        for uid in list(self._workers):
            if uid not in present:
                self._remove(uid)
        self._finished &= present
        for pod in pods:
            self._upsert(pod)

    async def _watch_pods(self) -> None:
        selector = f"spec.nodeName={self.options.node_name}"
        version = ""
        while True:
            try:
                if not version:
                    listing = await self.kube.get("/api/v1/pods", {"fieldSelector": selector})
                    version = listing["metadata"]["resourceVersion"]
                    self._reconcile(listing.get("items") or [])
                query = {"fieldSelector": selector, "resourceVersion": version,
                         "allowWatchBookmarks": "true"}
                async for event in self.kube.watch("/api/v1/pods", query, WATCH_TIMEOUT_S):
                    kind, obj = event.get("type"), event.get("object") or {}
                    if kind == "ERROR":
                        log.info("pod watch error (relisting): %s", obj.get("message"))
                        version = ""
                        break
                    version = obj.get("metadata", {}).get("resourceVersion", version)
                    if kind in ("ADDED", "MODIFIED"):
                        self._upsert(obj)
                    elif kind == "DELETED":
                        self._remove(obj["metadata"]["uid"])
            except asyncio.CancelledError:
                raise
            except (KubeError, ValueError, OSError, TimeoutError) as error:
                log.warning("pod watch failed (relisting): %s", error)
                version = ""
                await asyncio.sleep(RELIST_BACKOFF_S)
            except Exception:
                log.exception("pod watch: unexpected error (relisting)")
                version = ""
                await asyncio.sleep(RELIST_BACKOFF_S)
