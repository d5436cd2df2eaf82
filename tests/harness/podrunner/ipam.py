"""Host-local addresses for pods: every pod gets its own, e.g. 127.x.y.z.

All of 127.0.0.0/8 is routed to `lo` on Linux, so any address in it can be bound without
configuration, and distinct addresses let two pods listen on the same port. But since
Kubernetes 1.37 (strict IP validation) the API server refuses loopback addresses in
EndpointSlices, so Services of such pods have no endpoints. For that, a pod CIDR outside
127/8 can be made host-local the way 127/8 is, with one route of type `local` on `lo`
(`ip route add local 198.18.7.0/24 dev lo`, root only; traffic still never leaves the
host; the benchmarking range 198.18.0.0/15 is never used on real networks). Addresses are
handed out
least-recently-released first, so a just-deleted pod's address (still in its terminal
status, maybe still in an old EndpointSlice) is not reused at once. An address with a
listening TCP socket (another runner, another test session on the same machine) is
skipped.
"""

from __future__ import annotations

import ipaddress
import os
import random
import shutil
import socket
import struct
import subprocess
from collections import deque
from pathlib import Path


class PoolExhaustedError(RuntimeError):
    """No free address left in the pod CIDR."""


def random_pod_cidr() -> str:
    """A random 127.X.Y.0/24, so concurrent runners on one machine rarely share addresses."""
    return f"127.{random.randint(1, 254)}.{random.randint(0, 255)}.0/24"


def random_routed_cidr() -> str:
    """A random /24 of the benchmarking range 198.18.0.0/15 for a local route."""
    return f"198.{random.randint(18, 19)}.{random.randint(0, 255)}.0/24"


class LocalRouteError(RuntimeError):
    """The local route for a non-loopback pod CIDR could not be added (not root?)."""


class LocalRoute:
    """`ip route add local <cidr> dev lo` for the runner's lifetime (removed by `remove`)."""

    def __init__(self, cidr: str) -> None:
        self.cidr = str(ipaddress.ip_network(cidr))
        self._added = False

    def add(self) -> None:
        result = subprocess.run(["ip", "route", "add", "local", self.cidr, "dev", "lo"],
                                capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise LocalRouteError(
                f"cannot make {self.cidr} host-local (ip route add local {self.cidr} dev lo): "
                f"{result.stderr.strip() or result.returncode}")
        self._added = True

    def remove(self) -> None:
        if self._added:
            subprocess.run(["ip", "route", "del", "local", self.cidr, "dev", "lo"],
                           capture_output=True, check=False)
            self._added = False


def local_routes_available() -> bool:
    """Whether this process may add routes (root with the `ip` tool)."""
    return os.geteuid() == 0 and shutil.which("ip") is not None


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
    """Allocates host addresses of a CIDR (network, broadcast and .1 excluded).

    The CIDR must be IPv4 loopback unless `routed` says a LocalRoute makes it host-local.
    """

    def __init__(self, cidr: str, *, routed: bool = False,
                 in_use: set[str] | None = None) -> None:
        network = ipaddress.ip_network(cidr)
        if network.version != 4 or not (network.is_loopback or routed):
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
