"""An in-memory stand-in for the API server, enough for one PodWorker (no cluster needed)."""

from __future__ import annotations

import copy
from typing import Any

from tests.harness.podrunner.kube import KubeClient, KubeError

Json = dict[str, Any]


class FakeKube(KubeClient):
    """Stores objects by API path; records status patches, creations and deletions."""

    def __init__(self, objects: dict[str, Json] | None = None) -> None:
        self.objects: dict[str, Json] = dict(objects or {})
        self.status_patches: list[Json] = []
        self.created: list[tuple[str, Json]] = []
        self.deleted: list[tuple[str, Json | None]] = []

    async def close(self) -> None:
        return None

    async def get(self, path: str, query: dict[str, str] | None = None) -> Json:
        if path not in self.objects:
            raise KubeError(404, f"GET {path}: not found")
        return copy.deepcopy(self.objects[path])

    async def create(self, path: str, body: Json) -> Json:
        self.created.append((path, body))
        if path.endswith("/token"):
            return {"status": {"token": "fake-token"}}
        return body

    async def patch(self, path: str, body: Json, content_type: str = "") -> Json:
        pod_path = path.removesuffix("/status")
        pod = self.objects[pod_path]
        if body.get("metadata", {}).get("uid") not in (None, pod["metadata"]["uid"]):
            raise KubeError(409, "uid precondition failed")
        self.status_patches.append(copy.deepcopy(body["status"]))
        pod["status"] = copy.deepcopy(body["status"])
        version = int(pod["metadata"].get("resourceVersion", "1")) + 1
        pod["metadata"]["resourceVersion"] = str(version)
        return copy.deepcopy(pod)

    async def delete(self, path: str, body: Json | None = None) -> None:
        self.deleted.append((path, body))
        self.objects.pop(path, None)

    def last_status(self) -> Json:
        return self.status_patches[-1] if self.status_patches else {}
