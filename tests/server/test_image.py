"""The server image, built by ``hack/images.sh``: ``modelloop-serve`` in its own container
as the pod runs it (non-root, read-only root filesystem, no capabilities, /tmp a tmpfs),
serving a real archive: ``/readyz`` turns 200 and a prediction comes back."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from modelloop_operator.builders.torchserve_config import (
    TorchServeSettings,
    build_torchserve_config,
)

from tests.harness.images import podman

from .conftest import LABELS, build_tiny_artifact, free_ports, package_mar
from .serving import http

LOCKED_DOWN = ("--read-only", "--tmpfs=/tmp", "--cap-drop=ALL",
               "--security-opt=no-new-privileges")


def test_it_runs_as_its_non_root_user(server_image: str) -> None:
    who = podman("run", "--rm", *LOCKED_DOWN, "--entrypoint=id", server_image).stdout.split()
    assert who[:2] == ["uid=10002(server)", "gid=10002(server)"]
    helped = podman("run", "--rm", *LOCKED_DOWN, server_image, "--help").stdout
    assert helped.startswith("usage: modelloop-serve")


@pytest.fixture
def served(server_image: str, tmp_path: Path) -> Iterator[tuple[str, int, int]]:
    """The container serving the tiny archive; (name, inference port, health port)."""
    store = tmp_path / "store"
    store.mkdir()
    mar = package_mar(build_tiny_artifact(tmp_path / "model"), store, name="tiny")
    inference, management, metrics, grpc_i, grpc_m, health, worker = free_ports(7)
    settings = TorchServeSettings(
        model_name="tiny", mar_file=mar.name, listen_address=IPv4Address("127.0.0.1"),
        inference_port=inference, management_port=management, metrics_port=metrics,
        grpc_inference_port=grpc_i, grpc_management_port=grpc_m, initial_worker_port=worker)
    config = tmp_path / "config.properties"
    config.write_text(build_torchserve_config(settings))
    for path in (store, mar, config):
        path.chmod(0o755 if path.is_dir() else 0o644)
    name = f"modelloop-server-test-{uuid.uuid4().hex[:8]}"
    podman("run", "--detach", f"--name={name}", "--network=host", *LOCKED_DOWN,
           f"--volume={store}:/mnt/models:ro",
           f"--volume={config}:/etc/modelloop/config.properties:ro",
           "--env=MODELLOOP_HEALTH_ADDRESS=127.0.0.1", f"--env=MODELLOOP_HEALTH_PORT={health}",
           server_image)
    try:
        yield name, inference, health
    finally:
        podman("rm", "--force", name, check=False)


def test_it_serves_an_archive_and_answers_readyz(served: tuple[str, int, int]) -> None:
    name, inference, health = served
    deadline = time.monotonic() + 240
    status = 0
    while time.monotonic() < deadline and status != 200:
        running = podman("inspect", "--format={{.State.Running}}", name).stdout.strip()
        assert running == "true", podman("logs", name, check=False).stdout[-4000:]
        try:
            status = http(f"http://127.0.0.1:{health}/readyz", timeout=2).status
        except OSError:
            status = 0
        time.sleep(1)
    assert status == 200, podman("logs", name, check=False).stdout[-4000:]
    answer = http(f"http://127.0.0.1:{inference}/predictions/tiny",
                  data=json.dumps({"texts": ["shares rose at the bank", "a late goal"]}).encode())
    assert answer.status == 200, answer.body
    predictions = answer.json()["predictions"]
    assert len(predictions) == 2 and {p["label"] for p in predictions} <= set(LABELS)
