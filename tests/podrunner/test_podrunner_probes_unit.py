"""Probe thresholds, initial verdicts and scheduling follow the kubelet."""

from __future__ import annotations

from tests.harness.podrunner.probes import ProbeKind, ProbeSpec, ProbeTracker


def tracker(kind: ProbeKind, **probe: object) -> ProbeTracker:
    container = {f"{kind.value}Probe": {"tcpSocket": {"port": 80}, **probe}}
    spec = ProbeSpec.from_container(container, kind)
    assert spec is not None
    return ProbeTracker(spec, started_at=100.0)


def test_defaults_and_no_probe() -> None:
    spec = ProbeSpec.from_container({"readinessProbe": {"exec": {"command": ["true"]}}},
                                    ProbeKind.READINESS)
    assert spec is not None
    assert (spec.initial_delay, spec.period, spec.timeout) == (0, 10, 1)
    assert (spec.success_threshold, spec.failure_threshold) == (1, 3)
    assert ProbeSpec.from_container({}, ProbeKind.LIVENESS) is None


def test_schedule_starts_after_initial_delay_then_every_period() -> None:
    probe = tracker(ProbeKind.READINESS, initialDelaySeconds=5, periodSeconds=2)
    assert probe.next_due() == 105.0
    probe.record(True, at=105.5)
    assert probe.next_due() == 107.5


def test_readiness_needs_success_threshold_and_failure_threshold() -> None:
    probe = tracker(ProbeKind.READINESS, successThreshold=2, failureThreshold=2)
    assert not probe.passing
    assert not probe.record(True, 1)
    assert probe.record(True, 2) and probe.passing
    assert not probe.record(False, 3) and probe.passing  # one failure is tolerated
    assert probe.record(False, 4) and not probe.passing


def test_liveness_starts_passing_and_fails_at_threshold() -> None:
    probe = tracker(ProbeKind.LIVENESS, failureThreshold=3, successThreshold=5)
    assert probe.passing and probe.spec.success_threshold == 1
    probe.record(False, 1)
    probe.record(False, 2)
    assert not probe.failed
    probe.record(True, 3)  # a success resets the count
    probe.record(False, 4)
    probe.record(False, 5)
    assert not probe.failed
    probe.record(False, 6)
    assert probe.failed and not probe.passing


def test_startup_probe_starts_not_started() -> None:
    probe = tracker(ProbeKind.STARTUP)
    assert not probe.passing
    probe.record(True, 1)
    assert probe.passing
