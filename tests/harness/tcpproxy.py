"""A loopback TCP proxy that can cut its connections, for network-fault tests.

Point a client at :attr:`TcpProxy.port` instead of the server (for the operator: a
kubeconfig whose ``server`` is the proxy; TLS passes through untouched, so the API
server's certificate for 127.0.0.1 still verifies). Then:

* ``cut("reset")``: every open connection is reset (RST to both ends, as when a
  load balancer or the server restarts) and new connections are reset at once, so
  clients see errors immediately;
* ``cut("blackhole")``: every open connection goes silent: nothing more is forwarded
  and nothing is closed, as when a NAT entry or a firewall state is lost; new
  connections are accepted and then hang (a TLS handshake never completes). Clients
  notice only through their own timeouts;
* ``restore()``: new connections are forwarded again. Connections that went silent
  stay silent (they are dead for good, as after a real state loss) until ``stop()``.

With ``tunnel_for="host:port"`` it is an HTTP proxy instead (a kubeconfig's
``proxy-url``): each connection must open with ``CONNECT host:port``, which is tunnelled
to the target; any other request is refused with 403. ``stats.tunnels`` counts them.

Runs an asyncio loop in a daemon thread; the public methods are called from the test's
thread and return once the proxy is in the new state.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import Coroutine
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, TypeVar

CutMode = Literal["reset", "blackhole"]
_T = TypeVar("_T")
_Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@dataclass
class ProxyStats:
    """Counters since start (read from the test thread; written by the proxy's loop)."""

    accepted: int = 0
    """Connections forwarded to the target."""
    reset: int = 0
    """Connections reset by ``cut("reset")`` or while it lasted."""
    frozen: int = 0
    """Connections silenced by ``cut("blackhole")`` or accepted while it lasted."""
    tunnels: int = 0
    """``CONNECT`` requests tunnelled (``tunnel_for``)."""
    refused: int = 0
    """Requests refused because they were not ``CONNECT <tunnel_for>``."""


@dataclass(eq=False)  # hashed by identity: links live in a set
class _Link:
    client: _Stream
    upstream: _Stream
    pumps: tuple[asyncio.Task[None], ...] = ()


class TcpProxy:
    """Forwards ``127.0.0.1:<port>`` to ``target_host:target_port``; see the module doc."""

    def __init__(self, *, target_host: str, target_port: int,
                 listen_host: str = "127.0.0.1", tunnel_for: str | None = None) -> None:
        self.target = (target_host, target_port)
        self.listen_host = listen_host
        self.tunnel_for = tunnel_for
        self.stats = ProxyStats()
        self._mode: CutMode | None = None
        self._links: set[_Link] = set()
        self._frozen: list[asyncio.StreamWriter] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tcpproxy",
                                        daemon=True)
        self._server: asyncio.Server | None = None
        self.port = 0

    # --- public surface (test thread) --------------------------------------------------

    def start(self) -> None:
        self._thread.start()
        self._server = self._call(asyncio.start_server(self._accept, self.listen_host, 0))
        self.port = int(self._server.sockets[0].getsockname()[1])

    def stop(self) -> None:
        """Close the listener and every connection (frozen ones too); idempotent."""
        if not self._thread.is_alive():
            return
        self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def cut(self, mode: CutMode) -> None:
        """Cut every open connection and treat new ones the same way until restore()."""
        self._call(self._cut(mode))

    def restore(self) -> None:
        """Forward new connections again (silenced ones stay silent)."""
        self._call(self._set_mode(None))

    @property
    def live_links(self) -> int:
        """Connections being forwarded now."""
        return len(self._links)

    def __enter__(self) -> TcpProxy:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # --- the loop's side ------------------------------------------------------------------

    def _call(self, coro: Coroutine[Any, Any, _T]) -> _T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=30)

    async def _set_mode(self, mode: CutMode | None) -> None:
        self._mode = mode

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._mode == "reset":
            self.stats.reset += 1
            _reset(writer)
            return
        if self._mode == "blackhole":
            self.stats.frozen += 1
            self._frozen.append(writer)  # kept open, never read: the handshake hangs
            return
        if self.tunnel_for is not None and not await self._tunnel(reader, writer):
            return
        try:
            upstream = await asyncio.open_connection(*self.target)
        except OSError:
            _reset(writer)
            return
        if self._mode is not None:  # cut while we were connecting
            _reset(upstream[1])
            await self._accept(reader, writer)
            return
        link = _Link(client=(reader, writer), upstream=upstream)
        link.pumps = (asyncio.create_task(self._pump(link, reader, upstream[1])),
                      asyncio.create_task(self._pump(link, upstream[0], writer)))
        self._links.add(link)
        self.stats.accepted += 1

    async def _tunnel(self, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> bool:
        """Read the client's request head; True (200 sent) for ``CONNECT <tunnel_for>``."""
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            writer.close()
            return False
        if head.split("\r\n", 1)[0].split(" ")[:2] != ["CONNECT", self.tunnel_for]:
            self.stats.refused += 1
            writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
            writer.close()
            return False
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()
        self.stats.tunnels += 1
        return True

    async def _pump(self, link: _Link, source: asyncio.StreamReader,
                    sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        except (ConnectionError, OSError):
            pass
        # One side ended (or failed): end the other one too, as a plain close.
        if link in self._links:
            self._links.discard(link)
            for pump in link.pumps:
                if pump is not asyncio.current_task():
                    pump.cancel()
            for _, writer in (link.client, link.upstream):
                writer.close()

    async def _cut(self, mode: CutMode) -> None:
        self._mode = mode
        links, self._links = self._links, set()
        for link in links:
            for pump in link.pumps:
                pump.cancel()
            for _, writer in (link.client, link.upstream):
                if mode == "reset":
                    _reset(writer)
                else:
                    self._frozen.append(writer)
            if mode == "reset":
                self.stats.reset += 1
            else:
                self.stats.frozen += 1

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        await self._cut("reset")
        for writer in self._frozen:
            _reset(writer)
        self._frozen.clear()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST (linger 0), not FIN: the peer gets ECONNRESET at once."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
