"""Fixtures shared by every test tier: the local Kubernetes control plane.

``cluster`` (session) starts etcd, kube-apiserver, kube-controller-manager, kube-scheduler
and kwok once per test session from the cached binaries (tests/harness/README.md), and
``namespace`` gives each test a fresh namespace that is deleted afterwards. A test that uses
either is marked ``cluster`` automatically, so ``pytest -m "not cluster"`` never starts one.

When the binaries are not built, cluster tests are skipped with the reason; with
``MODELLOOP_REQUIRE_CLUSTER=1`` (CI) that is an error instead, so CI cannot pass by skipping.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator

import pytest

from tests.harness.binaries import MissingBinariesError, locate
from tests.harness.controlplane import ControlPlane
from tests.harness.images import ImageBuildError, image

_CLUSTER_FIXTURES = frozenset({"cluster", "namespace", "kwok_node"})
_startup_report: list[str] = []


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _CLUSTER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.cluster)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for line in _startup_report:
        terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """A running local control plane (one per session); see tests/harness/README.md."""
    try:
        bins = locate()
    except MissingBinariesError as err:
        if os.environ.get("MODELLOOP_REQUIRE_CLUSTER") == "1":
            pytest.fail(f"MODELLOOP_REQUIRE_CLUSTER=1 but {err}", pytrace=False)
        pytest.skip(str(err))
    plane = ControlPlane(tmp_path_factory.mktemp("controlplane"), bins, tie_to_parent=True)
    plane.start()
    _startup_report.append(f"local control plane: ready in {plane.startup_seconds:.1f}s "
                           f"(warm start, binaries cached; work dir {plane.workdir})")
    try:
        yield plane
    finally:
        plane.stop()


@pytest.fixture
def namespace(cluster: ControlPlane, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace for one test, with its default ServiceAccount ready; deleted after."""
    cluster.check_alive()
    base = request.node.name.lower().replace("_", "-")
    name = "".join(c for c in base if c.isalnum() or c == "-")[:40].strip("-")
    name = f"{name}-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", name)
    # Pods are rejected until the controller manager has created the `default` ServiceAccount.
    deadline = time.monotonic() + 60
    while cluster.kubectl("get", "serviceaccount", "default", "-n", name,
                          check=False).returncode != 0:
        if time.monotonic() > deadline:
            cluster.check_alive()
            pytest.fail(f"ServiceAccount default never appeared in namespace {name}")
        time.sleep(0.2)
    try:
        yield name
    finally:
        # Not waiting: the namespace controller finishes in the background, and names are unique.
        cluster.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found",
                        check=False)


@pytest.fixture(scope="session")
def kwok_node(cluster: ControlPlane) -> str:
    """Name of a shared kwok node (64 CPUs, 512Gi, 8 GPUs) for tests that just need pods to run.

    Pin pods to it with ``nodeSelector: {"kubernetes.io/hostname": kwok_node}`` when other
    nodes (GPU test nodes, the local pod runner's ``local-0``) may exist too.
    """
    name = "kwok-shared-0"
    cluster.add_node(name, gpus=8, cpu="64", memory="512Gi")
    return name


def _built(name: str) -> str:
    """The tag of a project image, built or reused by hack/images.sh; its failure (which
    names the step) fails the test instead of skipping it."""
    try:
        return image(name)
    except ImageBuildError as err:
        pytest.fail(str(err), pytrace=False)


@pytest.fixture(scope="session")
def operator_image() -> str:
    return _built("operator")


@pytest.fixture(scope="session")
def trainer_image() -> str:
    return _built("trainer")


@pytest.fixture(scope="session")
def server_image() -> str:
    return _built("server")
