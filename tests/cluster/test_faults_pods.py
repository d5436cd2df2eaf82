"""Pod faults against a real control plane: each one must reach the job's conditions with
the right reason and the right retry accounting (docs/operations.md, "Troubleshooting by
condition reason").

kwok plays the kubelets (tests/harness/README.md): exit codes, OOMKilled and image pull
failures come from its fault stages; scheduling, preemption and eviction are the real
kube-scheduler and API server. What test_trainingjob.py already proves (a 2-node gang
failing with exit code 1 until BackoffLimitExceeded, the gate, a kwok-simulated
preemption) is not repeated here.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.cluster.conftest import RunningOperator
from tests.cluster.objects import apply, condition, get, tainted_gpu_nodes, training_job
from tests.harness.controlplane import ControlPlane, KubectlError

pytestmark = pytest.mark.cluster

Json = dict[str, Any]
TJ_LABEL = "modelloop.dev/trainingjob"
OJ_LABEL = "modelloop.dev/optimizationjob"
SUMMARY = json.dumps({"v": 1, "kind": "train", "status": "Succeeded", "exitCode": 0,
                      "message": "done", "metrics": {"accuracy": 0.97},
                      "outputUri": "s3://models/bbc/run1", "checksum": "sha256:0123"},
                     separators=(",", ":"))
BAD_IMAGE = "registry.invalid/modelloop/trainer:no-such-tag"
POOL = "faults-gpu"
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
SMALL = {"cpu": "100m", "memory": "128Mi"}


@pytest.fixture(scope="module")
def gpu_pool(cluster: ControlPlane) -> Iterator[list[str]]:
    """Two tainted kwok nodes with 4 GPUs each, only for this module's tests."""
    with tainted_gpu_nodes(cluster, POOL) as names:
        yield names


def pool_scheduling() -> Json:
    return {"nodeSelector": {"modelloop.dev/test-pool": POOL}, "tolerations": [GPU_TOLERATION]}


def optimization_job(name: str, *, annotations: dict[str, str], node: str,
                     run_policy: Json | None = None, **spec: Any) -> Json:
    return {"apiVersion": "modelloop.dev/v1alpha1", "kind": "OptimizationJob",
            "metadata": {"name": name},
            "spec": {"source": {"modelUri": "file:///models/bbc/run1"},
                     "evaluation": {"dataset": {"uri": "builtin://bbc-news"}},
                     "techniques": [{"type": "quantization"}],
                     "output": {"uri": "file:///models/bbc/opt1"},
                     "podTemplate": {"metadata": {"annotations": annotations}},
                     "resources": SMALL, "runPolicy": run_policy or {},
                     "scheduling": {"nodeSelector": {"kubernetes.io/hostname": node}},
                     **spec}}


def status(cluster: ControlPlane, namespace: str, name: str, kind: str = "trainingjob") -> Json:
    obj = get(cluster, namespace, kind, name)
    assert obj is not None, f"{kind} {name} is gone"
    out: Json = obj.get("status") or {}
    return out


def pods(cluster: ControlPlane, namespace: str, name: str, label: str = TJ_LABEL) -> list[Json]:
    listed = get(cluster, namespace, "pods", "-l", f"{label}={name}")
    return list(listed["items"]) if listed else []


def job_names(cluster: ControlPlane, namespace: str, name: str,
              label: str = TJ_LABEL) -> list[str]:
    listed = get(cluster, namespace, "jobs", "-l", f"{label}={name}")
    return sorted(j["metadata"]["name"] for j in (listed or {}).get("items", []))


def running_pods(cluster: ControlPlane, namespace: str, name: str, count: int,
                 attempt: int) -> list[Json]:
    found = [p for p in pods(cluster, namespace, name)
             if p["status"].get("phase") == "Running"
             and not p["metadata"].get("deletionTimestamp")
             and p["metadata"]["labels"].get("modelloop.dev/attempt") == str(attempt)]
    return sorted(found, key=lambda p: p["metadata"]["name"]) if len(found) == count else []


def let_pods_complete(cluster: ControlPlane, namespace: str, name: str) -> None:
    cluster.kubectl("annotate", "pods", "-n", namespace, "-l", f"{TJ_LABEL}={name}",
                    "--overwrite", "modelloop.dev/kwok-complete=true")


