"""Pod addresses: distinct, loopback, least recently released first, busy ones skipped."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from tests.harness.podrunner.ipam import (
    LoopbackPool,
    PoolExhaustedError,
    random_pod_cidr,
    random_routed_cidr,
)


def test_allocation_skips_dot_one_and_reuses_last() -> None:
    pool = LoopbackPool("127.77.3.0/29")  # hosts .1-.6, .1 excluded
    first = [pool.allocate() for _ in range(5)]
    assert first == [f"127.77.3.{i}" for i in range(2, 7)]
    with pytest.raises(PoolExhaustedError):
        pool.allocate()
    pool.release("127.77.3.2")
    pool.release("127.77.3.4")
    assert pool.allocate() == "127.77.3.2"
    assert pool.allocate() == "127.77.3.4"


def test_released_addresses_go_to_the_back_of_the_queue() -> None:
    pool = LoopbackPool("127.77.4.0/28")
    ip = pool.allocate()
    pool.release(ip)
    assert pool.allocate() != ip


def test_address_with_a_listener_is_skipped() -> None:
    with socket.socket() as sock:
        sock.bind(("127.77.5.2", 0))
        sock.listen()
        pool = LoopbackPool("127.77.5.0/29")
        assert pool.allocate() == "127.77.5.3"


def test_only_ipv4_loopback_networks_unless_routed() -> None:
    with pytest.raises(ValueError, match="loopback"):
        LoopbackPool("10.0.0.0/24")
    assert LoopbackPool(random_pod_cidr()).allocate().startswith("127.")
    routed = random_routed_cidr()
    assert ipaddress.IPv4Network(routed).subnet_of(ipaddress.IPv4Network("198.18.0.0/15"))
    assert LoopbackPool(routed, routed=True).allocate().startswith("198.1")
