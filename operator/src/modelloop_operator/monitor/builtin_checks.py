"""The PromQL behind each monitoring check, scoped to one ModelDeployment's pods.

The built-in checks read the server image's own metrics (docs/metrics.md), so they work
with no PromQL written by the user:

* ``drift`` - the largest ``modelloop_drift_psi{distribution="class"}`` across the pods,
  resting on the fewest ``modelloop_drift_window_samples`` of any pod (PSI over a small
  window is noise, so the weakest pod decides whether there is enough data);
* ``confidence`` - the mean top-class probability over the window, from the histogram's
  ``_sum`` and ``_count``, resting on the predictions counted;
* ``errorRate`` - failed requests over all requests in the window. ``or vector(0)`` makes
  "no error series yet" (the counter appears with the first error) a rate of 0 rather than
  no data, while the request count still decides whether there were requests at all.

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

DRIFT: Final = "drift"
CONFIDENCE: Final = "confidence"
ERROR_RATE: Final = "errorRate"

REQUESTS_QUERY: Final = "sum(increase(ts_inference_requests_total{$selector}[$window]))"
"""What a custom check's value rests on unless it names its own samples query."""

_BUILTIN: Final[dict[str, tuple[str, str]]] = {
    DRIFT: ('max(modelloop_drift_psi{$selector,distribution="class"})',
            "min(modelloop_drift_window_samples{$selector})"),
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


def pod_selector(*, namespace: str, deployment: str) -> str:
    """Label matchers for the pods of one Deployment (``$selector``)."""
    return f'namespace="{namespace}",pod=~"{deployment}{_POD_SUFFIX}"'


def pods_selector(*, namespace: str, deployments: tuple[str, ...]) -> str:
    """Label matchers for the pods of several Deployments (both tracks of a rollout)."""
    alternatives = "|".join(f"{d}{_POD_SUFFIX}" for d in deployments)
    return f'namespace="{namespace}",pod=~"{alternatives}"'


def render(query: str, *, window: str, selector: str) -> str:
    """``query`` with ``$window`` and ``$selector`` filled in."""
    return query.replace(WINDOW_PLACEHOLDER, window).replace(SELECTOR_PLACEHOLDER, selector)


def check_queries(spec: MonitoringSpec, *, selector: str) -> list[CheckQuery]:
    """Every check of ``spec`` (built-in ones first, in a fixed order), rendered."""
    out: list[CheckQuery] = []
    for name, bounds in ((DRIFT, spec.drift), (CONFIDENCE, spec.confidence),
                         (ERROR_RATE, spec.error_rate)):
        if bounds is None:
            continue
        query, samples = _BUILTIN[name]
        out.append(CheckQuery(name=name, bounds=Bounds(min=bounds.min, max=bounds.max),
                              query=render(query, window=spec.window, selector=selector),
                              samples_query=render(samples, window=spec.window,
                                                   selector=selector)))
    for check in spec.checks:
        samples = check.samples_query or REQUESTS_QUERY
        out.append(CheckQuery(name=check.name, bounds=Bounds(min=check.min, max=check.max),
                              query=render(check.query, window=spec.window, selector=selector),
                              samples_query=render(samples, window=spec.window,
                                                   selector=selector)))
    return out
