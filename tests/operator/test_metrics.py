"""The operator's own metrics registry."""

from __future__ import annotations

import pytest
from modelloop_operator.metrics import OperatorMetrics


def sample(metrics: OperatorMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_each_instance_has_its_own_registry() -> None:
    first, second = OperatorMetrics(), OperatorMetrics()
    with first.reconciling(kind="TrainingJob", trigger="create"):
        pass
    assert sample(first, "modelloop_reconcile_total", kind="TrainingJob", trigger="create") == 1
    assert sample(second, "modelloop_reconcile_total", kind="TrainingJob",
                  trigger="create") is None


def test_errors_are_counted_by_type_and_re_raised() -> None:
    metrics = OperatorMetrics()
    with pytest.raises(KeyError), metrics.reconciling(kind="TrainingJob", trigger="timer"):
        raise KeyError("x")
    assert sample(metrics, "modelloop_reconcile_errors_total", kind="TrainingJob",
                  error="KeyError") == 1
    assert sample(metrics, "modelloop_reconcile_duration_seconds_count",
                  kind="TrainingJob") == 1


def test_objects_by_phase_follow_each_object() -> None:
    metrics = OperatorMetrics()
    metrics.set_phase(kind="TrainingJob", key="a", phase="Running")
    metrics.set_phase(kind="TrainingJob", key="b", phase="Running")
    metrics.set_phase(kind="TrainingJob", key="a", phase="Succeeded")
    assert sample(metrics, "modelloop_objects", kind="TrainingJob", phase="Running") == 1
    assert sample(metrics, "modelloop_objects", kind="TrainingJob", phase="Succeeded") == 1
    metrics.set_phase(kind="TrainingJob", key="b", phase=None)
    assert sample(metrics, "modelloop_objects", kind="TrainingJob", phase="Running") == 0
