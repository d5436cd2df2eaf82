"""The operator's one door to the Kubernetes API.

Every write the reconcilers make goes through here, so three rules hold everywhere:

* objects we own are written with server-side apply under one field manager,
  ``modelloop-operator``, with ``force`` (we are the only writer of those fields, and a
  conflict must not leave a half-applied child behind);
* status is written with a JSON merge patch guarded by ``resourceVersion``, so two
  writers (a second replica, a stale event) cannot silently overwrite each other;
* API failures are wrapped once into :mod:`modelloop_operator.errors` types;
* an apply that cannot change anything is not sent (see :class:`AppliedVersions`).

Objects travel as plain dicts (the JSON the API server speaks); typed parsing is the
job of ``api/`` models in the reconcilers.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import socket
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

import aiohttp

from .apitransport import ApiTransport, api_session
from .applycheck import already_applied
from .errors import ConflictError, ForbiddenError, KubeError, NotFoundError, UnprocessableError
from .kubeconfig import Connection, load_connection

logger = logging.getLogger(__name__)

FIELD_MANAGER: Final = "modelloop-operator"
"""The single field manager of every server-side apply the operator makes."""

REQUEST_TIMEOUT_SECONDS: Final = 30.0
"""Limit on one non-watch request; kopf's own watches have their own settings."""

APPLY_CONFIRMATION_SECONDS: Final = 5.0
"""How recent a read must be to vouch that an object is still what we last applied."""

APPLIED_VERSIONS_LIMIT: Final = 50_000
"""Objects whose last apply is remembered (oldest forgotten first): ~200 bytes each."""

Object = dict[str, Any]

APPLY_PATCH: Final = "application/apply-patch+yaml"
# A JSON surrogate-pair escape (\ud83d\ude00) not itself preceded by an escaped backslash.
_SURROGATE_PAIR = re.compile(r"(?<!\\)((?:\\\\)*)\\u(d[89ab][0-9a-f]{2})\\u(d[c-f][0-9a-f]{2})")


def apply_patch_body(manifest: Mapping[str, Any]) -> bytes:
    """A server-side apply body the API server's YAML parser reads back unchanged.

    An apply patch is parsed as YAML, and YAML rejects the surrogate-pair escapes that
    JSON uses for characters beyond U+FFFF (an emoji in a pod annotation made every apply
    of that Job fail with "invalid Unicode character escape code"). Those characters are
    written as UTF-8 instead; everything else stays ASCII-escaped JSON, which YAML reads
    (raw control characters would not be). Sent as bytes, so the client does not encode
    it again.
    """
    text = json.dumps(manifest, separators=(",", ":"))

    def unescape(match: re.Match[str]) -> str:
        high, low = int(match.group(2), 16), int(match.group(3), 16)
        return match.group(1) + chr(0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00))

    return _SURROGATE_PAIR.sub(unescape, text).encode()
Propagation = Literal["Background", "Foreground", "Orphan"]


