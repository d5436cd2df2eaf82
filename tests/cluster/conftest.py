"""The operator, running for real against the test cluster, for every controller's tests.

``crds`` applies ``crds/*.yaml`` once per session; ``operator`` starts
``python -m modelloop_operator.cli`` as a subprocess (the same entry point as the
``modelloop-operator`` console script), serving all namespaces, with its log in a file, and
stops it at the end of the session. Tests may ``operator.restart()`` it (optionally after a
SIGKILL, to simulate a crash); the restart test leaves it running for the tests after it.

It runs with exactly the permissions the Helm chart grants, not as cluster admin: the
chart's ServiceAccount and RBAC (``helm template`` with the default, cluster-wide values,
peering rules included) are applied once per cluster, a token is requested for that
ServiceAccount, and the operator's KUBECONFIG holds that token (``operator_kubeconfig``).
A ``RunningOperator`` built by a test gets the same credentials unless it passes its own
``kubeconfig``. At the end of the session every log of an operator that ran with them is
searched for a 403 (:func:`forbidden_api_calls`); one fails the session, so a permission
the chart lacks shows up here instead of as a ``Forbidden`` in production.

The resync interval is short (``MODELLOOP_RESYNC_SECONDS=1``) so deadline tests take
seconds, not the production default of 30 s.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Final

import pytest
import yaml

from tests.chart.helm import CHART, Helm
from tests.harness.binaries import REPO_ROOT
from tests.harness.controlplane import ControlPlane
from tests.harness.processes import Component, free_port, log_tail

CRD_DIR = REPO_ROOT / "crds"

OPERATOR_NAMESPACE: Final = "modelloop-system"
"""The release namespace the chart's ServiceAccount lives in."""
OPERATOR_RELEASE: Final = "ml"
OPERATOR_SERVICE_ACCOUNT: Final = "ml-modelloop"
"""What the chart names the ServiceAccount of release ``ml`` (``<release>-modelloop``)."""
CHART_VALUES: Final[dict[str, Any]] = {"peering": {"enabled": True}}
"""Default values, cluster-wide, plus the peering rules (the operator of the controller
tests runs ``--standalone``; one test runs it with peering)."""
RBAC_KINDS: Final = frozenset({"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role",
                               "RoleBinding"})
TOKEN_DURATION: Final = "24h"
TOKEN_REUSE_SECONDS: Final = 12 * 3600
"""A kubeconfig older than this gets a fresh token (a long-lived `controlplane up` cluster
may serve several sessions)."""
CHART_KUBECONFIG: Final = "chart-operator.kubeconfig"
"""Where, in the cluster's work dir, the chart ServiceAccount's kubeconfig is written."""
CHART_OPERATOR_LOGS: Final = "chart-operator-logs.txt"
"""In the cluster's work dir: the log of every operator started with that kubeconfig, one
path a line (a file, not a Python list: this module is imported twice, as a conftest and
as ``tests.cluster.conftest``)."""

FORBIDDEN: Final = re.compile(
    r"\(403\)"                      # our client's errors: "<what>: <message> (403)"
    r"|['\"]code['\"]: ?403\b"      # a Status object printed as it came
    r"|APIForbiddenError"           # kopf's own requests (watches, patches, events)
    r"|\bForbiddenError\b"          # our typed error, in a traceback
    r"|\bis forbidden\b"            # the authorizer's and admission's message
    r"|Not enough (?:RBAC )?permissions")  # kopf giving up on a watch
"""What a refused API request leaves in the operator's log, whichever client made it."""
NAMESPACE_TERMINATING: Final = re.compile(
    r"unable to create new content in namespace \S+ because it is being terminated")
"""The one 403 that is no missing permission: the NamespaceLifecycle admission plugin
refusing writes into a namespace being deleted (every test deletes its namespace while the
operator may still be reconciling in it; in production it is as harmless)."""


APISERVER_STARTUP_GRACE: Final = timedelta(seconds=60)
"""How long after the API server (re)starts a 403 is blamed on it: it serves requests a
moment before its RBAC caches are synced, and refuses what the roles do allow meanwhile."""
_LOG_STAMP: Final = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),\d+\]")
_START_MARKER: Final = re.compile(r"^=== (\d\d:\d\d:\d\d) starting: ", re.MULTILINE)


