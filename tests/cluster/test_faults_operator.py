"""Faults of the operator itself, against the real control plane (issue #9).

* changes made while the operator is down converge when it is back;
* a SIGKILL between creating a child and recording status leaves exactly one child. The
  kill is made to land in that window deterministically: a ValidatingAdmissionPolicy
  (real API server admission, nothing faked in the operator) refuses one kind of write
  in the test's namespace, the operator gets stuck just before it, and is killed there;
* two replicas with kopf peering: one works, the other pauses, and takes over when the
  first is killed;
* children deleted by hand (docs/operator.md, "Children deleted by hand").

Every test that stops the session operator restores it in ``finally``.
"""

from __future__ import annotations

import contextlib
import json
import re
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.conftest import RunningOperator
from tests.cluster.objects import apply, condition, get
from tests.harness.binaries import REPO_ROOT
from tests.harness.controlplane import ControlPlane

pytestmark = pytest.mark.cluster

Json = dict[str, Any]
SMALL = {"cpu": "100m", "memory": "128Mi"}
"""Pod size: the shared kwok node must not fill up with pods of slowly deleted namespaces."""
V1 = "file:///models/v1/bbc.mar"
SUMMARY = json.dumps({"v": 1, "kind": "train", "status": "Succeeded", "exitCode": 0,
                      "message": "done", "metrics": {"accuracy": 0.97},
                      "outputUri": "file:///models/bbc/run1", "checksum": "sha256:0123",
                      "labels": ["business", "sport"]}, separators=(",", ":"))
OPTIMIZED = json.dumps({"v": 1, "kind": "optimize", "status": "Succeeded", "exitCode": 0,
                        "accepted": True, "message": "optimization accepted",
                        "outputUri": "file:///models/bbc/opt1", "checksum": "sha256:beef",
                        "archiveUri": "file:///models/bbc/opt1/bbc.mar",
                        "report": {"sizeRatio": 0.64, "speedup": 1.42, "accuracyDrop": 0.004}},
                       separators=(",", ":"))
RUNS_UNTIL_TOLD = {"modelloop.dev/kwok-complete": "false"}
PEERING_CRDS = REPO_ROOT / "charts" / "modelloop" / "crds" / "kopf-peering.yaml"
PEERING = "ml-modelloop"
"""The chart's peering object for release ``ml`` (its full name): the only one the chart's
RBAC lets the operator write, and tests/cluster/conftest.py runs operators with the
chart's permissions."""
FROZEN = "frozen by test_faults_operator"
"""The message of our admission policy: found in the operator's log, it proves the
operator reached the refused write (and so stands in the window we kill it in)."""


# --- objects ---------------------------------------------------------------------------


def training_job(name: str, *, node: str, annotations: dict[str, str],
                 run_policy: Json | None = None) -> Json:
    return {"apiVersion": "modelloop.dev/v1alpha1", "kind": "TrainingJob",
            "metadata": {"name": name},
            "spec": {"model": {"uri": "builtin://all-minilm-l6-v2"},
                     "dataset": {"uri": "builtin://bbc-news", "maxSamples": 100},
                     "output": {"uri": "file:///models/bbc/run1"},
                     "podTemplate": {"metadata": {"annotations": annotations}},
                     "resources": SMALL, "runPolicy": run_policy or {},
                     "scheduling": {"nodeSelector": {"kubernetes.io/hostname": node}}}}


def optimization_job(name: str, *, node: str, annotations: dict[str, str]) -> Json:
    return {"apiVersion": "modelloop.dev/v1alpha1", "kind": "OptimizationJob",
            "metadata": {"name": name},
            "spec": {"source": {"modelUri": "file:///models/bbc/run1"},
                     "evaluation": {"dataset": {"uri": "builtin://bbc-news"}},
                     "techniques": [{"type": "quantization"}],
                     "packaging": {"archiveName": "bbc"},
                     "output": {"uri": "file:///models/bbc/opt1"},
                     "podTemplate": {"metadata": {"annotations": annotations}},
                     "resources": SMALL,
                     "scheduling": {"nodeSelector": {"kubernetes.io/hostname": node}}}}


