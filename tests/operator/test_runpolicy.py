"""Run-policy decisions from a snapshot: attempts, backoff, disruptions, deadline,
suspend, Kueue admission, sticky terminal states (reconcilers/runpolicy.py)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from modelloop_operator.api.common import RunPolicy
from modelloop_operator.api.jobs import JobPhase
from modelloop_operator.reconcilers.observe import AttemptObservation, observe_attempt
from modelloop_operator.reconcilers.runpolicy import (
    RunDecision,
    RunRecord,
    decide_run,
    invalid_spec,
    run_conditions,
)
from modelloop_operator.status import Reason, get_condition, is_true

from .k8s_objects import job, pod

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
PERMANENT = {2: Reason.INVALID_INPUT, 3: Reason.EVALUATION_GATE_MISSED}


def decide(*, record: RunRecord | None = None, observed: AttemptObservation | None = None,
           policy: Mapping[str, Any] | None = None, num_nodes: int = 2, queued: bool = False,
           now: datetime = NOW) -> RunDecision:
    return decide_run(
        policy=RunPolicy.model_validate(policy or {}), record=record or RunRecord(),
        observed=observed or observe_attempt(job=None, pods=[]), now=now,
        num_nodes=num_nodes, queued=queued, permanent_exit_codes=PERMANENT)


def running(attempt: int = 1) -> RunRecord:
    return RunRecord(phase=JobPhase.RUNNING, attempt=attempt, start_time=NOW - timedelta(
        minutes=10))


def failed_attempt(*, exit_code: int = 1, disrupted_index: int | None = None,
                   message: str | None = None) -> AttemptObservation:
    pods = [pod(index=0, phase="Failed", exit_code=exit_code, reason="Error", message=message),
            pod(index=1, phase="Failed", exit_code=1, reason="Error")]
    if disrupted_index is not None:
        pods[disrupted_index] = pod(index=disrupted_index, phase="Failed", exit_code=143,
                                    disrupted=True)
    return observe_attempt(job=job(failed="BackoffLimitExceeded"), pods=pods)


class TestStart:
    def test_a_new_job_creates_attempt_one_and_starts_the_clock(self) -> None:
        decision = decide()
        assert (decision.phase, decision.reason, decision.attempt) == (
            JobPhase.PENDING, Reason.CREATED, 1)
        assert decision.run_job and not decision.suspend_job and not decision.stop_job
        assert decision.start_time == NOW
        assert decision.starts_new_attempt(RunRecord())

    def test_existing_job_without_running_pods_is_pending(self) -> None:
        decision = decide(record=RunRecord(phase=JobPhase.PENDING, attempt=1, start_time=NOW),
                          observed=observe_attempt(job=job(active=2), pods=[]))
        assert (decision.phase, decision.reason) == (JobPhase.PENDING, Reason.CREATED)
        assert not decision.starts_new_attempt(RunRecord(attempt=1))

    def test_running_pods_make_it_running_and_keep_the_start_time(self) -> None:
        started = NOW - timedelta(minutes=3)
        decision = decide(record=RunRecord(phase=JobPhase.PENDING, attempt=1,
                                           start_time=started),
                          observed=observe_attempt(job=job(active=2, ready=2),
                                                   pods=[pod(index=0), pod(index=1)]))
        assert (decision.phase, decision.reason) == (JobPhase.RUNNING, Reason.RUNNING)
        assert decision.start_time == started and decision.run_job

    def test_a_restarted_operator_recreates_the_recorded_attempt_not_a_new_one(self) -> None:
        decision = decide(record=RunRecord(phase=JobPhase.PENDING, attempt=3,
                                           failed_attempts=2, start_time=NOW))
        assert decision.attempt == 3 and decision.run_job
        assert decision.failed_attempts == 2


class TestSuccess:
    def test_complete_job_succeeds_and_stops_nothing(self) -> None:
        decision = decide(record=running(), observed=observe_attempt(job=job(complete=True),
                                                                     pods=[]))
        assert (decision.phase, decision.reason) == (JobPhase.SUCCEEDED, Reason.SUCCEEDED)
        assert decision.completion_time == NOW
        assert decision.terminal and not decision.run_job and not decision.stop_job


class TestRetries:
    def test_a_failed_attempt_within_budget_starts_the_next_attempt(self) -> None:
        decision = decide(record=running(), observed=failed_attempt(),
                          policy={"backoffLimit": 2})
        assert (decision.phase, decision.reason) == (JobPhase.PENDING, Reason.RETRYING)
        assert (decision.attempt, decision.failed_attempts) == (2, 1)
        assert decision.run_job and decision.starts_new_attempt(running())
        assert "exit code 1" in decision.message and "attempt 2" in decision.message

    def test_the_budget_spent_fails_with_the_exit_code(self) -> None:
        record = RunRecord(phase=JobPhase.RUNNING, attempt=3, failed_attempts=2,
                           start_time=NOW)
        decision = decide(record=record, observed=failed_attempt(exit_code=137),
                          policy={"backoffLimit": 2})
        assert (decision.phase, decision.reason) == (JobPhase.FAILED,
                                                     Reason.BACKOFF_LIMIT_EXCEEDED)
        assert decision.failed_attempts == 3 and decision.attempt == 3
        assert "exit code 137" in decision.message and "backoffLimit 2" in decision.message
        assert not decision.run_job and not decision.stop_job

    def test_backoff_limit_zero_means_a_single_attempt(self) -> None:
        decision = decide(record=running(), observed=failed_attempt(),
                          policy={"backoffLimit": 0})
        assert decision.phase is JobPhase.FAILED

    @pytest.mark.parametrize(("code", "reason"), [(2, Reason.INVALID_INPUT),
                                                  (3, Reason.EVALUATION_GATE_MISSED)])
    def test_deterministic_exit_codes_are_not_retried(self, code: int, reason: str) -> None:
        decision = decide(record=running(), observed=failed_attempt(exit_code=code),
                          policy={"backoffLimit": 5})
        assert (decision.phase, decision.reason) == (JobPhase.FAILED, reason)
        assert decision.failed_attempts == 0
        assert f"exit code {code}" in decision.message

    def test_the_trainers_own_message_is_quoted(self) -> None:
        message = json.dumps({"status": "Failed", "exitCode": 1, "message": "CUDA error"})
        decision = decide(record=running(), observed=failed_attempt(message=message),
                          policy={"backoffLimit": 0})
        assert "CUDA error" in decision.message

    def test_a_failed_job_without_pods_still_counts(self) -> None:
        decision = decide(record=running(), policy={"backoffLimit": 1},
                          observed=observe_attempt(job=job(failed="BackoffLimitExceeded"),
                                                   pods=[]))
        assert decision.reason == Reason.RETRYING and decision.failed_attempts == 1
        assert "backoff limit" in decision.message


class TestDisruptions:
    def test_a_disrupted_failed_attempt_restarts_without_using_the_budget(self) -> None:
        decision = decide(record=running(), observed=failed_attempt(disrupted_index=1),
                          policy={"backoffLimit": 0})
        assert (decision.phase, decision.reason) == (JobPhase.PENDING, Reason.DISRUPTED)
        assert (decision.attempt, decision.failed_attempts, decision.disruptions) == (2, 0, 1)
        assert decision.run_job

    def test_a_disrupted_rank_of_a_running_gang_restarts_the_whole_gang(self) -> None:
        observed = observe_attempt(job=job(active=2), pods=[
            pod(index=0), pod(index=1, phase="Failed", exit_code=143, disrupted=True)])
        decision = decide(record=running(), observed=observed, num_nodes=2)
        assert decision.reason == Reason.DISRUPTED and decision.attempt == 2

    def test_a_single_node_is_left_to_the_job_controller_to_replace(self) -> None:
        observed = observe_attempt(job=job(active=1), pods=[
            pod(index=0, phase="Failed", exit_code=143, disrupted=True), pod(index=0)])
        decision = decide(record=running(), observed=observed, num_nodes=1)
        assert decision.attempt == 1 and decision.phase is JobPhase.RUNNING


class TestDeadline:
    def test_past_the_deadline_fails_and_stops_the_running_job(self) -> None:
        record = RunRecord(phase=JobPhase.RUNNING, attempt=2,
                           start_time=NOW - timedelta(seconds=61))
        decision = decide(record=record, policy={"activeDeadlineSeconds": 60},
                          observed=observe_attempt(job=job(active=2), pods=[pod(index=0)]))
        assert (decision.phase, decision.reason) == (JobPhase.FAILED,
                                                     Reason.DEADLINE_EXCEEDED)
        assert decision.stop_job and decision.completion_time == NOW

    def test_before_the_deadline_keeps_running(self) -> None:
        record = RunRecord(phase=JobPhase.RUNNING, attempt=1,
                           start_time=NOW - timedelta(seconds=59))
        decision = decide(record=record, policy={"activeDeadlineSeconds": 60},
                          observed=observe_attempt(job=job(active=1), pods=[pod(index=0)]))
        assert decision.phase is JobPhase.RUNNING

    def test_success_beats_a_deadline_that_passed_meanwhile(self) -> None:
        record = RunRecord(phase=JobPhase.RUNNING, attempt=1,
                           start_time=NOW - timedelta(hours=1))
        decision = decide(record=record, policy={"activeDeadlineSeconds": 60},
                          observed=observe_attempt(job=job(complete=True), pods=[]))
        assert decision.phase is JobPhase.SUCCEEDED

    def test_a_never_started_job_has_no_deadline_yet(self) -> None:
        decision = decide(policy={"activeDeadlineSeconds": 1, "suspend": True})
        assert decision.phase is JobPhase.SUSPENDED


class TestSuspend:
    def test_suspend_keeps_the_job_but_suspended(self) -> None:
        decision = decide(record=running(), policy={"suspend": True},
                          observed=observe_attempt(job=job(active=2), pods=[pod(index=0)]))
        assert (decision.phase, decision.reason) == (JobPhase.SUSPENDED, Reason.SUSPENDED)
        assert decision.run_job and decision.suspend_job and decision.attempt == 1

    def test_resume_restarts_the_deadline_clock(self) -> None:
        record = RunRecord(phase=JobPhase.SUSPENDED, attempt=1,
                           start_time=NOW - timedelta(hours=2))
        decision = decide(record=record, policy={"activeDeadlineSeconds": 60},
                          observed=observe_attempt(job=job(suspend=True), pods=[]))
        assert (decision.phase, decision.reason) == (JobPhase.PENDING, Reason.RESUMED)
        assert decision.start_time == NOW and not decision.suspend_job

    def test_a_retry_while_suspended_creates_the_next_attempt_suspended(self) -> None:
        decision = decide(record=running(), observed=failed_attempt(),
                          policy={"suspend": True, "backoffLimit": 3})
        assert decision.attempt == 2 and decision.suspend_job


class TestKueue:
    def test_a_queued_job_is_created_suspended_for_kueue_to_admit(self) -> None:
        decision = decide(queued=True)
        assert (decision.phase, decision.reason) == (JobPhase.PENDING,
                                                     Reason.WAITING_FOR_ADMISSION)
        assert decision.run_job and decision.suspend_job
        assert decision.start_time is None

    def test_once_kueue_unsuspends_it_we_do_not_suspend_it_again(self) -> None:
        decision = decide(record=RunRecord(phase=JobPhase.PENDING, attempt=1), queued=True,
                          observed=observe_attempt(job=job(suspend=False, active=2),
                                                   pods=[pod(index=0)]))
        assert decision.phase is JobPhase.RUNNING and not decision.suspend_job
        assert decision.start_time == NOW


class TestTerminalIsSticky:
    @pytest.mark.parametrize("phase", [JobPhase.SUCCEEDED, JobPhase.FAILED])
    def test_nothing_is_created_after_the_end(self, phase: JobPhase) -> None:
        record = RunRecord(phase=phase, attempt=2, completion_time=NOW)
        decision = decide(record=record)  # the Job is gone (TTL): absent
        assert decision.sticky and decision.phase is phase and not decision.run_job
        assert decision.attempt == 2 and not decision.stop_job

    def test_a_job_still_running_after_the_end_is_stopped(self) -> None:
        record = RunRecord(phase=JobPhase.FAILED, attempt=1, completion_time=NOW)
        decision = decide(record=record, observed=observe_attempt(job=job(active=1),
                                                                  pods=[pod(index=0)]))
        assert decision.stop_job and not decision.run_job

    def test_a_finished_job_is_not_stopped(self) -> None:
        record = RunRecord(phase=JobPhase.SUCCEEDED, attempt=1, completion_time=NOW)
        decision = decide(record=record, observed=observe_attempt(job=job(complete=True),
                                                                  pods=[]))
        assert not decision.stop_job


class TestInvalidSpec:
    def test_invalid_spec_fails_without_retry_and_stops_a_started_job(self) -> None:
        decision = invalid_spec(record=running(), message="spec.numNodes: too big", now=NOW)
        assert (decision.phase, decision.reason) == (JobPhase.FAILED, Reason.INVALID_SPEC)
        assert decision.message == "spec.numNodes: too big"
        assert decision.stop_job and not decision.run_job

    def test_invalid_spec_before_any_attempt_has_nothing_to_stop(self) -> None:
        decision = invalid_spec(record=RunRecord(), message="bad", now=NOW)
        assert not decision.stop_job and decision.attempt == 0


class TestConditions:
    @pytest.mark.parametrize(("phase", "true_types"), [
        (JobPhase.PENDING, {"Progressing"}),
        (JobPhase.RUNNING, {"Progressing"}),
        (JobPhase.SUSPENDED, {"Suspended"}),
        (JobPhase.SUCCEEDED, {"Ready", "Succeeded"}),
        (JobPhase.FAILED, {"Failed"}),
    ])
    def test_the_five_conditions_for_each_phase(self, phase: JobPhase,
                                                true_types: set[str]) -> None:
        decision = RunDecision(phase=phase, reason="Why", message="because", attempt=1,
                               failed_attempts=0, disruptions=0, start_time=None,
                               completion_time=None)
        out = run_conditions([], decision=decision, generation=4, now=NOW)
        assert {c.type for c in out} == {"Ready", "Progressing", "Succeeded", "Failed",
                                         "Suspended"}
        assert {c.type for c in out if is_true(out, c.type)} == true_types
        ready = get_condition(out, "Ready")
        assert ready is not None
        assert (ready.reason, ready.message, ready.observed_generation) == ("Why", "because",
                                                                            4)
