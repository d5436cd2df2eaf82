"""A container's environment, resolved the way the kubelet builds it.

Order (later wins): `envFrom` sources in list order (keys that are not valid env var
names are skipped, an optional `prefix` prepended), then `env` entries in list order.
An `env` value may reference, with `$(VAR)`, anything defined *before* it; command and
args may reference the final set. `valueFrom` supports the downward API (`fieldRef`,
`resourceFieldRef`), `configMapKeyRef` and `secretKeyRef`.

Everything here is pure: the runner fetches the ConfigMaps and Secrets first
(`referenced_objects`) and passes them in, so the rules are unit-tested without a cluster.
Service links (`*_SERVICE_HOST`) are not injected: there are no Service VIPs locally.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .expansion import expand_with
from .quantity import divide_rounding_up

# The kubelet's (pre-1.34) rule for env var names from envFrom.
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
_SUBSCRIPT = re.compile(r"^metadata\.(labels|annotations)\['(.*)'\]$")

Json = dict[str, Any]


class ContainerConfigError(Exception):
    """The kubelet's CreateContainerConfigError: the container cannot be started yet."""

    reason = "CreateContainerConfigError"


@dataclass(frozen=True)
class PodRuntimeFields:
    """Values the kubelet knows that are not in the pod object yet."""

    pod_ip: str
    host_ip: str


@dataclass
class Sources:
    """ConfigMaps and Secrets of the pod's namespace, by name; None when absent."""

    config_maps: dict[str, Mapping[str, str] | None] = field(default_factory=dict)
    secrets: dict[str, Mapping[str, str] | None] = field(default_factory=dict)


def referenced_objects(container: Json) -> tuple[set[str], set[str]]:
    """Names of the ConfigMaps and Secrets a container's env refers to."""
    config_maps: set[str] = set()
    secrets: set[str] = set()
    for source in container.get("envFrom") or []:
        if "configMapRef" in source:
            config_maps.add(source["configMapRef"].get("name", ""))
        if "secretRef" in source:
            secrets.add(source["secretRef"].get("name", ""))
    for var in container.get("env") or []:
        value_from = var.get("valueFrom") or {}
        if "configMapKeyRef" in value_from:
            config_maps.add(value_from["configMapKeyRef"].get("name", ""))
        if "secretKeyRef" in value_from:
            secrets.add(value_from["secretKeyRef"].get("name", ""))
    return config_maps, secrets


def pod_field(pod: Json, path: str, runtime: PodRuntimeFields) -> str:
    """The value of a downward-API `fieldRef.fieldPath`."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    simple: dict[str, str] = {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", ""),
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", ""),
        "status.podIP": runtime.pod_ip,
        "status.podIPs": runtime.pod_ip,
        "status.hostIP": runtime.host_ip,
        "status.hostIPs": runtime.host_ip,
    }
    if path in simple:
        return simple[path]
    subscript = _SUBSCRIPT.match(path)
    if subscript is not None:
        return str((meta.get(subscript.group(1)) or {}).get(subscript.group(2), ""))
    if path in ("metadata.labels", "metadata.annotations"):
        # Only valid in downwardAPI volumes: the kubelet writes sorted key="value" lines.
        items = sorted((meta.get(path.split(".")[1]) or {}).items())
        return "\n".join(f'{key}="{value}"' for key, value in items)
    raise ContainerConfigError(f"unsupported fieldRef fieldPath {path!r}")


def resource_field(
    container: Json, resource: str, divisor: str | None, node_allocatable: Mapping[str, str]
) -> str:
    """The value of a `resourceFieldRef`; an unset limit falls back to node allocatable."""
    kind, _, name = resource.partition(".")
    resources = container.get("resources") or {}
    value = (resources.get(kind) or {}).get(name)
    if value is None and kind == "limits":
        value = node_allocatable.get(name)
    if value is None:
        value = "0"
    return divide_rounding_up(value, divisor)


def _lookup_key(
    objects: Mapping[str, Mapping[str, str] | None], kind: str, ref: Json, namespace: str
) -> str | None:
    name = ref.get("name", "")
    optional = bool(ref.get("optional", False))
    data = objects.get(name)
    if data is None:
        if optional:
            return None
        raise ContainerConfigError(f'{kind.lower()} "{name}" not found')
    key = ref.get("key", "")
    if key not in data:
        if optional:
            return None
        raise ContainerConfigError(f"couldn't find key {key} in {kind} {namespace}/{name}")
    return data[key]


def resolve_env(
    pod: Json,
    container: Json,
    sources: Sources,
    runtime: PodRuntimeFields,
    node_allocatable: Mapping[str, str],
) -> dict[str, str]:
    """The env the pod spec defines for `container` (the base/image env is not included)."""
    namespace = (pod.get("metadata") or {}).get("namespace", "")
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix", "")
        if "configMapRef" in source:
            ref, objects, kind = source["configMapRef"], sources.config_maps, "ConfigMap"
        elif "secretRef" in source:
            ref, objects, kind = source["secretRef"], sources.secrets, "Secret"
        else:
            continue
        data = objects.get(ref.get("name", ""))
        if data is None:
            if ref.get("optional", False):
                continue
            raise ContainerConfigError(f'{kind.lower()} "{ref.get("name", "")}" not found')
        for key, value in data.items():
            if _ENV_NAME.match(prefix + key):
                env[prefix + key] = value
    for var in container.get("env") or []:
        name = var["name"]
        value_from = var.get("valueFrom")
        if value_from is None:
            env[name] = expand_with(var.get("value", ""), env)
            continue
        resolved: str | None
        if "fieldRef" in value_from:
            resolved = pod_field(pod, value_from["fieldRef"]["fieldPath"], runtime)
        elif "resourceFieldRef" in value_from:
            ref = value_from["resourceFieldRef"]
            target = container
            if ref.get("containerName"):
                target = _container_named(pod, ref["containerName"])
            resolved = resource_field(
                target, ref["resource"], ref.get("divisor"), node_allocatable
            )
        elif "configMapKeyRef" in value_from:
            resolved = _lookup_key(
                sources.config_maps, "ConfigMap", value_from["configMapKeyRef"], namespace
            )
        elif "secretKeyRef" in value_from:
            resolved = _lookup_key(
                sources.secrets, "Secret", value_from["secretKeyRef"], namespace
            )
        else:
            raise ContainerConfigError(f"unsupported valueFrom for env {name}")
        if resolved is not None:
            env[name] = resolved
    return env


def _container_named(pod: Json, name: str) -> Json:
    spec = pod.get("spec") or {}
    for container in (spec.get("initContainers") or []) + (spec.get("containers") or []):
        if container.get("name") == name:
            return dict(container)
    raise ContainerConfigError(f"resourceFieldRef names unknown container {name!r}")


def expand_command(container: Json, env: Mapping[str, str]) -> tuple[list[str], list[str]]:
    """Command and args with `$(VAR)` expanded against the container's final env."""
    command = [expand_with(part, env) for part in container.get("command") or []]
    args = [expand_with(part, env) for part in container.get("args") or []]
    return command, args
