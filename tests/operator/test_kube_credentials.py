"""kopf's session is built as the operator's own client (``kube.shared_session``): the
same credentials and the same route (proxy) to the same server, checked against a real
local HTTP server. The TLS server name is checked against the real API server in
tests/cluster/test_operator_routes.py."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
import yaml
from modelloop_operator.kube import shared_session

from .local_api import Recorder


def write_kubeconfig(path: Path, *, server: str, user: dict[str, str],
                     **cluster: str) -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "k", "cluster": {"server": server, **cluster}}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
    }))
    return path


async def get_through_kopfs_session(url: str) -> None:
    server, session = await shared_session(connections=2)
    try:
        async with session.get(server + url) as response:
            assert response.status == 200
    finally:
        await session.close()


@pytest.mark.parametrize(("user", "authorization"), [
    ({"token": "s3cr3t"}, "Bearer s3cr3t"),
    ({"username": "me", "password": "pw"}, "Basic " + base64.b64encode(b"me:pw").decode()),
])
async def test_every_request_carries_the_kubeconfigs_credentials(
        local_api: tuple[Recorder, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        user: dict[str, str], authorization: str) -> None:
    recorder, url = local_api
    monkeypatch.setenv("KUBECONFIG", str(write_kubeconfig(tmp_path / "c", server=url, user=user)))
    await get_through_kopfs_session("/api/v1/namespaces")
    await get_through_kopfs_session("/api/v1/pods")
    assert [r["headers"].get("Authorization") for r in recorder.seen] == [authorization] * 2


async def test_the_kubeconfigs_proxy_carries_kopfs_requests(
        local_api: tuple[Recorder, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    recorder, proxy = local_api
    # The server's name does not resolve: only the proxy can reach it.
    path = write_kubeconfig(tmp_path / "c", server="http://api.cluster.invalid:6443",
                            user={"token": "t"}, **{"proxy-url": proxy})
    monkeypatch.setenv("KUBECONFIG", str(path))
    await get_through_kopfs_session("/apis/modelloop.dev/v1alpha1/trainingjobs?watch=true")
    [request] = recorder.seen
    assert request["target"] == ("http://api.cluster.invalid:6443"
                                 "/apis/modelloop.dev/v1alpha1/trainingjobs?watch=true")
    assert request["headers"]["Host"] == "api.cluster.invalid:6443"
