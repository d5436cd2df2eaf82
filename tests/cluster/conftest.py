"""The operator, running for real against the test cluster, for every controller's tests.

``crds`` applies ``crds/*.yaml`` once per session; ``operator`` starts
``python -m modelloop_operator.cli`` as a subprocess with the cluster's KUBECONFIG (the
same entry point as the ``modelloop-operator`` console script), serving all namespaces,
with its log in a file, and stops it at the end of the session. Tests may
``operator.restart()`` it (optionally after a SIGKILL, to simulate a crash); the restart
test leaves it running for the tests after it.

The resync interval is short (``MODELLOOP_RESYNC_SECONDS=1``) so deadline tests take
seconds, not the production default of 30 s.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.harness.binaries import REPO_ROOT
from tests.harness.controlplane import ControlPlane
from tests.harness.processes import Component, free_port, log_tail

CRD_DIR = REPO_ROOT / "crds"


@dataclass
class RunningOperator:
    """Handle on the operator subprocess of the test session."""

    cluster: ControlPlane
    log: Path
    env_overrides: dict[str, str] = field(default_factory=dict)
    health_port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    component: Component | None = None

    @property
    def argv(self) -> list[str]:
        return [sys.executable, "-m", "modelloop_operator.cli", "--all-namespaces",
                "--standalone"]

    def start(self, *, timeout: float = 60) -> None:
        """Start it and wait until its liveness endpoint answers."""
        env = {**self.cluster.env,
               "MODELLOOP_HEALTH_PORT": str(self.health_port),
               "MODELLOOP_METRICS_PORT": str(self.metrics_port),
               "MODELLOOP_RESYNC_SECONDS": "1",
               "MODELLOOP_DEFAULT_MEMORY": "1Gi",
               **self.env_overrides}
        self.component = Component(name="modelloop-operator", argv=self.argv, log=self.log)
        self.component.start(env=env, tie_to_parent=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.component.check_running()
            with contextlib.suppress(OSError, urllib.error.URLError):
                url = f"http://127.0.0.1:{self.health_port}/healthz"
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return
            time.sleep(0.2)
        raise self.component.failure(f"did not become live within {timeout}s")

    def stop(self) -> None:
        """Graceful stop: SIGTERM, then SIGKILL after 10 s."""
        if self.component is not None:
            self.component.stop()

    def kill(self) -> None:
        """A crash: SIGKILL, no chance to clean up."""
        if self.component is not None and self.component.pid:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.component.pid, signal.SIGKILL)
            self.component.stop(timeout=2)

    def restart(self, *, crash: bool = False) -> None:
        """Stop (or kill) and start again: what a pod restart or a rollout does."""
        self.kill() if crash else self.stop()
        self.start()

    def check_running(self) -> None:
        """Fail with the log tail if the operator died."""
        assert self.component is not None
        self.component.check_running()

    def log_tail(self, lines: int = 60) -> str:
        return log_tail(self.log, lines)

    def metrics(self) -> str:
        """The operator's /metrics page."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text: str = response.read().decode()
        return text

    def wait_for(self, what: str, probe: Callable[[], Any], timeout: float = 60) -> Any:
        """Poll ``probe`` until it returns something truthy; on timeout fail with the
        last value and the operator's log tail (what every controller test wants)."""
        deadline = time.monotonic() + timeout
        value: Any = None
        while time.monotonic() < deadline:
            value = probe()
            if value:
                return value
            self.check_running()
            time.sleep(0.25)
        pytest.fail(f"timed out after {timeout}s waiting for {what}; last value: {value!r}\n"
                    f"operator log tail:\n{self.log_tail()}")


@pytest.fixture(scope="session")
def crds(cluster: ControlPlane) -> list[str]:
    """Every CRD of crds/ applied (server-side) and Established; returns their names."""
    paths = sorted(CRD_DIR.glob("*.yaml"))
    if not paths:
        pytest.fail(f"no CRDs in {CRD_DIR}: run python -m modelloop_operator.crdgen")
    for path in paths:
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(path))
    names = [path.name.removesuffix(".yaml") for path in paths]
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                    *[f"crd/{name}" for name in names])
    return names


@pytest.fixture(scope="session")
def operator(cluster: ControlPlane, crds: list[str],
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningOperator]:
    """The operator running against the session's cluster, all namespaces."""
    running = RunningOperator(cluster=cluster,
                              log=tmp_path_factory.mktemp("operator") / "operator.log")
    running.start()
    try:
        yield running
    finally:
        running.stop()