def model_deployment(name: str, *, node: str, replicas: int) -> Json:
    return {"apiVersion": "modelloop.dev/v1alpha1", "kind": "ModelDeployment",
            "metadata": {"name": name},
            "spec": {"model": {"archiveUri": V1}, "replicas": replicas, "resources": SMALL,
                     "scheduling": {"nodeSelector": {"kubernetes.io/hostname": node}}}}


# --- reading the cluster ---------------------------------------------------------------


def patch(cluster: ControlPlane, namespace: str, kind: str, name: str, body: Json) -> None:
    cluster.kubectl("patch", kind, name, "-n", namespace, "--type=merge", "-p",
                    json.dumps(body))


def status(cluster: ControlPlane, namespace: str, kind: str, name: str) -> Json:
    out: Json = (get(cluster, namespace, kind, name) or {}).get("status") or {}
    return out


def names(cluster: ControlPlane, namespace: str, kind: str, label: str | None = None
          ) -> list[str]:
    selector = ["-l", label] if label else []
    listed = get(cluster, namespace, kind, *selector) or {"items": []}
    return sorted(item["metadata"]["name"] for item in listed["items"])


def jobs_of(cluster: ControlPlane, namespace: str, kind: str, name: str) -> list[str]:
    """The batch Jobs of one TrainingJob (``kind="trainingjob"``) or OptimizationJob."""
    return names(cluster, namespace, "jobs", f"modelloop.dev/{kind}={name}")


def running_pods(cluster: ControlPlane, namespace: str, label: str) -> list[str]:
    listed = get(cluster, namespace, "pods", "-l", label) or {"items": []}
    return [p["metadata"]["name"] for p in listed["items"]
            if p["status"].get("phase") == "Running" and not p["metadata"].get(
                "deletionTimestamp")]


def let_pods_complete(cluster: ControlPlane, namespace: str, label: str) -> None:
    cluster.kubectl("annotate", "pods", "-n", namespace, "-l", label, "--overwrite",
                    "modelloop.dev/kwok-complete=true")


def events(cluster: ControlPlane, namespace: str, kind: str, name: str) -> list[Json]:
    listed = get(cluster, namespace, "events", "--field-selector",
                 f"involvedObject.name={name},involvedObject.kind={kind}")
    return list((listed or {}).get("items", []))


def describe(cluster: ControlPlane, namespace: str) -> str:
    """Status of every object of the test, for failure messages."""
    out = cluster.kubectl("get", "trainingjobs,optimizationjobs,modeldeployments,jobs,"
                          "deployments,pods", "-n", namespace, "-o", "json",
                          check=False).stdout
    lines = [f"{item['kind']} {item['metadata']['name']}: "
             f"{json.dumps(item.get('status'))[:800]}"
             for item in json.loads(out or '{"items": []}')["items"]]
    return "\n".join(lines)


def wait_status(operator: RunningOperator, cluster: ControlPlane, namespace: str, kind: str,
                name: str, what: str, check: Callable[[Json], object],
                timeout: float = 60) -> Json:
    def probe() -> Json | None:
        st = status(cluster, namespace, kind, name)
        return st if st and check(st) else None
    try:
        result: Json = operator.wait_for(f"{kind} {name}: {what}", probe, timeout)
    except pytest.fail.Exception:
        print(describe(cluster, namespace))
        raise
    return result


def phase_is(phase: str) -> Callable[[Json], bool]:
    return lambda st: st.get("phase") == phase


def ready_with(replicas: int) -> Callable[[Json], bool]:
    return lambda st: st.get("phase") == "Ready" and st.get("readyReplicas") == replicas


def reconciles(metrics: str, kind: str, trigger: str | None = None) -> float:
    """The sum of ``modelloop_reconcile_total`` for ``kind`` (and ``trigger``) in a
    /metrics page: how much work an operator process has done."""
    total = 0.0
    for line in metrics.splitlines():
        if not line.startswith("modelloop_reconcile_total{"):
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
        if labels.get("kind") == kind and trigger in (None, labels.get("trigger")):
            total += float(line.rsplit(" ", 1)[1])
    return total


# --- 1. changes while the operator is down ---------------------------------------------


