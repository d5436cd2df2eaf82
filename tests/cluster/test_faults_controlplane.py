"""Control-plane faults the operator must survive (issue #9), each with its outcome.

* the API server restarted and etcd stopped for a few seconds while jobs run: the
  operator keeps running, creates no duplicate children, and everything converges;
* the operator's connection to the API server cut (reset, or silently black-holed)
  while a spec changes: the change is reconciled once the network returns;
* a second writer hammering labels and annotations of the same objects (a conflict
  storm on every resourceVersion-guarded status write): no condition is lost, one child
  each, no unhandled exception in the operator's log.

Every test leaves the shared cluster as it found it: etcd and the API server running,
the session's operator running.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from modelloop_operator.kubeconfig import load_kubeconfig

from tests.cluster.conftest import RunningOperator
from tests.cluster.objects import apply, condition, get
from tests.harness.controlplane import ControlPlane
from tests.harness.tcpproxy import TcpProxy

Json = dict[str, Any]
GROUP = "modelloop.dev/v1alpha1"
TJ_LABEL = "modelloop.dev/trainingjob"
MDEP_LABEL = "modelloop.dev/modeldeployment"
HELD = {"modelloop.dev/kwok-complete": "false", "modelloop.dev/kwok-delay": "0s"}
"""Pod annotations: the trainer 'runs' until the test lets it complete."""
SMALL = {"cpu": "100m", "memory": "128Mi"}
ARCHIVE = "file:///models/v1/bbc.mar"
TJ_CONDITIONS = {"Ready", "Progressing", "Succeeded", "Failed", "Suspended"}
MDEP_CONDITIONS = {"Ready", "Progressing", "Degraded"}
CONVERGE_SECONDS = 120.0
"""Bound on convergence after a fault (a loaded 2-core machine, not a target)."""


# --- manifests and reads ----------------------------------------------------------------

def training_job(name: str, *, node: str, annotations: dict[str, str]) -> Json:
    return {"apiVersion": GROUP, "kind": "TrainingJob", "metadata": {"name": name},
            "spec": {"model": {"uri": "builtin://all-minilm-l6-v2"},
                     "dataset": {"uri": "builtin://bbc-news", "maxSamples": 100},
                     "output": {"uri": f"s3://models/{name}"},
                     "resources": SMALL,
                     "scheduling": {"nodeSelector": {"kubernetes.io/hostname": node}},
                     "podTemplate": {"metadata": {"annotations": annotations}}}}


def model_deployment(name: str, *, node: str, replicas: int) -> Json:
    return {"apiVersion": GROUP, "kind": "ModelDeployment", "metadata": {"name": name},
            "spec": {"model": {"archiveUri": ARCHIVE}, "replicas": replicas,
                     "resources": SMALL,
                     "scheduling": {"nodeSelector": {"kubernetes.io/hostname": node}}}}


def merge_patch(cluster: ControlPlane, namespace: str, kind: str, name: str,
                patch: Json) -> None:
    cluster.kubectl("patch", kind, name, "-n", namespace, "--type=merge",
                    "-p", json.dumps(patch))


def names(cluster: ControlPlane, namespace: str, kind: str, selector: str) -> list[str]:
    listed = get(cluster, namespace, kind, "-l", selector) or {"items": []}
    return sorted(i["metadata"]["name"] for i in listed["items"]
                  if not i["metadata"].get("deletionTimestamp"))


def tj_in_phase(cluster: ControlPlane, namespace: str, name: str, phase: str) -> Any:
    def probe() -> Json | None:
        obj = get(cluster, namespace, "trainingjob", name) or {}
        return obj if (obj.get("status") or {}).get("phase") == phase else None
    return probe


def mdep_ready(cluster: ControlPlane, namespace: str, name: str, replicas: int) -> Any:
    """Ready, all replicas ready, and status is about the current generation."""
    def probe() -> Json | None:
        obj = get(cluster, namespace, "modeldeployment", name) or {}
        st = obj.get("status") or {}
        done = (st.get("phase") == "Ready" and st.get("readyReplicas") == replicas
                and condition(st, "Ready").get("status") == "True"
                and st.get("observedGeneration") == obj["metadata"]["generation"])
        return obj if done else None
    return probe


def held_pod_running(cluster: ControlPlane, namespace: str, name: str) -> Any:
    def probe() -> bool:
        pods = (get(cluster, namespace, "pods", "-l", f"{TJ_LABEL}={name}")
                or {"items": []})["items"]
        return any(p["status"].get("phase") == "Running" for p in pods)
    return probe


def let_pods_complete(cluster: ControlPlane, namespace: str, name: str) -> None:
    cluster.kubectl("annotate", "pods", "-n", namespace, "-l", f"{TJ_LABEL}={name}",
                    "--overwrite", "modelloop.dev/kwok-complete=true")


def assert_one_child_each(cluster: ControlPlane, namespace: str, *, jobs: dict[str, list[str]],
                          deployment: str) -> None:
    """Exactly the Jobs expected per TrainingJob, one Deployment and its two Services."""
    for tj, expected in jobs.items():
        assert names(cluster, namespace, "jobs", f"{TJ_LABEL}={tj}") == expected, tj
    selector = f"{MDEP_LABEL}={deployment}"
    assert names(cluster, namespace, "deployments", selector) == [deployment]
    assert names(cluster, namespace, "services", selector) == [deployment,
                                                               f"{deployment}-metrics"]


def assert_conditions_complete(obj: Json, expected: set[str]) -> None:
    """Every expected condition present, and status and each condition about the
    object's current generation."""
    st, generation = obj.get("status") or {}, obj["metadata"]["generation"]
    where = f"{obj['kind']} {obj['metadata']['name']}"
    assert {c["type"] for c in st.get("conditions", [])} == expected, where
    assert st.get("observedGeneration") == generation, where
    assert {c.get("observedGeneration") for c in st["conditions"]} == {generation}, where


