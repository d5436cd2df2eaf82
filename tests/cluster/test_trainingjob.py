"""TrainingJob against a real control plane, with the operator running as a process.

kwok plays the kubelets; pod annotations in ``spec.podTemplate`` tell it what the
trainer "did" (tests/harness/README.md): stay running, complete with a termination
message, exit with a code, or be disrupted. Each test names the behaviour it proves.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.cluster.conftest import RunningOperator
from tests.cluster.objects import apply, condition, get, tainted_gpu_nodes, training_job
from tests.harness.controlplane import ControlPlane

pytestmark = pytest.mark.cluster

Json = dict[str, Any]
SUMMARY = json.dumps({"v": 1, "kind": "train", "status": "Succeeded", "exitCode": 0,
                      "message": "done", "metrics": {"accuracy": 0.97, "f1_macro": 0.96},
                      "outputUri": "s3://models/bbc/run1", "checksum": "sha256:0123",
                      "labels": ["business", "sport"]}, separators=(",", ":"))
GPU_POOL = "tj-gpu"
OWNER_LABEL = "modelloop.dev/trainingjob"


@pytest.fixture(scope="module")
def gpu_nodes(cluster: ControlPlane) -> Iterator[list[str]]:
    """Two tainted kwok nodes with 4 GPUs each, only for this module's gang."""
    with tainted_gpu_nodes(cluster, GPU_POOL) as names:
        yield names


def status(cluster: ControlPlane, namespace: str, name: str) -> Json:
    obj = get(cluster, namespace, "trainingjob", name)
    assert obj is not None, f"TrainingJob {name} is gone"
    out: Json = obj.get("status") or {}
    return out


def items(cluster: ControlPlane, namespace: str, kind: str, name: str) -> list[Json]:
    listed = get(cluster, namespace, kind, "-l", f"{OWNER_LABEL}={name}")
    return list(listed["items"]) if listed else []


def job_names(cluster: ControlPlane, namespace: str, name: str) -> list[str]:
    return sorted(j["metadata"]["name"] for j in items(cluster, namespace, "jobs", name))


def running_pods(cluster: ControlPlane, namespace: str, name: str, count: int) -> list[Json]:
    pods = [p for p in items(cluster, namespace, "pods", name)
            if p["status"].get("phase") == "Running" and not p["metadata"].get(
                "deletionTimestamp")]
    return pods if len(pods) == count else []


def let_pods_complete(cluster: ControlPlane, namespace: str, name: str) -> None:
    cluster.kubectl("annotate", "pods", "-n", namespace, "-l", f"{OWNER_LABEL}={name}",
                    "--overwrite", "modelloop.dev/kwok-complete=true")


def wait_phase(operator: RunningOperator, cluster: ControlPlane, namespace: str, name: str,
               phase: str, timeout: float = 60) -> Json:
    def probe() -> Json | None:
        st = status(cluster, namespace, name)
        return st if st.get("phase") == phase else None
    result: Json = operator.wait_for(f"TrainingJob {name} phase {phase}", probe, timeout)
    return result


def event_reasons(cluster: ControlPlane, namespace: str, name: str) -> set[str]:
    events = get(cluster, namespace, "events", "--field-selector",
                 f"involvedObject.name={name},involvedObject.kind=TrainingJob")
    return {e["reason"] for e in (events or {}).get("items", [])}


