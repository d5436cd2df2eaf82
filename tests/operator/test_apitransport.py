"""The operator's HTTP transport to the API server, against a real local HTTP server:
headers, bodies, errors as answers, and the proxy rules (decided once, never per request)."""

from __future__ import annotations

import json

import pytest
from modelloop_operator.apitransport import ApiTransport, no_proxy_covers, proxy_for
from modelloop_operator.errors import ConflictError, KubeError, NotFoundError
from modelloop_operator.kube import APPLY_PATCH, JOBS, KubeClient
from modelloop_operator.kubeconfig import Connection, NoAuthorization, StaticToken

from .local_api import Recorder


def configuration(host: str, *, token: str | None = "s3cr3t") -> Connection:
    return Connection(server=host, authorization=StaticToken(token) if token
                      else NoAuthorization())


async def test_requests_carry_the_token_query_and_body(
        local_api: tuple[Recorder, str], monkeypatch: pytest.MonkeyPatch) -> None:
    recorder, host = local_api
    # A proxy in the environment, bypassed for the server: requests still arrive directly.
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    kube = KubeClient(transport=ApiTransport(connection=configuration(host), request_timeout=10))
    try:
        job = {"apiVersion": "batch/v1", "kind": "Job",
               "metadata": {"name": "j", "namespace": "ns"}, "spec": {"note": "\U0001f600"}}
        assert await kube.apply(resource=JOBS, manifest=job) == {"kind": "Job"}
        await kube.merge_patch(resource=JOBS, namespace="ns", name="j",
                               patch={"status": {"phase": "x"}}, subresource="status")
    finally:
        await kube.close()
    apply, patch = recorder.seen
    assert apply["method"] == "PATCH" and apply["path"] == "/apis/batch/v1/namespaces/ns/jobs/j"
    assert apply["query"] == {"fieldManager": "modelloop-operator", "force": "true"}
    assert apply["headers"]["Authorization"] == "Bearer s3cr3t"
    assert apply["headers"]["Content-Type"].startswith(APPLY_PATCH)
    assert json.loads(apply["body"]) == job
    assert patch["path"].endswith("/jobs/j/status")
    assert patch["headers"]["Content-Type"] == "application/merge-patch+json"
    assert json.loads(patch["body"]) == {"status": {"phase": "x"}}


async def test_errors_are_typed_with_the_servers_message(local_api: tuple[Recorder, str]) -> None:
    recorder, host = local_api
    recorder.answers = [
        (404, b'{"kind": "Status", "message": "jobs \\"j\\" not found", "reason": "NotFound"}'),
        (409, b'{"message": "the object has been modified", "reason": "Conflict"}'),
        (503, b"<html>busy</html>"),
        (200, b"not json"),
    ]
    kube = KubeClient(transport=ApiTransport(connection=configuration(host, token=None),
                                             request_timeout=10))
    try:
        assert await kube.get(resource=JOBS, namespace="ns", name="j") is None
        with pytest.raises(ConflictError, match="the object has been modified"):
            await kube.merge_patch(resource=JOBS, namespace="ns", name="j", patch={})
        with pytest.raises(KubeError) as busy:
            await kube.list(resource=JOBS, namespace="ns", labels={"a": "b"})
        assert busy.value.status == 503 and busy.value.retryable
        with pytest.raises(KubeError, match="unreadable answer"):
            await kube.get(resource=JOBS, namespace="ns", name="j")
    finally:
        await kube.close()
    assert "Authorization" not in recorder.seen[0]["headers"]
    assert recorder.seen[2]["query"] == {"labelSelector": "a=b"}


async def test_an_unreachable_server_is_a_retryable_error() -> None:
    kube = KubeClient(transport=ApiTransport(connection=configuration("http://127.0.0.1:9"),
                                             request_timeout=10))
    try:
        with pytest.raises(KubeError, match="API server unreachable") as exc:
            await kube.get(resource=JOBS, namespace="ns", name="j")
    finally:
        await kube.close()
    assert not isinstance(exc.value, NotFoundError) and exc.value.retryable