def log_since(operator: RunningOperator, offset: int) -> str:
    with operator.log.open("rb") as log:
        log.seek(offset)
        return log.read().decode(errors="replace")


# --- operators of one test ----------------------------------------------------------------

def chart_credentials(operator_kubeconfig: Path, path: Path, *, server: str | None = None,
                      cluster_fields: dict[str, str] | None = None) -> Path:
    """A copy of the chart ServiceAccount's kubeconfig (same token, same RBAC), optionally
    pointing at another server (a proxy; TLS passes through) and with more fields of its
    cluster entry (``tls-server-name``, ``proxy-url``). A copy, so that the
    session's 403 check does not read this operator's log: a test that makes the API
    server refuse requests checks that operator's 403s itself."""
    config = yaml.safe_load(operator_kubeconfig.read_text())
    if server is not None:
        config["clusters"][0]["cluster"]["server"] = server
    config["clusters"][0]["cluster"].update(cluster_fields or {})
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


@contextlib.contextmanager
def instead_of_the_session_operator(operator: RunningOperator, dedicated: RunningOperator,
                                    namespace: str) -> Iterator[RunningOperator]:
    """Run ``dedicated`` while the session's operator is stopped (two operators must not
    both act on one object); the session's operator runs again afterwards, whatever
    happened. ``dedicated`` serves all namespaces too: with ``--namespace`` kopf lists
    namespaces, which the chart's cluster-wide RBAC does not grant.

    The test's objects are deleted while ``dedicated`` still runs (it releases their
    finalizers), so the session's operator does not resume them in a namespace that is
    being deleted."""
    operator.stop()
    try:
        dedicated.start()
        try:
            yield dedicated
        finally:
            dedicated.cluster.kubectl(
                "delete", "trainingjobs,modeldeployments", "--all", "-n", namespace,
                "--wait=true", "--timeout=60s", check=False)
            dedicated.stop()
    finally:
        operator.start()


