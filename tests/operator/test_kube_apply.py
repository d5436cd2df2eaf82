"""Applies that cannot change anything are not sent (kube.AppliedVersions): the API server
is spared a no-op server-side apply only when a fresh read proves the object is exactly
what our last apply of the same manifest left."""

from __future__ import annotations

import copy
import itertools
from collections.abc import Mapping
from typing import Any, cast

import pytest
from modelloop_operator.errors import KubeError, NotFoundError
from modelloop_operator.kube import (
    APPLY_CONFIRMATION_SECONDS,
    FIELD_MANAGER,
    SERVICES,
    AppliedVersions,
    KubeClient,
)

PATH = SERVICES.path(namespace="team", name="svc")
MANIFEST: dict[str, Any] = {"apiVersion": "v1", "kind": "Service",
                            "metadata": {"name": "svc", "namespace": "team"},
                            "spec": {"selector": {"app": "x"}}}


class FakeServer(KubeClient):
    """KubeClient over an in-memory API server: counts the requests that reach it."""

    def __init__(self) -> None:
        super().__init__(transport=cast(Any, None))
        self.objects: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, str]] = []
        self._versions = itertools.count(1)
        self.fail_next = False

    def touch(self, path: str, *, ours: bool = True) -> None:
        """Another writer changes the object (a controller, a user): a field we set, or
        (``ours=False``) only something of its own."""
        obj = self.objects[path]
        if ours:
            obj["spec"]["selector"] = {"changed": "by someone"}
        else:
            obj["metadata"].setdefault("annotations", {})["theirs"] = "x"
        obj["metadata"]["resourceVersion"] = str(next(self._versions))

    async def _request(self, method: str, path: str, *, what: str,
                       query: list[tuple[str, str]] | None = None, body: Any = None,
                       content_type: str | None = None) -> Any:
        kind = "APPLY" if content_type == "application/apply-patch+yaml" else method
        self.requests.append((kind, path))
        if self.fail_next:
            self.fail_next = False
            raise KubeError(f"{what}: boom", status=500)
        if method == "GET":
            if path not in self.objects:
                raise NotFoundError(what, status=404)
            return copy.deepcopy(self.objects[path])
        if method == "PATCH" and content_type == "application/apply-patch+yaml":
            obj = copy.deepcopy(dict(body))
            old = self.objects.get(path)
            same = old is not None and {k: v for k, v in old.items() if k != "metadata"} == \
                {k: v for k, v in obj.items() if k != "metadata"}
            version = old["metadata"]["resourceVersion"] if same and old else \
                str(next(self._versions))
            obj["metadata"]["resourceVersion"] = version
            obj["metadata"]["managedFields"] = [{
                "manager": dict(query or [])["fieldManager"], "operation": "Apply",
                "fieldsType": "FieldsV1", "fieldsV1": fields_v1(body)}]
            self.objects[path] = obj
            return copy.deepcopy(obj)
        if method == "DELETE":
            self.objects.pop(path, None)
            return {}
        if method == "PATCH":
            self.touch(path.removesuffix("/status"))
            return copy.deepcopy(self.objects[path.removesuffix("/status")])
        raise AssertionError(method)