def manifest_digest(manifest: Mapping[str, Any]) -> str:
    """A stable digest of a desired object (key order does not matter)."""
    text = json.dumps(manifest, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


CONFIRMATIONS_LIMIT: Final = 512
"""Reads kept to vouch for an apply (each holds a whole object body, and is worth
something for APPLY_CONFIRMATION_SECONDS only): a few per reconcile in flight."""


@dataclass
class _Applied:
    digest: str
    resource_version: str


class AppliedVersions:
    """What this process last applied to each object, and the ``resourceVersion`` the
    API server answered, so that a repeated apply of the same manifest to an object
    nobody touched since is skipped.

    A reconcile reads a child, then applies its desired state; in the steady state (a
    resync timer, a Deployment's status changing) most of those applies change nothing,
    yet each is a server-side apply the API server must decode, merge and compare, the
    most expensive kind of request it serves. Skipping is safe only when the object is
    provably unchanged: a read (:meth:`KubeClient.get`) less than
    :data:`APPLY_CONFIRMATION_SECONDS` ago returned exactly the ``resourceVersion`` our
    last apply of the same manifest produced. Any other writer (a user, a controller
    updating status, defaulting) bumps the ``resourceVersion`` and the apply goes out as
    before. With no apply remembered (after a restart), the read itself must show the
    manifest applied by us (:mod:`modelloop_operator.applycheck`). A read is used up by
    the apply it allows.
    """

    def __init__(self, *, limit: int = APPLIED_VERSIONS_LIMIT,
                 confirmations: int = CONFIRMATIONS_LIMIT) -> None:
        self._entries: OrderedDict[str, _Applied] = OrderedDict()
        self._limit = limit
        # path -> (when, the read): the latest read, which is what a skipped apply
        # returns. Kept apart and bounded: a body read but never followed by an apply (a
        # Job whose manifest hash already matched) used to stay for as long as its entry
        # (peak RSS, bench/operator_scale.py).
        self._confirmed: OrderedDict[str, tuple[float, Object]] = OrderedDict()
        self._confirmations = confirmations

    def __len__(self) -> int:
        return len(self._entries)

    def applied(self, path: str, *, digest: str, obj: Mapping[str, Any]) -> None:
        """Our apply of ``digest`` to ``path`` returned ``obj``."""
        version = str((obj.get("metadata") or {}).get("resourceVersion") or "")
        if not version:
            self.forget(path)
            return
        self._entries[path] = _Applied(digest=digest, resource_version=version)
        self._entries.move_to_end(path)
        self._confirmed.pop(path, None)
        while len(self._entries) > self._limit:
            self._entries.popitem(last=False)

    def observed(self, path: str, obj: Object | None, *, now: float) -> None:
        """A read of ``path`` returned ``obj`` (None: it does not exist)."""
        entry = self._entries.get(path)
        if obj is None:
            self.forget(path)
            return
        if entry is not None and obj.get("metadata", {}).get("resourceVersion") \
                != entry.resource_version:
            del self._entries[path]
        self._confirmed[path] = (now, obj)
        self._confirmed.move_to_end(path)
        while len(self._confirmed) > self._confirmations:
            self._confirmed.popitem(last=False)

    def unchanged(self, path: str, *, digest: str, manifest: Mapping[str, Any],
                  manager: str, now: float) -> Object | None:
        """The object as the confirming read saw it, when applying ``manifest`` (whose
        digest is ``digest``) to ``path`` now would be a no-op; else None. Consumes the
        read either way.

        A no-op when the read shows exactly the ``resourceVersion`` our last apply of
        the same manifest produced, or, with nothing remembered (a restarted process, a
        manifest that changed back), when the object itself shows the manifest applied
        by ``manager`` (:func:`~modelloop_operator.applycheck.already_applied`)."""
        confirmation = self._confirmed.pop(path, None)
        if confirmation is None:
            return None
        confirmed_at, obj = confirmation
        if now - confirmed_at > APPLY_CONFIRMATION_SECONDS:
            return None
        entry = self._entries.get(path)
        if entry is not None and entry.digest == digest and entry.resource_version == \
                obj.get("metadata", {}).get("resourceVersion"):
            return obj
        if already_applied(manifest, obj, manager=manager):
            self.applied(path, digest=digest, obj=obj)
            return obj
        return None

    def forget(self, path: str) -> None:
        """We changed or deleted ``path`` some other way."""
        self._entries.pop(path, None)
        self._confirmed.pop(path, None)


@dataclass(frozen=True)
class Resource:
    """Where a kind lives in the REST API (group, version, plural)."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        """``group/version``, or just ``version`` for the core group."""
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, *, namespace: str | None, name: str | None = None,
             subresource: str | None = None) -> str:
        """The REST path of the collection, one object, or one object's subresource."""
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        if name:
            base += f"/{name}"
            if subresource:
                base += f"/{subresource}"
        return base


JOBS: Final = Resource("batch", "v1", "jobs", "Job")
PODS: Final = Resource("", "v1", "pods", "Pod")
SERVICES: Final = Resource("", "v1", "services", "Service")
EVENTS: Final = Resource("", "v1", "events", "Event")


def _wrap(*, status: int, reason: str, body: bytes | str | None, what: str) -> KubeError:
    """One typed error from the API server's answer, with its own message."""
    message = reason
    if body:
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            message = str(parsed.get("message") or message)
            reason = str(parsed.get("reason") or reason)
    text = f"{what}: {message} ({status})"
    kinds: dict[int, type[KubeError]] = {
        403: ForbiddenError, 404: NotFoundError, 409: ConflictError, 422: UnprocessableError}
    return kinds.get(status, KubeError)(text, status=status, reason=reason)


async def load_configuration() -> Connection:
    """Where the API server is and who we are to it: ``KUBECONFIG`` (or
    ``~/.kube/config``), else the pod's service account, the same rules as kubectl
    (:mod:`modelloop_operator.kubeconfig`)."""
    return await asyncio.to_thread(load_connection)


async def shared_session(*, connections: int) -> tuple[str, aiohttp.ClientSession]:
    """The API server's URL and a session to it built as :class:`KubeClient`'s (same
    credentials, CA, proxy, TLS server name), each request authorized, for kopf's own
    connection: its watches and ours must take the same route to the same server."""
    connection = await load_configuration()
    return connection.server, api_session(connection, connections=connections,
                                          authorize=True)


class KubeClient:
    """An authenticated connection to one cluster. Create with :meth:`connect`."""

    def __init__(self, *, transport: ApiTransport, field_manager: str = FIELD_MANAGER) -> None:
        self._transport = transport
        self._field_manager = field_manager
        self._instance = socket.gethostname()
        self.applied_versions = AppliedVersions()
        self.skipped_applies = 0
        """Applies not sent because they could not change anything (for tests, metrics)."""

    @classmethod
    async def connect(cls, *, connections: int | None = None) -> KubeClient:
        """A client with the credentials of :func:`load_configuration`, keeping at most
        ``connections`` HTTP connections (the client library's default: 100)."""
        return cls(transport=ApiTransport(connection=await load_configuration(),
                                          request_timeout=REQUEST_TIMEOUT_SECONDS,
                                          connections=connections))

    async def close(self) -> None:
        """Release the HTTP connection pool."""
        await self._transport.close()

    async def _request(
        self, method: str, path: str, *, what: str,
        query: list[tuple[str, str]] | None = None,
        body: Any = None, content_type: str | None = None,
    ) -> Any:
        headers = {"Accept": "application/json"}
        data: bytes | None = None
        if content_type == APPLY_PATCH:
            data, content_type = apply_patch_body(body), f"{APPLY_PATCH}; charset=utf-8"
        elif body is not None:
            data = json.dumps(body, separators=(",", ":")).encode()
        if content_type is not None:
            headers["Content-Type"] = content_type
        try:
            response = await self._transport.request(
                method, path, query=query or [], headers=headers, body=data)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise KubeError(f"{what}: API server unreachable: {exc!r}", status=0) from exc
        if response.status >= 400:
            raise _wrap(status=response.status, reason=response.reason, body=response.body,
                        what=what)
        try:
            return json.loads(response.body) if response.body else {}
        except ValueError as exc:
            raise KubeError(f"{what}: unreadable answer from the API server: {exc}",
                            status=response.status) from exc

    async def get(self, *, resource: Resource, namespace: str | None, name: str) -> Object | None:
        """The object, or None when it does not exist."""
        path = resource.path(namespace=namespace, name=name)
        try:
            obj = dict(await self._request("GET", path,
                                           what=f"get {resource.kind} {namespace}/{name}"))
        except NotFoundError:
            self.applied_versions.observed(path, None, now=time.monotonic())
            return None
        self.applied_versions.observed(path, obj, now=time.monotonic())
        return obj

    async def list(self, *, resource: Resource, namespace: str | None,
                   labels: Mapping[str, str]) -> list[Object]:
        """Objects whose labels match all of ``labels`` (equality selectors)."""
        selector = ",".join(f"{key}={value}" for key, value in sorted(labels.items()))
        result = await self._request(
            "GET", resource.path(namespace=namespace), query=[("labelSelector", selector)],
            what=f"list {resource.plural} in {namespace} ({selector})")
        return [dict(item) for item in result.get("items", [])]

    async def apply(self, *, resource: Resource, manifest: Mapping[str, Any],
                    force: bool = True) -> Object:
        """Server-side apply of a complete desired object: creates it or updates exactly
        the fields in ``manifest``, and gives up fields we applied before and dropped.

        Not sent when a read just now showed the object exactly as our last apply of the
        same manifest left it (:class:`AppliedVersions`); the object is then returned
        as that read saw it, which is what the apply would have returned."""
        meta = manifest["metadata"]
        path = resource.path(namespace=meta.get("namespace"), name=meta["name"])
        digest = f"{force}:{manifest_digest(manifest)}"
        current = self.applied_versions.unchanged(path, digest=digest, manifest=manifest,
                                                  manager=self._field_manager,
                                                  now=time.monotonic())
        if current is not None:
            self.skipped_applies += 1
            return dict(current)
        try:
            result = dict(await self._request(
                "PATCH", path,
                query=[("fieldManager", self._field_manager), ("force", str(force).lower())],
                body=dict(manifest), content_type=APPLY_PATCH,
                what=f"apply {resource.kind} {meta.get('namespace')}/{meta['name']}"))
        except KubeError:
            self.applied_versions.forget(path)
            raise
        self.applied_versions.applied(path, digest=digest, obj=result)
        return result

    async def create(self, *, resource: Resource, manifest: Mapping[str, Any]) -> Object:
        """Create-only (POST): :class:`ConflictError` with reason ``AlreadyExists`` when
        the name is taken. For children whose fixed name is a claim (a retrain run), where
        apply's create-or-update would hide that someone got there first."""
        meta = manifest["metadata"]
        result = await self._request(
            "POST", resource.path(namespace=meta.get("namespace")),
            query=[("fieldManager", self._field_manager)], body=dict(manifest),
            content_type="application/json",
            what=f"create {resource.kind} {meta.get('namespace')}/{meta['name']}")
        return dict(result)

    async def merge_patch(self, *, resource: Resource, namespace: str | None, name: str,
                          patch: Mapping[str, Any], subresource: str | None = None) -> Object:
        """A JSON merge patch; with ``metadata.resourceVersion`` in ``patch`` it fails with
        :class:`ConflictError` when the object changed since it was read."""
        target = f"{namespace}/{name}" + (f"/{subresource}" if subresource else "")
        self.applied_versions.forget(resource.path(namespace=namespace, name=name))
        result = await self._request(
            "PATCH", resource.path(namespace=namespace, name=name, subresource=subresource),
            query=[("fieldManager", self._field_manager)], body=dict(patch),
            content_type="application/merge-patch+json", what=f"patch {resource.kind} {target}")
        return dict(result)

    async def delete(self, *, resource: Resource, namespace: str | None, name: str,
                     propagation: Propagation = "Background") -> bool:
        """Delete one object; False when it was already gone. ``Background`` lets the
        garbage collector remove dependents (a Job's pods) after the owner is gone."""
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": propagation}
        self.applied_versions.forget(resource.path(namespace=namespace, name=name))
        try:
            await self._request("DELETE", resource.path(namespace=namespace, name=name),
                                body=body, content_type="application/json",
                                what=f"delete {resource.kind} {namespace}/{name}")
        except NotFoundError:
            return False
        return True

    async def post_event(self, *, involved: Mapping[str, Any], type_: Literal["Normal", "Warning"],
                         reason: str, message: str) -> bool:
        """Record a core/v1 Event on ``involved`` (what ``kubectl describe`` shows).

        Best effort, like client-go's recorder: Events are for people and status already
        says the same, so a refusal (a namespace being deleted, a busy API server) is
        logged and never stops a reconcile. Returns whether the Event was recorded."""
        try:
            await self.send_event(involved=involved, type_=type_, reason=reason,
                                  message=message)
        except KubeError as exc:
            meta = involved["metadata"]
            logger.warning("could not post event %s on %s/%s: %s", reason,
                           meta["namespace"], meta["name"], exc)
            return False
        return True

    async def send_event(self, *, involved: Mapping[str, Any],
                         type_: Literal["Normal", "Warning"], reason: str,
                         message: str) -> None:
        """POST the Event; raises what the API server answers (see :meth:`post_event`)."""
        meta = involved["metadata"]
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        event = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": involved["apiVersion"], "kind": involved["kind"],
                "name": meta["name"], "namespace": meta["namespace"], "uid": meta.get("uid"),
            },
            "type": type_, "reason": reason, "message": message[:1024],
            "firstTimestamp": now, "lastTimestamp": now, "count": 1,
            "source": {"component": self._field_manager},
            "reportingComponent": self._field_manager, "reportingInstance": self._instance,
        }
        await self._request("POST", EVENTS.path(namespace=meta["namespace"]), body=event,
                            content_type="application/json",
                            what=f"post event {reason} on {meta['namespace']}/{meta['name']}")