@pytest.mark.parametrize(("environ", "expected"), [
    ({}, None),
    ({"HTTPS_PROXY": "http://proxy:3128"}, "http://proxy:3128"),
    ({"HTTPS_PROXY": "http://upper:1", "https_proxy": "http://lower:2"}, "http://lower:2"),
    ({"HTTPS_PROXY": "http://proxy:3128", "NO_PROXY": "example.com"}, None),
    ({"HTTPS_PROXY": "http://proxy:3128", "no_proxy": ".example.com"}, None),
    ({"HTTPS_PROXY": "http://proxy:3128", "NO_PROXY": "other.org"}, "http://proxy:3128"),
    ({"HTTP_PROXY": "http://plain:80"}, None),
])
def test_proxy_from_the_environment(environ: dict[str, str], expected: str | None) -> None:
    assert proxy_for("https://api.example.com:6443", configured=None,
                     environ=environ) == expected


def test_the_kubeconfig_proxy_wins() -> None:
    assert proxy_for("https://api.example.com", configured="http://kc:1",
                     environ={"HTTPS_PROXY": "http://env:2", "NO_PROXY": "*"}) == "http://kc:1"


@pytest.mark.parametrize(("no_proxy", "host", "port", "covered"), [
    ("*", "anything", None, True),
    ("example.com", "api.example.com", 443, True),
    (".example.com", "example.com", 443, True),
    ("example.com", "badexample.com", 443, False),
    ("10.0.0.0/8", "10.1.2.3", 6443, True),
    ("10.0.0.0/8", "11.1.2.3", 6443, False),
    ("10.96.0.1", "10.96.0.1", 443, True),
    ("example.com:6443", "api.example.com", 6443, True),
    ("example.com:6443", "api.example.com", 443, False),
    ("[::1]", "::1", 443, True),
    ("fd00::/8", "fd00::1", 443, True),
    (" , bogus/99 ,", "example.com", 443, False),
])
def test_no_proxy_rules(no_proxy: str, host: str, port: int | None, covered: bool) -> None:
    assert no_proxy_covers(no_proxy, host=host, port=port) is covered


async def test_connections_are_bounded_as_configured(local_api: tuple[Recorder, str]) -> None:
    _, host = local_api
    transport = ApiTransport(connection=configuration(host), request_timeout=10,
                             connections=3)
    try:
        assert transport._session.connector is not None
        assert transport._session.connector.limit == 3
    finally:
        await transport.close()


class RotatingToken:
    """Credentials that change when told the last ones were refused."""

    def __init__(self) -> None:
        self.generation = 1

    async def header(self) -> str | None:
        return f"Bearer token-{self.generation}"

    def invalidate(self) -> None:
        self.generation += 1


async def test_a_401_renews_the_credentials_and_retries_once(
        local_api: tuple[Recorder, str]) -> None:
    recorder, host = local_api
    token = RotatingToken()
    transport = ApiTransport(connection=Connection(server=host, authorization=token),
                             request_timeout=10)
    kube = KubeClient(transport=transport)
    try:
        recorder.answers = [(401, b'{"message": "Unauthorized"}'), (200, b'{"kind": "Job"}')]
        assert await kube.get(resource=JOBS, namespace="ns", name="j") == {"kind": "Job"}
        # Renewed credentials refused as well: the 401 is the answer, no loop.
        recorder.answers = [(401, b'{"message": "Unauthorized"}')] * 3
        with pytest.raises(KubeError, match="Unauthorized") as refused:
            await kube.get(resource=JOBS, namespace="ns", name="j")
    finally:
        await kube.close()
    assert refused.value.status == 401
    assert [seen["headers"]["Authorization"] for seen in recorder.seen] == [
        "Bearer token-1", "Bearer token-2", "Bearer token-2", "Bearer token-3"]