def event_reasons(cluster: ControlPlane, namespace: str, name: str,
                  kind: str = "TrainingJob") -> set[str]:
    events = get(cluster, namespace, "events", "--field-selector",
                 f"involvedObject.name={name},involvedObject.kind={kind}")
    return {e["reason"] for e in (events or {}).get("items", [])}


def event_messages(cluster: ControlPlane, namespace: str, name: str, reason: str,
                   kind: str = "TrainingJob") -> list[str]:
    """Messages of the object's events with ``reason``: a transition's record, which stays
    after status has moved on (a new attempt may be Running before a poll sees Retrying)."""
    events = get(cluster, namespace, "events", "--field-selector",
                 f"involvedObject.name={name},involvedObject.kind={kind},reason={reason}")
    return [str(e.get("message", "")) for e in (events or {}).get("items", [])]


def wait_status(operator: RunningOperator, cluster: ControlPlane, namespace: str, name: str,
                what: str, check: Callable[[Json], bool], kind: str = "trainingjob",
                timeout: float = 60) -> Json:
    def probe() -> Json | None:
        st = status(cluster, namespace, name, kind)
        return st if check(st) else None
    result: Json = operator.wait_for(f"{kind} {name}: {what}", probe, timeout)
    return result


def reason_is(type_: str, reason: str) -> Callable[[Json], bool]:
    return lambda st: condition(st, type_).get("reason") == reason


# --- exit codes -------------------------------------------------------------------------


def test_exit_code_1_uses_an_attempt_and_the_next_attempt_runs_to_success(
        cluster: ControlPlane, namespace: str, operator: RunningOperator,
        kwok_node: str) -> None:
    apply(cluster, namespace, training_job(
        "crash", node=kwok_node, run_policy={"backoffLimit": 2},
        annotations={"modelloop.dev/kwok-complete": "false",
                     "modelloop.dev/kwok-termination-message": SUMMARY}))
    victim = operator.wait_for("attempt 1 running", lambda: running_pods(
        cluster, namespace, "crash", 1, attempt=1))[0]["metadata"]["name"]
    # Only this pod crashes: the next attempt's pods come from the unchanged template.
    cluster.kubectl("annotate", "pod", "-n", namespace, victim,
                    "modelloop.dev/kwok-fault=exit1", "modelloop.dev/kwok-delay=0s")

    retrying = wait_status(operator, cluster, namespace, "crash", "attempt 2",
                           lambda st: st.get("attempts") == 2)
    assert (retrying["failedAttempts"], retrying["disruptions"]) == (1, 0)
    [message] = operator.wait_for("a Retrying event", lambda: event_messages(
        cluster, namespace, "crash", "Retrying"))
    assert f"pod {victim} ended with exit code 1 (Error)" in message
    assert "1 of 2 retries used" in message

    operator.wait_for("attempt 2 running", lambda: running_pods(
        cluster, namespace, "crash", 1, attempt=2))
    let_pods_complete(cluster, namespace, "crash")
    done = wait_status(operator, cluster, namespace, "crash", "Succeeded",
                       lambda st: st.get("phase") == "Succeeded")
    assert (done["attempts"], done["failedAttempts"], done["disruptions"]) == (2, 1, 0)
    assert done["metrics"] == {"accuracy": 0.97}


def test_oom_kills_are_retried_and_a_spent_budget_fails_with_reason_oomkilled(
        cluster: ControlPlane, namespace: str, operator: RunningOperator,
        kwok_node: str) -> None:
    apply(cluster, namespace, training_job(
        "hungry", node=kwok_node, run_policy={"backoffLimit": 1},
        annotations={"modelloop.dev/kwok-fault": "oomkilled", "modelloop.dev/kwok-delay": "0s"}))
    failed = wait_status(operator, cluster, namespace, "hungry", "Failed",
                         lambda st: st.get("phase") == "Failed")
    # Both attempts ran and each used one unit of the budget.
    assert (failed["attempts"], failed["failedAttempts"], failed["disruptions"]) == (2, 2, 0)
    assert condition(failed, "Failed")["reason"] == "OOMKilled"
    assert condition(failed, "Ready")["reason"] == "OOMKilled"
    assert "exit code 137 (OOMKilled)" in failed["message"]
    assert "raise resources.memory" in failed["message"]
    operator.wait_for("events Retrying and OOMKilled", lambda: event_reasons(
        cluster, namespace, "hungry") >= {"Retrying", "OOMKilled"})


