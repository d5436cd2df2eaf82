"""What one monitoring evaluation means, as pure functions of the numbers Prometheus gave.

Three outcomes per check, and why missing data is never healthy:

* ``Healthy`` - a finite value inside the bounds, resting on at least ``minSamples``;
* ``Unhealthy`` - a finite value outside the bounds, on enough samples;
* ``Inconclusive`` - no series, NaN or infinity (``0/0`` with no traffic), too few
  samples, or the query failed. A model nobody calls, or a Prometheus that stopped
  scraping it, proves nothing either way, so this does not count toward ``failureLimit``
  and does not end a degradation either; with ``onMissingData: Fail`` it counts as
  ``Unhealthy`` instead, for deployments that must always be observed.

The evaluation's result is the worst of its checks (Unhealthy > Inconclusive > Healthy).
Consecutive Unhealthy evaluations are counted in ``status.analysis``; reaching
``failureLimit`` makes the deployment Degraded, a Healthy evaluation resets the count
(recovery), and an Inconclusive one leaves it where it was. This is the semantics of
Flagger's and Argo Rollouts' analysis (failure limit, inconclusive neither passes nor
fails) applied to a deployment that is not rolling out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from ..api.common import TriggerCheck
from ..api.monitoring import (
    AnalysisStatus,
    Bounds,
    CheckResult,
    CheckStatus,
    MonitoringSpec,
    OnMissingData,
)
from .builtin_checks import CheckQuery


@dataclass(frozen=True)
class Observation:
    """What Prometheus answered for one check."""

    value: float | None = None
    """The check's value; None when the query returned no series."""
    samples: float | None = None
    """What the value rests on; None when the samples query returned no series."""
    error: str = ""
    """Why the queries could not be answered (unreachable, bad PromQL, several series)."""


def _number(value: float) -> str:
    return f"{value:.4g}"


def _violation(bounds: Bounds, value: float) -> str:
    if bounds.min is not None and value < bounds.min:
        return f"{_number(value)} below min {_number(bounds.min)}"
    assert bounds.max is not None
    return f"{_number(value)} above max {_number(bounds.max)}"


def _missing(check: CheckQuery, observed: Observation, *, why: str,
             on_missing: OnMissingData) -> CheckStatus:
    fail = on_missing is OnMissingData.FAIL
    return CheckStatus(
        name=check.name,
        result=CheckResult.UNHEALTHY if fail else CheckResult.INCONCLUSIVE,
        value=observed.value if observed.value is not None and math.isfinite(observed.value)
        else None,
        samples=observed.samples if observed.samples is not None
        and math.isfinite(observed.samples) else None,
        min=check.bounds.min, max=check.bounds.max,
        message=(f"{why} (onMissingData: Fail)" if fail else why)[:1024])


def evaluate_check(check: CheckQuery, observed: Observation, *, min_samples: int,
                   on_missing: OnMissingData) -> CheckStatus:
    """One check's outcome (see the module docstring for the rules)."""
    if observed.error:
        return _missing(check, observed, why=f"query failed: {observed.error}",
                        on_missing=on_missing)
    value, samples = observed.value, observed.samples
    if value is None:
        return _missing(check, observed, why="no data", on_missing=on_missing)
    if not math.isfinite(value):
        return _missing(check, observed, why=f"value is {value} (no data in the window)",
                        on_missing=on_missing)
    if samples is None or not math.isfinite(samples):
        return _missing(check, observed, why="sample count unknown (no data)",
                        on_missing=on_missing)
    if samples < min_samples:
        return _missing(check, observed,
                        why=f"only {_number(samples)} samples, {min_samples} needed",
                        on_missing=on_missing)
    healthy = check.bounds.contains(value)
    return CheckStatus(
        name=check.name, result=CheckResult.HEALTHY if healthy else CheckResult.UNHEALTHY,
        value=value, samples=samples, min=check.bounds.min, max=check.bounds.max,
        message=(f"{_number(value)} within bounds" if healthy
                 else _violation(check.bounds, value)) + f" ({_number(samples)} samples)")


def overall_result(checks: Sequence[CheckStatus]) -> CheckResult:
    """Unhealthy if any check is, else Inconclusive if any is (or there are none), else
    Healthy."""
    results = {c.result for c in checks}
    if CheckResult.UNHEALTHY in results:
        return CheckResult.UNHEALTHY
    if CheckResult.INCONCLUSIVE in results or not results:
        return CheckResult.INCONCLUSIVE
    return CheckResult.HEALTHY


