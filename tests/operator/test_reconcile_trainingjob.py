"""The TrainingJob reconcile end to end over an in-memory API: what it writes, in which
order, and what it never does (recreate children after the end)."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from modelloop_operator.config import OperatorConfig
from modelloop_operator.errors import KubeError, WaitingError
from modelloop_operator.kube import JOBS, PODS, SERVICES
from modelloop_operator.metrics import OperatorMetrics
from modelloop_operator.reconcilers.gangjob import pods_matter
from modelloop_operator.reconcilers.runtime import Runtime
from modelloop_operator.reconcilers.trainingjob import TRAINING_JOBS, reconcile_training_job

from .k8s_objects import pod
from .memory_kube import MemoryKube

NS = "team-a"
SUMMARY = json.dumps({"status": "Succeeded", "exitCode": 0, "metrics": {"accuracy": 0.9},
                      "outputUri": "pvc://models/out", "checksum": "sha256:1"})


@pytest.fixture
def kube() -> MemoryKube:
    return MemoryKube()


@pytest.fixture
def runtime(kube: MemoryKube) -> Runtime:
    return Runtime(config=OperatorConfig(), kube=kube, metrics=OperatorMetrics())


def create(kube: MemoryKube, *, name: str = "bbc", spec: dict[str, Any] | None = None
           ) -> None:
    body = {"model": {"uri": "builtin://all-minilm-l6-v2"},
            "dataset": {"uri": "builtin://bbc-news"},
            "output": {"uri": "pvc://models/out"}, "numNodes": 2, **(spec or {})}
    kube.put(TRAINING_JOBS, {"apiVersion": "modelloop.dev/v1alpha1", "kind": "TrainingJob",
                             "metadata": {"name": name, "namespace": NS, "generation": 1},
                             "spec": body})


def status(kube: MemoryKube, name: str = "bbc") -> dict[str, Any]:
    obj = kube.stored(TRAINING_JOBS, NS, name)
    assert obj is not None
    out: dict[str, Any] = obj.get("status", {})
    return out


def finish_job(kube: MemoryKube, job: str, *, ok: bool, exit_code: int = 1,
               message: str | None = None) -> None:
    """Play the Job controller and kubelet: the Job ends, its pods with it."""
    stored = kube.stored(JOBS, NS, job)
    assert stored is not None
    kind = "Complete" if ok else "Failed"
    stored["status"] = {"conditions": [{"type": kind, "status": "True"}]}
    attempt = stored["metadata"]["labels"]["modelloop.dev/attempt"]
    for index in range(stored["spec"]["completions"]):
        p = pod(index=index, phase="Succeeded" if ok else "Failed",
                exit_code=0 if ok else exit_code, message=message, job_name=job)
        p["metadata"].update(namespace=NS, labels=dict(
            stored["spec"]["template"]["metadata"]["labels"],
            **{"modelloop.dev/attempt": attempt}))
        kube.put(PODS, p)


async def reconcile(runtime: Runtime, name: str = "bbc") -> None:
    await reconcile_training_job(runtime=runtime, namespace=NS, name=name, trigger="test")


async def test_first_reconcile_records_attempt_one_then_creates_service_and_job(
        runtime: Runtime, kube: MemoryKube) -> None:
    create(kube)
    await reconcile(runtime)
    assert kube.writes == [("patch/status", "trainingjobs", "bbc"),
                           ("apply", "services", "bbc"), ("apply", "jobs", "bbc-a1")]
    assert status(kube)["attempts"] == 1 and status(kube)["phase"] == "Pending"
    assert kube.events == [("Normal", "Created")]


async def test_reconciling_an_unchanged_job_writes_no_status(runtime: Runtime,
                                                             kube: MemoryKube) -> None:
    create(kube)
    await reconcile(runtime)
    kube.writes.clear()
    await reconcile(runtime)
    # Unchanged children are not rewritten either.
    assert kube.writes == []


async def test_a_failed_attempt_is_recorded_before_the_next_job_exists(
        runtime: Runtime, kube: MemoryKube) -> None:
    create(kube, spec={"runPolicy": {"backoffLimit": 1}})
    await reconcile(runtime)
    finish_job(kube, "bbc-a1", ok=False, exit_code=137)
    kube.writes.clear()
    await reconcile(runtime)
    assert kube.writes.index(("patch/status", "trainingjobs", "bbc")) < kube.writes.index(
        ("apply", "jobs", "bbc-a2"))
    assert ("delete", "jobs", "bbc-a1") in kube.writes
    assert (status(kube)["attempts"], status(kube)["failedAttempts"]) == (2, 1)
    assert ("Warning", "Retrying") in kube.events


async def test_an_older_attempt_left_behind_is_deleted_when_the_job_ends(
        runtime: Runtime, kube: MemoryKube) -> None:
    create(kube, spec={"runPolicy": {"backoffLimit": 1}})
    await reconcile(runtime)
    finish_job(kube, "bbc-a1", ok=False, exit_code=1)
    leftover = copy.deepcopy(kube.objects[("jobs", NS, "bbc-a1")])
    await reconcile(runtime)
    # A crash between recording attempt 2 and deleting attempt 1 leaves it behind.
    kube.objects[("jobs", NS, "bbc-a1")] = leftover
    finish_job(kube, "bbc-a2", ok=True, message=SUMMARY)
    await reconcile(runtime)
    assert status(kube)["phase"] == "Succeeded"
    assert kube.stored(JOBS, NS, "bbc-a1") is None
    assert kube.stored(JOBS, NS, "bbc-a2") is not None


async def test_the_end_is_sticky_even_when_the_children_vanish(
        runtime: Runtime, kube: MemoryKube) -> None:
    create(kube, spec={"runPolicy": {"ttlSecondsAfterFinished": 60}})
    await reconcile(runtime)
    finish_job(kube, "bbc-a1", ok=True, message=SUMMARY)
    await reconcile(runtime)
    assert status(kube)["phase"] == "Succeeded"
    assert status(kube)["metrics"] == {"accuracy": 0.9}
    job = kube.stored(JOBS, NS, "bbc-a1")
    assert job is not None and job["spec"]["ttlSecondsAfterFinished"] == 60
    assert kube.stored(SERVICES, NS, "bbc") is None
    # The end is sticky: what follows (pod events, the TTL) reads no pods, and a first
    # attempt has no older attempts to list (after a restart: one list per finished job).
    kube.reads.clear()
    await reconcile(runtime)
    assert ("pods", "") not in kube.reads and ("jobs", "") not in kube.reads
    # The TTL controller deletes the Job; later reconciles must not bring it back.
    del kube.objects[("jobs", NS, "bbc-a1")]
    kube.writes.clear()
    for _ in range(3):
        await reconcile(runtime)
    assert not [w for w in kube.writes if w[0] == "apply"]
    assert status(kube)["phase"] == "Succeeded"


async def test_an_invalid_spec_fails_once_and_creates_nothing(
        runtime: Runtime, kube: MemoryKube) -> None:
    create(kube, spec={"numNodes": 0})
    await reconcile(runtime)
    await reconcile(runtime)
    st = status(kube)
    assert st["phase"] == "Failed"
    failed = next(c for c in st["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "InvalidSpec" and "spec.numNodes" in failed["message"]
    assert kube.writes == [("patch/status", "trainingjobs", "bbc")]
    assert kube.events == [("Warning", "InvalidSpec")]


async def test_a_foreign_service_with_our_name_is_not_taken_over(
        runtime: Runtime, kube: MemoryKube) -> None:
    create(kube)
    kube.put(SERVICES, {"metadata": {"name": "bbc", "namespace": NS}, "spec": {}})
    with pytest.raises(WaitingError, match="not owned"):
        await reconcile(runtime)
    assert ("apply", "services", "bbc") not in kube.writes
    progressing = next(c for c in status(kube)["conditions"] if c["type"] == "Progressing")
    assert progressing["reason"] == "ChildConflict"
    assert "Service team-a/bbc exists and is not owned" in progressing["message"]


async def test_a_deleted_object_is_left_alone(runtime: Runtime, kube: MemoryKube) -> None:
    await reconcile(runtime, name="missing")
    assert kube.writes == []


async def test_a_suspend_change_is_applied_to_the_running_job(
        runtime: Runtime, kube: MemoryKube) -> None:
    create(kube)
    await reconcile(runtime)
    tj = kube.stored(TRAINING_JOBS, NS, "bbc")
    assert tj is not None
    tj["spec"]["runPolicy"] = {"suspend": True}
    kube.writes.clear()
    await reconcile(runtime)
    assert ("apply", "jobs", "bbc-a1") in kube.writes
    job = kube.stored(JOBS, NS, "bbc-a1")
    assert job is not None and job["spec"]["suspend"] is True
    assert status(kube)["phase"] == "Suspended"


async def test_an_event_the_api_server_refuses_does_not_stop_the_reconcile(
        runtime: Runtime, kube: MemoryKube, monkeypatch: pytest.MonkeyPatch) -> None:
    async def refuse(**_: Any) -> None:
        raise KubeError("post event: too many requests (429)", status=429)
    monkeypatch.setattr(kube, "send_event", refuse)
    create(kube)
    await reconcile(runtime)
    assert kube.stored(JOBS, NS, "bbc-a1") is not None
    assert status(kube)["phase"] == "Pending"


def test_pods_are_read_only_when_the_run_policy_needs_them() -> None:
    running = {"status": {"active": 1, "ready": 1}}
    done = {"status": {"conditions": [{"type": "Complete", "status": "True"}]}}
    failing = {"status": {"conditions": [{"type": "FailureTarget", "status": "True"}]}}
    assert not pods_matter(running, num_nodes=1)
    assert pods_matter(running, num_nodes=2)  # a disrupted rank breaks a gang
    assert pods_matter(done, num_nodes=1) and pods_matter(failing, num_nodes=1)


async def test_a_first_attempt_costs_no_namespace_wide_list(
        runtime: Runtime, kube: MemoryKube, monkeypatch: pytest.MonkeyPatch) -> None:
    listed: list[str] = []
    original = kube.list

    async def spy(**kwargs: Any) -> Any:
        listed.append(kwargs["resource"].plural)
        return await original(**kwargs)
    monkeypatch.setattr(kube, "list", spy)
    create(kube, spec={"numNodes": 1})
    await reconcile(runtime)
    await reconcile(runtime)
    assert "jobs" not in listed


# --- children deleted by hand (docs/operator.md, "Children deleted by hand") ------------


async def start_running(runtime: Runtime, kube: MemoryKube, **spec: Any) -> None:
    """Create the job and play the Job controller until status says Running."""
    create(kube, spec={"numNodes": 1, **spec})
    await reconcile(runtime)
    job = kube.stored(JOBS, NS, "bbc-a1")
    assert job is not None
    job["status"] = {"active": job["spec"]["parallelism"], "ready": job["spec"]["parallelism"]}
    await reconcile(runtime)
    assert status(kube)["phase"] == "Running"


async def test_a_running_job_deleted_by_hand_is_a_failed_attempt_then_retried(
        runtime: Runtime, kube: MemoryKube) -> None:
    await start_running(runtime, kube, runPolicy={"backoffLimit": 2})
    del kube.objects[("jobs", NS, "bbc-a1")]
    kube.writes.clear()
    await reconcile(runtime)
    st = status(kube)
    assert (st["phase"], st["attempts"], st["failedAttempts"]) == ("Pending", 2, 1)
    progressing = next(c for c in st["conditions"] if c["type"] == "Progressing")
    assert progressing["reason"] == "ChildrenDeleted"
    assert "bbc-a1 was deleted while it was running" in st["message"]
    assert ("Warning", "ChildrenDeleted") in kube.events
    # The retry is recorded before its Job exists, and the deleted name is not reused.
    assert kube.writes.index(("patch/status", "trainingjobs", "bbc")) < kube.writes.index(
        ("apply", "jobs", "bbc-a2"))
    assert kube.stored(JOBS, NS, "bbc-a1") is None


async def test_a_deleted_running_job_past_the_backoff_limit_fails_the_job(
        runtime: Runtime, kube: MemoryKube) -> None:
    await start_running(runtime, kube, runPolicy={"backoffLimit": 0})
    del kube.objects[("jobs", NS, "bbc-a1")]
    kube.writes.clear()
    await reconcile(runtime)
    st = status(kube)
    assert (st["phase"], st["failedAttempts"]) == ("Failed", 1)
    failed = next(c for c in st["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "BackoffLimitExceeded"
    assert "ChildrenDeleted" in failed["message"]
    assert not [w for w in kube.writes if w[0] == "apply"]


async def test_a_job_being_deleted_while_running_counts_as_deleted(
        runtime: Runtime, kube: MemoryKube) -> None:
    await start_running(runtime, kube, runPolicy={"backoffLimit": 1})
    job = kube.stored(JOBS, NS, "bbc-a1")
    assert job is not None
    job["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"  # foreground deletion
    await reconcile(runtime)
    assert (status(kube)["attempts"], status(kube)["failedAttempts"]) == (2, 1)
    assert kube.stored(JOBS, NS, "bbc-a2") is not None


async def test_a_job_deleted_before_it_ran_is_recreated_for_the_same_attempt(
        runtime: Runtime, kube: MemoryKube) -> None:
    """Indistinguishable from a crash between recording the attempt and creating its
    Job, and nothing ran: created again, no attempt used."""
    create(kube, spec={"numNodes": 1})
    await reconcile(runtime)
    del kube.objects[("jobs", NS, "bbc-a1")]
    await reconcile(runtime)
    assert kube.stored(JOBS, NS, "bbc-a1") is not None
    st = status(kube)
    assert (st["phase"], st["attempts"], st["failedAttempts"]) == ("Pending", 1, 0)
    assert ("Warning", "ChildrenDeleted") not in kube.events


async def test_a_single_node_job_has_no_service_and_a_local_master(
        runtime: Runtime, kube: MemoryKube) -> None:
    create(kube, spec={"numNodes": 1})
    await reconcile(runtime)
    assert kube.writes == [("patch/status", "trainingjobs", "bbc"), ("apply", "jobs", "bbc-a1")]
    job = kube.stored(JOBS, NS, "bbc-a1")
    assert job is not None
    command = job["spec"]["template"]["spec"]["containers"][0]["command"]
    assert "--master_addr=127.0.0.1" in command
    # One read of the Job's name (none found) is enough to create it; no Service read.
    assert kube.reads == [("trainingjobs", "bbc"), ("jobs", "bbc-a1")]


async def test_a_deleted_rendezvous_service_is_recreated_while_the_job_runs(
        runtime: Runtime, kube: MemoryKube) -> None:
    await start_running(runtime, kube, numNodes=2)
    del kube.objects[("services", NS, "bbc")]
    await reconcile(runtime)
    assert kube.stored(SERVICES, NS, "bbc") is not None
    assert status(kube)["attempts"] == 1


async def test_a_job_refused_on_creation_says_why_in_status_and_is_retried(
        runtime: Runtime, kube: MemoryKube) -> None:
    """A 422 on creation (an admission policy, a validation the schema cannot express) is
    not mistaken for the immutable template of an existing Job: nothing is patched, the
    API server's words reach status (ChildRejected), the job keeps its phase and is
    retried, and once the refusal is lifted the same attempt's Job is created."""
    kube.refused[JOBS.plural] = "apply Job team-a/bbc-a1: denied by policy (422)"
    create(kube)
    with pytest.raises(WaitingError, match="denied by policy"):
        await reconcile(runtime)
    assert not [w for w in kube.writes if w[1] == "jobs"]
    got = status(kube)
    assert got["phase"] == "Pending" and got["attempts"] == 1
    progressing = next(c for c in got["conditions"] if c["type"] == "Progressing")
    assert progressing["status"] == "True" and progressing["reason"] == "ChildRejected"
    assert "denied by policy" in progressing["message"]

    kube.refused.clear()  # the policy is lifted
    await reconcile(runtime)
    assert kube.stored(JOBS, NS, "bbc-a1") is not None
    assert status(kube)["attempts"] == 1