def forbidden_after(running: RunningOperator, moment: datetime) -> list[str]:
    """403 lines of the operator's log stamped at or after ``moment`` (log time is the
    machine's local time, as ``datetime.now()``)."""
    late = []
    for line in running.forbidden_api_calls():
        stamp = line[1:24] if line.startswith("[") else ""
        try:
            when = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f")
        except ValueError:
            late.append(line)  # unstamped (a traceback line): cannot prove it was early
            continue
        if when >= moment:
            late.append(line)
    return late


# --- 1. API server restart and etcd outage ------------------------------------------------

def test_apiserver_restart_and_etcd_outage_leave_one_child_each_and_converge(
        cluster: ControlPlane, namespace: str, kwok_node: str, operator: RunningOperator,
        operator_kubeconfig: Path, tmp_path: Path) -> None:
    """The operator keeps running through both faults, makes no duplicate, and converges.

    A restarted API server serves requests a moment before its RBAC caches are synced
    (and before /readyz passes): the chart's ServiceAccount gets 403s then, which is
    not a missing permission. So this test runs its own operator with a copy of those
    credentials and checks that no 403 came once the API server was ready."""
    dedicated = RunningOperator(
        cluster=cluster, log=tmp_path / "operator.log",
        kubeconfig=chart_credentials(operator_kubeconfig, tmp_path / "kubeconfig"))
    with instead_of_the_session_operator(operator, dedicated, namespace):
        jobs = ("held-0", "held-1")
        for name in jobs:
            apply(cluster, namespace, training_job(name, node=kwok_node, annotations=HELD))
        apply(cluster, namespace, model_deployment("srv", node=kwok_node, replicas=2))
        for name in jobs:
            dedicated.wait_for(f"{name} Running",
                               tj_in_phase(cluster, namespace, name, "Running"))
            dedicated.wait_for(f"{name}'s pod running",
                               held_pod_running(cluster, namespace, name))
        before = dedicated.wait_for("srv Ready", mdep_ready(cluster, namespace, "srv", 2))
        ready_before = condition(before["status"], "Ready")
        assert dedicated.component is not None
        pid = dedicated.component.pid

        cluster.restart_apiserver()
        apiserver_ready = datetime.now()
        cluster.stop_etcd()
        try:
            time.sleep(5)  # the outage itself: the API server answers errors meanwhile
        finally:
            cluster.start_etcd()
        cluster.check_alive()
        dedicated.check_running()

        for name in jobs:
            let_pods_complete(cluster, namespace, name)
        for name in jobs:
            done = dedicated.wait_for(f"{name} Succeeded after the outage", tj_in_phase(
                cluster, namespace, name, "Succeeded"), timeout=CONVERGE_SECONDS)
            # The outage is not a failed attempt: the first attempt finished.
            assert done["status"]["attempts"] == 1
            assert done["status"]["failedAttempts"] == 0
            assert_conditions_complete(done, TJ_CONDITIONS)
        after = dedicated.wait_for("srv Ready after the outage", mdep_ready(
            cluster, namespace, "srv", 2), timeout=CONVERGE_SECONDS)
        ready_after = condition(after["status"], "Ready")
        assert (ready_after["status"], ready_after["reason"]) == (ready_before["status"],
                                                                  ready_before["reason"])
        assert_conditions_complete(after, MDEP_CONDITIONS)
        assert_one_child_each(cluster, namespace, jobs={n: [f"{n}-a1"] for n in jobs},
                              deployment="srv")
        # Never exited (no supervisor restarts it here: a crash would show).
        dedicated.check_running()
        assert dedicated.component.pid == pid
        late = forbidden_after(dedicated, apiserver_ready)
        assert not late, "403s once the API server was ready:\n" + "\n".join(late[:10])


# --- 2. the watch connection cut ----------------------------------------------------------

