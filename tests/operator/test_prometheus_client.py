"""The Prometheus client and the built-in checks' PromQL against a real Prometheus
(the binary hack/build-cluster-binaries.sh builds from its Go module, scraping a test
exporter every second), plus the answer parser alone.

The built-in queries are only worth something if they select exactly one deployment's
pods and compute the number the docs promise, so they are run, not string-compared.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
from modelloop_operator.api.monitoring import MonitoringSpec
from modelloop_operator.monitor.builtin_checks import (
    check_queries,
    feedback_selector,
    pod_selector,
)
from modelloop_operator.prometheus import PrometheusClient, PrometheusError, parse_result

from tests.harness.processes import free_port
from tests.harness.prometheus import (
    PrometheusServer,
    TestExporter,
    prometheus_scraping_exporter,
)

NS = "ml"
POD = "bbc-7d9f8b6c5-x2x4q"
"""A pod of Deployment ``bbc`` (template hash, suffix)."""
OTHER_POD = "bbc-x-5c6d7f8-abcde"
"""A pod of another deployment, ``bbc-x``, whose name starts the same way."""
CANARY_POD = "bbc-canary-6f7c8d9-qwert"


def fresh_namespace() -> str:
    """A namespace of its own: rate() still sees an earlier test's counters for a window
    after they vanished, so tests of rates must not share a selector."""
    return f"ml-{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="module")
def prom(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PrometheusServer,
                                                                       TestExporter]]:
    with prometheus_scraping_exporter(tmp_path_factory.mktemp("prometheus")) as both:
        yield both


@pytest.fixture
def exporter(prom: tuple[PrometheusServer, TestExporter]) -> Iterator[TestExporter]:
    prom[1].clear()
    yield prom[1]
    prom[1].clear()


@pytest.fixture
def server(prom: tuple[PrometheusServer, TestExporter]) -> PrometheusServer:
    return prom[0]


async def value(server: PrometheusServer, promql: str) -> float | None:
    async with PrometheusClient.open(server.url) as client:
        return await client.value(promql)


def scraped(server: PrometheusServer, promql: str, count: int = 1) -> None:
    server.wait_for(promql, lambda r: len(r) >= count)


class Traffic:
    """Counters that grow every 0.2 s, like a model server under steady load."""

    def __init__(self, exporter: TestExporter) -> None:
        self.exporter = exporter
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.per_tick: list[tuple[str, float, dict[str, str]]] = []

    def every_tick(self, name: str, amount: float, **labels: str) -> None:
        self.per_tick.append((name, amount, labels))

    def _run(self) -> None:
        while not self._stop.is_set():
            for name, amount, labels in self.per_tick:
                self.exporter.add(name, amount, **labels)
            time.sleep(0.2)

    def __enter__(self) -> Traffic:
        for name, _, labels in self.per_tick:
            self.exporter.add(name, 0.0, **labels)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


# --- the client -------------------------------------------------------------------------

async def test_a_selected_gauge_is_one_number(server: PrometheusServer,
                                              exporter: TestExporter) -> None:
    exporter.set("g", 0.25, namespace=NS, pod=POD)
    scraped(server, "g")
    assert await value(server, f'g{{{pod_selector(namespace=NS, deployment="bbc")}}}') == 0.25


async def test_no_series_is_none_not_zero(server: PrometheusServer,
                                          exporter: TestExporter) -> None:
    assert await value(server, 'absent_metric{namespace="ml"}') is None


async def test_several_series_are_refused_with_advice(server: PrometheusServer,
                                                      exporter: TestExporter) -> None:
    exporter.set("g", 1, namespace=NS, pod=POD)
    exporter.set("g", 2, namespace=NS, pod=OTHER_POD)
    scraped(server, "g", 2)
    with pytest.raises(PrometheusError, match=r"2 series.*aggregate"):
        await value(server, "g")


async def test_zero_by_zero_comes_back_as_nan(server: PrometheusServer,
                                              exporter: TestExporter) -> None:
    result = await value(server, "vector(0) / vector(0)")
    assert result is not None and math.isnan(result)


async def test_bad_promql_carries_prometheus_own_message(server: PrometheusServer) -> None:
    with pytest.raises(PrometheusError, match="bad_data"):
        await value(server, "sum(rate(x[5m])")


async def test_unreachable_server_is_an_error_not_a_hang() -> None:
    started = time.monotonic()
    with pytest.raises(PrometheusError, match="unreachable"):
        async with PrometheusClient.open(f"http://127.0.0.1:{free_port()}",
                                         query_seconds=2) as client:
            await client.value("up")
    assert time.monotonic() - started < 5


def test_scalar_answer_is_one_sample() -> None:
    body = {"status": "success", "data": {"resultType": "scalar", "result": [1.0, "0.5"]}}
    assert [s.value for s in parse_result(body, query="0.5")] == [0.5]


def test_range_answer_is_refused() -> None:
    body = {"status": "success", "data": {"resultType": "matrix", "result": []}}
    with pytest.raises(PrometheusError, match="matrix, not a number"):
        parse_result(body, query="x[5m]")


def test_error_answer_names_type_and_reason() -> None:
    body = {"status": "error", "errorType": "timeout", "error": "query timed out"}
    with pytest.raises(PrometheusError, match="timeout: query timed out"):
        parse_result(body, query="x")


def test_infinite_values_are_parsed() -> None:
    body = {"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": {"a": "b"}, "value": [1.0, "+Inf"]}]}}
    assert parse_result(body, query="x")[0].value == math.inf


# --- the built-in checks' PromQL on the server image's metric names ---------------------

def spec(**checks: object) -> MonitoringSpec:
    return MonitoringSpec.model_validate({"prometheusUrl": "http://p:9090", "window": "5s",
                                          **checks})


COLLECTOR = "bbc-collector-0"


async def evaluate(server: PrometheusServer, monitoring: MonitoringSpec,
                   deployment: str = "bbc", namespace: str = NS, version: str = "v1"
                   ) -> dict[str, tuple[float | None, float | None]]:
    out = {}
    feedback = feedback_selector(namespace=namespace, collector_pod=COLLECTOR,
                                 version=version)
    async with PrometheusClient.open(server.url) as client:
        for check in check_queries(monitoring, selector=pod_selector(namespace=namespace,
                                                                      deployment=deployment),
                                   feedback=feedback):
            out[check.name] = (await client.value(check.query),
                               await client.value(check.samples_query))
    return out


async def test_drift_is_the_worst_pod_of_this_deployment_only(
        server: PrometheusServer, exporter: TestExporter) -> None:
    for pod, psi, samples in ((POD, 0.31, 800), ("bbc-7d9f8b6c5-zzzzz", 0.05, 300),
                              (OTHER_POD, 0.9, 5), (CANARY_POD, 0.8, 10)):
        exporter.set("modelloop_drift_psi", psi, namespace=NS, pod=pod, model_name="model",
                     distribution="class")
        exporter.set("modelloop_drift_psi", 0.99, namespace=NS, pod=pod, model_name="model",
                     distribution="confidence")
        exporter.set("modelloop_drift_window_samples", samples, namespace=NS, pod=pod,
                     model_name="model")
    exporter.set("modelloop_drift_psi", 0.95, namespace="other", pod=POD,
                 distribution="class")
    scraped(server, "modelloop_drift_window_samples", 4)
    result = await evaluate(server, spec(drift={"max": 0.2}))
    assert result["drift"] == (0.31, 300)
    canary = await evaluate(server, spec(drift={"max": 0.2}), deployment="bbc-canary")
    assert canary["drift"] == (0.8, 10)


async def test_confidence_is_the_mean_over_the_window(server: PrometheusServer,
                                                      exporter: TestExporter) -> None:
    ns = fresh_namespace()
    traffic = Traffic(exporter)
    traffic.every_tick("modelloop_prediction_confidence_sum", 8.0, namespace=ns, pod=POD)
    traffic.every_tick("modelloop_prediction_confidence_count", 10.0, namespace=ns, pod=POD)
    traffic.every_tick("modelloop_prediction_confidence_sum", 1.0, namespace=ns,
                       pod=OTHER_POD)
    traffic.every_tick("modelloop_prediction_confidence_count", 10.0, namespace=ns,
                       pod=OTHER_POD)
    with traffic:
        await asyncio.sleep(3.5)
        result = await evaluate(server, spec(confidence={"min": 0.6}), namespace=ns)
    mean, samples = result["confidence"]
    assert mean == pytest.approx(0.8, abs=1e-6)
    assert samples is not None and samples > 20


async def test_error_rate_is_zero_before_the_first_error(server: PrometheusServer,
                                                         exporter: TestExporter) -> None:
    ns = fresh_namespace()
    traffic = Traffic(exporter)
    traffic.every_tick("ts_inference_requests_total", 10.0, namespace=ns, pod=POD)
    with traffic:
        await asyncio.sleep(3.5)
        result = await evaluate(server, spec(errorRate={"max": 0.05}), namespace=ns)
    rate, requests = result["errorRate"]
    assert rate == 0.0
    assert requests is not None and requests > 20


async def test_error_rate_counts_every_reason(server: PrometheusServer,
                                              exporter: TestExporter) -> None:
    ns = fresh_namespace()
    traffic = Traffic(exporter)
    traffic.every_tick("ts_inference_requests_total", 10.0, namespace=ns, pod=POD)
    traffic.every_tick("modelloop_inference_errors_total", 1.0, namespace=ns, pod=POD,
                       reason="internal")
    traffic.every_tick("modelloop_inference_errors_total", 1.0, namespace=ns, pod=POD,
                       reason="invalid_input")
    with traffic:
        await asyncio.sleep(3.5)
        result = await evaluate(server, spec(errorRate={"max": 0.05}), namespace=ns)
    assert result["errorRate"][0] == pytest.approx(0.2, abs=1e-6)


async def test_no_traffic_gives_no_number(server: PrometheusServer,
                                          exporter: TestExporter) -> None:
    ns = fresh_namespace()
    exporter.set("ts_inference_requests_total", 100.0, namespace=ns, pod=POD)
    exporter.set("modelloop_prediction_confidence_sum", 80.0, namespace=ns, pod=POD)
    exporter.set("modelloop_prediction_confidence_count", 100.0, namespace=ns, pod=POD)
    await asyncio.sleep(3.0)
    result = await evaluate(server, spec(confidence={"min": 0.6}, errorRate={"max": 0.05}),
                            namespace=ns)
    confidence, samples = result["confidence"]
    assert confidence is not None and math.isnan(confidence)  # 0/0: nobody called it
    assert samples == 0
    error_rate, _ = result["errorRate"]
    assert error_rate is not None and math.isnan(error_rate)


def test_custom_check_gets_window_and_selector() -> None:
    monitoring = spec(checks=[{"name": "p99", "max": 0.5, "query":
                               "histogram_quantile(0.99, sum by (le) (rate("
                               "modelloop_request_latency_seconds_bucket{$selector}[$window])))"
                               }])
    [check] = check_queries(monitoring, selector='namespace="ml"')
    assert check.query.endswith('{namespace="ml"}[5s])))')
    assert check.samples_query == 'sum(increase(ts_inference_requests_total{namespace="ml"}[5s]))'



# --- feedback checks ---------------------------------------------------------------------

CONFUSION = {("a", "a"): 6.0, ("a", "b"): 2.0, ("b", "b"): 1.0, ("b", "a"): 1.0}
"""(true label, predicted label) -> labelled predictions per tick; class c never occurs."""


async def test_accuracy_and_macro_f1_come_from_the_served_versions_feedback(
        server: PrometheusServer, exporter: TestExporter) -> None:
    ns = fresh_namespace()
    traffic = Traffic(exporter)
    for truth in "abc":
        for predicted in "abc":
            amount = CONFUSION.get((truth, predicted), 0.0)
            correct = "true" if truth == predicted else "false"
            traffic.every_tick("modelloop_feedback_total", amount, namespace=ns,
                               pod=COLLECTOR, model_version="v1", label=truth,
                               predicted=predicted, correct=correct)
            # another version (the model replaced) and another deployment's collector:
            traffic.every_tick("modelloop_feedback_total", 5.0, namespace=ns, pod=COLLECTOR,
                               model_version="v0", label=truth, predicted=predicted,
                               correct=correct)
            traffic.every_tick("modelloop_feedback_total", 5.0, namespace=ns,
                               pod="bbc-x-collector-0", model_version="v1", label=truth,
                               predicted=predicted, correct=correct)
    with traffic:
        await asyncio.sleep(3.5)
        result = await evaluate(server, spec(accuracy={"min": 0.8}, macroF1={"min": 0.7}),
                                namespace=ns)
        missing = await evaluate(server, spec(accuracy={"min": 0.8}), namespace=ns,
                                 version="v9")
    accuracy, labelled = result["accuracy"]
    assert accuracy == pytest.approx(0.7, abs=1e-6)
    # F1(a) = 2*6 / (8 + 7) = 0.8, F1(b) = 2*1 / (2 + 3) = 0.4; c never occurs: left out
    f1, f1_labelled = result["macroF1"]
    assert f1 == pytest.approx(0.6, abs=1e-6)
    assert labelled is not None and labelled > 50
    assert f1_labelled == pytest.approx(labelled, rel=0.1)  # queried a moment apart
    assert missing["accuracy"] == (None, 0.0) or missing["accuracy"][0] is None


async def test_input_drift_is_the_worst_pods_input_psi(server: PrometheusServer,
                                                        exporter: TestExporter) -> None:
    for pod, psi in ((POD, 0.42), ("bbc-7d9f8b6c5-zzzzz", 0.1), (OTHER_POD, 0.99)):
        exporter.set("modelloop_drift_psi", psi, namespace=NS, pod=pod, model_name="model",
                     distribution="input")
        exporter.set("modelloop_drift_psi", 0.01, namespace=NS, pod=pod, model_name="model",
                     distribution="class")
        exporter.set("modelloop_drift_window_samples", 500, namespace=NS, pod=pod,
                     model_name="model")
    scraped(server, 'modelloop_drift_psi{distribution="input"}', 3)
    result = await evaluate(server, spec(inputDrift={"max": 0.2}))
    assert result["inputDrift"] == (0.42, 500)
