"""Pod volumes as local directories.

- emptyDir -> `<data dir>/v/<name>`, also reachable as `<pod dir>/volumes/<name>` (the
  data dir is short, `/tmp/mlp-*/<uid prefix>`, so unix sockets in volumes fit the
  108-byte limit; medium Memory is a plain directory too);
- configMap / secret / downwardAPI / projected -> files written once at pod start
  (`items`, `defaultMode`/`mode`, `optional` honoured; later updates are not propagated);
- projected `serviceAccountToken` -> a real bound token from the TokenRequest API;
- persistentVolumeClaim -> the bound PV's `hostPath.path` or `local.path` (created if
  missing); the claim must be Bound, else the pod waits in ContainerCreating;
- hostPath -> the path itself.
The auto-injected `kube-api-access-*` volume never blocks a pod: if its token or CA cannot
be fetched, the pod runs without them (local processes talk to the API via kubeconfig).

Text files of configMap, secret and projected volumes get the same path rewriting as
command lines (paths.py), with the pod's mount paths: a TorchServe `config.properties`
saying `model_store=/mnt/models` must name the emptyDir that is mounted there.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .envvars import ContainerConfigError, PodRuntimeFields, pod_field, resource_field
from .expansion import expand_with
from .kube import KubeClient, KubeError, ns_path
from .loopback import rewrite_loopback
from .paths import PathMap

Json = dict[str, Any]
log = logging.getLogger(__name__)


class VolumeError(Exception):
    """A volume cannot be set up (yet): the kubelet's FailedMount, retried."""


def _write(directory: Path, relative: str, data: bytes, mode: int) -> None:
    target = (directory / relative).resolve()
    if directory.resolve() not in target.parents:
        raise VolumeError(f"item path {relative!r} escapes the volume")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    target.chmod(mode)


def _key_files(
    data: Mapping[str, bytes], source: Json, kind: str, default_mode: int
) -> list[tuple[str, bytes, int]]:
    items = source.get("items")
    if not items:
        return [(key, value, default_mode) for key, value in data.items()]
    files = []
    for item in items:
        if item["key"] not in data:
            if source.get("optional"):
                continue
            raise VolumeError(f"{kind} {source.get('name')!r} has no key {item['key']!r}")
        files.append((item["path"], data[item["key"]], int(item.get("mode", default_mode))))
    return files


