"""One container of one pod: prepare, start, probe, wait, restart.

Each (re)start re-reads its ConfigMaps/Secrets and recomputes env and paths, as the
kubelet does when it creates a new container. The runner exports to every container:
- `MODELLOOP_TERMINATION_LOG`: host path of its termination message file (unless the pod
  sets it; the container's `terminationMessagePath` is also rewritten to it wherever it
  appears in command, args or env);
- `MODELLOOP_CONTAINER_ROOT`: a directory of symlinks laid out like its mounts;
- `MODELLOOP_PVC_ROOT`: `<root>/mnt/pvc` (the trainer's `pvc://claim/path` resolution);
- `TMPDIR` (per pod), `HOSTNAME` (the pod's hostname), and a PATH that finds the project
  venv's entry points (`modelloop-train`, `torchrun`, `python`, ...).
Pod DNS names in command, args and env are replaced by pod IPs (names.py).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from .envvars import (
    ContainerConfigError,
    PodRuntimeFields,
    Sources,
    expand_command,
    referenced_objects,
    resolve_env,
)
from .events import EventRecorder
from .kube import KubeClient, ns_path
from .loopback import rewrite_loopback
from .names import NameRegistry, rewrite_pod_names
from .paths import PathMap
from .podman import (
    OOM_EXIT,
    ImageNeverPulledError,
    Mount,
    PodmanProcess,
    container_name,
    exec_argv,
    has_memory_limit,
    image_present,
    kubelet_volume_modes,
    podman_binary,
    podman_env,
    run_argv,
    service_env,
    write_env,
)
from .probes import ProbeKind, ProbeSpec, ProbeTracker
from .probing import ProbeSetupError, run_probe
from .process import ExecutableNotFoundError, LocalProcess, resolve_executable, run_to_completion
from .status import (
    Backoff,
    ContainerRecord,
    Terminated,
    now_rfc3339,
    should_restart,
    termination_message,
)
from .volumes import VolumeError, build_mirror_root, container_path_map

Json = dict[str, Any]
log = logging.getLogger(__name__)

DEFAULT_TERMINATION_PATH = "/dev/termination-log"
CONFIG_RETRY_S = 2.0
NAME_WAIT_S = 60.0  # how long a container waits for pod names to resolve, as for DNS
NAME_RETRY_S = 0.5


@dataclass(frozen=True)
class RunnerSettings:
    """Node-wide settings every pod and container sees."""

    node_name: str
    host_ip: str
    workdir: Path
    search_path: str
    base_env: dict[str, str]
    node_allocatable: dict[str, str]
    backoff_initial: float
    backoff_max: float
    entrypoints: dict[str, list[str]]
    image_paths: dict[str, str]
    # Short base for pod volumes and TMPDIR: unix socket paths must fit in 108 bytes, and
    # TorchServe puts its worker sockets in java.io.tmpdir (an emptyDir at /tmp).
    short_root: Path
    runtime: str = "process"


class PodContext(Protocol):
    """What a container needs from its pod (implemented by PodWorker)."""

    kube: KubeClient
    settings: RunnerSettings
    events: EventRecorder
    pod: Json
    pod_ip: str
    loopback_ip: str
    pod_dir: Path
    data_dir: Path
    volumes: dict[str, Path]
    stopping: bool
    names: NameRegistry

    def changed(self) -> None: ...


@dataclass
class Launch:
    argv: list[str]
    executable: str
    env: dict[str, str]
    cwd: str
    path_map: PathMap
    loopback_ip: str
    container_name: str = ""
    """Set in the podman runtime: the running container's name."""
    env_file: Path | None = None

    def rewrite(self, text: str) -> str:
        """Container paths and the pod's 127.0.0.1 in one value, as for the command."""
        return rewrite_loopback(self.path_map.rewrite(text), self.loopback_ip)


def image_entrypoint(image: str, entrypoints: dict[str, list[str]]) -> list[str] | None:
    """Entry point registered for an image: by full name, name without tag, or last segment."""
    without_digest = image.split("@", 1)[0]
    last = without_digest.rsplit("/", 1)[-1]
    untagged = without_digest if ":" not in last else without_digest.rsplit(":", 1)[0]
    for key in (image, untagged, untagged.rsplit("/", 1)[-1]):
        if key in entrypoints:
            return list(entrypoints[key])
    return None