def test_changes_made_while_the_operator_is_down_converge_when_it_is_back(
        cluster: ControlPlane, namespace: str, kwok_node: str,
        operator: RunningOperator) -> None:
    apply(cluster, namespace, training_job("changed", node=kwok_node,
                                           annotations=RUNS_UNTIL_TOLD))
    apply(cluster, namespace, training_job("doomed", node=kwok_node,
                                           annotations=RUNS_UNTIL_TOLD))
    apply(cluster, namespace, model_deployment("scaled", node=kwok_node, replicas=2))
    for name in ("changed", "doomed"):
        wait_status(operator, cluster, namespace, "trainingjob", name, "Running",
                    phase_is("Running"))
    wait_status(operator, cluster, namespace, "modeldeployment", "scaled", "Ready with 2",
                ready_with(2))
    # kopf holds an unfinished job with our finalizer (its resync timer runs).
    operator.wait_for("the finalizer on doomed", lambda: (get(
        cluster, namespace, "trainingjob", "doomed") or {}).get("metadata", {}).get(
        "finalizers"))

    operator.stop()
    try:
        apply(cluster, namespace, training_job(
            "fresh", node=kwok_node, annotations={"modelloop.dev/kwok-delay": "0s",
                                                  "modelloop.dev/kwok-termination-message":
                                                      SUMMARY}))
        patch(cluster, namespace, "trainingjob", "changed",
              {"spec": {"runPolicy": {"suspend": True}}})
        cluster.kubectl("delete", "trainingjob", "doomed", "-n", namespace, "--wait=false")
        apply(cluster, namespace, model_deployment("new", node=kwok_node, replicas=1))
        patch(cluster, namespace, "modeldeployment", "scaled", {"spec": {"replicas": 3}})
        # Nobody handles the deletion while the operator is away: the finalizer holds it.
        doomed = get(cluster, namespace, "trainingjob", "doomed")
        assert doomed is not None and doomed["metadata"].get("deletionTimestamp")
        assert jobs_of(cluster, namespace, "trainingjob", "fresh") == []
    finally:
        operator.start()

    done = wait_status(operator, cluster, namespace, "trainingjob", "fresh", "Succeeded",
                       phase_is("Succeeded"))
    assert (done["attempts"], done["failedAttempts"]) == (1, 0)
    assert done["metrics"] == {"accuracy": 0.97}
    suspended = wait_status(operator, cluster, namespace, "trainingjob", "changed",
                            "Suspended", phase_is("Suspended"))
    assert suspended["attempts"] == 1 and condition(suspended, "Suspended")["status"] == "True"
    job = get(cluster, namespace, "job", "changed-a1")
    assert job is not None and job["spec"]["suspend"] is True
    operator.wait_for("doomed deleted", lambda: get(
        cluster, namespace, "trainingjob", "doomed") is None)
    operator.wait_for("doomed's Job garbage-collected", lambda: not jobs_of(
        cluster, namespace, "trainingjob", "doomed"))
    wait_status(operator, cluster, namespace, "modeldeployment", "new", "Ready with 1",
                ready_with(1))
    wait_status(operator, cluster, namespace, "modeldeployment", "scaled", "Ready with 3",
                ready_with(3))
    # No duplicates: one Job per TrainingJob attempt, one Deployment per ModelDeployment.
    assert names(cluster, namespace, "jobs") == ["changed-a1", "fresh-a1"]
    assert names(cluster, namespace, "deployments") == ["new", "scaled"]
    assert names(cluster, namespace, "trainingjobs") == ["changed", "fresh"]


# --- 2. a SIGKILL between creating a child and recording status ------------------------


