"""The PromQL behind each monitoring check, scoped to one ModelDeployment's pods.

The built-in checks read the server image's own metrics (docs/metrics.md), so they work
with no PromQL written by the user:

* ``drift`` - the largest ``modelloop_drift_psi{distribution="class"}`` across the pods,
  resting on the fewest ``modelloop_drift_window_samples`` of any pod (PSI over a small
  window is noise, so the weakest pod decides whether there is enough data);
* ``confidence`` - the mean top-class probability over the window, from the histogram's
  ``_sum`` and ``_count``, resting on the predictions counted;
* ``inputDrift`` - as ``drift``, over ``distribution="input"``: the PSI of the inputs'
  encoder embeddings (a fixed projection stored in the model's profile);
* ``accuracy`` - correct over labelled predictions in the window, from the collector's
  ``modelloop_feedback_total`` of the served model version, resting on the labelled count;
* ``macroF1`` - the mean over classes of 2·TP / (true + predicted) from the same counter
  (classes with neither in the window are left out), resting on the labelled count;
* ``errorRate`` - failed requests over all requests in the window. ``or vector(0)`` makes
  "no error series yet" (the counter appears with the first error) a rate of 0 rather than
  no data, while the request count still decides whether there were requests at all.

Feedback checks read the collector's pod and one model version (``$feedback``), so a
promotion starts them from the new model's own labels.

Scoping: Prometheus' Kubernetes service discovery gives every scraped series ``namespace``
and ``pod``; the pods of a track are ``<deployment>-<template hash>-<suffix>``, so an
anchored regex on ``pod`` picks one deployment's track without matching the pods of a
deployment whose name merely starts the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from ..api.monitoring import Bounds, MonitoringSpec

WINDOW_PLACEHOLDER: Final = "$window"
SELECTOR_PLACEHOLDER: Final = "$selector"
FEEDBACK_PLACEHOLDER: Final = "$feedback"

DRIFT: Final = "drift"
CONFIDENCE: Final = "confidence"
ERROR_RATE: Final = "errorRate"
INPUT_DRIFT: Final = "inputDrift"
ACCURACY: Final = "accuracy"
MACRO_F1: Final = "macroF1"
ACCURACY_VS_STABLE: Final = "accuracyVsStable"
"""A canary's live accuracy against the stable track's (rollout.canary.maxAccuracyDrop)."""

NO_MODEL_VERSION: Final = "none-served-yet"
"""The version a feedback selector names before any model is served: it matches nothing."""

_LABELLED: Final = "sum(increase(modelloop_feedback_total{$feedback}[$window]))"
_BY_TRUE: Final = "sum by (label) (increase(modelloop_feedback_total{$feedback}[$window]))"
_BY_PREDICTED: Final = (
    'sum by (label) (label_replace(sum by (predicted) '
    '(increase(modelloop_feedback_total{$feedback}[$window])), "label", "$1", "predicted", '
    '"(.*)"))')
_TRUE_POSITIVES: Final = (
    'sum by (label) (increase(modelloop_feedback_total{$feedback,correct="true"}[$window]))')

REQUESTS_QUERY: Final = "sum(increase(ts_inference_requests_total{$selector}[$window]))"
"""What a custom check's value rests on unless it names its own samples query."""

_BUILTIN: Final[dict[str, tuple[str, str]]] = {
    DRIFT: ('max(modelloop_drift_psi{$selector,distribution="class"})',
            "min(modelloop_drift_window_samples{$selector})"),
    INPUT_DRIFT: ('max(modelloop_drift_psi{$selector,distribution="input"})',
                  "min(modelloop_drift_window_samples{$selector})"),
    ACCURACY: ('sum(increase(modelloop_feedback_total{$feedback,correct="true"}[$window]))'
               f" / {_LABELLED}", _LABELLED),
    MACRO_F1: (f"avg((2 * {_TRUE_POSITIVES}) / (({_BY_TRUE} + {_BY_PREDICTED}) > 0))",
               _LABELLED),
    CONFIDENCE: ("sum(rate(modelloop_prediction_confidence_sum{$selector}[$window]))"
                 " / sum(rate(modelloop_prediction_confidence_count{$selector}[$window]))",
                 "sum(increase(modelloop_prediction_confidence_count{$selector}[$window]))"),
    ERROR_RATE: ("(sum(rate(modelloop_inference_errors_total{$selector}[$window])) or vector(0))"
                 " / sum(rate(ts_inference_requests_total{$selector}[$window]))",
                 REQUESTS_QUERY),
}

