"""The runner's only Kubernetes client boundary: JSON in, JSON out.

The operator's kubeconfig loader and HTTP transport (modelloop_operator.kubeconfig,
.apitransport) do the kubeconfig, TLS and auth work; objects
stay plain dicts (no model classes) because the runner reads many optional fields and
must never crash on a field its model version does not know. Every API error surfaces
as `KubeError`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
from modelloop_operator.apitransport import ApiTransport
from modelloop_operator.kubeconfig import Connection, load_kubeconfig

Json = dict[str, Any]

MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"


class KubeError(Exception):
    """An API call failed; `status` is the HTTP status (0 when no response came back)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class KubeClient:
    """A few verbs over raw API paths."""

    def __init__(self, connection: Connection) -> None:
        # Every call names its own limit (limit_s); this default is never used.
        self._transport = ApiTransport(connection=connection, request_timeout=30)
        self.server = connection.server

    @classmethod
    async def from_kubeconfig(cls, path: str, context: str | None = None) -> KubeClient:
        return cls(load_kubeconfig([Path(path)], context=context))

    async def close(self) -> None:
        await self._transport.close()

    async def _send(self, method: str, path: str, *, query: list[tuple[str, str]],
                    headers: dict[str, str], body: Any, limit_s: float,
                    ) -> aiohttp.ClientResponse:
        return await self._transport.open(
            method, path, query=query, headers=headers,
            body=None if body is None else json.dumps(body).encode(),
            limit=aiohttp.ClientTimeout(total=limit_s))

    async def _call(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        limit_s: float = 30.0,
    ) -> Any:
        headers = {"Content-Type": content_type, "Accept": "application/json"}
        try:
            response = await self._send(method, path, query=list((query or {}).items()),
                                        headers=headers, body=body, limit_s=limit_s)
            try:
                text = await response.text()
            finally:
                response.release()
        except Exception as error:  # aiohttp/ssl errors: no response at all
            raise KubeError(0, f"{method} {path}: {error!r}") from error
        if not 200 <= response.status <= 299:
            raise KubeError(response.status, f"{method} {path}: {text[:500]}")
        return json.loads(text) if text else None

    async def get(self, path: str, query: dict[str, str] | None = None) -> Json:
        result: Json = await self._call("GET", path, query=query)
        return result

    async def get_or_none(self, path: str) -> Json | None:
        try:
            return await self.get(path)
        except KubeError as error:
            if error.status == 404:
                return None
            raise

    async def create(self, path: str, body: Json) -> Json:
        result: Json = await self._call("POST", path, body=body)
        return result

    async def patch(self, path: str, body: Json, content_type: str = MERGE_PATCH) -> Json:
        result: Json = await self._call("PATCH", path, body=body, content_type=content_type)
        return result

    async def update(self, path: str, body: Json) -> Json:
        result: Json = await self._call("PUT", path, body=body)
        return result

    async def delete(self, path: str, body: Json | None = None) -> None:
        await self._call("DELETE", path, body=body)

    async def watch(
        self, path: str, query: dict[str, str], limit_s: float
    ) -> AsyncIterator[Json]:
        """Yields watch events ({"type", "object"}) until the server closes the stream."""
        params = dict(query, watch="true", timeoutSeconds=str(int(limit_s)))
        try:
            response = await self._send("GET", path, query=list(params.items()),
                                        headers={"Accept": "application/json"}, body=None,
                                        limit_s=limit_s + 30)
        except Exception as error:
            raise KubeError(0, f"watch {path}: {error!r}") from error
        try:
            if response.status != 200:
                raise KubeError(response.status, (await response.text())[:500])
            async for line in response.content:
                if line.strip():
                    yield json.loads(line)
        finally:
            response.release()


def ns_path(namespace: str, resource: str, name: str = "", subresource: str = "") -> str:
    """`/api/v1/namespaces/<ns>/<resource>[/<name>[/<subresource>]]` for core resources."""
    path = f"/api/v1/namespaces/{quote(namespace)}/{resource}"
    if name:
        path += f"/{quote(name)}"
    if subresource:
        path += f"/{subresource}"
    return path