@contextlib.contextmanager
def refused(cluster: ControlPlane, namespace: str, *, group: str, resource: str,
            operation: str, probe: Callable[[], bool],
            allowed_if: str = "false") -> Iterator[None]:
    """While inside, the API server refuses ``operation`` on ``resource`` (e.g.
    ``optimizationjobs/status``) in ``namespace`` with :data:`FROZEN`, unless the CEL
    expression ``allowed_if`` holds for the request (default: refuse every one).

    ``probe`` does a server-side dry run of such a write and says whether it was
    refused: the policy takes effect (and is lifted) asynchronously in the API server.
    """
    name = f"faults-{uuid.uuid4().hex[:8]}"
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {"failurePolicy": "Fail",
                 "matchConstraints": {"resourceRules": [{
                     "apiGroups": [group], "apiVersions": ["*"], "operations": [operation],
                     "resources": [resource]}]},
                 "validations": [{"expression": allowed_if, "message": FROZEN}]}}
    binding = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding", "metadata": {"name": name},
        "spec": {"policyName": name, "validationActions": ["Deny"],
                 "matchResources": {"namespaceSelector": {"matchLabels": {
                     "kubernetes.io/metadata.name": namespace}}}}}
    cluster.kubectl("apply", "-f", "-", input=json.dumps(
        {"apiVersion": "v1", "kind": "List", "items": [policy, binding]}))
    try:
        Poller(cluster).wait_for(f"{operation} {resource} refused", probe)
        yield
    finally:
        cluster.kubectl("delete", "validatingadmissionpolicybinding,validatingadmissionpolicy",
                        name, "--ignore-not-found", check=False)
        Poller(cluster).wait_for(f"{operation} {resource} allowed again",
                                              lambda: not probe())


