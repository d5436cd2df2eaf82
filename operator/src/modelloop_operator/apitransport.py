"""HTTP to the API server: one aiohttp session, TLS and credentials from a
:class:`~modelloop_operator.kubeconfig.Connection`, nothing else.

kubernetes_asyncio's own request path was the operator's largest CPU cost at scale
(bench/operator_scale.py, profiled with py-spy at 300 TrainingJobs + 150
ModelDeployments): its session is built with ``trust_env=True``, so aiohttp re-reads
``~/.netrc`` and the proxy variables in a worker thread for every request (about a third
of the operator's samples), and every body goes through its generic model
(de)serialisation although the operator only ever speaks plain JSON dicts. The
credentials come from :mod:`modelloop_operator.kubeconfig`.

Proxies are honoured as kubectl does: the kubeconfig's ``proxy-url`` first, else
``HTTPS_PROXY``/``HTTP_PROXY`` unless ``NO_PROXY`` covers the server, decided once.
:func:`api_session` builds the one session both the operator's client and kopf use, so
their requests take the same route (proxy, TLS server name, CA) to the same server.
"""

from __future__ import annotations

import ipaddress
import os
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit

import aiohttp

from .kubeconfig import Connection

READ_BUFFER_BYTES = 2**21
"""Large objects (etcd allows 1.5 MiB) must fit aiohttp's read buffer."""


@dataclass(frozen=True)
class Response:
    """What the API server answered: status, reason phrase and the raw body."""

    status: int
    reason: str
    body: bytes


DEFAULT_CONNECTIONS = 100
"""HTTP connections kept when the caller names no limit (aiohttp's default)."""


def ssl_context(connection: Connection) -> ssl.SSLContext:
    """The TLS settings of ``connection``: its CA, client certificate, verification."""
    context = ssl.create_default_context(cafile=connection.ca_file or None)
    if connection.client_certificate_file:
        context.load_cert_chain(connection.client_certificate_file,
                                keyfile=connection.client_key_file)
    if connection.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def proxy_for(server: str, *, configured: str | None,
              environ: Mapping[str, str] | None = None) -> str | None:
    """The proxy to reach ``server`` through, or None: the configured one (kubeconfig
    ``proxy-url``) wins; else the environment's, unless ``NO_PROXY`` covers the host."""
    if configured:
        return configured
    parts = urlsplit(server)
    env = os.environ if environ is None else environ
    # {"https": ..., "no": ...}; a lowercase variable wins over its uppercase twin, as in
    # urllib and curl.
    proxies: dict[str, str] = {}
    for lowercase in (False, True):
        for key, value in env.items():
            if value and key.lower().endswith("_proxy") and key.islower() == lowercase:
                proxies[key.lower().removesuffix("_proxy")] = value
    if parts.hostname and no_proxy_covers(proxies.get("no", ""), host=parts.hostname,
                                          port=parts.port):
        return None
    return proxies.get(parts.scheme or "https")


def no_proxy_covers(no_proxy: str, *, host: str, port: int | None) -> bool:
    """Whether ``NO_PROXY`` exempts ``host``, with Go's rules (what kubectl follows):
    ``*``; a domain and its subdomains (a leading dot is optional); an IP address or
    CIDR range; each optionally with ``:port``."""
    host = host.lower().strip("[]")
    try:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address | None = \
            ipaddress.ip_address(host)
    except ValueError:
        address = None
    for entry in (e.strip().lower() for e in no_proxy.split(",")):
        if not entry:
            continue
        if entry == "*":
            return True
        if "/" in entry:
            try:
                if address is not None and address in ipaddress.ip_network(entry,
                                                                           strict=False):
                    return True
            except ValueError:
                pass
            continue
        name, _, entry_port = entry.rpartition(":") if entry.count(":") == 1 \
            else (entry, "", "")
        if entry_port and port is not None and entry_port != str(port):
            continue
        name = name.strip("[]").lstrip(".")
        if host == name or (address is None and host.endswith("." + name)):
            return True
    return False


def api_session(connection: Connection, *, connections: int | None = None,
                authorize: bool = False) -> aiohttp.ClientSession:
    """A session to ``connection``'s API server: its CA and client certificate, its
    proxy (:func:`proxy_for`) and its ``tls-server-name``, for every request made
    through it. ``authorize``: each request also gets the connection's current
    Authorization header (kopf's session, whose requests we do not make ourselves)."""
    base = connection.server.rstrip("/")
    connector = aiohttp.TCPConnector(
        limit=connections or DEFAULT_CONNECTIONS,
        ssl=ssl_context(connection) if base.startswith("https") else False)
    server_name = connection.tls_server_name
    authorization = connection.authorization

    async def route(request: aiohttp.ClientRequest,
                    send: aiohttp.ClientHandlerType) -> aiohttp.ClientResponse:
        if server_name:
            request.server_hostname = server_name
        if authorize and "Authorization" not in request.headers:
            header = await authorization.header()
            if header:
                request.headers["Authorization"] = header
        return await send(request)

    return aiohttp.ClientSession(connector=connector, trust_env=False,
                                 proxy=proxy_for(base, configured=connection.proxy_url),
                                 read_bufsize=READ_BUFFER_BYTES, middlewares=(route,))


class ApiTransport:
    """Requests to one API server with one connection pool."""

    def __init__(self, *, connection: Connection, request_timeout: float,
                 connections: int | None = None) -> None:
        self._authorization = connection.authorization
        self._timeout = aiohttp.ClientTimeout(total=request_timeout)
        self._base = connection.server.rstrip("/")
        self._session = api_session(connection, connections=connections)

    async def close(self) -> None:
        """Release the connection pool."""
        await self._session.close()

    async def open(self, method: str, path: str, *, query: Sequence[tuple[str, str]] = (),
                   headers: Mapping[str, str] | None = None, body: bytes | None = None,
                   limit: aiohttp.ClientTimeout | None = None) -> aiohttp.ClientResponse:
        """Send one request and return the response with its body unread: the caller
        reads or streams it (a watch) and releases it (``async with``). HTTP errors are
        answers; only a failure to talk to the server raises (``aiohttp.ClientError``,
        ``TimeoutError``, ``CredentialsError``). A 401 makes the credentials fresh (a
        rotated token file, a plugin's revoked token) and the request is sent once more.
        ``limit`` replaces the transport's request timeout for this request."""
        url = self._base + path + (f"?{urlencode(query)}" if query else "")
        for attempt in (1, 2):
            all_headers = dict(headers or {})
            # Asked every time: a token file is re-read, a plugin's token renewed.
            authorization = await self._authorization.header()
            if authorization:
                all_headers["Authorization"] = authorization
            response = await self._session.request(
                method, url, headers=all_headers, data=body,
                timeout=self._timeout if limit is None else limit)
            if response.status != 401 or attempt == 2 or not authorization:
                return response
            response.release()
            self._authorization.invalidate()
        raise AssertionError("unreachable")

    async def request(self, method: str, path: str, *, query: Sequence[tuple[str, str]] = (),
                      headers: Mapping[str, str] | None = None,
                      body: bytes | None = None) -> Response:
        """:meth:`open`, the body read whole."""
        async with await self.open(method, path, query=query, headers=headers,
                                   body=body) as response:
            return Response(status=response.status, reason=str(response.reason or ""),
                            body=await response.read())
