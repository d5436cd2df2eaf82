"""The cluster tier's operator runs with the chart's permissions, and a permission the chart
lacked would fail the session: the 403 check (``forbidden_api_calls`` in conftest.py) is
shown to catch a real refusal from a deliberately under-privileged operator.
"""

from __future__ import annotations

import json
import stat
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.helm import CHART
from tests.cluster.conftest import (
    OPERATOR_NAMESPACE,
    OPERATOR_RELEASE,
    OPERATOR_SERVICE_ACCOUNT,
    RunningOperator,
    during_apiserver_startup,
    forbidden_api_calls,
    write_token_kubeconfig,
)
from tests.harness.controlplane import ControlPlane

pytestmark = pytest.mark.cluster

CHART_ROLE = f"{OPERATOR_RELEASE}-modelloop"  # + "-<purpose>", as the chart names them


def test_operator_runs_as_the_chart_service_account_not_as_admin(
        cluster: ControlPlane, operator: RunningOperator, operator_kubeconfig: Path) -> None:
    assert operator.kubeconfig == operator_kubeconfig and operator.with_chart_permissions
    assert stat.S_IMODE(operator_kubeconfig.stat().st_mode) == 0o600
    (user,) = yaml.safe_load(operator_kubeconfig.read_text())["users"]
    assert set(user["user"]) == {"token"}  # no client certificate: not the admin identity
    whoami = json.loads(cluster.kubectl("auth", "whoami", "-o", "json",
                                        f"--kubeconfig={operator_kubeconfig}").stdout)
    assert whoami["status"]["userInfo"]["username"] == (
        f"system:serviceaccount:{OPERATOR_NAMESPACE}:{OPERATOR_SERVICE_ACCOUNT}")

    def can_i(*args: str) -> bool:
        answer = cluster.kubectl("auth", "can-i", *args, f"--kubeconfig={operator_kubeconfig}",
                                 check=False).stdout.strip()
        assert answer in ("yes", "no")
        return answer == "yes"

    assert can_i("create", "jobs.batch", "-n", "anywhere")
    assert not can_i("get", "secrets", "-n", "anywhere")
    assert not can_i("create", "clusterrolebindings")
    assert operator.forbidden_api_calls() == []


@pytest.fixture
def without_children_rights(cluster: ControlPlane, namespace: str,
                            tmp_path: Path) -> Iterator[Path]:
    """A ServiceAccount with what the chart grants an operator watching one namespace,
    except the rules for the objects it builds (Jobs, Services, ...); its kubeconfig."""
    name = f"no-children-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "serviceaccount", name, "-n", namespace)
    subject = f"--serviceaccount={namespace}:{name}"
    cluster.kubectl("create", "rolebinding", name, "-n", namespace,
                    f"--clusterrole={CHART_ROLE}-resources", subject)
    cluster.kubectl("create", "clusterrolebinding", name,
                    f"--clusterrole={CHART_ROLE}-discovery", subject)
    # Watching named namespaces, kopf follows their existence (the chart's watchNamespaces
    # mode grants this in its discovery role).
    cluster.kubectl("create", "clusterrole", f"{name}-namespaces", "--verb=list,watch",
                    "--resource=namespaces")
    cluster.kubectl("create", "clusterrolebinding", f"{name}-namespaces",
                    f"--clusterrole={name}-namespaces", subject)
    try:
        yield write_token_kubeconfig(cluster, namespace=namespace, service_account=name,
                                     path=tmp_path / "no-children.kubeconfig")
    finally:
        for kind, obj in (("clusterrolebinding", name), ("clusterrolebinding",
                                                         f"{name}-namespaces"),
                          ("clusterrole", f"{name}-namespaces")):
            cluster.kubectl("delete", kind, obj, "--ignore-not-found", check=False)


def test_a_missing_permission_is_detected_in_the_operator_log(
        cluster: ControlPlane, crds: list[str], operator_kubeconfig: Path, namespace: str,
        without_children_rights: Path, tmp_path: Path) -> None:
    under = RunningOperator(cluster=cluster, log=tmp_path / "operator.log",
                            kubeconfig=without_children_rights, namespaces=(namespace,))
    # Not the chart's credentials: its 403s are expected, and must not fail the session.
    assert not under.with_chart_permissions
    under.start()
    try:
        manifest = {
            "apiVersion": "modelloop.dev/v1alpha1", "kind": "TrainingJob",
            "metadata": {"name": "refused", "namespace": namespace},
            "spec": {"model": {"uri": "builtin://all-minilm-l6-v2"},
                     "dataset": {"uri": "builtin://bbc-news"},
                     "output": {"uri": "s3://models/refused"}}}
        cluster.kubectl("apply", "-f", "-", input=json.dumps(manifest))

        def refused_jobs() -> list[str]:
            return [line for line in under.forbidden_api_calls()
                    if "jobs" in line and "batch" in line]
        lines = under.wait_for("a 403 on batch/v1 jobs in the operator's log", refused_jobs)
    finally:
        under.stop()
    assert any(f"system:serviceaccount:{namespace}:" in line for line in lines), lines
    assert set(lines) <= set(forbidden_api_calls(under.log))
    # The log has more than refusals: the check picks lines, not the whole file.
    assert len(under.log.read_text().splitlines()) > len(under.forbidden_api_calls())