@dataclass
class Poller:
    """``wait_for`` without an operator to check on (while it is down, or killed)."""

    cluster: ControlPlane

    def wait_for(self, what: str, probe: Callable[[], object], timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if probe():
                return
            self.cluster.check_alive()
            time.sleep(0.25)
        pytest.fail(f"timed out after {timeout}s waiting for {what}")


def dry_run_refused(cluster: ControlPlane, *args: str) -> bool:
    result = cluster.kubectl(*args, "--dry-run=server", check=False)
    return result.returncode != 0 and FROZEN in result.stderr


def log_text(operator: RunningOperator) -> str:
    """The operator's log so far ("" before it first started)."""
    try:
        return operator.log.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def operator_hit(operator: RunningOperator, since: int) -> Callable[[], bool]:
    """Whether the operator's log shows a refused write since character ``since``."""
    return lambda: FROZEN in log_text(operator)[since:]


def log_size(operator: RunningOperator) -> int:
    return len(log_text(operator))


@pytest.fixture
def solo(cluster: ControlPlane, operator: RunningOperator,
         tmp_path: Path) -> Iterator[RunningOperator]:
    """An operator of the test's own, not started yet, in place of the session's (stopped
    here and started again after).

    It runs with admin credentials: the API server words an admission policy's refusal
    as "... is forbidden: ValidatingAdmissionPolicy ... (422)", and the session's scan of
    operators running with the chart's RBAC for 403s would take it for a missing
    permission.
    """
    admin: dict[str, Any] = ({"kubeconfig": cluster.kubeconfig}
                             if "kubeconfig" in RunningOperator.__dataclass_fields__ else {})
    alone = RunningOperator(cluster=cluster, log=tmp_path / "operator.log", **admin)
    operator.stop()
    try:
        yield alone
    finally:
        alone.kill()
        operator.start()


def test_a_kill_around_creating_an_optimization_jobs_job_leaves_exactly_one(
        cluster: ControlPlane, namespace: str, kwok_node: str, solo: RunningOperator) -> None:
    """Both windows of the gang runner, each with a real SIGKILL: after the attempt is
    recorded but before its Job exists, then after the Job exists but before status
    says it runs. Exactly one Job ``opt-a1`` either way, and the run completes."""
    label = "modelloop.dev/optimizationjob=opt"

    def job_create_refused() -> bool:
        return dry_run_refused(cluster, "create", "job", f"probe-{uuid.uuid4().hex[:6]}",
                               "-n", namespace, "--image=busybox")

    def running_refused() -> bool:
        return dry_run_refused(cluster, "patch", "optimizationjob", "opt", "-n", namespace,
                               "--subresource=status", "--type=merge",
                               "-p", '{"status": {"phase": "Running"}}')

    solo.start()
    # Window 1: status records attempt 1, the Job's creation is refused; kill.
    with refused(cluster, namespace, group="batch", resource="jobs", operation="CREATE",
                 probe=job_create_refused):
        since = log_size(solo)
        apply(cluster, namespace, optimization_job(
            "opt", node=kwok_node,
            annotations={**RUNS_UNTIL_TOLD,
                         "modelloop.dev/kwok-termination-message": OPTIMIZED}))
        wait_status(solo, cluster, namespace, "optimizationjob", "opt", "attempt 1 recorded",
                    lambda st: st.get("attempts") == 1)
        solo.wait_for("the Job's creation refused", operator_hit(solo, since))
        solo.kill()
        assert jobs_of(cluster, namespace, "optimizationjob", "opt") == []
        blocked = status(cluster, namespace, "optimizationjob", "opt")
        progressing = condition(blocked, "Progressing")
        assert (blocked["phase"], progressing["reason"]) == ("Pending", "ChildRejected")
        assert FROZEN in progressing["message"]  # the API server's words, in status
    # Window 2: the Job is created, status cannot say it runs; kill. (Other status
    # writes pass: window 1 left the refusal's reason in status, which the restarted
    # operator clears before it creates the Job.)
    with refused(cluster, namespace, group="modelloop.dev",
                 resource="optimizationjobs/status", operation="UPDATE",
                 probe=running_refused,
                 allowed_if="!(has(object.status) && has(object.status.phase) && "
                            "object.status.phase == 'Running')"):
        since = log_size(solo)
        solo.start()
        solo.wait_for("the Job created after the restart", lambda: jobs_of(
            cluster, namespace, "optimizationjob", "opt") == ["opt-a1"])
        solo.wait_for("its pod running", lambda: running_pods(cluster, namespace, label))
        solo.wait_for("a status write refused", operator_hit(solo, since))
        solo.kill()
        st = status(cluster, namespace, "optimizationjob", "opt")
        assert (st["phase"], st["attempts"]) == ("Pending", 1)

    solo.start()
    running = wait_status(solo, cluster, namespace, "optimizationjob", "opt", "Running",
                          phase_is("Running"))
    assert (running["attempts"], running["failedAttempts"]) == (1, 0)
    assert jobs_of(cluster, namespace, "optimizationjob", "opt") == ["opt-a1"]
    let_pods_complete(cluster, namespace, label)
    done = wait_status(solo, cluster, namespace, "optimizationjob", "opt", "Succeeded",
                       phase_is("Succeeded"))
    assert (done["attempts"], done["failedAttempts"]) == (1, 0)
    assert condition(done, "Accepted")["status"] == "True"
    assert done["archiveUri"] == "file:///models/bbc/opt1/bbc.mar"
    assert jobs_of(cluster, namespace, "optimizationjob", "opt") == ["opt-a1"]


def test_a_kill_after_creating_a_model_deployments_children_leaves_exactly_one_set(
        cluster: ControlPlane, namespace: str, kwok_node: str, solo: RunningOperator) -> None:
    """The ModelDeployment applies its children, then writes status: refuse the status
    write, SIGKILL the operator there, and the restarted one adopts what exists."""
    label = "modelloop.dev/modeldeployment=bbc"

    def status_write_refused() -> bool:
        return dry_run_refused(cluster, "patch", "modeldeployment", "bbc", "-n", namespace,
                               "--subresource=status", "--type=merge",
                               "-p", '{"status": {"message": "probe"}}')

    apply(cluster, namespace, model_deployment("bbc", node=kwok_node, replicas=2))
    with refused(cluster, namespace, group="modelloop.dev",
                 resource="modeldeployments/status", operation="UPDATE",
                 probe=status_write_refused):
        since = log_size(solo)
        solo.start()
        solo.wait_for("the Deployment created", lambda: get(
            cluster, namespace, "deployment", "bbc"))
        solo.wait_for("a status write refused", operator_hit(solo, since))
        solo.kill()
        assert status(cluster, namespace, "modeldeployment", "bbc") == {}

    solo.start()
    wait_status(solo, cluster, namespace, "modeldeployment", "bbc", "Ready with 2",
                ready_with(2))
    assert names(cluster, namespace, "deployments", label) == ["bbc"]
    assert len(names(cluster, namespace, "replicasets", label)) == 1
    assert names(cluster, namespace, "configmaps", label) == ["bbc-config"]
    assert names(cluster, namespace, "services", label) == ["bbc", "bbc-metrics"]
    # Adopting its own children is not a deletion.
    assert "ChildrenDeleted" not in {
        e["reason"] for e in events(cluster, namespace, "ModelDeployment", "bbc")}


# --- 3. two replicas with kopf peering -------------------------------------------------


@dataclass
class PeeredOperator(RunningOperator):
    """An operator replica sharing the kopf peering object ``peering`` (not standalone)."""

    peering: str = ""

    @property
    def argv(self) -> list[str]:
        return [sys.executable, "-m", "modelloop_operator.cli", "--all-namespaces",
                "--peering", self.peering]

    def logged(self, text: str) -> bool:
        return text in self.log.read_text(errors="replace")


@pytest.fixture
def peering(cluster: ControlPlane) -> Iterator[str]:
    """kopf's peering CRDs (from the chart) and one ClusterKopfPeering, as the chart
    creates them for an operator watching every namespace; the object is deleted after."""
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(PEERING_CRDS))
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                    "crd/clusterkopfpeerings.kopf.dev", "crd/kopfpeerings.kopf.dev")
    cluster.kubectl("apply", "-f", "-", input=json.dumps(
        {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering",
         "metadata": {"name": PEERING}}))
    try:
        yield PEERING
    finally:
        cluster.kubectl("delete", "clusterkopfpeering", PEERING, "--ignore-not-found",
                        check=False)