def forbidden_api_calls(log: Path) -> list[str]:
    """The lines of an operator log that record an API request refused with 403, except
    those refused only because their namespace is being deleted."""
    try:
        text = log.read_text(errors="replace")
    except FileNotFoundError:
        return []
    return [line for line in text.splitlines()
            if FORBIDDEN.search(line) and not NAMESPACE_TERMINATING.search(line)]


def during_apiserver_startup(line: str, *, cluster_workdir: Path) -> bool:
    """Whether a log line is stamped less than :data:`APISERVER_STARTUP_GRACE` after the
    cluster's API server (re)started (``=== HH:MM:SS starting`` in its log; both clocks
    are this machine's local time). An unstamped line is never excused."""
    stamp = _LOG_STAMP.match(line)
    log = cluster_workdir / "logs" / "kube-apiserver.log"
    if stamp is None or not log.is_file():
        return False
    when = datetime.strptime(stamp.group(1), "%Y-%m-%d %H:%M:%S")
    for started in _START_MARKER.findall(log.read_text(errors="replace")):
        start = datetime.combine(when.date(), datetime.strptime(started, "%H:%M:%S").time())
        if timedelta(0) <= when - start <= APISERVER_STARTUP_GRACE:
            return True
    return False


def write_token_kubeconfig(cluster: ControlPlane, *, namespace: str, service_account: str,
                           path: Path) -> Path:
    """A kubeconfig for ``service_account`` with a token from the TokenRequest API, written
    with mode 0600. The token is never printed: kubectl's output is read and written to
    the file, and a failure reports kubectl's error only."""
    result = cluster.kubectl("create", "token", service_account, "-n", namespace,
                             f"--duration={TOKEN_DURATION}", check=False)
    if result.returncode != 0 or not result.stdout.strip():
        raise RuntimeError(f"kubectl create token {namespace}/{service_account} failed "
                           f"({result.returncode}): {result.stderr.strip()}")
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    user = f"{namespace}-{service_account}"
    config = {
        "apiVersion": "v1", "kind": "Config",
        "clusters": admin["clusters"],
        "users": [{"name": user, "user": {"token": result.stdout.strip()}}],
        "contexts": [{"name": user, "context": {"cluster": admin["clusters"][0]["name"],
                                                "user": user}}],
        "current-context": user,
    }
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        yaml.safe_dump(config, handle, sort_keys=False)
    return path


def chart_rbac(cluster: ControlPlane, *, workdir: Path) -> list[dict[str, Any]]:
    """The chart's ServiceAccount, (Cluster)Roles and bindings, as ``helm template``
    renders them for release ``ml`` in ``modelloop-system``."""
    helm = Helm(binary=cluster.helm_path, home=workdir / "helm-home")
    values = workdir / "chart-values.yaml"
    values.write_text(yaml.safe_dump(CHART_VALUES))
    rendered = helm.run("template", OPERATOR_RELEASE, str(CHART),
                        "--namespace", OPERATOR_NAMESPACE, "--values", str(values)).stdout
    objects = [o for o in yaml.safe_load_all(rendered) if o and o.get("kind") in RBAC_KINDS]
    assert any(o["kind"] == "ServiceAccount"
               and o["metadata"]["name"] == OPERATOR_SERVICE_ACCOUNT for o in objects)
    return objects


def chart_operator_kubeconfig(cluster: ControlPlane) -> Path:
    """The kubeconfig of the chart's ServiceAccount on ``cluster``, provisioning it the
    first time: namespace, ServiceAccount and RBAC applied, then a token requested."""
    path = cluster.workdir / CHART_KUBECONFIG
    if path.is_file() and time.time() - path.stat().st_mtime < TOKEN_REUSE_SECONDS:
        return path
    namespace = {"apiVersion": "v1", "kind": "Namespace",
                 "metadata": {"name": OPERATOR_NAMESPACE}}
    objects = [namespace, *chart_rbac(cluster, workdir=cluster.workdir)]
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-",
                    input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}))
    return write_token_kubeconfig(cluster, namespace=OPERATOR_NAMESPACE,
                                  service_account=OPERATOR_SERVICE_ACCOUNT, path=path)


def chart_operator_logs(directory: Path) -> list[Path]:
    """Logs of the operators that ran with the chart's credentials on the cluster whose
    work dir is ``directory``."""
    registry = directory / CHART_OPERATOR_LOGS
    if not registry.is_file():
        return []
    return [Path(line) for line in dict.fromkeys(registry.read_text().splitlines()) if line]