def peering_status(cluster: ControlPlane, name: str) -> dict[str, Any]:
    found = cluster.kubectl("get", "clusterkopfpeering", name, "-o", "json", check=False)
    if found.returncode != 0:
        return {}
    status: dict[str, Any] = json.loads(found.stdout).get("status") or {}
    return status


def test_kopf_peering_works_with_the_chart_peering_rules(
        cluster: ControlPlane, crds: list[str], operator_kubeconfig: Path,
        tmp_path: Path) -> None:
    """What the chart's peering.enabled=true grants (list/watch every ClusterKopfPeering,
    get/patch only its own) is all kopf's peering needs: the operator announces itself in
    the peering object's status and withdraws on exit, without a 403. The other tests run
    --standalone, so this is the only use of those rules."""
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f",
                    str(CHART / "crds" / "kopf-peering.yaml"))
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                    "crd/clusterkopfpeerings.kopf.dev")
    name = OPERATOR_SERVICE_ACCOUNT  # the chart's default peering name: the full name
    cluster.kubectl("apply", "--server-side", "-f", "-", input=json.dumps({
        "apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering",
        "metadata": {"name": name}}))
    peer = RunningOperator(cluster=cluster, log=tmp_path / "operator.log", peering=name)
    assert peer.with_chart_permissions is False  # decided at start: the default credentials
    peer.start()
    try:
        assert peer.with_chart_permissions
        keepalive = peer.wait_for(f"a keep-alive in ClusterKopfPeering {name}",
                                  lambda: peering_status(cluster, name))
        (entry,) = keepalive.values()
        assert {"priority", "lifetime", "lastseen"} <= set(entry)
    finally:
        peer.stop()
    # On a graceful exit kopf patches its own entry away (a get/patch on its object).
    deadline = time.monotonic() + 15
    while peering_status(cluster, name) and time.monotonic() < deadline:
        time.sleep(0.25)
    assert peering_status(cluster, name) == {}
    assert peer.forbidden_api_calls() == []


def test_only_a_namespace_being_deleted_is_an_excused_403(tmp_path: Path) -> None:
    """Lines as the operator logged them in this suite (namespaces shortened)."""
    log = tmp_path / "operator.log"
    refused = ('[2026-11-28 15:51:31,937] kopf.objects [ERROR   ] Handler \'trainingjob-job\' '
               'failed permanently: apply Job team-a/fz-0-a2: jobs.batch "fz-0-a2" is '
               'forbidden: User "system:serviceaccount:modelloop-system:ml-modelloop" cannot '
               'patch resource "jobs" in API group "batch" in the namespace "team-a" (403)')
    terminating = ('[2026-11-28 15:51:31,937] kopf.objects [ERROR   ] Handler '
                   '\'trainingjob-pod\' failed permanently: apply Job team-b/fz-0-a2: '
                   'jobs.batch "fz-0-a2" is forbidden: unable to create new content in '
                   'namespace team-b because it is being terminated (403)')
    ordinary = ("[2026-11-28 15:51:32,001] modelloop_operator.r [INFO    ] TrainingJob "
                "team-a/bbc: Running (attempt 1)")
    log.write_text("\n".join([ordinary, terminating, refused, ordinary]) + "\n")
    assert forbidden_api_calls(log) == [refused]


def test_a_403_is_blamed_on_the_api_server_only_in_the_minute_after_it_started(
        tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "kube-apiserver.log").write_text(
        "\n=== 15:46:26 starting: kube-apiserver --secure-port=1\nI1128 ready\n"
        "\n=== 15:54:14 starting: kube-apiserver --secure-port=1\n")
    line = ("[2026-11-28 {} ,462] kopf.objects [ERROR   ] Timer 'modeldeployment-resync' "
            "failed permanently: get ModelDeployment a/b: ... is forbidden: User "
            "\"system:serviceaccount:modelloop-system:ml-modelloop\" cannot get ... (403)")

    def excused(clock: str) -> bool:
        return during_apiserver_startup(line.format(clock).replace(" ,", ","),
                                        cluster_workdir=tmp_path)

    assert excused("15:54:29") and excused("15:55:14") and excused("15:46:30")
    assert not excused("15:55:15") and not excused("15:54:13") and not excused("15:50:00")
    assert not during_apiserver_startup("Traceback: ForbiddenError", cluster_workdir=tmp_path)