def test_two_node_gpu_gang_runs_to_success_with_metrics(
        cluster: ControlPlane, namespace: str, operator: RunningOperator,
        gpu_nodes: list[str]) -> None:
    # The pods must pass PodSecurity "restricted" as built.
    cluster.kubectl("label", "namespace", namespace,
                    "pod-security.kubernetes.io/enforce=restricted")
    cluster.kubectl("create", "secret", "generic", "s3-creds", "-n", namespace,
                    "--from-literal=AWS_ACCESS_KEY_ID=test-key")
    apply(cluster, namespace, training_job(
        "bbc", num_nodes=2, resources={"gpus": 4, "cpu": "2", "memory": "4Gi"},
        storage={"secretName": "s3-creds"},
        scheduling={"nodeSelector": {"modelloop.dev/test-pool": GPU_POOL},
                    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists",
                                     "effect": "NoSchedule"}]},
        annotations={"modelloop.dev/kwok-complete": "false",
                     "modelloop.dev/kwok-termination-message": SUMMARY}))

    running = wait_phase(operator, cluster, namespace, "bbc", "Running")
    assert running["attempts"] == 1 and condition(running, "Progressing")["status"] == "True"
    job = get(cluster, namespace, "job", "bbc-a1")
    assert job is not None
    assert (job["spec"]["completions"], job["spec"]["parallelism"]) == (2, 2)
    assert job["spec"]["completionMode"] == "Indexed" and job["spec"]["backoffLimit"] == 0
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"][:8] == [
        "torchrun", "--nnodes=2", "--node_rank=$(JOB_COMPLETION_INDEX)",
        "--nproc_per_node=4", f"--master_addr=bbc-a1-0.bbc.{namespace}.svc",
        "--master_port=29500", "-m", "modelloop_trainer.train"]
    assert "--model-uri=builtin://all-minilm-l6-v2" in container["command"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "4"
    assert "JOB_COMPLETION_INDEX" in {e["name"] for e in container["env"]}
    assert container["envFrom"] == [{"secretRef": {"name": "s3-creds"}}]
    assert "test-key" not in json.dumps(job)  # a reference, never the value
    assert job["metadata"]["ownerReferences"][0]["kind"] == "TrainingJob"
    service = get(cluster, namespace, "service", "bbc")
    assert service is not None
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is True
    pods = operator.wait_for("2 running pods",
                             lambda: running_pods(cluster, namespace, "bbc", 2))
    assert sorted(p["spec"]["nodeName"] for p in pods) == gpu_nodes  # one rank per node
    assert {p["spec"]["subdomain"] for p in pods} == {"bbc"}

    let_pods_complete(cluster, namespace, "bbc")
    done = wait_phase(operator, cluster, namespace, "bbc", "Succeeded")
    assert done["metrics"] == {"accuracy": 0.97, "f1_macro": 0.96}
    assert done["model"] == {"uri": "s3://models/bbc/run1", "checksum": "sha256:0123"}
    assert done["labels"] == ["business", "sport"]
    assert done["lineage"]["dataset"] == "builtin://bbc-news"
    assert done["completionTime"] and done["startTime"]
    assert condition(done, "Succeeded")["status"] == "True"
    assert condition(done, "Ready")["status"] == "True"
    assert done["observedGeneration"] == 1
    # The rendezvous is over: the Service goes, the Job stays for its logs.
    operator.wait_for("Service deleted", lambda: get(cluster, namespace, "service", "bbc")
                      is None)
    assert job_names(cluster, namespace, "bbc") == ["bbc-a1"]
    operator.wait_for("events Created/Running/Succeeded", lambda: event_reasons(
        cluster, namespace, "bbc") >= {"Created", "Running", "Succeeded"})
    assert 'modelloop_reconcile_total{kind="TrainingJob"' in operator.metrics()
    # kopf's finalizer exists only while the resync timer runs (an unfinished job).
    operator.wait_for("the finalizer released", lambda: not (get(
        cluster, namespace, "trainingjob", "bbc") or {}).get("metadata", {}).get("finalizers"))


def test_failed_attempts_are_retried_as_whole_gangs_then_fail_with_the_exit_code(
        cluster: ControlPlane, namespace: str, operator: RunningOperator,
        kwok_node: str) -> None:
    apply(cluster, namespace, training_job(
        "flaky", num_nodes=2, node=kwok_node, run_policy={"backoffLimit": 1},
        annotations={"modelloop.dev/kwok-fault": "exit1", "modelloop.dev/kwok-delay": "0s",
                     "modelloop.dev/kwok-exit-code": "1"}))
    failed = wait_phase(operator, cluster, namespace, "flaky", "Failed")
    assert (failed["attempts"], failed["failedAttempts"], failed["disruptions"]) == (2, 2, 0)
    assert condition(failed, "Failed")["reason"] == "BackoffLimitExceeded"
    assert "exit code 1" in failed["message"]
    # The first attempt's Job was replaced; the last one stays for its logs.
    operator.wait_for("only the last attempt's Job", lambda: job_names(
        cluster, namespace, "flaky") == ["flaky-a2"])
    assert {"Retrying", "BackoffLimitExceeded"} <= event_reasons(cluster, namespace, "flaky")


def test_a_missed_evaluation_gate_is_not_retried(
        cluster: ControlPlane, namespace: str, operator: RunningOperator,
        kwok_node: str) -> None:
    apply(cluster, namespace, training_job(
        "gate", node=kwok_node, run_policy={"backoffLimit": 3},
        annotations={"modelloop.dev/kwok-fault": "exit1", "modelloop.dev/kwok-delay": "0s",
                     "modelloop.dev/kwok-exit-code": "3"}))
    failed = wait_phase(operator, cluster, namespace, "gate", "Failed")
    assert condition(failed, "Failed")["reason"] == "EvaluationGateMissed"
    assert (failed["attempts"], failed["failedAttempts"]) == (1, 0)


def test_a_disrupted_pod_restarts_the_gang_without_consuming_an_attempt(
        cluster: ControlPlane, namespace: str, operator: RunningOperator,
        kwok_node: str) -> None:
    apply(cluster, namespace, training_job(
        "preempted", num_nodes=2, node=kwok_node, run_policy={"backoffLimit": 0},
        annotations={"modelloop.dev/kwok-complete": "false",
                     "modelloop.dev/kwok-termination-message": SUMMARY}))
    wait_phase(operator, cluster, namespace, "preempted", "Running")
    pods = operator.wait_for("2 running pods",
                             lambda: running_pods(cluster, namespace, "preempted", 2))
    victim = pods[0]["metadata"]["name"]
    cluster.kubectl("annotate", "pod", "-n", namespace, victim,
                    "modelloop.dev/kwok-fault=disrupted")

    def restarted() -> Json | None:
        st = status(cluster, namespace, "preempted")
        return st if st.get("attempts") == 2 else None
    st = operator.wait_for("a second attempt", restarted)
    assert (st["failedAttempts"], st["disruptions"]) == (0, 1)
    operator.wait_for("the new gang", lambda: job_names(
        cluster, namespace, "preempted") == ["preempted-a2"] and running_pods(
        cluster, namespace, "preempted", 2))
    let_pods_complete(cluster, namespace, "preempted")
    done = wait_phase(operator, cluster, namespace, "preempted", "Succeeded")
    assert (done["attempts"], done["failedAttempts"], done["disruptions"]) == (2, 0, 1)
    assert "Disrupted" in event_reasons(cluster, namespace, "preempted")


def test_active_deadline_fails_the_job_and_stops_its_pods(
        cluster: ControlPlane, namespace: str, operator: RunningOperator,
        kwok_node: str) -> None:
    apply(cluster, namespace, training_job(
        "slow", node=kwok_node, run_policy={"activeDeadlineSeconds": 3},
        annotations={"modelloop.dev/kwok-complete": "false"}))
    failed = wait_phase(operator, cluster, namespace, "slow", "Failed", timeout=30)
    assert condition(failed, "Failed")["reason"] == "DeadlineExceeded"
    operator.wait_for("the Job deleted", lambda: not job_names(cluster, namespace, "slow"))


def test_suspend_stops_the_pods_and_resume_continues_the_same_attempt(
        cluster: ControlPlane, namespace: str, operator: RunningOperator,
        kwok_node: str) -> None:
    apply(cluster, namespace, training_job(
        "pausable", node=kwok_node, annotations={"modelloop.dev/kwok-complete": "false"}))
    wait_phase(operator, cluster, namespace, "pausable", "Running")

    def set_suspend(value: bool) -> None:
        cluster.kubectl("patch", "trainingjob", "pausable", "-n", namespace, "--type=merge",
                        "-p", json.dumps({"spec": {"runPolicy": {"suspend": value}}}))

    set_suspend(True)
    suspended = wait_phase(operator, cluster, namespace, "pausable", "Suspended")
    assert condition(suspended, "Suspended")["status"] == "True"
    job = get(cluster, namespace, "job", "pausable-a1")
    assert job is not None and job["spec"]["suspend"] is True
    operator.wait_for("no pods while suspended", lambda: not running_pods(
        cluster, namespace, "pausable", 1))

    set_suspend(False)
    resumed = wait_phase(operator, cluster, namespace, "pausable", "Running")
    assert resumed["attempts"] == 1
    operator.wait_for("a running pod again",
                      lambda: running_pods(cluster, namespace, "pausable", 1))
    let_pods_complete(cluster, namespace, "pausable")
    done = wait_phase(operator, cluster, namespace, "pausable", "Succeeded")
    assert (done["attempts"], done["failedAttempts"]) == (1, 0)


def test_ttl_deletes_children_and_the_finished_job_is_never_recreated(
        cluster: ControlPlane, namespace: str, operator: RunningOperator,
        kwok_node: str) -> None:
    apply(cluster, namespace, training_job(
        "shortlived", node=kwok_node, run_policy={"ttlSecondsAfterFinished": 1},
        annotations={"modelloop.dev/kwok-delay": "0s",
                     "modelloop.dev/kwok-termination-message": SUMMARY}))
    wait_phase(operator, cluster, namespace, "shortlived", "Succeeded")
    operator.wait_for("the Job deleted after its TTL", lambda: not job_names(
        cluster, namespace, "shortlived"))
    assert get(cluster, namespace, "service", "shortlived") is None
    time.sleep(3)  # several resyncs and the Job's DELETED event: nothing may come back
    assert job_names(cluster, namespace, "shortlived") == []
    st = status(cluster, namespace, "shortlived")
    assert st["phase"] == "Succeeded" and st["metrics"]["accuracy"] == 0.97


def test_deleting_a_running_job_garbage_collects_its_children(
        cluster: ControlPlane, namespace: str, operator: RunningOperator,
        kwok_node: str) -> None:
    apply(cluster, namespace, training_job(
        "doomed", node=kwok_node, annotations={"modelloop.dev/kwok-complete": "false"}))
    wait_phase(operator, cluster, namespace, "doomed", "Running")
    operator.wait_for("a running pod", lambda: running_pods(cluster, namespace, "doomed", 1))
    cluster.kubectl("delete", "trainingjob", "doomed", "-n", namespace, "--timeout=60s")
    for kind in ("jobs", "services", "pods"):
        def gone(kind: str = kind) -> bool:
            return not items(cluster, namespace, kind, "doomed")
        operator.wait_for(f"{kind} garbage-collected", gone)


def test_an_operator_crash_mid_job_neither_duplicates_the_job_nor_loses_it(
        cluster: ControlPlane, namespace: str, operator: RunningOperator,
        kwok_node: str) -> None:
    apply(cluster, namespace, training_job(
        "durable", node=kwok_node,
        annotations={"modelloop.dev/kwok-complete": "false",
                     "modelloop.dev/kwok-termination-message": SUMMARY}))
    wait_phase(operator, cluster, namespace, "durable", "Running")
    operator.wait_for("a running pod", lambda: running_pods(cluster, namespace, "durable", 1))
    operator.kill()
    # The job finishes while nobody watches.
    let_pods_complete(cluster, namespace, "durable")
    operator.start()
    done = wait_phase(operator, cluster, namespace, "durable", "Succeeded")
    assert (done["attempts"], done["failedAttempts"]) == (1, 0)
    assert done["metrics"]["accuracy"] == 0.97
    assert job_names(cluster, namespace, "durable") == ["durable-a1"]