class VolumeBuilder:
    """Materializes one pod's volumes."""

    def __init__(
        self,
        kube: KubeClient,
        pod: Json,
        data_dir: Path,
        runtime: PodRuntimeFields,
        node_allocatable: Mapping[str, str],
    ) -> None:
        self._kube = kube
        self._pod = pod
        self._dir = data_dir / "v"
        self._runtime = runtime
        self._allocatable = node_allocatable
        meta = pod["metadata"]
        self._namespace: str = meta["namespace"]
        self.config_dirs: list[Path] = []

    async def build_all(self) -> dict[str, Path]:
        paths: dict[str, Path] = {}
        for volume in self._pod["spec"].get("volumes") or []:
            name = volume["name"]
            try:
                paths[name] = await self._build(volume)
            except (VolumeError, KubeError, ContainerConfigError) as error:
                if name.startswith("kube-api-access-"):
                    log.info("volume %s: %s (not needed by local processes)", name, error)
                    paths[name] = self._dir / name
                    paths[name].mkdir(parents=True, exist_ok=True)
                    continue
                raise VolumeError(f'volume "{name}": {error}') from error
        return paths

    async def _build(self, volume: Json) -> Path:
        name: str = volume["name"]
        local = self._dir / name
        if "persistentVolumeClaim" in volume:
            return await self._claim(str(volume["persistentVolumeClaim"]["claimName"]))
        if "hostPath" in volume:
            return _host_path(volume["hostPath"])
        local.mkdir(parents=True, exist_ok=True)
        default_mode = 0o644
        if "emptyDir" in volume:
            return local
        if "configMap" in volume:
            await self._config_map(local, volume["configMap"], volume["configMap"].get(
                "defaultMode", default_mode))
        elif "secret" in volume:
            source = dict(volume["secret"], name=volume["secret"].get("secretName"))
            await self._secret(local, source, source.get("defaultMode", default_mode))
        elif "downwardAPI" in volume:
            self._downward(local, volume["downwardAPI"], volume["downwardAPI"].get(
                "defaultMode", default_mode))
        elif "projected" in volume:
            await self._projected(local, volume["projected"])
        if "downwardAPI" not in volume:
            self.config_dirs.append(local)
        else:
            kinds = sorted(set(volume) - {"name"})
            raise VolumeError(f"volume type {kinds} is not supported by the local runner")
        return local

    async def _claim(self, claim: str) -> Path:
        pvc = await self._kube.get_or_none(ns_path(self._namespace, "persistentvolumeclaims",
                                                   claim))
        if pvc is None:
            raise VolumeError(f'persistentvolumeclaim "{claim}" not found')
        volume_name = (pvc.get("spec") or {}).get("volumeName")
        if (pvc.get("status") or {}).get("phase") != "Bound" or not volume_name:
            raise VolumeError(f'persistentvolumeclaim "{claim}" is not bound')
        pv = await self._kube.get(f"/api/v1/persistentvolumes/{volume_name}")
        spec = pv.get("spec") or {}
        directory = (spec.get("hostPath") or {}).get("path") or (spec.get("local") or {}).get(
            "path")
        if not directory:
            raise VolumeError(f"persistentvolume {volume_name} is neither hostPath nor local")
        path = Path(directory)
        await asyncio.to_thread(path.mkdir, parents=True, exist_ok=True)
        return path

    async def _config_map(self, local: Path, source: Json, default_mode: int) -> None:
        name = source.get("name", "")
        obj = await self._kube.get_or_none(ns_path(self._namespace, "configmaps", name))
        if obj is None:
            if source.get("optional"):
                return
            raise VolumeError(f'configmap "{name}" not found')
        data = {k: v.encode() for k, v in (obj.get("data") or {}).items()}
        data.update({k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
        for path, content, mode in _key_files(data, source, "configmap", default_mode):
            _write(local, path, content, mode)

    async def _secret(self, local: Path, source: Json, default_mode: int) -> None:
        name = source.get("name", "")
        obj = await self._kube.get_or_none(ns_path(self._namespace, "secrets", name))
        if obj is None:
            if source.get("optional"):
                return
            raise VolumeError(f'secret "{name}" not found')
        data = {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
        for path, content, mode in _key_files(data, source, "secret", default_mode):
            _write(local, path, content, mode)

    def _downward(self, local: Path, source: Json, default_mode: int) -> None:
        for item in source.get("items") or []:
            if "fieldRef" in item:
                value = pod_field(self._pod, item["fieldRef"]["fieldPath"], self._runtime)
            else:
                ref = item["resourceFieldRef"]
                container = next(
                    c for c in self._pod["spec"]["containers"] if c["name"] == ref["containerName"]
                )
                value = resource_field(container, ref["resource"], ref.get("divisor"),
                                       self._allocatable)
            _write(local, item["path"], value.encode(), int(item.get("mode", default_mode)))

    async def _projected(self, local: Path, projected: Json) -> None:
        default_mode = int(projected.get("defaultMode", 0o644))
        for source in projected.get("sources") or []:
            if "configMap" in source:
                await self._config_map(local, source["configMap"], default_mode)
            elif "secret" in source:
                await self._secret(local, source["secret"], default_mode)
            elif "downwardAPI" in source:
                self._downward(local, source["downwardAPI"], default_mode)
            elif "serviceAccountToken" in source:
                await self._token(local, source["serviceAccountToken"], default_mode)
            else:
                raise VolumeError(f"projected source {sorted(source)} is not supported")

    async def _token(self, local: Path, source: Json, mode: int) -> None:
        meta = self._pod["metadata"]
        account = self._pod["spec"].get("serviceAccountName") or "default"
        request = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "audiences": [source["audience"]] if source.get("audience") else [],
                "expirationSeconds": int(source.get("expirationSeconds", 3607)),
                "boundObjectRef": {
                    "apiVersion": "v1", "kind": "Pod", "name": meta["name"], "uid": meta["uid"],
                },
            },
        }
        path = ns_path(self._namespace, "serviceaccounts", account, "token")
        response = await self._kube.create(path, request)
        _write(local, source.get("path", "token"), response["status"]["token"].encode(), mode)


def _host_path(source: Json) -> Path:
    path = Path(str(source["path"]))
    kind = source.get("type", "")
    if kind == "DirectoryOrCreate":
        path.mkdir(parents=True, exist_ok=True)
    elif kind == "Directory" and not path.is_dir():
        raise VolumeError(f"hostPath {path} is not a directory")
    return path


def pod_mount_map(pod: Json, volumes: Mapping[str, Path],
                  image_paths: Mapping[str, str]) -> PathMap:
    """Mount paths of all the pod's containers; a path mounted differently is left out."""
    spec = pod["spec"]
    found: dict[str, str] = dict(image_paths)
    ambiguous: set[str] = set()
    for container in (spec.get("initContainers") or []) + (spec.get("containers") or []):
        for mount in container.get("volumeMounts") or []:
            base = volumes.get(mount["name"])
            if base is None or mount.get("subPathExpr"):
                continue
            host = str(base / mount["subPath"]) if mount.get("subPath") else str(base)
            path = mount["mountPath"].rstrip("/") or "/"
            if found.get(path, host) != host:
                ambiguous.add(path)
            found[path] = host
    path_map = PathMap()
    for path, host in found.items():
        if path not in ambiguous and path != "/":
            path_map.add(path, host)
    return path_map


def rewrite_config_files(directories: list[Path], path_map: PathMap, loopback_ip: str) -> None:
    """Rewrites mount paths and 127.0.0.1 inside the text files of volume directories."""
    for directory in directories:
        for file in directory.rglob("*"):
            if file.is_symlink() or not file.is_file():
                continue
            try:
                text = file.read_text("utf-8")
            except (UnicodeDecodeError, OSError):
                continue  # binary data stays as it is
            rewritten = rewrite_loopback(path_map.rewrite_occurrences(text), loopback_ip)
            if rewritten != text:
                mode = file.stat().st_mode & 0o7777
                file.chmod(mode | 0o200)
                file.write_text(rewritten, "utf-8")
                file.chmod(mode)


def container_path_map(
    container: Json,
    volumes: Mapping[str, Path],
    env: Mapping[str, str],
    termination_container_path: str,
    termination_host_path: Path,
    mirror_root: Path,
    image_paths: Mapping[str, str],
) -> PathMap:
    """Container mount paths (with subPath/subPathExpr) -> host paths, for one container.

    `image_paths` (files the image would hold) come first, so a mount at the same path
    overrides them as it would in a container.
    """
    path_map = PathMap(mirror_root=str(mirror_root))
    for container_path, host_path in image_paths.items():
        path_map.add(container_path, host_path)
    for mount in container.get("volumeMounts") or []:
        base = volumes.get(mount["name"])
        if base is None:
            raise VolumeError(f"volumeMount {mount['name']!r} names no volume")
        sub = mount.get("subPath") or expand_with(mount.get("subPathExpr", ""), env)
        host = base
        if sub:
            host = base / sub
            if not host.exists():
                host.mkdir(parents=True, exist_ok=True)  # as the kubelet does for subPaths
        path_map.add(mount["mountPath"], str(host))
    path_map.add(termination_container_path, str(termination_host_path))
    return path_map


def build_mirror_root(root: Path, path_map: PathMap) -> None:
    """A directory laid out like the container's mounts, each one a symlink to its host path."""
    root.mkdir(parents=True, exist_ok=True)
    for container_path, host_path in sorted(path_map.entries.items()):
        link = root / container_path.lstrip("/")
        if any(parent.is_symlink() for parent in link.parents):
            continue  # nested in another mount: never create links inside a volume
        link.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            link.unlink()
        link.symlink_to(host_path)
