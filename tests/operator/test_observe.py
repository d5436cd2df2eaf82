"""Reducing a Job and its pods to an AttemptObservation."""

from __future__ import annotations

from modelloop_operator.reconcilers.observe import JobOutcome, observe_attempt
from modelloop_operator.reconcilers.pod_diagnosis import parse_time

from .k8s_objects import job, pod


def test_no_job_is_absent() -> None:
    observed = observe_attempt(job=None, pods=[])
    assert observed.outcome is JobOutcome.ABSENT and not observed.exists


def test_active_job_with_running_pods() -> None:
    observed = observe_attempt(job=job(active=2, ready=2), pods=[pod(index=1), pod(index=0)])
    assert observed.outcome is JobOutcome.ACTIVE
    assert (observed.active, observed.ready) == (2, 2)
    assert [p.index for p in observed.pods] == [0, 1]
    assert not observed.disrupted and observed.first_failure is None


def test_complete_job_leader_is_rank_zero() -> None:
    observed = observe_attempt(job=job(complete=True), pods=[
        pod(index=1, phase="Succeeded", exit_code=0, message="rank1"),
        pod(index=0, phase="Succeeded", exit_code=0, message="rank0")])
    assert observed.outcome is JobOutcome.COMPLETE
    assert observed.leader is not None
    assert observed.leader.termination_message == "rank0"


def test_failed_job_root_cause_is_the_lowest_failed_non_disrupted_pod() -> None:
    observed = observe_attempt(job=job(failed="BackoffLimitExceeded"), pods=[
        pod(index=0, phase="Failed", exit_code=143, disrupted=True),
        pod(index=2, phase="Failed", exit_code=1, reason="Error"),
        pod(index=1, phase="Failed", exit_code=137, reason="OOMKilled")])
    assert observed.outcome is JobOutcome.FAILED
    assert observed.job_reason == "BackoffLimitExceeded"
    assert observed.disrupted
    root = observed.first_failure
    assert root is not None and (root.index, root.exit_code, root.reason) == (1, 137,
                                                                             "OOMKilled")


def test_failure_target_already_counts_as_failed() -> None:
    observed = observe_attempt(job=job(failure_target=True), pods=[])
    assert observed.outcome is JobOutcome.FAILED
    assert observed.job_reason == "PodFailurePolicy"


def test_suspended_and_ttl_are_read_from_the_spec() -> None:
    observed = observe_attempt(job=job(suspend=True, ttl=30), pods=[])
    assert observed.suspended and observed.ttl_seconds_after_finished == 30


def test_the_programs_exit_code_in_the_message_wins_over_torchruns() -> None:
    # torchrun exits 1 whenever a worker fails; the gate's 3 only survives in the message.
    gate_missed = '{"v":1,"kind":"train","status":"Failed","exitCode":3,"message":"gate"}'
    observed = observe_attempt(job=job(failed="BackoffLimitExceeded"), pods=[
        pod(index=0, phase="Failed", exit_code=1, reason="Error", message=gate_missed)])
    root = observed.first_failure
    assert root is not None and root.exit_code == 3


def test_container_exit_code_stands_without_a_usable_message() -> None:
    for message in (None, "Traceback (most recent call last): ...", '{"exitCode": 0}',
                    '{"exitCode": "3"}'):
        observed = observe_attempt(job=job(failed="BackoffLimitExceeded"), pods=[
            pod(index=0, phase="Failed", exit_code=137, reason="OOMKilled", message=message)])
        root = observed.first_failure
        assert root is not None and root.exit_code == 137, message


def test_a_successful_container_is_not_turned_into_a_failure_by_its_message() -> None:
    observed = observe_attempt(job=job(complete=True), pods=[
        pod(index=0, phase="Succeeded", exit_code=0, message='{"exitCode": 3}')])
    assert observed.pods[0].exit_code == 0


def test_container_is_chosen_by_name() -> None:
    other = pod(index=0, phase="Failed", exit_code=9, container="sidecar")
    observed = observe_attempt(job=job(), pods=[other], container="trainer")
    assert observed.pods[0].exit_code is None


def test_pod_without_index_sorts_last() -> None:
    unindexed = pod(index=0, phase="Failed", exit_code=1)
    unindexed["metadata"]["annotations"] = {}
    observed = observe_attempt(job=job(), pods=[unindexed, pod(index=3, phase="Failed",
                                                                exit_code=2)])
    assert observed.first_failure is not None and observed.first_failure.index == 3


def test_parse_time() -> None:
    parsed = parse_time("2026-11-28T12:00:00Z")
    assert parsed is not None and parsed.year == 2026 and parsed.utcoffset() is not None
    assert parse_time("not a time") is None and parse_time(None) is None
