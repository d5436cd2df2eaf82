"""An in-memory stand-in for :class:`modelloop_operator.kube.KubeClient`, for reconcile
tests without a cluster. It keeps objects in a dict, honours label selectors, merge
patches (with the resourceVersion precondition) and records every write in order, so a
test can assert *what* the reconciler wrote and *in which order*. It does not run
controllers: tests play the Job controller by editing the stored objects."""

from __future__ import annotations

import builtins
import copy
import itertools
from collections.abc import Mapping
from typing import Any, Literal

from modelloop_operator.errors import ConflictError, NotFoundError, UnprocessableError
from modelloop_operator.kube import KubeClient, Object, Propagation, Resource

Key = tuple[str, str | None, str]


def _merge(target: dict[str, Any], patch: Mapping[str, Any]) -> None:
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


class MemoryKube(KubeClient):
    def __init__(self) -> None:  # no HTTP client: nothing leaves the process
        self.objects: dict[Key, Object] = {}
        self.writes: list[tuple[str, str, str]] = []
        self.reads: list[tuple[str, str]] = []
        """(plural, name) of every get, (plural, "") of every list."""
        self.refused: dict[str, str] = {}
        """plural -> message: applies of that kind are refused with 422 (an admission
        policy, say) and not recorded; clear it to lift the policy."""
        self.events: list[tuple[str, str]] = []
        self._versions = itertools.count(1)

    def put(self, resource: Resource, obj: Object) -> Object:
        meta = obj.setdefault("metadata", {})
        meta["resourceVersion"] = str(next(self._versions))
        meta.setdefault("uid", f"uid-{meta['name']}")
        self.objects[(resource.plural, meta.get("namespace"), meta["name"])] = obj
        return obj

    def stored(self, resource: Resource, namespace: str, name: str) -> Object | None:
        return self.objects.get((resource.plural, namespace, name))

    async def close(self) -> None:
        return None

    async def get(self, *, resource: Resource, namespace: str | None,
                  name: str) -> Object | None:
        self.reads.append((resource.plural, name))
        obj = self.objects.get((resource.plural, namespace, name))
        return copy.deepcopy(obj) if obj is not None else None

    async def list(self, *, resource: Resource, namespace: str | None,
                   labels: Mapping[str, str]) -> list[Object]:
        self.reads.append((resource.plural, ""))
        return [copy.deepcopy(o) for (plural, ns, _), o in sorted(self.objects.items())
                if plural == resource.plural and ns == namespace
                and labels.items() <= (o["metadata"].get("labels") or {}).items()]

    async def apply(self, *, resource: Resource, manifest: Mapping[str, Any],
                    force: bool = True) -> Object:
        if resource.plural in self.refused:
            raise UnprocessableError(self.refused[resource.plural], status=422)
        meta = manifest["metadata"]
        self.writes.append(("apply", resource.plural, meta["name"]))
        current = self.objects.get((resource.plural, meta.get("namespace"), meta["name"]))
        merged = copy.deepcopy(current) if current is not None else {}
        _merge(merged, copy.deepcopy(dict(manifest)))
        return copy.deepcopy(self.put(resource, merged))

    async def merge_patch(self, *, resource: Resource, namespace: str | None, name: str,
                          patch: Mapping[str, Any], subresource: str | None = None) -> Object:
        self.writes.append(("patch" + (f"/{subresource}" if subresource else ""),
                            resource.plural, name))
        current = self.objects.get((resource.plural, namespace, name))
        if current is None:
            raise NotFoundError(f"{name} not found", status=404)
        wanted = (patch.get("metadata") or {}).get("resourceVersion")
        if wanted is not None and wanted != current["metadata"]["resourceVersion"]:
            raise ConflictError(f"{name} changed", status=409)
        body = {k: v for k, v in patch.items() if k != "metadata"}
        _merge(current, body)
        return copy.deepcopy(self.put(resource, current))

    async def delete(self, *, resource: Resource, namespace: str | None, name: str,
                     propagation: Propagation = "Background") -> bool:
        self.writes.append(("delete", resource.plural, name))
        return self.objects.pop((resource.plural, namespace, name), None) is not None

    async def send_event(self, *, involved: Mapping[str, Any],
                         type_: Literal["Normal", "Warning"], reason: str,
                         message: str) -> None:
        self.events.append((type_, reason))


class ClaimingKube(MemoryKube):
    """MemoryKube with the API server's create-only POST (409 AlreadyExists when the name
    is taken), as the retrain loop uses to claim a run's name. ``hidden`` names are left
    out of list answers: a list that raced with another writer."""

    created_at = "2026-05-01T12:00:00Z"
    """creationTimestamp of every created object."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden: set[str] = set()

    async def create(self, *, resource: Resource, manifest: Mapping[str, Any]) -> Object:
        meta = manifest["metadata"]
        self.writes.append(("create", resource.plural, meta["name"]))
        if self.stored(resource, meta["namespace"], meta["name"]) is not None:
            raise ConflictError(f"{meta['name']} already exists", status=409,
                                reason="AlreadyExists")
        obj = copy.deepcopy(dict(manifest))
        obj["metadata"]["creationTimestamp"] = self.created_at
        return copy.deepcopy(self.put(resource, obj))

    async def list(self, *, resource: Resource, namespace: str | None,
                   labels: Mapping[str, str]) -> list[Object]:
        found = await super().list(resource=resource, namespace=namespace, labels=labels)
        return [o for o in found if o["metadata"]["name"] not in self.hidden]

    def created(self, resource: Resource, namespace: str) -> builtins.list[str]:
        """Names this kube created of ``resource`` that still exist in ``namespace``."""
        return [name for verb, plural, name in self.writes
                if verb == "create" and plural == resource.plural
                and self.stored(resource, namespace, name) is not None]