@pytest.fixture
def proxied_operator(cluster: ControlPlane, namespace: str, operator: RunningOperator,
                     operator_kubeconfig: Path, tmp_path: Path
                     ) -> Iterator[tuple[RunningOperator, TcpProxy]]:
    """An operator (all namespaces, like the session's, whose place it takes) that
    reaches the API server only through a proxy the test can cut. Resync timers are off
    (an hour), so what reaches this operator after a cut came through its watches."""
    apiserver_port = int(cluster.server.rsplit(":", 1)[1])
    with TcpProxy(target_host="127.0.0.1", target_port=apiserver_port) as proxy:
        kubeconfig = chart_credentials(operator_kubeconfig, tmp_path / "kubeconfig",
                                       server=f"https://127.0.0.1:{proxy.port}")
        dedicated = RunningOperator(cluster=cluster, log=tmp_path / "operator.log",
                                    kubeconfig=kubeconfig,
                                    env_overrides={"MODELLOOP_RESYNC_SECONDS": "3600"})
        with instead_of_the_session_operator(operator, dedicated, namespace):
            yield dedicated, proxy


@pytest.mark.parametrize("mode", ["reset", "blackhole"])
def test_changes_made_while_the_connection_is_cut_are_reconciled_after_it_returns(
        cluster: ControlPlane, namespace: str, kwok_node: str, mode: str,
        proxied_operator: tuple[RunningOperator, TcpProxy]) -> None:
    dedicated, proxy = proxied_operator
    apply(cluster, namespace, training_job("held", node=kwok_node, annotations=HELD))
    apply(cluster, namespace, model_deployment("srv", node=kwok_node, replicas=1))
    dedicated.wait_for("held Running", tj_in_phase(cluster, namespace, "held", "Running"))
    dedicated.wait_for("srv Ready", mdep_ready(cluster, namespace, "srv", 1))
    assert proxy.live_links > 0, "the operator does not talk through the proxy"

    proxy.cut("reset" if mode == "reset" else "blackhole")
    try:
        merge_patch(cluster, namespace, "trainingjob", "held",
                    {"spec": {"runPolicy": {"suspend": True}}})
        merge_patch(cluster, namespace, "modeldeployment", "srv", {"spec": {"replicas": 2}})
        time.sleep(10)  # the cut lasts a while after the change
        # The cut really isolated the operator: nothing was reconciled meanwhile.
        deployment = get(cluster, namespace, "deployment", "srv")
        assert deployment is not None and deployment["spec"]["replicas"] == 1
        job = get(cluster, namespace, "job", "held-a1")
        assert job is not None and not job["spec"].get("suspend")
    finally:
        proxy.restore()
    assert proxy.stats.reset + proxy.stats.frozen > 0

    suspended = dedicated.wait_for("held Suspended after the cut", tj_in_phase(
        cluster, namespace, "held", "Suspended"), timeout=CONVERGE_SECONDS + 60)
    assert condition(suspended["status"], "Suspended")["status"] == "True"
    job = get(cluster, namespace, "job", "held-a1")
    assert job is not None and job["spec"]["suspend"] is True
    scaled = dedicated.wait_for("srv at 2 replicas after the cut", mdep_ready(
        cluster, namespace, "srv", 2), timeout=CONVERGE_SECONDS + 60)
    assert scaled["status"]["observedGeneration"] == 2
    assert_one_child_each(cluster, namespace, jobs={"held": ["held-a1"]}, deployment="srv")
    dedicated.check_running()


# --- 2b. the kubeconfig's route: tls-server-name, proxy-url -------------------------------

def certificate_refused(kubeconfig: Path, host: str, port: int) -> bool:
    """Whether a TLS client checking the name ``host`` refuses the API server's
    certificate (the premise of the tls-server-name test)."""
    context = ssl.create_default_context(cafile=load_kubeconfig([kubeconfig]).ca_file)
    with socket.create_connection((host, port), timeout=10) as sock:
        try:
            context.wrap_socket(sock, server_hostname=host).close()
        except ssl.SSLCertVerificationError:
            return True
    return False