def fields_v1(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The map fields of ``manifest`` as the API server records an apply's ownership."""
    return {f"f:{key}": fields_v1(value) if isinstance(value, Mapping) else {}
            for key, value in manifest.items() if key not in ("apiVersion", "kind")}


def applies(server: FakeServer) -> int:
    return sum(1 for kind, path in server.requests if kind == "APPLY" and path == PATH)


async def read_then_apply(server: FakeServer, manifest: Mapping[str, Any] = MANIFEST) -> Any:
    await server.get(resource=SERVICES, namespace="team", name="svc")
    return await server.apply(resource=SERVICES, manifest=manifest)


async def test_an_unchanged_object_read_just_now_is_not_applied_again() -> None:
    server = FakeServer()
    await read_then_apply(server)            # created
    result = await read_then_apply(server)   # read shows our apply's version: skipped
    assert applies(server) == 1 and server.skipped_applies == 1
    assert result["metadata"]["resourceVersion"] == \
        server.objects[PATH]["metadata"]["resourceVersion"]
    assert result["spec"] == MANIFEST["spec"]


async def test_a_different_manifest_is_always_applied() -> None:
    server = FakeServer()
    await read_then_apply(server)
    changed = {**MANIFEST, "spec": {"selector": {"app": "y"}}}
    await read_then_apply(server, changed)
    assert applies(server) == 2
    assert server.objects[PATH]["spec"] == changed["spec"]


async def test_a_change_by_anyone_else_makes_the_apply_go_out() -> None:
    server = FakeServer()
    await read_then_apply(server)
    server.touch(PATH)
    await read_then_apply(server)
    assert applies(server) == 2 and server.skipped_applies == 0
    assert server.objects[PATH]["spec"] == MANIFEST["spec"]


async def test_a_change_to_fields_not_ours_needs_no_apply() -> None:
    server = FakeServer()
    await read_then_apply(server)
    server.touch(PATH, ours=False)  # a new resourceVersion, our fields as we left them
    await read_then_apply(server)
    assert applies(server) == 1 and server.skipped_applies == 1


async def test_without_a_read_since_the_last_apply_the_apply_goes_out() -> None:
    server = FakeServer()
    await read_then_apply(server)
    await server.apply(resource=SERVICES, manifest=MANIFEST)
    assert applies(server) == 2


async def test_one_read_vouches_for_one_apply_only() -> None:
    server = FakeServer()
    await read_then_apply(server)
    await read_then_apply(server)                                 # skipped
    await server.apply(resource=SERVICES, manifest=MANIFEST)      # no fresh read: sent
    assert applies(server) == 2 and server.skipped_applies == 1


async def test_an_object_deleted_behind_our_back_is_recreated() -> None:
    server = FakeServer()
    await read_then_apply(server)
    server.objects.pop(PATH)
    await read_then_apply(server)
    assert PATH in server.objects and applies(server) == 2


async def test_our_own_patch_or_delete_forgets_the_last_apply() -> None:
    server = FakeServer()
    await read_then_apply(server)
    await server.merge_patch(resource=SERVICES, namespace="team", name="svc",
                             patch={"metadata": {"labels": {"a": "b"}}})
    await read_then_apply(server)
    assert applies(server) == 2
    await server.delete(resource=SERVICES, namespace="team", name="svc")
    await read_then_apply(server)
    assert applies(server) == 3 and PATH in server.objects


async def test_a_failed_apply_is_not_remembered() -> None:
    server = FakeServer()
    await read_then_apply(server)
    await server.get(resource=SERVICES, namespace="team", name="svc")
    server.fail_next = True
    changed = {**MANIFEST, "spec": {"selector": {"app": "y"}}}
    with pytest.raises(KubeError):
        await server.apply(resource=SERVICES, manifest=changed)
    await read_then_apply(server, changed)
    assert applies(server) == 3  # the failed manifest goes out again: nothing vouches for it


def test_a_stale_confirmation_does_not_count() -> None:
    versions = AppliedVersions()
    versions.applied(PATH, digest="d", obj={"metadata": {"resourceVersion": "5"}})
    versions.observed(PATH, {"metadata": {"resourceVersion": "5"}}, now=100.0)
    assert versions.unchanged(PATH, digest="d", manifest=MANIFEST, manager=FIELD_MANAGER,
                              now=100.0 + APPLY_CONFIRMATION_SECONDS + 1) is None


def test_memory_is_bounded() -> None:
    versions = AppliedVersions(limit=3)
    for i in range(10):
        versions.applied(f"/p/{i}", digest="d", obj={"metadata": {"resourceVersion": "1"}})
    assert len(versions) == 3


def test_reads_kept_to_vouch_for_an_apply_are_bounded() -> None:
    """A read that no apply follows (the manifest hash already matched) must not keep
    the whole object body for as long as the object is remembered."""
    versions = AppliedVersions(confirmations=2)
    for i in range(5):
        versions.applied(f"/p/{i}", digest="d", obj={"metadata": {"resourceVersion": "1"}})
        versions.observed(f"/p/{i}", {"metadata": {"resourceVersion": "1"}, "big": "x"},
                          now=100.0)
    assert len(versions) == 5
    def unchanged(path: str) -> object:
        return versions.unchanged(path, digest="d", manifest=MANIFEST, manager=FIELD_MANAGER,
                                  now=101.0)
    assert unchanged("/p/0") is None  # forgotten read
    assert unchanged("/p/4") is not None


async def test_a_restarted_client_skips_an_apply_the_object_already_shows() -> None:
    server = FakeServer()
    await read_then_apply(server)
    restarted = FakeServer()  # a new process: nothing remembered
    restarted.objects = server.objects
    await read_then_apply(restarted)
    assert applies(restarted) == 0 and restarted.skipped_applies == 1
    # ...and then remembers it, so the next pass skips on the resourceVersion alone.
    await read_then_apply(restarted)
    assert applies(restarted) == 0 and restarted.skipped_applies == 2


async def test_a_restarted_client_applies_what_others_changed_or_we_dropped() -> None:
    server = FakeServer()
    await read_then_apply(server)
    server.objects[PATH]["spec"]["selector"] = {"app": "edited"}
    restarted = FakeServer()
    restarted.objects = server.objects
    await read_then_apply(restarted)
    assert applies(restarted) == 1
    assert restarted.objects[PATH]["spec"] == MANIFEST["spec"]
    # A manifest that no longer sets a field we applied: the apply removes it.
    smaller = {**MANIFEST, "spec": {}}
    again = FakeServer()
    again.objects = restarted.objects
    await read_then_apply(again, smaller)
    assert applies(again) == 1