def test_two_replicas_only_one_works_and_the_other_takes_over_when_it_is_killed(
        cluster: ControlPlane, namespace: str, kwok_node: str, operator: RunningOperator,
        peering: str, tmp_path: Path) -> None:
    def replica(name: str, priority: int) -> PeeredOperator:
        return PeeredOperator(cluster=cluster, log=tmp_path / f"{name}.log", peering=peering,
                              env_overrides={"MODELLOOP_PEERING_PRIORITY": str(priority),
                                             "POD_ID": name})

    quick = {"modelloop.dev/kwok-delay": "0s",
             "modelloop.dev/kwok-termination-message": SUMMARY}
    active, standby = replica("replica-a", 200), replica("replica-b", 100)
    operator.stop()
    try:
        active.start()
        active.wait_for("replica-a working", lambda: active.logged("Resuming operations"))
        standby.start()
        # kopf starts a peered replica paused; it stays so while it sees a live peer
        # with a higher priority (and says nothing about it).
        standby.wait_for("both replicas in the peering object", lambda: {
            "replica-a", "replica-b"} <= set((get(
                cluster, namespace, "clusterkopfpeering", peering) or {}).get("status") or {}))

        apply(cluster, namespace, training_job("first", node=kwok_node, annotations=quick))
        wait_status(active, cluster, namespace, "trainingjob", "first", "Succeeded",
                    phase_is("Succeeded"))
        assert reconciles(active.metrics(), "TrainingJob") > 0
        # The paused replica did nothing at all, for any kind.
        assert sum(reconciles(standby.metrics(), kind) for kind in (
            "TrainingJob", "OptimizationJob", "ModelDeployment")) == 0
        assert jobs_of(cluster, namespace, "trainingjob", "first") == ["first-a1"]
        assert not standby.logged("Resuming operations")

        # A crash: no goodbye in the peering object; the standby waits for the active
        # replica's keep-alive to expire (kopf's peering lifetime, 60 s), then works.
        active.kill()
        apply(cluster, namespace, training_job("second", node=kwok_node, annotations=quick))
        standby.wait_for("replica-b resumed", lambda: standby.logged("Resuming operations"),
                         timeout=150)
        done = wait_status(standby, cluster, namespace, "trainingjob", "second",
                           "Succeeded", phase_is("Succeeded"), timeout=60)
        assert (done["attempts"], done["failedAttempts"]) == (1, 0)
        assert reconciles(standby.metrics(), "TrainingJob") > 0
        assert jobs_of(cluster, namespace, "trainingjob", "second") == ["second-a1"]
        assert status(cluster, namespace, "trainingjob", "first")["phase"] == "Succeeded"
    finally:
        active.kill()
        standby.stop()
        operator.start()


# --- 4. children deleted by hand -------------------------------------------------------