def test_an_oom_killed_optimization_job_fails_with_reason_oomkilled(
        cluster: ControlPlane, namespace: str, operator: RunningOperator,
        kwok_node: str) -> None:
    apply(cluster, namespace, optimization_job(
        "int8", node=kwok_node, run_policy={"backoffLimit": 0},
        annotations={"modelloop.dev/kwok-fault": "oomkilled", "modelloop.dev/kwok-delay": "0s"}))
    failed = wait_status(operator, cluster, namespace, "int8", "Failed",
                         lambda st: st.get("phase") == "Failed", kind="optimizationjob")
    assert (failed["attempts"], failed["failedAttempts"]) == (1, 1)
    assert condition(failed, "Failed")["reason"] == "OOMKilled"
    assert "exit code 137 (OOMKilled)" in failed["message"]


# --- preemption and eviction (DisruptionTarget: no attempt used) ------------------------


def evict(cluster: ControlPlane, namespace: str, pod: str) -> None:
    """What `kubectl drain` does for each pod: a policy/v1 Eviction."""
    body = {"apiVersion": "policy/v1", "kind": "Eviction",
            "metadata": {"name": pod, "namespace": namespace}}
    cluster.kubectl("create", "--raw", f"/api/v1/namespaces/{namespace}/pods/{pod}/eviction",
                    "-f", "-", input=json.dumps(body))


def test_an_eviction_through_the_eviction_api_restarts_the_gang_without_using_an_attempt(
        cluster: ControlPlane, namespace: str, operator: RunningOperator,
        kwok_node: str) -> None:
    apply(cluster, namespace, training_job(
        "drained", num_nodes=2, node=kwok_node, run_policy={"backoffLimit": 0},
        annotations={"modelloop.dev/kwok-complete": "false",
                     "modelloop.dev/kwok-termination-message": SUMMARY}))
    gang = operator.wait_for("attempt 1 running", lambda: running_pods(
        cluster, namespace, "drained", 2, attempt=1))
    victim = gang[0]["metadata"]["name"]
    evict(cluster, namespace, victim)

    restarted = wait_status(operator, cluster, namespace, "drained", "attempt 2",
                            lambda st: st.get("attempts") == 2)
    # backoffLimit 0: had the eviction used an attempt, the job would have failed.
    assert (restarted["failedAttempts"], restarted["disruptions"]) == (0, 1)
    [message] = operator.wait_for("a Disrupted event", lambda: event_messages(
        cluster, namespace, "drained", "Disrupted"))
    assert f"{victim}: evicted through the Eviction API" in message
    operator.wait_for("attempt 2 running", lambda: running_pods(
        cluster, namespace, "drained", 2, attempt=2))
    let_pods_complete(cluster, namespace, "drained")
    done = wait_status(operator, cluster, namespace, "drained", "Succeeded",
                       lambda st: st.get("phase") == "Succeeded")
    assert (done["attempts"], done["failedAttempts"], done["disruptions"]) == (2, 0, 1)


