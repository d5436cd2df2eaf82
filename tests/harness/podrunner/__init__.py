"""A local pod runner: plays the kubelet for one node so pods run as local processes.

    with PodRunner(kubeconfig=cluster.kubeconfig, node_name="local-0") as runner:
        ...  # pods with nodeName local-0 (or nodeSelector modelloop.dev/local-runner) run here

See tests/harness/README-podrunner.md for what is emulated and how.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .ipam import local_routes_available
from .node import RUNNER_LABEL
from .runner import DEFAULT_INHERITED_ENV, AsyncPodRunner, RunnerOptions
from .storage import LOCAL_STORAGE_CLASS, local_pv_manifest, local_storage_class_manifest

__all__ = [
    "LOCAL_STORAGE_CLASS",
    "RUNNER_LABEL",
    "AsyncPodRunner",
    "PodRunner",
    "RunnerOptions",
    "local_pv_manifest",
    "local_routes_available",
    "local_storage_class_manifest",
]


class PodRunner:
    """The runner on its own thread and event loop, for synchronous tests and scripts."""

    def __init__(
        self,
        *,
        kubeconfig: str | Path,
        node_name: str = "local-0",
        workdir: str | Path | None = None,
        cpu: str = "2",
        memory: str = "8Gi",
        gpus: int = 0,
        extra_path: Sequence[str | Path] = (),
        pod_cidr: str | None = None,
        labels: Mapping[str, str] | None = None,
        env: Mapping[str, str] | None = None,
        inherit_env: Sequence[str] = DEFAULT_INHERITED_ENV,
        entrypoints: Mapping[str, Sequence[str]] | None = None,
        backoff_initial: float = 10.0,
        backoff_max: float = 300.0,
        max_pods: int = 110,
        image_paths: Mapping[str, str] | None = None,
        runtime: str = "process",
    ) -> None:
        self.options = RunnerOptions(
            kubeconfig=str(kubeconfig),
            node_name=node_name,
            workdir=Path(workdir) if workdir is not None else None,
            cpu=cpu,
            memory=memory,
            gpus=gpus,
            extra_path=[str(p) for p in extra_path],
            pod_cidr=pod_cidr,
            labels=dict(labels or {}),
            env=dict(env or {}),
            inherit_env=tuple(inherit_env),
            entrypoints={k: list(v) for k, v in (entrypoints or {}).items()},
            backoff_initial=backoff_initial,
            backoff_max=backoff_max,
            max_pods=max_pods,
            image_paths=None if image_paths is None else dict(image_paths),
            runtime=runtime,
        )
        self._core = AsyncPodRunner(self.options)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop_requested: asyncio.Event | None = None

    @property
    def node_name(self) -> str:
        return self.options.node_name

    @property
    def workdir(self) -> Path:
        return self._core.workdir

    @property
    def pod_cidr(self) -> str:
        return self._core.pod_cidr

    def pod_dir(self, namespace: str, name: str) -> Path | None:
        """The directory of the newest pod with this name (logs, volumes, container roots)."""
        candidates = sorted(
            (self.workdir / "pods").glob(f"{namespace}_{name}_*"),
            key=lambda p: p.stat().st_mtime,
        )
        return candidates[-1] if candidates else None

    def log_path(self, namespace: str, name: str, container: str) -> Path | None:
        directory = self.pod_dir(namespace, name)
        return None if directory is None else directory / f"{container}.log"

    def start(self, timeout: float = 60.0) -> PodRunner:
        """Registers the node and starts watching; returns once the node is Ready."""
        if self._thread is not None:
            raise RuntimeError("PodRunner already started")
        started: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(
            target=self._thread_main, args=(started,), name=f"podrunner-{self.node_name}",
            daemon=True)
        self._thread.start()
        try:
            started.result(timeout=timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _thread_main(self, started: concurrent.futures.Future[None]) -> None:
        # This thread forks every container: it must outlive them (parent-death signal).
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve(started))
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _serve(self, started: concurrent.futures.Future[None]) -> None:
        self._stop_requested = asyncio.Event()
        try:
            await self._core.start()
        except BaseException as error:
            started.set_exception(error)
            await self._core.stop()
            return
        started.set_result(None)
        await self._stop_requested.wait()
        await self._core.stop()

    def stop(self, timeout: float = 60.0) -> None:
        """Stops every pod process (SIGTERM, 5 s, SIGKILL) and the runner; idempotent."""
        thread, loop, event = self._thread, self._loop, self._stop_requested
        if thread is None:
            return
        if loop is not None and event is not None and not loop.is_closed():
            loop.call_soon_threadsafe(event.set)
        thread.join(timeout)
        self._thread = None

    def __enter__(self) -> PodRunner:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
