"""Pod DNS names in commands are replaced by pod IPs (there is no cluster DNS locally)."""

from __future__ import annotations

import pytest

from tests.harness.podrunner.names import NameRegistry, rewrite_pod_names


@pytest.fixture
def names() -> NameRegistry:
    registry = NameRegistry()
    registry.register("ns", "svc", "job-0", "127.1.2.3")
    return registry


@pytest.mark.parametrize(
    ("text", "expected", "unresolved"),
    [
        ("--master_addr=job-0.svc.ns.svc", "--master_addr=127.1.2.3", []),
        ("job-0.svc.ns.svc.cluster.local:29500", "127.1.2.3:29500", []),
        ("http://job-0.svc.ns.svc./x", "http://127.1.2.3/x", []),
        ("job-1.svc.ns.svc", "job-1.svc.ns.svc", ["job-1.svc.ns.svc"]),
        ("job-0.svc.other.svc", "job-0.svc.other.svc", ["job-0.svc.other.svc"]),
        ("python -m torch.distributed.run", "python -m torch.distributed.run", []),
        ("web.ns.svc", "web.ns.svc", []),  # a Service name, not a pod name
        ("a.job-0.svc.ns.svc", "a.job-0.svc.ns.svc", []),
    ],
)
def test_rewrite(names: NameRegistry, text: str, expected: str, unresolved: list[str]) -> None:
    assert rewrite_pod_names(text, names.lookup) == (expected, unresolved)


def test_unregister_only_the_same_ip(names: NameRegistry) -> None:
    names.unregister("ns", "svc", "job-0", "127.9.9.9")
    assert names.lookup("ns", "svc", "job-0") == "127.1.2.3"
    names.unregister("ns", "svc", "job-0", "127.1.2.3")
    assert names.lookup("ns", "svc", "job-0") is None
    names.register("ns", "", "job-0", "127.1.2.4")  # no subdomain: no DNS name
    assert names.lookup("ns", "", "job-0") is None
