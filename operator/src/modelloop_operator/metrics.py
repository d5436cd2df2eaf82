"""The operator's own Prometheus metrics, in their own registry.

Created once at startup (never at import, so tests and a second operator in one process
get fresh counters) and served on ``MODELLOOP_METRICS_PORT``. The reconcilers report
through the small methods here instead of touching prometheus_client objects directly.

The registry is ours, not prometheus_client's global one, so the process, platform and
garbage-collector collectors that the global registry carries are added to it explicitly:
without them the operator would export no ``process_*`` series (CPU, memory, open file
descriptors, start time) for dashboards and alerts.
"""

from __future__ import annotations

import time
from collections import Counter as Tally
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    start_http_server,
)

RECONCILE_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class OperatorMetrics:
    """Reconcile count, duration and errors per kind, objects by phase, retrains started,
    and the process's own resource use."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self._reconciles = Counter(
            "modelloop_reconcile", "Reconciles run, by kind and trigger.",
            ["kind", "trigger"], registry=self.registry)
        self._errors = Counter(
            "modelloop_reconcile_errors", "Reconciles that ended in an error, by kind and type.",
            ["kind", "error"], registry=self.registry)
        self._duration = Histogram(
            "modelloop_reconcile_duration_seconds", "Time spent in one reconcile, by kind.",
            ["kind"], buckets=RECONCILE_BUCKETS, registry=self.registry)
        self._objects = Gauge(
            "modelloop_objects", "Objects this operator serves, by kind and phase.",
            ["kind", "phase"], registry=self.registry)
        # Not "namespace": Prometheus gives that label to every series from the scrape
        # target (the operator's own namespace) and would rename ours exported_namespace.
        self._retrains = Counter(
            "modelloop_retrains",
            "Retraining TrainingJobs created, by the ModelDeployment's namespace and the "
            "checks that triggered them.",
            ["model_namespace", "reason"], registry=self.registry)
        self._phases: dict[str, dict[str, str]] = {}

    @contextmanager
    def reconciling(self, *, kind: str, trigger: str) -> Iterator[None]:
        """Count and time one reconcile; an exception is counted by its type and re-raised."""
        self._reconciles.labels(kind=kind, trigger=trigger).inc()
        started = time.perf_counter()
        try:
            yield
        except Exception as exc:
            self._errors.labels(kind=kind, error=type(exc).__name__).inc()
            raise
        finally:
            self._duration.labels(kind=kind).observe(time.perf_counter() - started)

    def retrain_started(self, *, namespace: str, reason: str) -> None:
        """Count one retraining TrainingJob this operator created (not one it found
        already there after a restart). ``reason``: a bounded label value (which kinds of
        check failed), never a deployment's or a custom check's name."""
        self._retrains.labels(model_namespace=namespace, reason=reason).inc()

    def set_phase(self, *, kind: str, key: str, phase: str | None) -> None:
        """Record the phase of one object (``None`` when it is gone) and refresh the gauge.

        Phases are kept per object so the gauge is a true count even when an object's
        phase changes or it is deleted, not a sum of increments that drifts.
        """
        phases = self._phases.setdefault(kind, {})
        if phase is None:
            phases.pop(key, None)
        else:
            phases[key] = phase
        counts = Tally(phases.values())
        for known in {*counts, *self._known_phases(kind)}:
            self._objects.labels(kind=kind, phase=known).set(counts.get(known, 0))

    def _known_phases(self, kind: str) -> set[str]:
        return {labels["phase"] for labels in self._label_sets() if labels["kind"] == kind}

    def _label_sets(self) -> Iterator[dict[str, str]]:
        for metric in self._objects.collect():
            for sample in metric.samples:
                yield dict(sample.labels)

    def serve(self, *, port: int) -> None:
        """Expose ``/metrics`` on ``port`` (a daemon thread owned by prometheus_client)."""
        start_http_server(port, registry=self.registry)