@dataclass
class RunningOperator:
    """Handle on an operator subprocess.

    ``kubeconfig``: the credentials it runs with; None (the default) means the chart's
    ServiceAccount (:func:`chart_operator_kubeconfig`), whose 403s fail the session. Pass
    ``cluster.kubeconfig`` for admin, or another ServiceAccount's. ``namespaces``: the
    namespaces it serves; empty (the default) means all of them. ``peering``: the kopf
    peering object it coordinates through; empty (the default) means ``--standalone``.
    """

    cluster: ControlPlane
    log: Path
    env_overrides: dict[str, str] = field(default_factory=dict)
    health_port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    component: Component | None = None
    kubeconfig: Path | None = None
    namespaces: tuple[str, ...] = ()
    peering: str = ""

    @property
    def argv(self) -> list[str]:
        scope = ([f"--namespace={ns}" for ns in self.namespaces] if self.namespaces
                 else ["--all-namespaces"])
        peers = f"--peering={self.peering}" if self.peering else "--standalone"
        return [sys.executable, "-m", "modelloop_operator.cli", *scope, peers]

    def operator_env(self) -> dict[str, str]:
        """The operator's own variables: credentials, ports, the tests' short resync."""
        return {"KUBECONFIG": str(self.kubeconfig),
                "MODELLOOP_HEALTH_PORT": str(self.health_port),
                "MODELLOOP_METRICS_PORT": str(self.metrics_port),
                "MODELLOOP_RESYNC_SECONDS": "1",
                "MODELLOOP_DEFAULT_MEMORY": "1Gi",
                **self.env_overrides}

    @property
    def with_chart_permissions(self) -> bool:
        return self.kubeconfig == self.cluster.workdir / CHART_KUBECONFIG

    def start(self, *, timeout: float = 60) -> None:
        """Start it and wait until its liveness endpoint answers."""
        if self.kubeconfig is None:
            self.kubeconfig = chart_operator_kubeconfig(self.cluster)
        if self.with_chart_permissions:
            with (self.cluster.workdir / CHART_OPERATOR_LOGS).open("a") as registry:
                registry.write(f"{self.log}\n")
        env = {**self.cluster.env, **self.operator_env()}
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

    def forbidden_api_calls(self) -> list[str]:
        """Log lines recording a request the API server refused with 403, except in the
        minute after it (re)started (:func:`during_apiserver_startup`)."""
        return [line for line in forbidden_api_calls(self.log)
                if not during_apiserver_startup(line, cluster_workdir=self.cluster.workdir)]

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


@pytest.fixture(scope="session", autouse=True)
def no_forbidden_api_calls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """At the end of the session: no operator that ran with the chart's permissions was
    refused anything by the API server (an error on the last test's teardown otherwise),
    except in the minute after an API server restart (see :func:`during_apiserver_startup`)."""
    yield
    found: list[str] = []
    for registry in sorted(tmp_path_factory.getbasetemp().glob(f"*/{CHART_OPERATOR_LOGS}")):
        for log in chart_operator_logs(registry.parent):
            found += [f"{log}: {line}" for line in forbidden_api_calls(log)
                      if not during_apiserver_startup(line, cluster_workdir=registry.parent)]
    if found:
        pytest.fail("the operator, with exactly the chart's RBAC, was refused requests "
                    "(403); the chart lacks a permission (charts/modelloop/templates/"
                    "rbac.yaml):\n" + "\n".join(found[:40]), pytrace=False)


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
def operator_kubeconfig(cluster: ControlPlane) -> Path:
    """A kubeconfig (mode 0600) holding a token of the chart's ServiceAccount, bound to
    exactly the chart's RBAC: what the operator pod would run with."""
    return chart_operator_kubeconfig(cluster)


@pytest.fixture(scope="session")
def operator(cluster: ControlPlane, crds: list[str], operator_kubeconfig: Path,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningOperator]:
    """The operator running against the session's cluster, all namespaces, with the
    chart's permissions."""
    running = RunningOperator(cluster=cluster, kubeconfig=operator_kubeconfig,
                              log=tmp_path_factory.mktemp("operator") / "operator.log")
    running.start()
    try:
        yield running
    finally:
        running.stop()
