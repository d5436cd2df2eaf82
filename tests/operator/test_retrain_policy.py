"""Pure retrain decisions: the budget (enabled, maxInFlight, cooldown, maxPerDay) and the
deterministic names that make "exactly one TrainingJob" hold (monitor/retrain_policy.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from modelloop_operator.api.modeldeployment import DeploymentModelSource
from modelloop_operator.api.monitoring import RetrainSpec
from modelloop_operator.monitor.retrain_policy import (
    KnownRun,
    Refusal,
    may_retrain,
    next_run,
    optimization_job_name,
    run_number,
    source_fingerprint,
    training_job_name,
)

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
TEMPLATE = {"spec": {"model": {"uri": "builtin://m"}, "dataset": {"uri": "builtin://d"},
                     "output": {"uri": "file:///out"}}}


def retrain(**fields: Any) -> RetrainSpec:
    return RetrainSpec.model_validate({"enabled": True, "trainingJobTemplate": TEMPLATE,
                                       "cooldown": "1h", "maxInFlight": 1, "maxPerDay": 3,
                                       **fields})


def run(name: str, minutes_ago: float | None, *, finished: bool = True) -> KnownRun:
    at = NOW - timedelta(minutes=minutes_ago) if minutes_ago is not None else None
    return KnownRun(name=name, triggered_at=at, finished=finished)


class TestBudget:
    def test_first_retrain_is_allowed(self) -> None:
        assert may_retrain(retrain(), runs=[], last_triggered=None, now=NOW).allowed

    @pytest.mark.parametrize("spec", [None, RetrainSpec(enabled=False)])
    def test_disabled_or_absent_never_retrains(self, spec: RetrainSpec | None) -> None:
        answer = may_retrain(spec, runs=[], last_triggered=None, now=NOW)
        assert not answer.allowed and answer.reason == Refusal.DISABLED

    def test_one_in_flight_blocks_with_the_default_limit(self) -> None:
        answer = may_retrain(retrain(cooldown="1s"), runs=[run("m-rt-1", 600, finished=False)],
                             last_triggered=None, now=NOW)
        assert (answer.allowed, answer.reason) == (False, Refusal.IN_FLIGHT)
        assert "m-rt-1" in answer.message

    def test_max_in_flight_allows_parallel_runs_up_to_it(self) -> None:
        runs = [run("m-rt-1", 600, finished=False)]
        assert may_retrain(retrain(cooldown="1s", maxInFlight=2), runs=runs,
                           last_triggered=None, now=NOW).allowed
        runs.append(run("m-rt-2", 300, finished=False))
        assert may_retrain(retrain(cooldown="1s", maxInFlight=2), runs=runs,
                           last_triggered=None, now=NOW).reason == Refusal.IN_FLIGHT

    def test_cooldown_counts_from_the_latest_trigger(self) -> None:
        runs = [run("m-rt-1", 59)]
        answer = may_retrain(retrain(), runs=runs, last_triggered=None, now=NOW)
        assert answer.reason == Refusal.COOLDOWN
        assert "until 2026-05-01T12:01:00+00:00" in answer.message
        assert may_retrain(retrain(), runs=[run("m-rt-1", 60)], last_triggered=None,
                           now=NOW).allowed

    def test_cooldown_also_holds_from_status_alone(self) -> None:
        # History trimmed or TrainingJob deleted: lastTriggered still remembers.
        answer = may_retrain(retrain(), runs=[], last_triggered=NOW - timedelta(minutes=5),
                             now=NOW)
        assert answer.reason == Refusal.COOLDOWN

    def test_cooldown_uses_listed_runs_missing_from_status(self) -> None:
        # Created just before a crash: status never recorded it, the listing has it.
        answer = may_retrain(retrain(maxInFlight=5), runs=[run("m-rt-4", 1)],
                             last_triggered=NOW - timedelta(hours=5), now=NOW)
        assert answer.reason == Refusal.COOLDOWN

    def test_max_per_day_counts_a_sliding_24_hours(self) -> None:
        spec = retrain(cooldown="1m", maxPerDay=3)
        runs = [run("m-rt-1", 60 * 23), run("m-rt-2", 60 * 10), run("m-rt-3", 60)]
        answer = may_retrain(spec, runs=runs, last_triggered=None, now=NOW)
        assert answer.reason == Refusal.DAILY_LIMIT
        assert "next allowed at 2026-05-01T13:00:00+00:00" in answer.message
        runs[0] = run("m-rt-1", 60 * 24 + 1)
        assert may_retrain(spec, runs=runs, last_triggered=None, now=NOW).allowed

    def test_max_per_day_counts_each_run_once(self) -> None:
        spec = retrain(cooldown="1m", maxPerDay=2)
        runs = [run("m-rt-1", 120), run("m-rt-1", 120)]  # in status and in the listing
        assert may_retrain(spec, runs=runs, last_triggered=None, now=NOW).allowed

    def test_runs_without_a_time_do_not_count_per_day(self) -> None:
        spec = retrain(cooldown="1m", maxPerDay=1)
        assert may_retrain(spec, runs=[run("m-rt-1", None)], last_triggered=None,
                           now=NOW).allowed

    def test_in_flight_is_checked_before_cooldown(self) -> None:
        answer = may_retrain(retrain(), runs=[run("m-rt-1", 1, finished=False)],
                             last_triggered=None, now=NOW)
        assert answer.reason == Refusal.IN_FLIGHT


class TestNames:
    def test_names_and_numbers_round_trip(self) -> None:
        assert training_job_name(deployment="bbc", run=3) == "bbc-rt-3"
        assert optimization_job_name(deployment="bbc", run=3) == "bbc-rt-3-o"
        assert run_number("bbc-rt-3", deployment="bbc") == 3

    @pytest.mark.parametrize("name", ["bbc-rt-0", "bbc-rt-03", "bbc-rt-x", "bbc-rt-3-o",
                                      "bbc-x-rt-3", "other-rt-3", "bbc"])
    def test_other_names_are_not_runs(self, name: str) -> None:
        assert run_number(name, deployment="bbc") is None

    def test_next_run_is_one_past_the_highest_known(self) -> None:
        assert next_run(deployment="bbc", names=[]) == 1
        assert next_run(deployment="bbc", names=["bbc-rt-1", "bbc-rt-7", "bbc-rt-2"]) == 8
        assert next_run(deployment="bbc", names=["bbc-x-rt-9", "bbc-rt-2-o"]) == 1

    def test_a_deployment_name_with_regex_characters_is_literal(self) -> None:
        assert run_number("bbcxrt-1", deployment="bbc.") is None

    def test_the_longest_names_fit_the_job_kinds(self) -> None:
        deployment = "d" * 40  # MODELDEPLOYMENT_MAX_NAME_LENGTH
        assert len(training_job_name(deployment=deployment, run=999)) <= 50
        assert len(optimization_job_name(deployment=deployment, run=999)) <= 50


class TestFingerprint:
    def test_same_source_same_fingerprint(self) -> None:
        a = DeploymentModelSource.model_validate({"archiveUri": "file:///m/a.mar"})
        b = DeploymentModelSource.model_validate({"archiveUri": "file:///m/a.mar"})
        assert source_fingerprint(a) == source_fingerprint(b)

    def test_a_git_change_to_the_model_changes_it(self) -> None:
        a = DeploymentModelSource.model_validate({"archiveUri": "file:///m/a.mar"})
        b = DeploymentModelSource.model_validate({"archiveUri": "file:///m/b.mar"})
        c = DeploymentModelSource.model_validate({"optimizationJobRef": {"name": "a"}})
        assert len({source_fingerprint(x) for x in (a, b, c)}) == 3
