"""The runner's container mode: each container of a pod is one `podman run` of its image.

Host networking keeps the runner's per-pod addresses (a server binds `$(POD_IP)`); the
image, the user, the read-only root, capabilities, memory and CPU limits and the mounts
are real. Settings come from `hack/containers/containers.conf` (runc, cgroupfs, rlimits).
Facts of these machines handled here: podman's OOMKilled flag is wrong on cgroup v1, so a
container with a memory limit that exits 137 without being stopped counts as OOMKilled.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import shutil
import subprocess
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .envvars import ContainerConfigError
from .quantity import parse_quantity

Json = dict[str, Any]

NODE_LABEL = "dev.modelloop.podrunner.node"
REPO_ROOT = Path(__file__).resolve().parents[3]
CONTAINERS_CONF = REPO_ROOT / "hack" / "containers" / "containers.conf"
OOM_EXIT = 137


class ImageNeverPulledError(ContainerConfigError):
    """The kubelet's ErrImageNeverPull: images are built locally, never pulled."""

    reason = "ErrImageNeverPull"


@dataclass(frozen=True)
class Mount:
    host: str
    container: str
    read_only: bool


def podman_binary() -> str:
    found = shutil.which("podman")
    if found is None:
        raise ContainerConfigError("podman is not installed: run `make images` "
                                   "(hack/images.sh installs it)")
    return found


def podman_env() -> dict[str, str]:
    """The podman CLI's own environment (never the container's)."""
    keep = ("PATH", "HOME", "LANG", "XDG_RUNTIME_DIR")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    env["CONTAINERS_CONF"] = str(CONTAINERS_CONF)
    return env


def service_env(server: str) -> dict[str, str]:
    """The `kubernetes` Service's variables, which the kubelet sets in every container; here
    they name the API server itself (no Service VIPs without kube-proxy)."""
    parsed = urllib.parse.urlsplit(server)
    port = str(parsed.port or (443 if parsed.scheme == "https" else 80))
    return {"KUBERNETES_SERVICE_HOST": parsed.hostname or "", "KUBERNETES_SERVICE_PORT": port,
            "KUBERNETES_SERVICE_PORT_HTTPS": port}


def container_name(pod: Json, container: str, restart: int) -> str:
    meta = pod["metadata"]
    return f"mlp-{meta['namespace']}-{meta['name']}-{container}-{meta['uid'][:8]}-{restart}"


def _security(pod_spec: Json, container: Json) -> list[str]:
    pod_ctx = pod_spec.get("securityContext") or {}
    ctx = {**pod_ctx, **(container.get("securityContext") or {})}
    args: list[str] = []
    user, group = ctx.get("runAsUser"), ctx.get("runAsGroup")
    if user is not None:
        args.append(f"--user={user}" + (f":{group}" if group is not None else ""))
    groups = list(pod_ctx.get("supplementalGroups") or [])
    if pod_ctx.get("fsGroup") is not None:
        groups.append(pod_ctx["fsGroup"])
    args += [f"--group-add={g}" for g in dict.fromkeys(groups)]
    if ctx.get("readOnlyRootFilesystem"):
        args += ["--read-only", "--read-only-tmpfs=false"]  # the kubelet adds no tmpfs
    caps = ctx.get("capabilities") or {}
    args += [f"--cap-drop={c.lower()}" for c in caps.get("drop") or []]
    args += [f"--cap-add={c.lower()}" for c in caps.get("add") or []]
    if ctx.get("allowPrivilegeEscalation") is False:
        args.append("--security-opt=no-new-privileges")
    return args


def _limits(container: Json) -> list[str]:
    limits = (container.get("resources") or {}).get("limits") or {}
    args: list[str] = []
    if "memory" in limits:
        memory = int(parse_quantity(str(limits["memory"])))
        args += [f"--memory={memory}", f"--memory-swap={memory}"]
    if "cpu" in limits:
        args.append(f"--cpus={float(parse_quantity(str(limits['cpu']))):g}")
    return args


def has_memory_limit(container: Json) -> bool:
    return "memory" in ((container.get("resources") or {}).get("limits") or {})


def run_argv(*, name: str, node: str, pod: Json, container: Json, mounts: Sequence[Mount],
             env_file: Path, inline_env: Mapping[str, str], hostname: str) -> list[str]:
    """`podman run` arguments for one container (without the program name)."""
    spec = pod["spec"]
    args = ["run", f"--name={name}", "--pull=never", "--network=host",
            f"--hostname={hostname}", "--log-driver=none", "--init=false",
            f"--label={NODE_LABEL}={node}", f"--env-file={env_file}"]
    args += [f"--env={k}={v}" for k, v in inline_env.items()]
    args += _security(spec, container) + _limits(container)
    for mount in mounts:
        args.append(f"--volume={mount.host}:{mount.container}" + (":ro" if mount.read_only
                                                                  else ""))
    if container.get("workingDir"):
        args.append(f"--workdir={container['workingDir']}")
    command, rest = container.get("command"), list(container.get("args") or [])
    if command:
        args.append(f"--entrypoint={json.dumps(command[:1])}")
        rest = list(command[1:]) + rest
    args.append(container["image"])
    return args + rest


