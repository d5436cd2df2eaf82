"""The served model's custom metrics, emitted through TorchServe's metrics API.

With `metrics_mode=prometheus`, a worker's metrics travel to TorchServe's frontend as log
lines and come out on the metrics port's `/metrics`, but only those declared in the metrics
config file: `metrics.yaml` next to this module (installed at /opt/modelloop/metrics.yaml in
the image). Names and meanings are documented in docs/metrics.md.

Histograms use the Prometheus Java client's default buckets (0.005 ... 10): TorchServe 0.12
offers no way to choose buckets. They suit latencies in seconds; for confidence the usable
buckets are 0.25, 0.5, 0.75 and 1, plus `_sum`/`_count` for the mean.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from modelloop_server.drift import DriftScores

logger = logging.getLogger(__name__)

PREDICTIONS_TOTAL = "modelloop_predictions_total"
INFERENCE_ERRORS_TOTAL = "modelloop_inference_errors_total"
DRIFT_PSI = "modelloop_drift_psi"
DRIFT_WINDOW_SAMPLES = "modelloop_drift_window_samples"
REQUEST_LATENCY_SECONDS = "modelloop_request_latency_seconds"
PREDICTION_CONFIDENCE = "modelloop_prediction_confidence"
CAPTURE_DROPPED_TOTAL = "modelloop_capture_dropped_total"

# (name, TorchServe metric type) of every metric this module emits.
MODEL_METRICS: tuple[tuple[str, str], ...] = (
    (PREDICTIONS_TOTAL, "counter"),
    (INFERENCE_ERRORS_TOTAL, "counter"),
    (DRIFT_PSI, "gauge"),
    (DRIFT_WINDOW_SAMPLES, "gauge"),
    (REQUEST_LATENCY_SECONDS, "histogram"),
    (PREDICTION_CONFIDENCE, "histogram"),
    (CAPTURE_DROPPED_TOTAL, "counter"),
)

# Values of the `reason` label of modelloop_inference_errors_total.
REASON_INVALID_INPUT = "invalid_input"
REASON_TOO_LARGE = "payload_too_large"
REASON_INTERNAL = "internal"


def metrics_config_path() -> Path:
    """The metrics.yaml shipped in this package (the image copies it to a fixed path)."""
    return Path(str(resources.files("modelloop_server").joinpath("metrics.yaml")))


def undeclared_metrics(config: dict[str, Any]) -> list[str]:
    """Our metrics missing from a parsed metrics config (as `type:name`).

    A metric missing there is dropped by TorchServe without an error, so the entrypoint
    checks the file before starting the server.
    """
    section = config.get("model_metrics") or {}
    declared = {
        (str(m.get("name")), str(kind))
        for kind, items in section.items()
        for m in items or []
        if isinstance(m, dict)
    }
    return [f"{kind}:{name}" for name, kind in MODEL_METRICS if (name, kind) not in declared]


class ModelMetrics:
    """Emits the model's metrics into a worker's TorchServe metrics cache.

    `cache` is `context.metrics` (a `ts.metrics.metric_cache_yaml_impl.MetricsCacheYamlImpl`).
    Dimension values are passed in the order metrics.yaml declares them.
    """

    def __init__(self, cache: Any, *, model_name: str) -> None:
        from ts.metrics.metric_type_enum import MetricTypes  # type: ignore[import-untyped]

        self._cache = cache
        self._model = model_name
        self._types = {
            "counter": MetricTypes.COUNTER,
            "gauge": MetricTypes.GAUGE,
            "histogram": MetricTypes.HISTOGRAM,
        }
        # Fail at model load, not at the first request, when the config lacks a metric.
        for name, kind in MODEL_METRICS:
            self._metric(name, kind)

    def _metric(self, name: str, kind: str) -> Any:
        return self._cache.get_metric(name, self._types[kind])

    def _emit(self, name: str, kind: str, value: float, dimensions: Sequence[str]) -> None:
        self._metric(name, kind).add_or_update(value, [self._model, *dimensions])

    def request_latencies(self, seconds: Iterable[float]) -> None:
        for value in seconds:
            self._emit(REQUEST_LATENCY_SECONDS, "histogram", value, [])

    def predictions(self, labels: Iterable[str], confidences: Iterable[float]) -> None:
        for label, n in sorted(Counter(labels).items()):
            self._emit(PREDICTIONS_TOTAL, "counter", n, [label])
        for confidence in confidences:
            self._emit(PREDICTION_CONFIDENCE, "histogram", confidence, [])

    def errors(self, reasons: Iterable[str]) -> None:
        for reason, n in sorted(Counter(reasons).items()):
            self._emit(INFERENCE_ERRORS_TOTAL, "counter", n, [reason])

    def drift(self, scores: DriftScores) -> None:
        """Export the window's size always, and the PSI values only when there are any."""
        self._emit(DRIFT_WINDOW_SAMPLES, "gauge", scores.samples, [])
        if scores.class_psi is not None:
            self._emit(DRIFT_PSI, "gauge", scores.class_psi, ["class"])
        if scores.confidence_psi is not None:
            self._emit(DRIFT_PSI, "gauge", scores.confidence_psi, ["confidence"])
        if scores.input_psi is not None:
            self._emit(DRIFT_PSI, "gauge", scores.input_psi, ["input"])

    def capture_dropped(self, reasons: Mapping[str, int]) -> None:
        """Capture records the worker could not hand to the collector, by reason."""
        for reason, n in sorted(reasons.items()):
            self._emit(CAPTURE_DROPPED_TOTAL, "counter", n, [reason])
