"""Loopback addresses for pods: every pod gets its own 127.x.y.z.

All of 127.0.0.0/8 is routed to `lo` on Linux, so any address in it can be bound without
configuration; distinct addresses let two pods listen on the same port and let
EndpointSlices point at real, distinct endpoints. Addresses are handed out
least-recently-released first, so a just-deleted pod's address (still in its terminal
status, maybe still in an old EndpointSlice) is not reused at once. An address with a
listening TCP socket (another runner, another test session on the same machine) is
skipped.
"""

from __future__ import annotations

import ipaddress
import random
import socket
import struct
from collections import deque
from pathlib import Path


class PoolExhaustedError(RuntimeError):
    """No free address left in the pod CIDR."""


def random_pod_cidr() -> str:
    """A random 127.X.Y.0/24, so concurrent runners on one machine rarely share addresses."""
    return f"127.{random.randint(1, 254)}.{random.randint(0, 255)}.0/24"


def listening_ipv4_addresses(proc_net_tcp: Path = Path("/proc/net/tcp")) -> set[str]:
    """Local addresses with a socket in LISTEN state (0A), read from /proc/net/tcp."""
    try:
        lines = proc_net_tcp.read_text().splitlines()[1:]
    except OSError:
        return set()
    found: set[str] = set()
    for line in lines:
        fields = line.split()
        if len(fields) > 3 and fields[3] == "0A":
            hex_ip = fields[1].split(":")[0]
            found.add(socket.inet_ntoa(struct.pack("<I", int(hex_ip, 16))))
    return found


class LoopbackPool:
    """Allocates host addresses of a loopback CIDR (network, broadcast and .1 excluded)."""

    def __init__(self, cidr: str, *, in_use: set[str] | None = None) -> None:
        network = ipaddress.ip_network(cidr)
        if not network.is_loopback or network.version != 4:
            raise ValueError(f"pod CIDR must be an IPv4 loopback network: {cidr}")
        # x.y.z.1 is left out: 127.0.0.1 is everybody's default bind address.
        self._free: deque[str] = deque(
            str(ip) for ip in network.hosts() if not str(ip).endswith(".1")
        )
        self._taken: set[str] = set()
        for ip in in_use or ():
            self.reserve(ip)

    def reserve(self, ip: str) -> None:
        """Marks an address as taken (a pod that already had it before a restart)."""
        if ip in self._free:
            self._free.remove(ip)
        self._taken.add(ip)

    def allocate(self) -> str:
        busy = listening_ipv4_addresses()
        for _ in range(len(self._free)):
            ip = self._free.popleft()
            if ip in busy:
                self._free.append(ip)
                continue
            self._taken.add(ip)
            return ip
        raise PoolExhaustedError("no free pod address")

    def release(self, ip: str) -> None:
        if ip in self._taken:
            self._taken.discard(ip)
            self._free.append(ip)

    @property
    def taken(self) -> frozenset[str]:
        return frozenset(self._taken)