_POD_SUFFIX: Final = "-[a-z0-9]+-[a-z0-9]+"
"""ReplicaSet template hash and pod suffix, as the Deployment controller names pods."""


@dataclass(frozen=True)
class CheckQuery:
    """One check ready to send: the value and sample-count queries, already rendered."""

    name: str
    query: str
    samples_query: str
    bounds: Bounds
    min_samples: int | None = None
    """This check's own minimum of samples; monitoring.minSamples when None."""


def pod_selector(*, namespace: str, deployment: str) -> str:
    """Label matchers for the pods of one Deployment (``$selector``)."""
    return f'namespace="{namespace}",pod=~"{deployment}{_POD_SUFFIX}"'


def pods_selector(*, namespace: str, deployments: tuple[str, ...]) -> str:
    """Label matchers for the pods of several Deployments (both tracks of a rollout)."""
    alternatives = "|".join(f"{d}{_POD_SUFFIX}" for d in deployments)
    return f'namespace="{namespace}",pod=~"{alternatives}"'


def feedback_selector(*, namespace: str, collector_pod: str, version: str | None) -> str:
    """Label matchers for one model version's feedback counts (``$feedback``)."""
    return (f'namespace="{namespace}",pod="{collector_pod}",'
            f'model_version="{version or NO_MODEL_VERSION}"')


def builtin_query(name: str) -> tuple[str, str]:
    """A built-in check's value and samples queries, unrendered."""
    return _BUILTIN[name]


def labelled_count_query(*, namespace: str, collector_pod: str,
                         seconds: int | None) -> str:
    """Labelled requests of every model version the collector counted over the last
    ``seconds`` (all since it started when None): what retrain.data.labelled.minRows
    waits for. A restarted collector's counter starts again, so this may undercount;
    the trainer counts the records themselves."""
    selector = f'namespace="{namespace}",pod="{collector_pod}"'
    if seconds is None:
        return f"sum(modelloop_feedback_total{{{selector}}})"
    return f"sum(increase(modelloop_feedback_total{{{selector}}}[{max(seconds, 60)}s]))"


def render(query: str, *, window: str, selector: str, feedback: str = "") -> str:
    """``query`` with ``$window``, ``$selector`` and ``$feedback`` filled in."""
    return (query.replace(WINDOW_PLACEHOLDER, window).replace(SELECTOR_PLACEHOLDER, selector)
            .replace(FEEDBACK_PLACEHOLDER, feedback or f'model_version="{NO_MODEL_VERSION}"'))


def check_queries(spec: MonitoringSpec, *, selector: str,
                  feedback: str = "") -> list[CheckQuery]:
    """Every check of ``spec`` (built-in ones first, in a fixed order), rendered."""
    out: list[CheckQuery] = []
    builtin: tuple[tuple[str, Bounds | None, int | None], ...] = (
        (DRIFT, spec.drift, None), (INPUT_DRIFT, spec.input_drift, None),
        (CONFIDENCE, spec.confidence, None), (ERROR_RATE, spec.error_rate, None),
        (ACCURACY, spec.accuracy, spec.accuracy.min_samples if spec.accuracy else None),
        (MACRO_F1, spec.macro_f1, spec.macro_f1.min_samples if spec.macro_f1 else None))
    for name, bounds, min_samples in builtin:
        if bounds is None:
            continue
        query, samples = _BUILTIN[name]
        out.append(CheckQuery(name=name, bounds=Bounds(min=bounds.min, max=bounds.max),
                              query=render(query, window=spec.window, selector=selector,
                                           feedback=feedback),
                              samples_query=render(samples, window=spec.window,
                                                   selector=selector, feedback=feedback),
                              min_samples=min_samples))
    for check in spec.checks:
        samples = check.samples_query or REQUESTS_QUERY
        out.append(CheckQuery(name=check.name, bounds=Bounds(min=check.min, max=check.max),
                              query=render(check.query, window=spec.window, selector=selector,
                                           feedback=feedback),
                              samples_query=render(samples, window=spec.window,
                                                   selector=selector, feedback=feedback)))
    return out