def evaluate_checks(checks: Sequence[CheckQuery], observed: Mapping[str, Observation], *,
                    spec: MonitoringSpec) -> list[CheckStatus]:
    """Every check's outcome; a check without an observation is Inconclusive."""
    return [evaluate_check(c, observed.get(c.name, Observation(error="not queried")),
                           min_samples=spec.min_samples if c.min_samples is None
                           else c.min_samples, on_missing=spec.on_missing_data)
            for c in checks]


def next_analysis(old: AnalysisStatus | None, *, checks: Sequence[CheckStatus],
                  now: datetime) -> AnalysisStatus:
    """``status.analysis`` after one evaluation: Unhealthy counts one more consecutive
    failure, Healthy resets the count, Inconclusive keeps it."""
    result = overall_result(checks)
    before = old.consecutive_failures if old is not None else 0
    if result is CheckResult.UNHEALTHY:
        failures = before + 1
    elif result is CheckResult.HEALTHY:
        failures = 0
    else:
        failures = before
    return AnalysisStatus(time=now, result=result, consecutive_failures=failures,
                          checks=list(checks))


def is_degraded(analysis: AnalysisStatus | None, *, failure_limit: int) -> bool:
    """Whether the evaluations so far make the deployment Degraded."""
    return analysis is not None and analysis.consecutive_failures >= failure_limit


def analysis_due(analysis: AnalysisStatus | None, *, interval: timedelta,
                 now: datetime) -> bool:
    """Whether ``interval`` has passed since the last evaluation (or there was none)."""
    return analysis is None or analysis.time is None or now >= analysis.time + interval


def failed_checks(analysis: AnalysisStatus | None) -> list[TriggerCheck]:
    """The Unhealthy checks with their values and the bound each crossed: a retrain's
    lineage."""
    if analysis is None:
        return []
    out: list[TriggerCheck] = []
    for check in analysis.checks:
        if check.result is not CheckResult.UNHEALTHY:
            continue
        threshold = check.max
        if check.value is not None and check.min is not None and check.value < check.min:
            threshold = check.min
        out.append(TriggerCheck(name=check.name, value=check.value, threshold=threshold))
    return out


def degraded_message(analysis: AnalysisStatus) -> str:
    """The Degraded condition's message: every failing check with its value."""
    failing = "; ".join(f"{c.name}: {c.message}" for c in analysis.checks
                        if c.result is CheckResult.UNHEALTHY)
    return (f"{analysis.consecutive_failures} consecutive failed evaluations: "
            f"{failing or 'no failing check in the latest evaluation'}")[:32768]


def summary(analysis: AnalysisStatus) -> str:
    """One line per evaluation for Events: each check's result and value."""
    parts = []
    for c in analysis.checks:
        value = _number(c.value) if c.value is not None else "n/a"
        parts.append(f"{c.name}={value} {c.result.value}")
    result = analysis.result.value if analysis.result is not None else "Inconclusive"
    return f"analysis {result}: " + ", ".join(parts)


def versus_stable(*, name: str, canary: Observation, stable: Observation, min_samples: int,
                  max_drop: float, on_missing: OnMissingData) -> CheckStatus:
    """The canary's live accuracy against the stable track's over the same window: healthy
    when it is at least the stable figure minus ``max_drop``; both need ``min_samples``
    labelled requests, as the accuracy check does."""
    reference = CheckQuery(name=name, query="", samples_query="", bounds=Bounds(min=0.0))
    for track, observed in (("stable", stable), ("canary", canary)):
        if observed.error:
            return _missing(reference, observed, why=f"{track} query failed: {observed.error}",
                            on_missing=on_missing)
        value, samples = observed.value, observed.samples
        if value is None or not math.isfinite(value) or samples is None \
                or not math.isfinite(samples) or samples < min_samples:
            have = _number(samples) if samples is not None and math.isfinite(samples) else "0"
            return _missing(reference, canary,
                            why=f"{track}: {have} labelled requests, {min_samples} needed",
                            on_missing=on_missing)
    assert canary.value is not None and stable.value is not None
    floor = stable.value - max_drop
    healthy = canary.value >= floor - 1e-12
    shown = (f"canary accuracy {canary.value:.3f} {'>=' if healthy else '<'} stable "
             f"{stable.value:.3f} - maxAccuracyDrop {_number(max_drop)} "
             f"({_number(canary.samples or 0)} vs {_number(stable.samples or 0)} labelled)")
    return CheckStatus(name=name, result=CheckResult.HEALTHY if healthy
                       else CheckResult.UNHEALTHY, value=canary.value, samples=canary.samples,
                       min=floor, message=shown)