@pytest.mark.parametrize("route", ["tls-server-name", "proxy-url"])
def test_kopfs_watches_and_the_operators_writes_take_the_kubeconfigs_route(
        cluster: ControlPlane, namespace: str, kwok_node: str, operator: RunningOperator,
        operator_kubeconfig: Path, tmp_path: Path, route: str) -> None:
    """The kubeconfig names an address the API server's certificate does not cover, with
    ``tls-server-name`` set to a name it does; or a name that resolves nowhere, reachable
    only through its ``proxy-url``. The TrainingJob reaches the operator only through
    kopf's watch (resync timers are off) and its status only through the operator's
    writes, so both must take that route."""
    port = int(cluster.server.rsplit(":", 1)[1])
    authority = f"kubernetes.default:{port}"  # in the certificate; no DNS answers for it
    if route == "tls-server-name":
        proxy = TcpProxy(target_host="127.0.0.1", target_port=port, listen_host="127.0.0.2")
    else:
        proxy = TcpProxy(target_host="127.0.0.1", target_port=port, tunnel_for=authority)
    with proxy:
        if route == "tls-server-name":
            kubeconfig = chart_credentials(
                operator_kubeconfig, tmp_path / "kubeconfig",
                server=f"https://127.0.0.2:{proxy.port}",
                cluster_fields={"tls-server-name": "kubernetes.default"})
            assert certificate_refused(kubeconfig, "127.0.0.2", proxy.port)
        else:
            kubeconfig = chart_credentials(
                operator_kubeconfig, tmp_path / "kubeconfig", server=f"https://{authority}",
                cluster_fields={"proxy-url": f"http://127.0.0.1:{proxy.port}"})
            with pytest.raises(OSError):
                socket.getaddrinfo("kubernetes.default", port)
        dedicated = RunningOperator(cluster=cluster, log=tmp_path / "operator.log",
                                    kubeconfig=kubeconfig,
                                    env_overrides={"MODELLOOP_RESYNC_SECONDS": "3600"})
        with instead_of_the_session_operator(operator, dedicated, namespace):
            apply(cluster, namespace, training_job("routed", node=kwok_node, annotations=HELD))
            dedicated.wait_for("routed Running", tj_in_phase(cluster, namespace, "routed",
                                                             "Running"))
            merge_patch(cluster, namespace, "trainingjob", "routed",
                        {"spec": {"runPolicy": {"suspend": True}}})
            dedicated.wait_for("routed Suspended", tj_in_phase(cluster, namespace, "routed",
                                                               "Suspended"))
        # kopf's session and the operator's client each opened their own connections.
        assert proxy.stats.accepted >= 2, proxy.stats
        assert proxy.stats.refused == 0, proxy.stats
        if route == "proxy-url":
            assert proxy.stats.tunnels == proxy.stats.accepted, proxy.stats


# --- 3. conflict storm --------------------------------------------------------------------

class AdminApi:
    """A keep-alive HTTPS connection as the cluster admin (kubectl is far too slow to
    write many times a second)."""

    def __init__(self, cluster: ControlPlane, scratch: Path) -> None:
        config = yaml.safe_load(cluster.kubeconfig.read_text())
        user = config["users"][0]["user"]
        for key, filename in (("client-certificate-data", "admin.crt"),
                              ("client-key-data", "admin.key")):
            (scratch / filename).write_bytes(base64.b64decode(user[key]))
        ca = base64.b64decode(config["clusters"][0]["cluster"]["certificate-authority-data"])
        context = ssl.create_default_context(cadata=ca.decode())
        context.load_cert_chain(str(scratch / "admin.crt"), str(scratch / "admin.key"))
        self._connection = http.client.HTTPSConnection(
            "127.0.0.1", int(cluster.server.rsplit(":", 1)[1]), context=context, timeout=30)

    def merge_patch(self, path: str, patch: Json) -> tuple[int, Json]:
        self._connection.request("PATCH", path, body=json.dumps(patch), headers={
            "Content-Type": "application/merge-patch+json", "Accept": "application/json"})
        response = self._connection.getresponse()
        body: Json = json.loads(response.read() or b"{}")
        return response.status, body

    def close(self) -> None:
        self._connection.close()


