"""Pod faults in the run policy: why a Pending pod does not start (the scheduler's and the
kubelet's words, reconcilers/pod_diagnosis.py), what the job does about it, and how
OOMKilled, preemption and eviction read and count (reconcilers/runpolicy.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from modelloop_operator.api.common import RunPolicy
from modelloop_operator.api.jobs import JobPhase
from modelloop_operator.reconcilers.observe import AttemptObservation, observe_attempt
from modelloop_operator.reconcilers.pod_diagnosis import ProblemKind, diagnose_pod
from modelloop_operator.reconcilers.runpolicy import RunDecision, RunRecord, decide_run
from modelloop_operator.status import Reason

from .k8s_objects import job, pod

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
BOUND = NOW - timedelta(seconds=90)
IMAGE = "registry.example/modelloop/trainer:nope"
SCHEDULER_SAYS = ("0/3 nodes are available: 3 Insufficient nvidia.com/gpu. preemption: "
                  "0/3 nodes are available: 3 No preemption victims found for incoming pod.")


def stamp(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def pending_pod(*, index: int = 0, unschedulable: str | None = None,
                waiting: str | None = None, message: str = "",
                init_waiting: str | None = None, deleting: bool = False) -> dict[str, Any]:
    """A Pending pod as the API server shows it: unschedulable (no container statuses),
    or bound with containers waiting."""
    conditions: list[dict[str, Any]]
    status: dict[str, Any] = {"phase": "Pending"}
    if unschedulable is not None:
        conditions = [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                       "message": unschedulable, "lastTransitionTime": stamp(BOUND)}]
    else:
        conditions = [{"type": "PodScheduled", "status": "True",
                       "lastTransitionTime": stamp(BOUND)},
                      {"type": "Ready", "status": "False", "reason": "ContainersNotReady"}]
        state = {"waiting": {"reason": waiting or "ContainerCreating", "message": message}}
        status["containerStatuses"] = [{"name": "trainer", "image": IMAGE, "state": state}]
        status["startTime"] = stamp(BOUND)
        if init_waiting is not None:
            status["initContainerStatuses"] = [{
                "name": "fetch", "image": "busybox:1", "state": {"waiting": {
                    "reason": init_waiting, "message": "init says no"}}}]
    status["conditions"] = conditions
    meta: dict[str, Any] = {"name": f"bbc-a1-{index}-xyz", "annotations": {
        "batch.kubernetes.io/job-completion-index": str(index)}}
    if deleting:
        meta["deletionTimestamp"] = stamp(NOW)
    return {"metadata": meta, "status": status}


def decide(*, pods: list[dict[str, Any]], record: RunRecord | None = None,
           grace: timedelta = timedelta(minutes=5), num_nodes: int = 1,
           policy: dict[str, Any] | None = None,
           observed: AttemptObservation | None = None) -> RunDecision:
    return decide_run(
        policy=RunPolicy.model_validate(policy or {}),
        record=record or RunRecord(phase=JobPhase.PENDING, attempt=1, start_time=BOUND),
        observed=observed or observe_attempt(job=job(active=len(pods)), pods=pods),
        now=NOW, num_nodes=num_nodes, queued=False,
        permanent_exit_codes={2: Reason.INVALID_INPUT}, image_pull_grace=grace)


class TestDiagnosePod:
    def test_an_unschedulable_pod_carries_the_schedulers_message(self) -> None:
        problem = diagnose_pod(pending_pod(unschedulable=SCHEDULER_SAYS))
        assert problem is not None and problem.kind is ProblemKind.UNSCHEDULABLE
        assert problem.message == SCHEDULER_SAYS and problem.since == BOUND
        assert "3 Insufficient nvidia.com/gpu" in problem.describe()

    @pytest.mark.parametrize("reason", ["ErrImagePull", "ImagePullBackOff", "InvalidImageName"])
    def test_image_pull_reasons_name_the_image_and_the_kubelets_message(
            self, reason: str) -> None:
        problem = diagnose_pod(pending_pod(waiting=reason,
                                           message=f'Back-off pulling image "{IMAGE}"'))
        assert problem is not None and problem.kind is ProblemKind.IMAGE_PULL
        assert (problem.reason, problem.image, problem.container) == (reason, IMAGE, "trainer")
        assert problem.since == BOUND
        assert IMAGE in problem.describe() and reason in problem.describe()

    def test_other_waiting_reasons_are_reported_as_they_are(self) -> None:
        problem = diagnose_pod(pending_pod(waiting="CreateContainerConfigError",
                                           message='secret "s3-creds" not found'))
        assert problem is not None and problem.kind is ProblemKind.CONTAINER_WAITING
        assert 'secret "s3-creds" not found' in problem.describe()

    def test_an_init_container_is_looked_at_first(self) -> None:
        problem = diagnose_pod(pending_pod(init_waiting="ImagePullBackOff"))
        assert problem is not None and problem.container == "fetch"

    @pytest.mark.parametrize("obj", [
        pending_pod(),  # ContainerCreating: just starting
        pending_pod(waiting="PodInitializing"),
        pending_pod(waiting="ImagePullBackOff", deleting=True),
        pod(index=0, phase="Running"),
        pod(index=0, phase="Failed", exit_code=1, reason="Error"),
        {"metadata": {"name": "new"}, "status": {"phase": "Pending"}},  # not seen yet
    ])
    def test_pods_on_their_way_or_past_pending_have_no_problem(
            self, obj: dict[str, Any]) -> None:
        assert diagnose_pod(obj) is None


class TestStuckPods:
    def test_an_unschedulable_pod_keeps_the_job_pending_with_the_schedulers_reason(
            self) -> None:
        decision = decide(pods=[pending_pod(unschedulable=SCHEDULER_SAYS)],
                          grace=timedelta(0))
        assert (decision.phase, decision.reason) == (JobPhase.PENDING, Reason.UNSCHEDULABLE)
        assert SCHEDULER_SAYS in decision.message and "bbc-a1-0-xyz" in decision.message
        assert "delete and recreate" in decision.message
        assert decision.run_job and not decision.stop_job
        assert (decision.attempt, decision.failed_attempts) == (1, 0)

    def test_one_unschedulable_rank_holds_up_a_gang_whose_other_rank_runs(self) -> None:
        decision = decide(num_nodes=2, pods=[pod(index=0, phase="Running"),
                                             pending_pod(index=1, unschedulable=SCHEDULER_SAYS)])
        assert decision.reason == Reason.UNSCHEDULABLE and "bbc-a1-1-xyz" in decision.message

    def test_an_image_pull_failure_within_the_grace_is_pending_with_the_image(self) -> None:
        decision = decide(pods=[pending_pod(waiting="ImagePullBackOff",
                                            message=f'Back-off pulling image "{IMAGE}"')],
                          grace=timedelta(minutes=5))
        assert (decision.phase, decision.reason) == (JobPhase.PENDING, Reason.IMAGE_PULL_FAILED)
        assert IMAGE in decision.message and "ImagePullBackOff" in decision.message
        assert "300 s" in decision.message
        assert decision.run_job and not decision.stop_job and decision.failed_attempts == 0

    def test_past_the_grace_the_job_fails_stops_its_pods_and_is_not_retried(self) -> None:
        decision = decide(pods=[pending_pod(waiting="ErrImagePull", message="not found")],
                          grace=timedelta(seconds=60), policy={"backoffLimit": 3})
        assert (decision.phase, decision.reason) == (JobPhase.FAILED, Reason.IMAGE_PULL_FAILED)
        assert decision.stop_job and not decision.run_job and decision.completion_time == NOW
        assert (decision.attempt, decision.failed_attempts) == (1, 0)
        assert IMAGE in decision.message and "90 s" in decision.message

    def test_an_invalid_image_reference_fails_at_once(self) -> None:
        decision = decide(pods=[pending_pod(waiting="InvalidImageName")],
                          grace=timedelta(hours=1))
        assert (decision.phase, decision.reason) == (JobPhase.FAILED, Reason.IMAGE_PULL_FAILED)

    def test_other_waiting_reasons_stay_pending_with_the_kubelets_message(self) -> None:
        decision = decide(pods=[pending_pod(waiting="CreateContainerConfigError",
                                            message='secret "s3-creds" not found')])
        assert (decision.phase, decision.reason) == (JobPhase.PENDING, Reason.PENDING)
        assert 'secret "s3-creds" not found' in decision.message

    def test_the_deadline_still_bounds_a_pod_that_never_fits(self) -> None:
        decision = decide(pods=[pending_pod(unschedulable=SCHEDULER_SAYS)],
                          policy={"activeDeadlineSeconds": 60})
        assert (decision.phase, decision.reason) == (JobPhase.FAILED, Reason.DEADLINE_EXCEEDED)

    def test_a_pod_that_starts_clears_the_condition(self) -> None:
        record = RunRecord(phase=JobPhase.PENDING, attempt=1, start_time=BOUND)
        decision = decide(record=record, pods=[pod(index=0, phase="Running")],
                          observed=observe_attempt(job=job(active=1, ready=1),
                                                   pods=[pod(index=0, phase="Running")]))
        assert (decision.phase, decision.reason) == (JobPhase.RUNNING, Reason.RUNNING)


def oom_attempt() -> AttemptObservation:
    return observe_attempt(job=job(failed="PodFailurePolicy"), pods=[
        pod(index=0, phase="Failed", exit_code=137, reason="OOMKilled")])


class TestOOMKilled:
    def test_an_oom_kill_is_retried_and_uses_an_attempt(self) -> None:
        decision = decide(pods=[], observed=oom_attempt(), policy={"backoffLimit": 1},
                          record=RunRecord(phase=JobPhase.RUNNING, attempt=1, start_time=BOUND))
        assert (decision.reason, decision.attempt, decision.failed_attempts) == (
            Reason.RETRYING, 2, 1)
        assert "exit code 137 (OOMKilled)" in decision.message

    def test_the_budget_spent_on_oom_kills_fails_with_reason_oomkilled(self) -> None:
        decision = decide(pods=[], observed=oom_attempt(), policy={"backoffLimit": 1},
                          record=RunRecord(phase=JobPhase.RUNNING, attempt=2,
                                           failed_attempts=1, start_time=BOUND))
        assert (decision.phase, decision.reason) == (JobPhase.FAILED, Reason.OOM_KILLED)
        assert decision.failed_attempts == 2 and "resources.memory" in decision.message


def disrupted_pod(index: int, reason: str) -> dict[str, Any]:
    out = pod(index=index, phase="Failed", exit_code=143, disrupted=True)
    out["status"]["conditions"][-1]["reason"] = reason
    return out


class TestDisruptionReasons:
    @pytest.mark.parametrize(("reason", "words"), [
        ("PreemptionByScheduler", "preempted by the scheduler"),
        ("EvictionByEvictionAPI", "evicted through the Eviction API"),
        ("DeletionByTaintManager", "deleted for a NoExecute taint"),
        ("TerminationByKubelet", "terminated by the kubelet"),
        ("SomethingNew", "SomethingNew"),
    ])
    def test_the_message_says_who_disrupted_the_pod_and_no_attempt_is_used(
            self, reason: str, words: str) -> None:
        observed = observe_attempt(job=job(failed="PodFailurePolicy"), pods=[
            disrupted_pod(0, reason), pod(index=1, phase="Failed", exit_code=1,
                                          reason="Error")])
        decision = decide(pods=[], observed=observed, num_nodes=2, policy={"backoffLimit": 0},
                          record=RunRecord(phase=JobPhase.RUNNING, attempt=1, start_time=BOUND))
        assert (decision.reason, decision.attempt) == (Reason.DISRUPTED, 2)
        assert (decision.failed_attempts, decision.disruptions) == (0, 1)
        assert f"bbc-a1-0-xyz: {words}" in decision.message
