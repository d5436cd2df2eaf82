"""The handler on a tiny real model, driven through TorchServe's own Context and metrics cache.

Batches are built the way TorchServe's worker builds them (`Service.retrieve_data_for_inference`
on the wire-format rows), and metrics go through a real `MetricsCacheYamlImpl` loaded from our
metrics.yaml; the log lines it writes are what the frontend turns into Prometheus series.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from modelloop_server.handler import ModelloopHandler
from modelloop_server.metrics import metrics_config_path
from ts.context import Context  # type: ignore[import-untyped]
from ts.metrics.metric_cache_yaml_impl import MetricsCacheYamlImpl  # type: ignore[import-untyped]
from ts.service import Service  # type: ignore[import-untyped]

MODEL = "news"


def make_context(model_dir: Path) -> Context:
    cache = MetricsCacheYamlImpl(config_file_path=str(metrics_config_path()))
    cache.initialize_cache()
    cache.model_name = MODEL
    return Context(MODEL, str(model_dir), None, 8, None, "0.12.0", True, cache, {})


def wire_row(body: Any, content_type: str = "application/json",
             headers: dict[str, str] | None = None) -> dict[str, Any]:
    """A request as TorchServe's worker decodes it from the frontend (JSON already parsed)."""
    return {
        "requestId": f"req-{id(body)}".encode(),
        "headers": [{"name": k.encode(), "value": v.encode()}
                    for k, v in (headers or {}).items()],
        "parameters": [{"name": "body", "contentType": content_type, "value": body}],
    }


class Worker:
    """One handler with its context, answering batches like a TorchServe worker."""

    def __init__(self, model_dir: Path) -> None:
        self.context = make_context(model_dir)
        self.handler = ModelloopHandler()
        self.handler.initialize(self.context)

    def run(self, *rows: dict[str, Any]) -> list[tuple[int, Any]]:
        headers, batch, req_ids = Service.retrieve_data_for_inference(list(rows))
        self.context.request_processor = headers
        self.context.request_ids = req_ids
        self.context.metrics.request_ids = req_ids
        out = self.handler.handle(batch, self.context)
        assert out is not None and len(out) == len(rows)
        results = []
        for idx, body in enumerate(out):
            status, _ = self.context.get_response_status(idx)
            assert self.context.get_response_content_type(idx) == "application/json"
            results.append((status, json.loads(body)))
        return results

    def one(self, body: Any, content_type: str = "application/json") -> tuple[int, Any]:
        return self.run(wire_row(body, content_type))[0]


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("state")


@pytest.fixture(scope="module")
def worker(tiny_artifact: Path, state_dir: Path) -> Iterator[Worker]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MODELLOOP_STATE_DIR", str(state_dir))
        mp.setenv("MODELLOOP_MAX_TEXTS", "4")
        mp.setenv("MODELLOOP_MAX_CHARS", "200")
        mp.setenv("MODELLOOP_INFERENCE_BATCH", "3")  # forces chunking in multi-text batches
        yield Worker(tiny_artifact)


def metric_lines(caplog: pytest.LogCaptureFixture, name: str) -> list[tuple[float, str]]:
    """(value, dimensions) of each metric line `name` that the worker logged."""
    found = []
    for record in caplog.records:
        m = re.match(rf"\[METRICS\]{name}\.\w+:([^|]+)\|#([^|]*)\|", record.getMessage())
        if m:
            found.append((float(m.group(1)), m.group(2)))
    return found


class TestPredictions:
    def test_single_text_gets_label_confidence_and_all_scores(
        self, worker: Worker, tiny_labels: tuple[str, ...]
    ) -> None:
        status, body = worker.one({"text": "shares rose on the stock market"})
        assert status == 200
        assert set(body) == {"requestId", "label", "confidence", "scores"}
        assert set(body["scores"]) == set(tiny_labels)
        assert body["label"] == max(body["scores"], key=body["scores"].get)
        assert body["confidence"] == pytest.approx(max(body["scores"].values()))
        assert math.fsum(body["scores"].values()) == pytest.approx(1.0, abs=1e-4)

    def test_list_of_texts_gets_a_list_in_order(self, worker: Worker) -> None:
        texts = ["the match ended", "new chips", "the election", "a film"]
        status, body = worker.one({"texts": texts})
        assert status == 200
        singles = [worker.one({"text": t})[1] for t in texts]
        assert [p["label"] for p in body["predictions"]] == [s["label"] for s in singles]
        for batched, single in zip(body["predictions"], singles, strict=True):
            assert batched["confidence"] == pytest.approx(single["confidence"], abs=1e-4)

    def test_body_as_bytes_or_text_is_parsed_as_json(self, worker: Worker) -> None:
        expected = worker.one({"text": "markets"})[1]["label"]
        as_bytes = worker.one(b'{"text": "markets"}', "application/octet-stream")
        as_text = worker.one('{"text": "markets"}', "text/plain")
        again = worker.one({"text": "markets"})[1]
        assert as_bytes[0] == 200
        assert {**as_bytes[1], "requestId": ""} == {**again, "requestId": ""}
        assert as_text[0] == 200 and as_text[1]["label"] == expected


class TestRequestIds:
    def test_every_answer_carries_an_id_in_the_body_and_the_header(self, worker: Worker) -> None:
        row = wire_row({"text": "markets"})
        [(status, body)] = worker.run(row)
        assert status == 200 and body["requestId"] == row["requestId"].decode()
        assert worker.context.get_response_headers(0)["x-modelloop-request-id"] == body["requestId"]

    def test_a_client_chooses_its_own_id(self, worker: Worker) -> None:
        [(status, body)] = worker.run(wire_row({"texts": ["a", "b"]},
                                               headers={"X-Request-Id": "order-17"}))
        assert status == 200 and body["requestId"] == "order-17"
        assert [p["requestId"] for p in body["predictions"]] == ["order-17-0", "order-17-1"]

    def test_an_invalid_client_id_is_refused_and_the_rest_of_the_batch_served(
            self, worker: Worker) -> None:
        results = worker.run(wire_row({"text": "a"}, headers={"x-request-id": "has space"}),
                             wire_row({"text": "b"}))
        assert results[0][0] == 400 and "request id" in results[0][1]["message"]
        assert results[1][0] == 200