class MetadataStorm(threading.Thread):
    """Patches a label and an annotation of each target, round after round, until
    stopped; every patch bumps resourceVersion, so the operator's guarded status writes
    keep conflicting. Records failures and the phases it saw in the responses."""

    def __init__(self, api: AdminApi, namespace: str, targets: list[tuple[str, str]]) -> None:
        super().__init__(name="metadata-storm", daemon=True)
        self.api, self.namespace, self.targets = api, namespace, targets
        self.stopping = threading.Event()
        self.patches = 0
        self.failures: list[str] = []
        self.phases: dict[str, list[str]] = {name: [] for _, name in targets}
        self.last_value = ""

    def run(self) -> None:
        round_ = 0
        while not self.stopping.is_set():
            round_ += 1
            self.last_value = str(round_)
            for plural, name in self.targets:
                path = f"/apis/{GROUP}/namespaces/{self.namespace}/{plural}/{name}"
                patch = {"metadata": {"labels": {"storm": self.last_value},
                                      "annotations": {"example.com/storm": self.last_value}}}
                try:
                    status, body = self.api.merge_patch(path, patch)
                except (OSError, http.client.HTTPException) as exc:
                    self.failures.append(f"{name}: {exc!r}")
                    continue
                if status != 200:
                    self.failures.append(f"{name}: HTTP {status} {body.get('message')}")
                    continue
                self.patches += 1
                phase = (body.get("status") or {}).get("phase", "")
                if not self.phases[name] or self.phases[name][-1] != phase:
                    self.phases[name].append(phase)
            time.sleep(0.02)


@contextlib.contextmanager
def metadata_storm(cluster: ControlPlane, namespace: str, targets: list[tuple[str, str]],
                   scratch: Path) -> Iterator[MetadataStorm]:
    """A :class:`MetadataStorm` on ``targets`` for the duration of the block."""
    api = AdminApi(cluster, scratch)
    storm = MetadataStorm(api, namespace, targets)
    storm.start()
    try:
        yield storm
    finally:
        storm.stopping.set()
        storm.join(timeout=60)
        api.close()


@pytest.fixture
def objects_deleted_after(cluster: ControlPlane, namespace: str,
                          operator: RunningOperator) -> Iterator[None]:
    """The test's TrainingJobs and ModelDeployments are deleted while the operator still
    runs and before the namespace goes: an Event the operator posts in a namespace being
    deleted is refused with 403, which the session's 403 check would count."""
    yield
    cluster.kubectl("delete", "trainingjobs,modeldeployments", "--all", "-n", namespace,
                    "--wait=true", "--timeout=60s", check=False)


STORM_SECONDS = 20.0