def test_a_running_jobs_job_deleted_by_hand_is_a_failed_attempt_and_is_retried(
        cluster: ControlPlane, namespace: str, kwok_node: str,
        operator: RunningOperator) -> None:
    label = "modelloop.dev/trainingjob=victim"
    apply(cluster, namespace, training_job(
        "victim", node=kwok_node, run_policy={"backoffLimit": 1},
        annotations={**RUNS_UNTIL_TOLD, "modelloop.dev/kwok-termination-message": SUMMARY}))
    wait_status(operator, cluster, namespace, "trainingjob", "victim", "Running",
                phase_is("Running"))
    operator.wait_for("a running pod", lambda: running_pods(cluster, namespace, label))

    cluster.kubectl("delete", "job", "victim-a1", "-n", namespace)
    retried = wait_status(operator, cluster, namespace, "trainingjob", "victim",
                          "attempt 2", lambda st: st.get("attempts") == 2)
    assert (retried["failedAttempts"], retried["disruptions"]) == (1, 0)
    warnings: list[Json] = operator.wait_for("a ChildrenDeleted event", lambda: [
        e for e in events(cluster, namespace, "TrainingJob", "victim")
        if e["reason"] == "ChildrenDeleted"])
    assert warnings[0]["type"] == "Warning"
    assert "victim-a1 was deleted while it was running" in warnings[0]["message"]
    operator.wait_for("the new attempt runs, the deleted name is not reused", lambda: jobs_of(
        cluster, namespace, "trainingjob", "victim") == ["victim-a2"] and running_pods(
        cluster, namespace, label))

    # A single node needs no rendezvous Service (a gang's is recreated like its Job:
    # tests/operator/test_reconcile_trainingjob.py).
    assert get(cluster, namespace, "service", "victim") is None

    let_pods_complete(cluster, namespace, label)
    done = wait_status(operator, cluster, namespace, "trainingjob", "victim", "Succeeded",
                       phase_is("Succeeded"))
    assert (done["attempts"], done["failedAttempts"]) == (2, 1)

    # A finished job's Job deleted by hand is never recreated: wait until the operator
    # has reconciled the deletion event, then look.
    before = reconciles(operator.metrics(), "TrainingJob", "job")
    cluster.kubectl("delete", "job", "victim-a2", "-n", namespace)
    operator.wait_for("the deletion reconciled", lambda: reconciles(
        operator.metrics(), "TrainingJob", "job") > before)
    assert jobs_of(cluster, namespace, "trainingjob", "victim") == []
    assert status(cluster, namespace, "trainingjob", "victim")["phase"] == "Succeeded"


def test_a_model_deployments_children_deleted_by_hand_are_recreated_with_an_event(
        cluster: ControlPlane, namespace: str, kwok_node: str,
        operator: RunningOperator) -> None:
    apply(cluster, namespace, model_deployment("bbc", node=kwok_node, replicas=2))
    wait_status(operator, cluster, namespace, "modeldeployment", "bbc", "Ready with 2",
                ready_with(2))
    originals = {(kind, name): (get(cluster, namespace, kind, name) or {})["metadata"]["uid"]
                 for kind, name in (("deployment", "bbc"), ("service", "bbc-metrics"),
                                    ("configmap", "bbc-config"))}
    for kind, name in originals:
        cluster.kubectl("delete", kind, name, "-n", namespace)

    def recreated() -> bool:
        for (kind, name), uid in originals.items():
            now = get(cluster, namespace, kind, name)
            if now is None or now["metadata"]["uid"] == uid:
                return False
        return True
    operator.wait_for("every deleted child recreated", recreated)
    wait_status(operator, cluster, namespace, "modeldeployment", "bbc", "Ready with 2 again",
                ready_with(2))
    found = operator.wait_for("a ChildrenDeleted event", lambda: [
        e for e in events(cluster, namespace, "ModelDeployment", "bbc")
        if e["reason"] == "ChildrenDeleted"])
    assert {e["type"] for e in found} == {"Warning"}
    told = " ".join(e["message"] for e in found)
    for text in ("Deployment bbc", "Service bbc-metrics", "ConfigMap bbc-config"):
        assert text in told
    assert names(cluster, namespace, "deployments") == ["bbc"]
