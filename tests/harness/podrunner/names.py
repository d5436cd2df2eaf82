"""Pod DNS names -> pod IPs, in place of cluster DNS.

There is no DNS server for the cluster, and a local process resolves names through the
host's resolver (torch's TCPStore does it in C++, so no Python hook could help). The
runner therefore rewrites, in command, args and env values, every name of the form
`<hostname>.<subdomain>.<namespace>.svc[.cluster.local]` (the stable name a pod with
`hostname` and `subdomain` gets from a headless Service, e.g. torchrun's `--master_addr`
for rank 0 of an Indexed Job) to the IP of that pod, when the pod runs on this runner's
node. A container whose names do not resolve yet (rank 0 not admitted yet) waits a while,
as it would for DNS; after that it starts with the name unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Callable

_LABEL = r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?"
POD_NAME = re.compile(
    rf"(?<![-a-z0-9.])({_LABEL})\.({_LABEL})\.({_LABEL})\.svc(?:\.cluster\.local)?\.?(?![-a-z0-9])"
)

Lookup = Callable[[str, str, str], str | None]  # (namespace, subdomain, hostname) -> IP


class NameRegistry:
    """IPs of the pods on this node, by (namespace, subdomain, hostname)."""

    def __init__(self) -> None:
        self._ips: dict[tuple[str, str, str], str] = {}

    def register(self, namespace: str, subdomain: str, hostname: str, ip: str) -> None:
        if subdomain and hostname and ip:
            self._ips[(namespace, subdomain, hostname)] = ip

    def unregister(self, namespace: str, subdomain: str, hostname: str, ip: str) -> None:
        if self._ips.get((namespace, subdomain, hostname)) == ip:
            del self._ips[(namespace, subdomain, hostname)]

    def lookup(self, namespace: str, subdomain: str, hostname: str) -> str | None:
        return self._ips.get((namespace, subdomain, hostname))


def rewrite_pod_names(text: str, lookup: Lookup) -> tuple[str, list[str]]:
    """`text` with resolvable pod names replaced by IPs, and the names left unresolved."""
    unresolved: list[str] = []

    def replace(match: re.Match[str]) -> str:
        hostname, subdomain, namespace = match.group(1), match.group(2), match.group(3)
        ip = lookup(namespace, subdomain, hostname)
        if ip is None:
            unresolved.append(match.group(0))
            return match.group(0)
        return ip

    return POD_NAME.sub(replace, text), unresolved