def test_a_metadata_conflict_storm_loses_no_condition_and_creates_no_duplicates(
        cluster: ControlPlane, namespace: str, kwok_node: str, operator: RunningOperator,
        objects_deleted_after: None, tmp_path: Path) -> None:
    log_offset = operator.log.stat().st_size
    jobs = ("storm-0", "storm-1")
    quick = {"modelloop.dev/kwok-delay": "10s"}
    for name in jobs:
        apply(cluster, namespace, training_job(name, node=kwok_node, annotations=quick))
    apply(cluster, namespace, model_deployment("srv", node=kwok_node, replicas=1))
    targets = [*(("trainingjobs", n) for n in jobs), ("modeldeployments", "srv")]
    with metadata_storm(cluster, namespace, targets, tmp_path) as storm:
        began = time.monotonic()
        # Status keeps up while the storm lasts, a spec change (generation 2) included.
        operator.wait_for("srv Ready during the storm", mdep_ready(
            cluster, namespace, "srv", 1), timeout=CONVERGE_SECONDS)
        merge_patch(cluster, namespace, "modeldeployment", "srv", {"spec": {"replicas": 2}})
        operator.wait_for("srv at 2 replicas during the storm", mdep_ready(
            cluster, namespace, "srv", 2), timeout=CONVERGE_SECONDS)
        time.sleep(max(0.0, STORM_SECONDS - (time.monotonic() - began)))
        assert not storm.stopping.is_set() and storm.is_alive()
    assert not storm.failures, storm.failures[:10]
    assert storm.patches > 0
    for name in jobs:
        # The storm began before the job ended: it raced the job's progress.
        assert storm.phases[name] and storm.phases[name][0] != "Succeeded", storm.phases

    for name in jobs:
        done = operator.wait_for(f"{name} Succeeded", tj_in_phase(
            cluster, namespace, name, "Succeeded"), timeout=CONVERGE_SECONDS)
        assert_conditions_complete(done, TJ_CONDITIONS)
        assert condition(done["status"], "Succeeded")["status"] == "True"
        assert done["status"]["attempts"] == 1
        # The operator never clobbered the other writer's metadata.
        assert done["metadata"]["labels"]["storm"] == storm.last_value
    served = operator.wait_for("srv Ready at 2 replicas", mdep_ready(
        cluster, namespace, "srv", 2), timeout=CONVERGE_SECONDS)
    assert_conditions_complete(served, MDEP_CONDITIONS)
    assert served["metadata"]["generation"] == 2
    assert served["metadata"]["labels"]["storm"] == storm.last_value
    assert_one_child_each(cluster, namespace, jobs={n: [f"{n}-a1"] for n in jobs},
                          deployment="srv")
    operator.check_running()
    log = log_since(operator, log_offset)
    assert "Traceback" not in log, log[log.index("Traceback") - 2000:][:6000]


# --- the proxy itself (no cluster) ----------------------------------------------------------

@pytest.fixture
def echo_server() -> Iterator[int]:
    """A TCP echo server on loopback; yields its port."""
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def echo(connection: socket.socket) -> None:
        # The proxy resets connections on purpose: that ends this one quietly.
        with connection, contextlib.suppress(OSError):
            while data := connection.recv(4096):
                connection.sendall(data)

    def serve() -> None:
        while not stop.is_set():
            try:
                connection, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=echo, args=(connection,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    yield int(server.getsockname()[1])
    stop.set()
    server.close()


def _roundtrip(port: int, payload: bytes = b"ping") -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
        sock.sendall(payload)
        return sock.recv(len(payload))


def test_proxy_reset_cut_resets_open_and_new_connections_until_restored(
        echo_server: int) -> None:
    with TcpProxy(target_host="127.0.0.1", target_port=echo_server) as proxy:
        sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=2)
        sock.sendall(b"ping")
        assert sock.recv(4) == b"ping"
        proxy.cut("reset")
        with pytest.raises(ConnectionResetError):
            sock.recv(4)
        with pytest.raises(ConnectionResetError):
            _roundtrip(proxy.port)
        proxy.restore()
        assert _roundtrip(proxy.port) == b"ping"
        assert (proxy.stats.accepted, proxy.stats.reset) == (2, 2)


def test_proxy_blackhole_silences_connections_for_good_and_new_ones_until_restored(
        echo_server: int) -> None:
    with TcpProxy(target_host="127.0.0.1", target_port=echo_server) as proxy:
        old = socket.create_connection(("127.0.0.1", proxy.port), timeout=1)
        old.sendall(b"ping")
        assert old.recv(4) == b"ping"
        proxy.cut("blackhole")
        old.sendall(b"ping")
        with pytest.raises(TimeoutError):
            old.recv(4)  # no answer, and no error either
        with pytest.raises(TimeoutError):
            _roundtrip(proxy.port)
        proxy.restore()
        with pytest.raises(TimeoutError):
            old.recv(4)  # a silenced connection never comes back
        assert _roundtrip(proxy.port) == b"ping"
        assert proxy.stats.frozen == 2
        old.close()
