"""httpGet and tcpSocket probes against real local servers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.harness.podrunner.probing import ProbeSetupError, resolve_port, run_probe

HOST = "127.77.9.2"


@pytest.fixture
async def server() -> AsyncIterator[int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = (await reader.readline()).decode()
        while (await reader.readline()).strip():
            pass
        status = "200 OK" if " /healthy " in request else "503 Unavailable"
        writer.write(f"HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n".encode())
        await writer.drain()
        writer.close()

    srv = await asyncio.start_server(handle, HOST, 0)
    yield srv.sockets[0].getsockname()[1]
    srv.close()
    await srv.wait_closed()


async def no_exec(command: list[str], limit_s: float) -> int | None:
    raise AssertionError("not an exec probe")


async def probe(handler: dict[str, Any], container: dict[str, Any] | None = None) -> bool:
    return await run_probe(handler, container=container or {}, pod_ip=HOST, limit_s=1,
                           run_exec=no_exec)


async def test_http_get_status_decides(server: int) -> None:
    assert await probe({"httpGet": {"path": "/healthy", "port": server}})
    assert not await probe({"httpGet": {"path": "/sick", "port": server}})
    named = {"ports": [{"name": "http", "containerPort": server}]}
    assert await probe({"httpGet": {"path": "/healthy", "port": "http"}}, named)


async def test_tcp_socket(server: int) -> None:
    assert await probe({"tcpSocket": {"port": server}})
    # Same port on another loopback address: nobody listens there.
    assert not await run_probe({"tcpSocket": {"port": server}}, container={},
                               pod_ip="127.77.9.3", limit_s=1, run_exec=no_exec)


async def test_exec_probe_uses_exit_code() -> None:
    async def fake_exec(command: list[str], limit_s: float) -> int | None:
        return 0 if command == ["ok"] else 1

    assert await run_probe({"exec": {"command": ["ok"]}}, container={}, pod_ip=HOST, limit_s=1,
                           run_exec=fake_exec)
    assert not await run_probe({"exec": {"command": ["bad"]}}, container={}, pod_ip=HOST,
                               limit_s=1, run_exec=fake_exec)


def test_unknown_named_port() -> None:
    with pytest.raises(ProbeSetupError):
        resolve_port("metrics", {"ports": [{"name": "http", "containerPort": 80}]})
