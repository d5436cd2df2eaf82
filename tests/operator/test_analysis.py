"""Pure monitoring analysis: each check's outcome, the evaluation's, and the count of
consecutive failures that makes a deployment Degraded (monitor/analysis.py)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest
from modelloop_operator.api.monitoring import (
    AnalysisStatus,
    Bounds,
    CheckResult,
    CheckStatus,
    MonitoringSpec,
    OnMissingData,
)
from modelloop_operator.monitor.analysis import (
    Observation,
    analysis_due,
    degraded_message,
    evaluate_check,
    evaluate_checks,
    failed_checks,
    is_degraded,
    next_analysis,
    overall_result,
    summary,
)
from modelloop_operator.monitor.builtin_checks import CheckQuery, check_queries

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
DRIFT = CheckQuery(name="drift", query="q", samples_query="s", bounds=Bounds(max=0.2))
CONFIDENCE = CheckQuery(name="confidence", query="q", samples_query="s",
                        bounds=Bounds(min=0.6))
BAND = CheckQuery(name="band", query="q", samples_query="s", bounds=Bounds(min=1, max=2))

H, U, N = CheckResult.HEALTHY, CheckResult.UNHEALTHY, CheckResult.INCONCLUSIVE
"""N: no verdict (Inconclusive)."""


def judge(check: CheckQuery, value: float | None, samples: float | None = 500, *,
          error: str = "", min_samples: int = 300,
          on_missing: OnMissingData = OnMissingData.INCONCLUSIVE) -> CheckStatus:
    return evaluate_check(check, Observation(value=value, samples=samples, error=error),
                          min_samples=min_samples, on_missing=on_missing)


class TestOneCheck:
    @pytest.mark.parametrize(("check", "value", "expected"), [
        (DRIFT, 0.1, H), (DRIFT, 0.2, H), (DRIFT, 0.2001, U), (DRIFT, 3.0, U),
        (CONFIDENCE, 0.6, H), (CONFIDENCE, 0.95, H), (CONFIDENCE, 0.59, U),
        (BAND, 0.5, U), (BAND, 1.0, H), (BAND, 1.5, H), (BAND, 2.0, H), (BAND, 2.5, U),
        (DRIFT, -1.0, H), (CONFIDENCE, 0.0, U),
    ])
    def test_bounds_are_inclusive(self, check: CheckQuery, value: float,
                                  expected: CheckResult) -> None:
        assert judge(check, value).result is expected

    def test_unhealthy_message_names_value_and_bound(self) -> None:
        drift = judge(DRIFT, 0.31, 812)
        assert drift.message == "0.31 above max 0.2 (812 samples)"
        assert (drift.value, drift.samples, drift.max, drift.min) == (0.31, 812, 0.2, None)
        assert judge(CONFIDENCE, 0.42).message == "0.42 below min 0.6 (500 samples)"

    def test_band_says_which_side_failed(self) -> None:
        assert "below min 1" in judge(BAND, 0.5).message
        assert "above max 2" in judge(BAND, 2.5).message

    @pytest.mark.parametrize(("value", "samples", "why"), [
        (None, 500, "no data"),
        (math.nan, 500, "nan"),
        (math.inf, 500, "inf"),
        (-math.inf, 500, "-inf"),
        (0.1, None, "sample count unknown"),
        (0.1, math.nan, "sample count unknown"),
        (0.1, 299, "only 299 samples, 300 needed"),
        (0.1, 0, "only 0 samples, 300 needed"),
    ])
    def test_missing_or_thin_data_is_inconclusive_never_healthy(
            self, value: float | None, samples: float | None, why: str) -> None:
        result = judge(DRIFT, value, samples)
        assert result.result is N
        assert why in result.message

    def test_missing_data_hides_a_failing_value_too(self) -> None:
        # A terrible value on 12 samples is noise, not evidence (docs/metrics.md).
        result = judge(DRIFT, 0.9, 12)
        assert result.result is N
        assert result.value == 0.9

    def test_exactly_min_samples_is_enough(self) -> None:
        assert judge(DRIFT, 0.1, 300).result is H

    def test_zero_min_samples_accepts_zero_samples(self) -> None:
        assert judge(DRIFT, 0.1, 0, min_samples=0).result is H

    def test_query_error_is_inconclusive_with_the_reason(self) -> None:
        result = judge(DRIFT, None, None, error="Prometheus unreachable")
        assert result.result is N
        assert result.message == "query failed: Prometheus unreachable"

    def test_query_error_wins_over_a_value(self) -> None:
        assert judge(DRIFT, 0.1, 500, error="2 series").result is N

    @pytest.mark.parametrize(("value", "samples", "error"), [
        (None, 500, ""), (math.nan, 500, ""), (0.1, 3, ""), (None, None, "timeout")])
    def test_on_missing_data_fail_counts_missing_as_unhealthy(
            self, value: float | None, samples: float | None, error: str) -> None:
        result = judge(DRIFT, value, samples, error=error, on_missing=OnMissingData.FAIL)
        assert result.result is U
        assert result.message.endswith("(onMissingData: Fail)")

    def test_on_missing_data_fail_leaves_real_data_alone(self) -> None:
        assert judge(DRIFT, 0.1, on_missing=OnMissingData.FAIL).result is H

    def test_non_finite_values_are_not_stored(self) -> None:
        result = judge(DRIFT, math.nan, math.inf)
        assert result.value is None and result.samples is None
        # status is JSON: NaN would not even serialize
        assert "NaN" not in result.model_dump_json()


class TestEvaluation:
    @pytest.mark.parametrize(("results", "expected"), [
        ([H, H], H), ([H, N], N), ([N, U], U), ([H, U, N], U), ([], N), ([N], N)])
    def test_worst_check_decides(self, results: list[CheckResult],
                                 expected: CheckResult) -> None:
        checks = [CheckStatus(name=f"c{i}", result=r) for i, r in enumerate(results)]
        assert overall_result(checks) is expected

    def test_every_check_is_judged_and_unqueried_ones_are_inconclusive(self) -> None:
        spec = MonitoringSpec.model_validate({
            "prometheusUrl": "http://p:9090", "minSamples": 300,
            "drift": {"max": 0.2}, "confidence": {"min": 0.6}, "errorRate": {"max": 0.05}})
        queries = check_queries(spec, selector="x")
        observed = {"drift": Observation(0.3, 500), "confidence": Observation(0.9, 500)}
        out = evaluate_checks(queries, observed, spec=spec)
        assert [(c.name, c.result) for c in out] == [
            ("drift", U), ("confidence", H), ("errorRate", N)]

    def test_spec_settings_reach_each_check(self) -> None:
        spec = MonitoringSpec.model_validate({
            "prometheusUrl": "http://p:9090", "minSamples": 10, "onMissingData": "Fail",
            "drift": {"max": 0.2}})
        queries = check_queries(spec, selector="x")
        assert evaluate_checks(queries, {"drift": Observation(0.1, 10)},
                               spec=spec)[0].result is H
        assert evaluate_checks(queries, {}, spec=spec)[0].result is U


def analysis_of(*results: CheckResult, limit_start: int = 0) -> AnalysisStatus:
    """Feed one evaluation per result, each with a single check."""
    state: AnalysisStatus | None = (AnalysisStatus(consecutive_failures=limit_start)
                                    if limit_start else None)
    for i, result in enumerate(results):
        state = next_analysis(state, checks=[CheckStatus(name="drift", result=result,
                                                         value=0.3, max=0.2)],
                              now=NOW + timedelta(seconds=i))
    assert state is not None
    return state


class TestConsecutiveFailures:
    @pytest.mark.parametrize(("results", "count"), [
        ([U], 1), ([U, U, U], 3), ([U, U, H], 0), ([U, H, U], 1),
        ([U, N, U], 2), ([N, N, N], 0), ([U, U, N, N], 2), ([H], 0)])
    def test_only_healthy_resets_and_inconclusive_keeps(self, results: list[CheckResult],
                                                        count: int) -> None:
        assert analysis_of(*results).consecutive_failures == count

    def test_failure_limit_makes_degraded(self) -> None:
        assert not is_degraded(analysis_of(U, U), failure_limit=3)
        assert is_degraded(analysis_of(U, U, U), failure_limit=3)
        assert is_degraded(analysis_of(U, U, U, U), failure_limit=3)
        assert is_degraded(analysis_of(U), failure_limit=1)
        assert not is_degraded(None, failure_limit=1)

    def test_recovery_clears_degraded(self) -> None:
        assert not is_degraded(analysis_of(U, U, U, H), failure_limit=3)

    def test_missing_data_neither_degrades_nor_recovers(self) -> None:
        assert not is_degraded(analysis_of(N, N, N, N, N), failure_limit=1)
        assert is_degraded(analysis_of(U, U, U, N, N, N), failure_limit=3)

    def test_time_result_and_checks_are_recorded(self) -> None:
        state = analysis_of(U, H)
        assert state.time == NOW + timedelta(seconds=1)
        assert state.result is H
        assert [c.name for c in state.checks] == ["drift"]


class TestReporting:
    def test_degraded_message_lists_failing_checks_with_values(self) -> None:
        state = next_analysis(None, checks=[
            judge(DRIFT, 0.31, 812), judge(CONFIDENCE, 0.9), judge(BAND, None)], now=NOW)
        message = degraded_message(state)
        assert message == "1 consecutive failed evaluations: drift: 0.31 above max 0.2 " \
                          "(812 samples)"

    def test_failed_checks_carry_value_and_crossed_bound(self) -> None:
        state = next_analysis(None, checks=[
            judge(DRIFT, 0.31), judge(CONFIDENCE, 0.4), judge(BAND, 0.5), judge(BAND, 1.5)],
            now=NOW)
        assert [(c.name, c.value, c.threshold) for c in failed_checks(state)] == [
            ("drift", 0.31, 0.2), ("confidence", 0.4, 0.6), ("band", 0.5, 1.0)]
        assert failed_checks(None) == []

    def test_summary_shows_every_check(self) -> None:
        state = next_analysis(None, checks=[judge(DRIFT, 0.31), judge(CONFIDENCE, None)],
                              now=NOW)
        assert summary(state) == ("analysis Unhealthy: drift=0.31 Unhealthy, "
                                  "confidence=n/a Inconclusive")


class TestSchedule:
    def test_first_evaluation_is_due_at_once(self) -> None:
        assert analysis_due(None, interval=timedelta(minutes=1), now=NOW)
        assert analysis_due(AnalysisStatus(), interval=timedelta(minutes=1), now=NOW)

    def test_next_one_waits_for_the_interval(self) -> None:
        last = AnalysisStatus(time=NOW)
        assert not analysis_due(last, interval=timedelta(seconds=30),
                                now=NOW + timedelta(seconds=29))
        assert analysis_due(last, interval=timedelta(seconds=30),
                            now=NOW + timedelta(seconds=30))


def test_a_canary_is_judged_against_the_stable_tracks_live_accuracy() -> None:
    from modelloop_operator.monitor.analysis import versus_stable

    def judge(canary: Observation, stable: Observation,
              on_missing: OnMissingData = OnMissingData.INCONCLUSIVE) -> CheckStatus:
        return versus_stable(name="accuracyVsStable", canary=canary, stable=stable,
                             min_samples=50, max_drop=0.02, on_missing=on_missing)

    worse = judge(Observation(0.80, 120), Observation(0.90, 400))
    assert worse.result is CheckResult.UNHEALTHY and worse.min == pytest.approx(0.88)
    assert worse.message == ("canary accuracy 0.800 < stable 0.900 - maxAccuracyDrop 0.02 "
                             "(120 vs 400 labelled)")
    assert judge(Observation(0.885, 120), Observation(0.90, 400)).result is CheckResult.HEALTHY
    assert judge(Observation(0.88, 120), Observation(0.90, 400)).result is CheckResult.HEALTHY
    few = judge(Observation(0.10, 12), Observation(0.90, 400))
    assert (few.result, few.message) == (CheckResult.INCONCLUSIVE,
                                         "canary: 12 labelled requests, 50 needed")
    blind = judge(Observation(0.9, 100), Observation(None, None), OnMissingData.FAIL)
    assert blind.result is CheckResult.UNHEALTHY
    assert blind.message.startswith("stable: 0 labelled requests, 50 needed")
    down = judge(Observation(error="unreachable"), Observation(0.9, 100))
    assert down.message == "canary query failed: unreachable"