def write_env(env: Mapping[str, str], path: Path) -> dict[str, str]:
    """Writes single-line values to a 0600 env file (kept out of argv and `ps`); returns the
    multi-line ones, which an env file cannot carry."""
    inline = {k: v for k, v in env.items() if "\n" in v or "\r" in v}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        for key, value in env.items():
            if key not in inline:
                handle.write(f"{key}={value}\n")
    return inline


async def image_present(image: str) -> bool:
    proc = await asyncio.create_subprocess_exec(
        podman_binary(), "image", "exists", image, env=podman_env(),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    return await proc.wait() == 0


def kubelet_volume_modes(pod: Json, volumes: Mapping[str, Path]) -> None:
    """What the kubelet does to volumes before a start: emptyDirs are 0777, and claims
    belong to the pod's fsGroup (setgid, group-writable), recursively."""
    spec = pod["spec"]
    fs_group = (spec.get("securityContext") or {}).get("fsGroup")
    for volume in spec.get("volumes") or []:
        path = volumes.get(volume["name"])
        if path is None or not path.is_dir():
            continue
        if "emptyDir" in volume:
            path.chmod(0o777)
        elif fs_group is not None and ("persistentVolumeClaim" in volume
                                       or "hostPath" in volume):
            _own_group(path, int(fs_group))


def _own_group(root: Path, gid: int) -> None:
    for current, dirs, files in os.walk(root):
        for name in [*dirs, *files, ""]:
            target = Path(current, name) if name else Path(current)
            with contextlib.suppress(OSError):
                if target.is_symlink():
                    continue
                os.chown(target, -1, gid)
                mode = target.stat().st_mode
                extra = 0o2070 if target.is_dir() else 0o060
                target.chmod((mode & 0o7777) | extra)


class PodmanProcess:
    """One `podman run`, attached: its exit code is the container's."""

    def __init__(self, proc: asyncio.subprocess.Process, name: str, env_file: Path) -> None:
        self._proc = proc
        self.name = name
        self._env_file = env_file
        self.pid = proc.pid
        self._removed = False

    @classmethod
    async def start(cls, argv: Sequence[str], *, name: str, env_file: Path,
                    log_path: Path) -> PodmanProcess:
        binary = podman_binary()
        await _remove(binary, name)  # a leftover of a runner that died
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log:
            proc = await asyncio.create_subprocess_exec(
                binary, *argv, stdin=asyncio.subprocess.DEVNULL, stdout=log,
                stderr=asyncio.subprocess.STDOUT, env=podman_env(), start_new_session=True)
        return cls(proc, name, env_file)

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode

    async def wait(self) -> int:
        code = await self._proc.wait()
        if not self._removed:
            self._removed = True
            await _remove(podman_binary(), self.name)
            with contextlib.suppress(OSError):
                self._env_file.unlink()
        return 128 - code if code < 0 else code

    async def stop(self, grace: float) -> int:
        """`podman stop` (the image's stop signal, then SIGKILL after `grace`)."""
        if self._proc.returncode is None:
            proc = await asyncio.create_subprocess_exec(
                podman_binary(), "stop", f"--time={max(0, math.ceil(grace))}", self.name,
                env=podman_env(), stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL)
            await proc.wait()
        return await self.wait()


async def _remove(binary: str, name: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        binary, "rm", "--force", "--time=0", name, env=podman_env(),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    await proc.wait()


def exec_argv(name: str, command: Sequence[str]) -> list[str]:
    return ["exec", name, *command]


def node_containers(node: str) -> list[str]:
    """Names of the containers a runner for `node` started that still exist."""
    binary = shutil.which("podman")
    if binary is None:
        return []
    listed = subprocess.run(
        [binary, "ps", "--all", "--format={{.Names}}", f"--filter=label={NODE_LABEL}={node}"],
        capture_output=True, text=True, env=podman_env(), check=False, timeout=60)
    return listed.stdout.split()


def remove_node_containers(node: str) -> None:
    """Removes every container a runner for `node` started (also ones a killed runner left)."""
    binary = shutil.which("podman")
    if binary is None:
        return
    listed = subprocess.run(
        [binary, "ps", "--all", "--quiet", f"--filter=label={NODE_LABEL}={node}"],
        capture_output=True, text=True, env=podman_env(), check=False, timeout=60)
    ids = listed.stdout.split()
    if ids:
        subprocess.run([binary, "rm", "--force", "--time=0", *ids], capture_output=True,
                       env=podman_env(), check=False, timeout=120)