class ContainerRunner:
    def __init__(self, pod: PodContext, spec: Json, record: ContainerRecord, *, init: bool):
        self._pod = pod
        self.spec = spec
        self.record = record
        self.init = init
        self.name: str = spec["name"]
        self._dir = pod.pod_dir / "containers" / self.name
        self.log_path = pod.pod_dir / f"{self.name}.log"
        self._process: LocalProcess | PodmanProcess | None = None
        self._wake = asyncio.Event()
        self._kill_reason = ""
        self._backoff = Backoff(pod.settings.backoff_initial, pod.settings.backoff_max)
        self._warned_grpc = False
        self._last_run_s = 0.0
        self._names_pending_since: float | None = None

    # --- preparing a start -------------------------------------------------------------
    async def _sources(self) -> Sources:
        namespace = self._pod.pod["metadata"]["namespace"]
        config_maps, secrets = referenced_objects(self.spec)
        sources = Sources()
        for name in config_maps:
            obj = await self._pod.kube.get_or_none(ns_path(namespace, "configmaps", name))
            sources.config_maps[name] = None if obj is None else {
                **(obj.get("data") or {}),
                **{k: base64.b64decode(v).decode("utf-8", "replace")
                   for k, v in (obj.get("binaryData") or {}).items()},
            }
        for name in secrets:
            obj = await self._pod.kube.get_or_none(ns_path(namespace, "secrets", name))
            sources.secrets[name] = None if obj is None else {
                k: base64.b64decode(v).decode("utf-8", "replace")
                for k, v in (obj.get("data") or {}).items()
            }
        return sources

    def termination_file(self) -> Path:
        return Path(self._dir, "termination-log")

    async def prepare(self) -> Launch:
        if self._pod.settings.runtime == "podman":
            return await self._prepare_podman()
        pod, settings = self._pod.pod, self._pod.settings
        runtime = PodRuntimeFields(pod_ip=self._pod.pod_ip, host_ip=settings.host_ip)
        pod_env = resolve_env(pod, self.spec, await self._sources(), runtime,
                              settings.node_allocatable)
        command, args = expand_command(self.spec, pod_env)
        if not command:
            entry = image_entrypoint(self.spec.get("image", ""), settings.entrypoints)
            command = entry or []
        argv = command + args
        if not argv:
            raise ExecutableNotFoundError(
                f"container has no command and image {self.spec.get('image')!r} has no "
                "entry point registered with the runner")
        termination_path = self.spec.get("terminationMessagePath") or DEFAULT_TERMINATION_PATH
        self._dir.mkdir(parents=True, exist_ok=True)
        root = self._dir / "root"
        path_map = container_path_map(self.spec, self._pod.volumes, pod_env, termination_path,
                                      self.termination_file(), root, settings.image_paths)
        build_mirror_root(root, path_map)
        (root / "mnt" / "pvc").mkdir(parents=True, exist_ok=True)
        tmp = self._pod.data_dir / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        spec = pod["spec"]
        env = dict(settings.base_env)
        env.update({
            "PATH": settings.search_path,
            "HOSTNAME": spec.get("hostname") or pod["metadata"]["name"],
            "TMPDIR": str(tmp),
            "MODELLOOP_TERMINATION_LOG": str(self.termination_file()),
            "MODELLOOP_CONTAINER_ROOT": str(root),
            "MODELLOOP_PVC_ROOT": str(root / "mnt" / "pvc"),
        })
        loopback = self._pod.loopback_ip
        env.update({name: rewrite_loopback(value, loopback)
                    for name, value in path_map.rewrite_env(pod_env).items()})
        cwd = self._working_dir(path_map, root)
        argv = [rewrite_loopback(part, loopback) for part in path_map.rewrite_all(argv)]
        argv, env = self._resolve_names(argv, env)
        executable = resolve_executable(argv[0], env["PATH"], cwd)
        return Launch(argv=argv, executable=executable, env=env, cwd=cwd, path_map=path_map,
                      loopback_ip=loopback)

    async def _prepare_podman(self) -> Launch:
        """A `podman run` of the container's image: real mounts, so no path rewriting."""
        pod, settings = self._pod.pod, self._pod.settings
        runtime = PodRuntimeFields(pod_ip=self._pod.pod_ip, host_ip=settings.host_ip)
        pod_env = resolve_env(pod, self.spec, await self._sources(), runtime,
                              settings.node_allocatable)
        command, args = expand_command(self.spec, pod_env)
        image = self.spec.get("image", "")
        if not await image_present(image):
            raise ImageNeverPulledError(
                f'Container image "{image}" is not present with pull policy of Never '
                "(build it with `make images`)")
        termination_path = self.spec.get("terminationMessagePath") or DEFAULT_TERMINATION_PATH
        self._dir.mkdir(parents=True, exist_ok=True)
        path_map = container_path_map(self.spec, self._pod.volumes, pod_env, termination_path,
                                      self.termination_file(), self._dir / "root", {})
        read_only = {PathMap(entries={}).normalised(m["mountPath"])
                     for m in self.spec.get("volumeMounts") or [] if m.get("readOnly")}
        mounts = [Mount(host, path, path in read_only)
                  for path, host in sorted(path_map.entries.items())]
        kubelet_volume_modes(pod, self._pod.volumes)
        loopback = self._pod.loopback_ip
        env = {**service_env(self._pod.kube.server), **settings.base_env}
        env.update({k: rewrite_loopback(v, loopback) for k, v in pod_env.items()})
        parts = [rewrite_loopback(part, loopback) for part in command + args]
        parts, env = self._resolve_names(parts, env)
        name = container_name(pod, self.name, self.record.restart_count)
        env_file = self._dir / "env"
        inline = write_env(env, env_file)
        spec = dict(self.spec, command=parts[:len(command)], args=parts[len(command):])
        argv = run_argv(name=name, node=settings.node_name, pod=pod, container=spec,
                        mounts=mounts, env_file=env_file, inline_env=inline,
                        hostname=pod["spec"].get("hostname") or pod["metadata"]["name"])
        return Launch(argv=argv, executable=podman_binary(), env=podman_env(),
                      cwd=str(self._dir), path_map=PathMap(), loopback_ip=loopback,
                      container_name=name, env_file=env_file)

    def _resolve_names(self, argv: list[str], env: dict[str, str]
                       ) -> tuple[list[str], dict[str, str]]:
        unresolved: list[str] = []

        def rewrite(text: str) -> str:
            out, missing = rewrite_pod_names(text, self._pod.names.lookup)
            unresolved.extend(missing)
            return out

        argv = [rewrite(part) for part in argv]
        env = {name: rewrite(value) for name, value in env.items()}
        if unresolved:
            now = time.monotonic()
            if self._names_pending_since is None:
                self._names_pending_since = now
            if now - self._names_pending_since < NAME_WAIT_S:
                raise NamesPendingError(
                    f"waiting for pod name(s) to resolve: {', '.join(sorted(set(unresolved)))}")
        self._names_pending_since = None
        return argv, env

    def _working_dir(self, path_map: PathMap, root: Path) -> str:
        working = self.spec.get("workingDir")
        if not working:
            return str(root)
        mapped = path_map.host_path(working)
        if mapped is not None:
            return mapped
        # Like an image WORKDIR: created inside the container's own root.
        local = root / working.lstrip("/")
        local.mkdir(parents=True, exist_ok=True)
        return str(local)

    # --- one run ---------------------------------------------------------------------
    async def run_instance(self) -> Terminated:
        """Starts the container once and waits for it; raises ContainerConfigError/VolumeError."""
        pod = self._pod.pod
        try:
            launch = await self.prepare()
        except ExecutableNotFoundError as error:
            self._pod.events.emit(pod, "Failed", f"Error: {error}", warning=True,
                                  container=self.name)
            now = now_rfc3339()
            state = Terminated(128, "StartError", str(error), now, now, "")
            self.record.set_terminated(state)
            self._pod.changed()
            return state
        if self._pod.stopping:
            raise _StoppedError
        self.termination_file().write_bytes(b"")
        log.info("pod %s container %s: starting %r", pod["metadata"]["name"], self.name,
                 launch.argv)
        self._kill_reason = ""
        if launch.container_name and launch.env_file is not None:
            self.termination_file().chmod(0o666)  # written by the container's user
            container_id = f"podman://{launch.container_name}"
            self._process = await PodmanProcess.start(
                launch.argv, name=launch.container_name, env_file=launch.env_file,
                log_path=self.log_path)
        else:
            container_id = f"local://{uuid.uuid4().hex}"
            self._process = await LocalProcess.start(
                launch.argv, executable=launch.executable, env=launch.env, cwd=launch.cwd,
                log_path=self.log_path)
        started_at = now_rfc3339()
        began = time.monotonic()
        self.record.set_running(container_id, started_at)
        self._pod.events.emit(pod, "Started", f"Started container {self.name}",
                              container=self.name)
        self._pod.changed()
        probes = asyncio.create_task(self._probe_loop(launch))
        try:
            code = await self._process.wait()
        finally:
            probes.cancel()
            await asyncio.gather(probes, return_exceptions=True)
        self._last_run_s = time.monotonic() - began
        message = self._message(code)
        reason = "Completed" if code == 0 else "Error"
        if (launch.container_name and code == OOM_EXIT and has_memory_limit(self.spec)
                and not self._kill_reason):
            reason = "OOMKilled"  # podman's own flag is wrong on cgroup v1
        state = Terminated(code, reason, message, started_at, now_rfc3339(), container_id)
        self.record.set_terminated(state)
        self._pod.changed()
        return state

    def _message(self, code: int) -> str:
        try:
            content = self.termination_file().read_bytes()
        except OSError:
            content = b""
        tail = b""
        policy = self.spec.get("terminationMessagePolicy", "File")
        if not content and policy == "FallbackToLogsOnError" and code != 0:
            tail = _log_tail(self.log_path)
        message = termination_message(content, policy, code, tail)
        if self._kill_reason and not message:
            message = self._kill_reason
        return message

    # --- probes ----------------------------------------------------------------------
    async def _probe_loop(self, launch: Launch) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        trackers = {
            kind: ProbeTracker(spec, start)
            for kind in ProbeKind
            if (spec := ProbeSpec.from_container(self.spec, kind)) is not None
        }
        startup = trackers.get(ProbeKind.STARTUP)
        readiness = trackers.get(ProbeKind.READINESS)
        if startup is None:
            self._mark_started(readiness is None)
        while True:
            if startup is not None and not self.record.started:
                active = [startup]
            else:
                active = [t for k, t in trackers.items() if k is not ProbeKind.STARTUP]
            if not active:
                return
            due = min(t.next_due() for t in active)
            await asyncio.sleep(max(0.0, due - loop.time()))
            for tracker in active:
                if tracker.next_due() > loop.time():
                    continue
                ok = await self._probe_once(tracker.spec, launch)
                flipped = tracker.record(ok, loop.time())
                kind = tracker.spec.kind
                if not ok:
                    log.debug("%s probe of %s failed", kind.value, self.name)
                if kind is ProbeKind.STARTUP and ok:
                    self._mark_started(readiness is None)
                    break
                if kind in (ProbeKind.STARTUP, ProbeKind.LIVENESS) and tracker.failed:
                    await self._kill_for_probe(tracker.spec)
                    return
                if kind is ProbeKind.READINESS and flipped:
                    self.record.ready = tracker.passing
                    if not tracker.passing:
                        self._pod.events.emit(self._pod.pod, "Unhealthy",
                                              "Readiness probe failed", warning=True,
                                              container=self.name)
                    self._pod.changed()

    def _mark_started(self, ready: bool) -> None:
        self.record.started = True
        self.record.ready = ready
        self._pod.changed()

    async def _probe_once(self, spec: ProbeSpec, launch: Launch) -> bool:
        if "grpc" in spec.handler and not self._warned_grpc:
            self._warned_grpc = True
            log.warning("container %s: gRPC probes are not run locally; counted as passing",
                        self.name)

        async def run_exec(command: list[str], limit_s: float) -> int | None:
            argv = [launch.rewrite(part) for part in command]
            if launch.container_name:
                return await run_to_completion(
                    exec_argv(launch.container_name, argv), executable=launch.executable,
                    env=launch.env, cwd=launch.cwd,
                    log_path=self._pod.pod_dir / f"{self.name}.probe.log", limit_s=limit_s)
            try:
                executable = resolve_executable(argv[0], launch.env["PATH"], launch.cwd)
            except (ExecutableNotFoundError, IndexError):
                return 126
            return await run_to_completion(
                argv, executable=executable, env=launch.env, cwd=launch.cwd,
                log_path=self._pod.pod_dir / f"{self.name}.probe.log", limit_s=limit_s)

        try:
            return await run_probe(spec.handler, container=self.spec, pod_ip=self._probe_host(),
                                   limit_s=spec.timeout, run_exec=run_exec)
        except ProbeSetupError as error:
            log.warning("container %s: %s", self.name, error)
            return False

    def _probe_host(self) -> str:
        return self._pod.pod_ip or self._pod.settings.host_ip

    async def _kill_for_probe(self, spec: ProbeSpec) -> None:
        kind = spec.kind.value.capitalize()
        self._kill_reason = f"{kind} probe failed"
        self._pod.events.emit(self._pod.pod, "Unhealthy", f"{kind} probe failed",
                              warning=True, container=self.name)
        self._pod.events.emit(
            self._pod.pod, "Killing",
            f"Container {self.name} failed {spec.kind.value} probe, will be restarted",
            container=self.name)
        grace = spec.termination_grace
        if grace is None:
            grace = float(self._pod.pod["spec"].get("terminationGracePeriodSeconds", 30))
        if self._process is not None:
            await self._process.stop(grace)

    # --- restarts and stopping -------------------------------------------------------
    async def run_until_done(self, restart_policy: str) -> Terminated | None:
        """Runs, restarting per policy, until it is done or the pod stops; last state."""
        policy = restart_policy
        if self.init:
            policy = "Never" if restart_policy == "Never" else "OnFailure"
        while not self._pod.stopping:
            try:
                state = await self.run_instance()
            except _StoppedError:
                break
            except NamesPendingError as error:
                if self.record.waiting_message != str(error):
                    self.record.waiting_message = str(error)
                    self._pod.changed()
                await self._sleep(NAME_RETRY_S)
                continue
            except (ContainerConfigError, VolumeError) as error:
                reason = getattr(error, "reason", "CreateContainerConfigError")
                if (self.record.waiting_reason, self.record.waiting_message) != (reason,
                                                                                 str(error)):
                    self.record.set_waiting(reason, str(error))
                    self._pod.events.emit(self._pod.pod, "Failed", f"Error: {error}",
                                          warning=True, container=self.name)
                    self._pod.changed()
                await self._sleep(CONFIG_RETRY_S)
                continue
            if self._pod.stopping or not should_restart(policy, state.exit_code):
                return state
            delay = self._backoff.next_delay(self._last_run_s)
            meta = self._pod.pod["metadata"]
            self.record.set_waiting(
                "CrashLoopBackOff",
                f"back-off {delay:g}s restarting failed container={self.name} "
                f"pod={meta['name']}_{meta['namespace']}({meta['uid']})")
            self._pod.events.emit(self._pod.pod, "BackOff",
                                  f"Back-off restarting failed container {self.name}",
                                  warning=True, container=self.name)
            self._pod.changed()
            await self._sleep(delay)
            if self._pod.stopping:
                return self.record.last_terminated
            self.record.restart_count += 1
        return self.record.terminated or self.record.last_terminated

    async def _sleep(self, seconds: float) -> None:
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=seconds)

    def wake(self) -> None:
        self._wake.set()

    async def stop(self, grace: float, reason: str) -> None:
        """Stops a running process (SIGTERM, grace, SIGKILL); safe to call at any time."""
        self.wake()
        process = self._process
        if process is not None and process.returncode is None:
            self._kill_reason = reason
            self._pod.events.emit(self._pod.pod, "Killing", f"Stopping container {self.name}",
                                  container=self.name)
            await process.stop(grace)


class NamesPendingError(Exception):
    """A pod DNS name in the command does not resolve yet; the container waits."""


class _StoppedError(Exception):
    """The pod began stopping while the container was being prepared."""


def _log_tail(path: Path, limit: int = 64 * 1024) -> bytes:
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - limit))
            return handle.read()
    except OSError:
        return b""
