"""Running one probe: httpGet, tcpSocket and exec, as the kubelet does them.

httpGet is a bare HTTP/1.1 GET (no proxies, TLS unverified like the kubelet's prober),
success for status 200-399. tcpSocket succeeds when a connection opens. exec succeeds on
exit code 0 and runs under the container's env, cwd and path map, its output going to
`<container>.probe.log`. gRPC probes are not implemented: they count as passing and the
runner logs a warning once per container (documented in README-podrunner.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

Json = dict[str, Any]


class ProbeSetupError(Exception):
    """The probe cannot be run at all (unknown named port)."""


def resolve_port(port: int | str, container: Json) -> int:
    if isinstance(port, int) or str(port).isdigit():
        return int(port)
    for declared in container.get("ports") or []:
        if declared.get("name") == port:
            return int(declared["containerPort"])
    raise ProbeSetupError(f"named port {port!r} is not declared by the container")


async def http_get(host: str, port: int, handler: Json, limit_s: float) -> bool:
    scheme = str(handler.get("scheme", "HTTP")).upper()
    path = handler.get("path") or "/"
    if not path.startswith("/"):
        path = "/" + path
    headers = {"Host": f"{host}:{port}", "User-Agent": "kube-probe/local", "Accept": "*/*"}
    for header in handler.get("httpHeaders") or []:
        headers[header["name"]] = header["value"]
    context: ssl.SSLContext | None = None
    if scheme == "HTTPS":
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE

    async def attempt() -> bool:
        reader, writer = await asyncio.open_connection(host, port, ssl=context)
        try:
            lines = [f"GET {path} HTTP/1.1", *(f"{k}: {v}" for k, v in headers.items()),
                     "Connection: close", "", ""]
            writer.write("\r\n".join(lines).encode())
            await writer.drain()
            status_line = await reader.readline()
            parts = status_line.decode("latin-1").split()
            return len(parts) >= 2 and parts[1].isdigit() and 200 <= int(parts[1]) < 400
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    try:
        return await asyncio.wait_for(attempt(), limit_s)
    except (OSError, TimeoutError, ssl.SSLError, UnicodeError):
        return False


async def tcp_socket(host: str, port: int, limit_s: float) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), limit_s)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(Exception):
        await writer.wait_closed()
    return True


async def run_probe(
    handler: Json,
    *,
    container: Json,
    pod_ip: str,
    limit_s: float,
    run_exec: Callable[[list[str], float], Awaitable[int | None]],
) -> bool:
    """One attempt; `run_exec` runs a command in the container's context (None = timeout)."""
    if "httpGet" in handler:
        spec = handler["httpGet"]
        host = spec.get("host") or pod_ip
        return await http_get(host, resolve_port(spec["port"], container), spec, limit_s)
    if "tcpSocket" in handler:
        spec = handler["tcpSocket"]
        host = spec.get("host") or pod_ip
        return await tcp_socket(host, resolve_port(spec["port"], container), limit_s)
    if "exec" in handler:
        code = await run_exec(list(handler["exec"].get("command") or []), limit_s)
        return code == 0
    return True  # grpc: not implemented, see the module docstring