class TestBadInput:
    @pytest.mark.parametrize(
        ("body", "status", "message"),
        [
            ({"text": ""}, 400, "empty or blank"),
            ({"text": "   "}, 400, "empty or blank"),
            ({"text": 42}, 400, "must be a string"),
            ({"texts": "abc"}, 400, "must be a list"),
            ({"texts": []}, 400, "empty"),
            ({"texts": ["ok", None]}, 400, "texts[1]"),
            ({"txt": "typo"}, 400, "unknown field"),
            ({"text": "a", "texts": ["b"]}, 400, "not both"),
            (["a", "b"], 400, "JSON object"),
            ({"texts": ["a"] * 5}, 413, "at most 4"),
            ({"text": "x" * 201}, 413, "at most 200"),
            (b"{not json", 400, "not valid JSON"),
            (b"\xff\xfe", 400, "not UTF-8"),
            (b"", 400, "body is empty"),
            (b" \n", 400, "body is empty"),
        ],
    )
    def test_rejected_with_a_clear_4xx(
        self, worker: Worker, body: Any, status: int, message: str
    ) -> None:
        got_status, got = worker.one(body, "application/octet-stream" if isinstance(body, bytes)
                                     else "application/json")
        assert got_status == status
        assert got["code"] == status
        assert message in got["message"]

    def test_missing_body_is_a_400(self, worker: Worker) -> None:
        row = {"requestId": b"r", "headers": [], "parameters": []}
        assert worker.run(row)[0][0] == 400

    def test_one_bad_request_does_not_fail_the_rest_of_its_batch(self, worker: Worker) -> None:
        good = worker.one({"text": "football"})[1]
        results = worker.run(
            wire_row({"text": "football"}),
            wire_row({"text": ""}),
            wire_row({"texts": ["football", "football"]}),
            wire_row({"text": "x" * 500}),
        )
        assert [status for status, _ in results] == [200, 400, 200, 413]
        assert results[0][1]["label"] == good["label"]
        assert [p["label"] for p in results[2][1]["predictions"]] == [good["label"]] * 2

    def test_model_failure_is_a_500_for_valid_requests_only(
        self, worker: Worker, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        artifact = worker.handler.artifact
        assert artifact is not None

        def broken(texts: Any) -> Any:
            raise RuntimeError("simulated kernel failure")

        monkeypatch.setattr(artifact, "predict_proba", broken)
        results = worker.run(wire_row({"text": "fine"}), wire_row({"text": 1}))
        assert [status for status, _ in results] == [500, 400]
        assert "simulated" not in results[0][1]["message"]  # internals stay in the log


class TestMetrics:
    def test_predictions_confidence_latency_and_drift_are_emitted(
        self, worker: Worker, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.INFO)
        status, body = worker.one({"texts": ["one", "two", "three"]})
        assert status == 200
        labels = [p["label"] for p in body["predictions"]]

        predicted = metric_lines(caplog, "modelloop_predictions_total")
        per_label = {dims: value for value, dims in predicted}
        assert sum(per_label.values()) == 3
        for label in set(labels):
            assert per_label[f"model_name:{MODEL},label:{label}"] == labels.count(label)

        confidences = [v for v, _ in metric_lines(caplog, "modelloop_prediction_confidence")]
        assert confidences == pytest.approx([p["confidence"] for p in body["predictions"]])
        latencies = metric_lines(caplog, "modelloop_request_latency_seconds")
        assert len(latencies) == 1 and 0 < latencies[0][0] < 60

        psi = {dims: v for v, dims in metric_lines(caplog, "modelloop_drift_psi")}
        assert set(psi) == {
            f"model_name:{MODEL},distribution:class",
            f"model_name:{MODEL},distribution:confidence",
        }
        assert all(v >= 0 for v in psi.values())
        samples = metric_lines(caplog, "modelloop_drift_window_samples")
        assert samples and samples[-1][0] >= 3

    def test_errors_are_counted_by_reason(
        self, worker: Worker, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.INFO)
        worker.run(wire_row({"text": ""}), wire_row({"text": ""}), wire_row({"text": "y" * 999}))
        errors = {dims: v for v, dims in metric_lines(caplog, "modelloop_inference_errors_total")}
        assert errors == {
            f"model_name:{MODEL},reason:invalid_input": 2,
            f"model_name:{MODEL},reason:payload_too_large": 1,
        }
        # each request of the batch waited for the whole batch
        assert len(metric_lines(caplog, "modelloop_request_latency_seconds")) == 3

    def test_workers_share_one_drift_window(
        self, tiny_artifact: Path, worker: Worker, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.INFO)
        worker.one({"text": "first worker"})
        before = metric_lines(caplog, "modelloop_drift_window_samples")[-1][0]
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("MODELLOOP_STATE_DIR", str(worker.handler.settings.state_dir))
            second = Worker(tiny_artifact)
        second.one({"texts": ["second", "worker"]})
        after = metric_lines(caplog, "modelloop_drift_window_samples")[-1][0]
        assert after == before + 2


def test_handle_with_no_data_is_torchserves_load_call(worker: Worker) -> None:
    assert worker.handler.handle(None, worker.context) is None
