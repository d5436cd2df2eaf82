"""The handler registry and its event filters (no cluster: kopf is not started)."""

from __future__ import annotations

from modelloop_operator.config import OperatorConfig
from modelloop_operator.handlers import _pod_ended_or_disrupted, _unfinished, build_registry


def test_every_trigger_of_the_trainingjob_reconcile_is_registered() -> None:
    registry = build_registry(config=OperatorConfig(resync_seconds=7))
    changing = [h for h in registry._changing.get_all_handlers()]
    assert {h.id for h in changing} >= {"trainingjob-resume", "trainingjob-create",
                                        "trainingjob-update"}
    timers = list(registry._spawning.get_all_handlers())
    assert ("trainingjob-resync", 7) in [  # other kinds add their own timers
        (t.id, t.interval) for t in timers]  # type: ignore[attr-defined]
    watching = {h.id for h in registry._watching.get_all_handlers()}
    assert watching >= {"trainingjob-job", "trainingjob-pod"}


def test_pod_events_that_matter() -> None:
    assert _pod_ended_or_disrupted({"phase": "Succeeded"})
    assert _pod_ended_or_disrupted({"phase": "Failed"})
    assert _pod_ended_or_disrupted({"phase": "Running", "conditions": [
        {"type": "DisruptionTarget", "status": "True"}]})
    assert not _pod_ended_or_disrupted({"phase": "Running", "conditions": [
        {"type": "Ready", "status": "True"}]})
    assert not _pod_ended_or_disrupted({})


def test_the_resync_timer_runs_only_until_the_end() -> None:
    assert _unfinished({}) and _unfinished({"phase": "Running"})
    assert _unfinished({"phase": "Suspended"})
    assert not _unfinished({"phase": "Succeeded"}) and not _unfinished({"phase": "Failed"})