def test_preemption_by_the_scheduler_restarts_the_gang_which_waits_unschedulable_for_gpus(
        cluster: ControlPlane, namespace: str, operator: RunningOperator,
        gpu_pool: list[str]) -> None:
    """The real scheduler preempts a rank for a higher-priority pod; the restarted gang
    cannot fit (the preemptor holds one node's GPUs) and says so, then runs once the
    GPUs are back."""
    priority = f"faults-urgent-{namespace}"
    cluster.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
        "metadata": {"name": priority}, "value": 1_000_000}))
    try:
        apply(cluster, namespace, training_job(
            "bumped", num_nodes=2, run_policy={"backoffLimit": 0},
            resources={"gpus": 4, **SMALL}, scheduling=pool_scheduling(),
            annotations={"modelloop.dev/kwok-complete": "false",
                         "modelloop.dev/kwok-termination-message": SUMMARY}))
        gang = operator.wait_for("attempt 1 running", lambda: running_pods(
            cluster, namespace, "bumped", 2, attempt=1))
        target = gpu_pool[0]
        victim = next(p["metadata"]["name"] for p in gang if p["spec"]["nodeName"] == target)
        # A pod that needs all of one node's GPUs and outranks the training job.
        apply(cluster, namespace, {
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "urgent"},
            "spec": {"priorityClassName": priority,
                     "nodeSelector": {"kubernetes.io/hostname": target},
                     "tolerations": [GPU_TOLERATION],
                     "containers": [{"name": "main", "image": "example.invalid/urgent:1",
                                     "resources": {"requests": SMALL, "limits": {
                                         **SMALL, "nvidia.com/gpu": "4"}}}]}})

        restarted = wait_status(operator, cluster, namespace, "bumped", "attempt 2",
                                lambda st: st.get("attempts") == 2)
        assert (restarted["failedAttempts"], restarted["disruptions"]) == (0, 1)
        [message] = operator.wait_for("a Disrupted event", lambda: event_messages(
            cluster, namespace, "bumped", "Disrupted"))
        assert f"{victim}: preempted by the scheduler for a higher-priority pod" in message
        operator.wait_for("the preemptor running", lambda: (get(
            cluster, namespace, "pod", "urgent") or {}).get("status", {}).get(
            "phase") == "Running")

        # Attempt 2 needs both nodes' GPUs; one node's are taken: the scheduler's words.
        stuck = wait_status(operator, cluster, namespace, "bumped", "Unschedulable",
                            reason_is("Progressing", "Unschedulable"))
        assert stuck["phase"] == "Pending" and stuck["attempts"] == 2
        assert "cannot be scheduled" in stuck["message"]
        assert "Insufficient nvidia.com/gpu" in stuck["message"]
        assert condition(stuck, "Ready")["reason"] == "Unschedulable"

        cluster.kubectl("delete", "pod", "urgent", "-n", namespace, "--wait=true")
        operator.wait_for("attempt 2 running", lambda: running_pods(
            cluster, namespace, "bumped", 2, attempt=2), timeout=90)
        running = wait_status(operator, cluster, namespace, "bumped", "Running",
                              lambda st: st.get("phase") == "Running")
        assert condition(running, "Progressing")["reason"] == "Running"
        let_pods_complete(cluster, namespace, "bumped")
        done = wait_status(operator, cluster, namespace, "bumped", "Succeeded",
                           lambda st: st.get("phase") == "Succeeded")
        assert (done["attempts"], done["failedAttempts"], done["disruptions"]) == (2, 0, 1)
    finally:
        cluster.kubectl("delete", "pod", "urgent", "-n", namespace, "--ignore-not-found",
                        "--wait=false")
        cluster.kubectl("delete", "priorityclass", priority, "--ignore-not-found")


# --- pods that never start --------------------------------------------------------------


def test_more_gpus_than_any_node_has_shows_the_schedulers_reason_and_recreating_recovers(
        cluster: ControlPlane, namespace: str, operator: RunningOperator,
        kwok_node: str) -> None:
    greedy = training_job("greedy", node=kwok_node, resources={"gpus": 64},
                          annotations={"modelloop.dev/kwok-termination-message": SUMMARY})
    apply(cluster, namespace, greedy)
    stuck = wait_status(operator, cluster, namespace, "greedy", "Unschedulable",
                        reason_is("Progressing", "Unschedulable"))
    assert stuck["phase"] == "Pending"
    assert (stuck["attempts"], stuck["failedAttempts"]) == (1, 0)
    assert "Insufficient nvidia.com/gpu" in stuck["message"]
    assert "delete and recreate" in stuck["message"]
    assert condition(stuck, "Progressing")["status"] == "True"
    assert condition(stuck, "Ready")["status"] == "False"
    assert job_names(cluster, namespace, "greedy") == ["greedy-a1"]

    # resources are immutable (a TrainingJob records one run): the API server says so.
    with pytest.raises(KubectlError, match="immutable"):
        cluster.kubectl("patch", "trainingjob", "greedy", "-n", namespace, "--type=merge",
                        "-p", json.dumps({"spec": {"resources": {"gpus": 1}}}))

    # The documented recovery: delete and create it again with a request that fits.
    cluster.kubectl("delete", "trainingjob", "greedy", "-n", namespace, "--timeout=60s")
    # The garbage collector removes the old children in the background; a new object of
    # the same name must not find them (it would not adopt them: ChildConflict).
    operator.wait_for("the old Job and Service gone", lambda: not job_names(
        cluster, namespace, "greedy") and get(cluster, namespace, "service", "greedy") is None)
    greedy["spec"]["resources"] = {"gpus": 1}
    apply(cluster, namespace, greedy)
    done = wait_status(operator, cluster, namespace, "greedy", "Succeeded",
                       lambda st: st.get("phase") == "Succeeded")
    assert (done["attempts"], done["failedAttempts"]) == (1, 0)
    assert done["metrics"] == {"accuracy": 0.97}


