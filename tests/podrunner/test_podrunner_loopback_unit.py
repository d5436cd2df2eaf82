"""A pod's 127.0.0.1 and localhost become its private loopback alias."""

from __future__ import annotations

import pytest

from tests.harness.podrunner.loopback import rewrite_loopback


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("management_address=http://127.0.0.1:8081", "management_address=http://127.9.0.3:8081"),
        ("--host=localhost", "--host=127.9.0.3"),
        ("127.0.0.1,localhost", "127.9.0.3,127.9.0.3"),
        ("127.0.0.10", "127.0.0.10"),
        ("x127.0.0.1", "x127.0.0.1"),
        ("localhost.localdomain", "localhost.localdomain"),
        ("mylocalhost", "mylocalhost"),
        ("127.0.0.1.nip.io", "127.0.0.1.nip.io"),
    ],
)
def test_rewrite_loopback(text: str, expected: str) -> None:
    assert rewrite_loopback(text, "127.9.0.3") == expected


def test_host_network_pods_keep_the_hosts_loopback() -> None:
    assert rewrite_loopback("http://127.0.0.1:80", "127.0.0.1") == "http://127.0.0.1:80"
