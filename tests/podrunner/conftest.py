"""Fixtures for the pod runner's cluster tests.

`pod_runner` (session): a PodRunner playing the kubelet of node `local-0` on the session's
control plane, with a short crash-loop back-off so restart tests take seconds. Other test
tiers (e2e) can do the same in their own conftest:

    with PodRunner(kubeconfig=cluster.kubeconfig, workdir=tmp_path_factory.mktemp("pods")) as r:
        yield r
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.harness.controlplane import ControlPlane
from tests.harness.podrunner import PodRunner


@pytest.fixture(scope="session")
def pod_runner(cluster: ControlPlane, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[PodRunner]:
    runner = PodRunner(
        kubeconfig=cluster.kubeconfig,
        node_name="local-0",
        workdir=tmp_path_factory.mktemp("podrunner"),
        cpu="4",
        memory="8Gi",
        gpus=1,
        backoff_initial=1.0,
        backoff_max=10.0,
    )
    with runner:
        yield runner