@pytest.fixture
def restore_operator(operator: RunningOperator) -> Iterator[RunningOperator]:
    """Gives the test the session's operator, and restarts it with its original settings
    afterwards if the test changed them."""
    saved = dict(operator.env_overrides)
    yield operator
    if operator.env_overrides != saved:
        operator.env_overrides.clear()
        operator.env_overrides.update(saved)
        operator.restart()


def test_an_image_that_cannot_be_pulled_is_named_then_fails_the_job_after_the_grace(
        cluster: ControlPlane, namespace: str, restore_operator: RunningOperator,
        kwok_node: str) -> None:
    operator = restore_operator
    apply(cluster, namespace, training_job(
        "typo", node=kwok_node, image=BAD_IMAGE, run_policy={"backoffLimit": 3},
        annotations={"modelloop.dev/kwok-fault": "imagepull"}))
    # Within the grace (300 s by default): Pending, saying which image and why.
    pending = wait_status(operator, cluster, namespace, "typo", "ImagePullFailed (Pending)",
                          reason_is("Progressing", "ImagePullFailed"))
    assert pending["phase"] == "Pending"
    assert (pending["attempts"], pending["failedAttempts"]) == (1, 0)
    assert BAD_IMAGE in pending["message"]
    assert "ErrImagePull" in pending["message"] or "ImagePullBackOff" in pending["message"]
    assert "kubelet keeps retrying" in pending["message"]
    assert job_names(cluster, namespace, "typo") == ["typo-a1"]

    # The same pod past a (shortened) grace: terminal, not retried, the Job stopped.
    operator.env_overrides["MODELLOOP_IMAGE_PULL_GRACE_SECONDS"] = "1"
    operator.restart()
    failed = wait_status(operator, cluster, namespace, "typo", "Failed",
                         lambda st: st.get("phase") == "Failed")
    assert condition(failed, "Failed")["reason"] == "ImagePullFailed"
    assert (failed["attempts"], failed["failedAttempts"]) == (1, 0)
    assert BAD_IMAGE in failed["message"] and "not retried" in failed["message"]
    operator.wait_for("the Job deleted", lambda: not job_names(cluster, namespace, "typo"))
    operator.wait_for("a Warning event ImagePullFailed", lambda: "ImagePullFailed" in
                      event_reasons(cluster, namespace, "typo"))


def test_an_optimization_job_names_an_image_it_cannot_pull(
        cluster: ControlPlane, namespace: str, operator: RunningOperator,
        kwok_node: str) -> None:
    apply(cluster, namespace, optimization_job(
        "int8-typo", node=kwok_node, image=BAD_IMAGE,
        annotations={"modelloop.dev/kwok-fault": "imagepull"}))
    pending = wait_status(operator, cluster, namespace, "int8-typo", "ImagePullFailed",
                          reason_is("Progressing", "ImagePullFailed"), kind="optimizationjob")
    assert pending["phase"] == "Pending" and pending["failedAttempts"] == 0
    assert BAD_IMAGE in pending["message"]
    assert job_names(cluster, namespace, "int8-typo", label=OJ_LABEL) == ["int8-typo-a1"]
