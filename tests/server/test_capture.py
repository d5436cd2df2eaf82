"""Request capture and feedback: records, segments, the index, the collector over real HTTP,
and the worker's sender. No cluster: the collector is the real `modelloop-collect` server on
a loopback port."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from modelloop_server.capture_client import REASON_UNREACHABLE, CaptureClient
from modelloop_server.capture_index import CaptureIndex, Outcome
from modelloop_server.capture_records import (
    CAPTURE_SCHEMA,
    LABELLED_SCHEMA,
    CaptureRecord,
    ModelIdentity,
    RecordError,
    check_request_id,
    encode,
    parse_capture,
    utc_timestamp,
)
from modelloop_server.capture_sink import Limits, SegmentWriter
from modelloop_server.collector import Collector, parse_feedback
from modelloop_server.collector_server import build_collector, make_handler, parse_args

LABELS = ("business", "sport", "tech")
MODEL = ModelIdentity(name="news", version="v1", digest="sha256:abc")


def record(request_id: str, label: str = "sport", text: str = "a match") -> CaptureRecord:
    scores = {name: (0.8 if name == label else 0.1) for name in LABELS}
    return CaptureRecord(request_id=request_id, time=utc_timestamp(0.0), model=MODEL,
                         pod="news-abc-1", text=text, label=label, confidence=0.8,
                         scores=scores, latency_ms=3.5)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


# --- records ----------------------------------------------------------------------------

def test_a_record_round_trips_through_its_documented_json() -> None:
    data = json.loads(encode(record("r1").to_json()))
    assert data["schema"] == CAPTURE_SCHEMA
    assert set(data) == {"schema", "requestId", "time", "model", "pod", "input",
                         "prediction", "latencyMs"}
    assert data["model"] == {"name": "news", "version": "v1", "digest": "sha256:abc"}
    assert data["input"] == {"text": "a match"}
    assert data["prediction"]["label"] == "sport"
    assert parse_capture(data) == record("r1")
    assert utc_timestamp(1.5) == "1970-01-01T00:00:01.500Z"


@pytest.mark.parametrize("bad", ["", "has space", "a/b", "-leading", "x" * 129])
def test_invalid_request_ids_are_refused(bad: str) -> None:
    with pytest.raises(RecordError, match="request id"):
        check_request_id(bad)


def test_a_malformed_capture_record_names_its_problem() -> None:
    data = record("r1").to_json()
    data["prediction"]["label"] = "weather"
    with pytest.raises(RecordError, match="not among its scores"):
        parse_capture(data)
    with pytest.raises(RecordError, match="schema"):
        parse_capture({**data, "schema": "v0"})
    del data["input"]
    with pytest.raises(RecordError, match="missing"):
        parse_capture(data)


# --- segments ---------------------------------------------------------------------------

def test_segments_rotate_by_size_and_age_and_only_closed_ones_are_listed(tmp_path: Path) -> None:
    clock = Clock()
    line = b'{"x":1}\n'
    writer = SegmentWriter(tmp_path, clock=clock, limits=Limits(
        max_bytes=3 * len(line), max_age_s=60, retention_bytes=1000, retention_s=3600))
    writer.append([line, line, line])
    assert writer.segments() == []  # the open one is .partial
    writer.append([line])  # would exceed max_bytes: rotates first
    assert len(writer.segments()) == 1
    clock.now += 61
    writer.tick()  # too old: closed
    assert writer.open_segment is None
    assert [p.read_bytes().count(b"\n") for p in writer.segments()] == [3, 1]
    assert all(p.name.endswith(".jsonl") for p in writer.segments())


def test_retention_deletes_the_oldest_segments(tmp_path: Path) -> None:
    clock = Clock()
    line = b"x" * 99 + b"\n"
    writer = SegmentWriter(tmp_path, clock=clock, limits=Limits(
        max_bytes=100, max_age_s=60, retention_bytes=250, retention_s=3600))
    for _ in range(4):
        writer.append([line])
        writer.close()
        clock.now += 1
    writer.prune()
    assert len(writer.segments()) == 2


def test_a_torn_line_left_by_a_crash_is_cut_and_the_rest_kept(tmp_path: Path) -> None:
    day = tmp_path / "2026-12-06"
    day.mkdir()
    (day / "20261206T000000Z-000001.jsonl.partial").write_bytes(b'{"a":1}\n{"b":2}\n{"c":')
    writer = SegmentWriter(tmp_path, limits=Limits())
    [segment] = writer.segments()
    assert segment.read_bytes() == b'{"a":1}\n{"b":2}\n'
    assert not list(tmp_path.glob("*/*.partial"))


# --- the index --------------------------------------------------------------------------

def test_feedback_joins_once_and_a_different_label_is_a_conflict(tmp_path: Path) -> None:
    index = CaptureIndex(tmp_path / "i.sqlite", max_age_s=100)
    assert index.add([record("r1"), record("r1", label="tech")], now=0) == 1
    assert index.label("r1", "tech", now=1).outcome is Outcome.ACCEPTED
    assert index.label("r1", "tech", now=2).outcome is Outcome.DUPLICATE
    conflict = index.label("r1", "sport", now=3)
    assert conflict.outcome is Outcome.CONFLICT and "first label is kept" in conflict.message
    unknown = index.label("r1", "weather", now=3)
    assert unknown.outcome is Outcome.UNKNOWN_LABEL
    assert "business, sport, tech" in unknown.message
    assert index.label("nope", "tech", now=3).outcome is Outcome.UNKNOWN_REQUEST
    assert index.prune(now=200) == 1
    assert index.label("r1", "tech", now=201).outcome is Outcome.UNKNOWN_REQUEST


def test_feedback_bodies_are_validated() -> None:
    items, single = parse_feedback({"requestId": "r1", "label": "sport"}, max_items=2)
    assert single and items[0].label == "sport"
    items, single = parse_feedback({"feedback": [{"requestId": "r1", "label": "a"}]},
                                   max_items=2)
    assert not single and len(items) == 1
    for bad, message in [
        ([1], "JSON object"),
        ({"feedback": []}, "non-empty list"),
        ({"feedback": [{"requestId": "r"}]}, "exactly"),
        ({"requestId": "has space", "label": "x"}, "request id"),
        ({"requestId": "r", "label": ""}, "non-empty"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_feedback(bad, max_items=2)
    with pytest.raises(ValueError, match="at most 2") as too_many:
        parse_feedback({"feedback": [{"requestId": f"r{i}", "label": "a"} for i in range(3)]},
                       max_items=2)
    assert getattr(too_many.value, "code", None) == 413


# --- the collector over HTTP ------------------------------------------------------------

class Server:
    def __init__(self, collector: Collector) -> None:
        self.collector = collector
        self.http = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(collector,
                                                                       max_body=64_000))
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"
        self.thread = threading.Thread(target=self.http.serve_forever, daemon=True)
        self.thread.start()

    def post(self, path: str, body: bytes | dict[str, Any]) -> tuple[int, Any]:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                raw = response.read()
                return response.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def metrics(self) -> str:
        with urllib.request.urlopen(self.url + "/metrics", timeout=10) as response:
            return str(response.read().decode())

    def close(self) -> None:
        self.http.shutdown()
        self.collector.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    args = parse_args(["--sink", f"file://{tmp_path}/sink", "--deployment", "bbc"])
    s = Server(build_collector(args))
    yield s
    s.close()


def capture_body(*records: CaptureRecord) -> bytes:
    return b"".join(encode(r.to_json()) for r in records)


def test_captures_land_in_the_sink_and_feedback_writes_a_labelled_dataset(
        server: Server, tmp_path: Path) -> None:
    code, _ = server.post("/v1/capture", capture_body(record("r1"), record("r2", "tech")))
    assert code == 204
    code, body = server.post("/v1/models/bbc/feedback", {"requestId": "r1", "label": "sport"})
    assert (code, body) == (200, {"requestId": "r1", "status": "accepted"})
    code, body = server.post("/v1/models/bbc/feedback", {"feedback": [
        {"requestId": "r2", "label": "business"}, {"requestId": "r1", "label": "sport"},
        {"requestId": "r9", "label": "sport"}, {"requestId": "r2", "label": "weather"}]})
    assert code == 207
    assert body["accepted"] == 2 and body["rejected"] == 2
    assert [r["code"] for r in body["results"]] == [200, 200, 404, 400]
    server.collector.close()  # closes the open segments
    sink = tmp_path / "sink"
    captures = [json.loads(line) for p in sorted(sink.glob("captures/*/*.jsonl"))
                for line in p.read_text().splitlines()]
    assert [c["requestId"] for c in captures] == ["r1", "r2"]
    labelled = [json.loads(line) for p in sorted(sink.glob("labelled/*/*.jsonl"))
                for line in p.read_text().splitlines()]
    assert [(r["schema"], r["requestId"], r["text"], r["label"], r["predicted"])
            for r in labelled] == [(LABELLED_SCHEMA, "r1", "a match", "sport", "sport"),
                                   (LABELLED_SCHEMA, "r2", "a match", "business", "tech")]


def test_feedback_metrics_count_labelled_and_correct_by_version(server: Server) -> None:
    server.post("/v1/capture", capture_body(record("r1"), record("r2", "tech")))
    metrics = server.metrics()
    # every (label, predicted) series of the version exists at 0 before any feedback
    assert ('modelloop_feedback_total{correct="false",label="business",model_version="v1",'
            'predicted="tech"} 0.0') in metrics
    server.post("/v1/models/bbc/feedback", {"feedback": [
        {"requestId": "r1", "label": "sport"}, {"requestId": "r2", "label": "business"}]})
    metrics = server.metrics()
    assert ('modelloop_feedback_total{correct="true",label="sport",model_version="v1",'
            'predicted="sport"} 1.0') in metrics
    assert ('modelloop_feedback_total{correct="false",label="business",model_version="v1",'
            'predicted="tech"} 1.0') in metrics
    assert 'modelloop_captured_total{model_version="v1"} 2.0' in metrics


def test_bad_requests_get_clear_errors(server: Server) -> None:
    code, body = server.post("/v1/models/other/feedback", {"requestId": "r", "label": "a"})
    assert code == 404 and "/feedback" not in body["message"] and "bbc" in body["message"]
    code, body = server.post("/v1/models/bbc/feedback", b"{not json")
    assert code == 400 and "not JSON" in body["message"]
    code, body = server.post("/v1/models/bbc/feedback", {"requestId": "r", "label": "a"})
    assert code == 404 and body["type"] == "RequestNotFound"
    code, body = server.post("/v1/capture", capture_body(record("r1")) + b'{"schema":1}\n')
    assert code == 400 and "line 2" in body["message"]
    code, body = server.post("/v1/models/bbc/feedback", b"x" * 70_000)
    assert code == 413
    code, body = server.post("/elsewhere", b"{}")
    assert code == 404 and "/v1/models/bbc/feedback" in body["message"]


def test_a_collector_restart_keeps_the_index(tmp_path: Path) -> None:
    args = parse_args(["--sink", f"file://{tmp_path}/sink", "--deployment", "bbc"])
    first = Server(build_collector(args))
    first.post("/v1/capture", capture_body(record("r1")))
    first.close()
    second = Server(build_collector(args))
    try:
        code, _ = second.post("/v1/models/bbc/feedback", {"requestId": "r1", "label": "tech"})
        assert code == 200
    finally:
        second.close()


def test_a_remote_sink_gets_each_closed_segment(tmp_path: Path) -> None:
    import fsspec  # type: ignore[import-untyped]

    args = parse_args(["--sink", "memory://captures/bbc", "--deployment", "bbc",
                       "--state-dir", str(tmp_path / "state")])
    collector = build_collector(args)
    collector.ingest(capture_body(record("r1")))
    collector.close()
    fs = fsspec.filesystem("memory")
    [uploaded] = fs.glob("/captures/bbc/captures/*/*.jsonl")
    assert json.loads(fs.cat(uploaded))["requestId"] == "r1"
    assert not list((tmp_path / "state" / "staging").glob("captures/*/*.jsonl"))


# --- the worker's sender ----------------------------------------------------------------

def test_the_client_sends_batches_and_counts_what_it_drops(server: Server) -> None:
    client = CaptureClient(server.url + "/v1/capture", flush_s=0.05, max_bytes=32_000)
    client.submit([record(f"r{i}") for i in range(700)])
    assert client.flush(10)
    client.close()
    assert client.sent == 700 and not client.take_dropped()
    down = CaptureClient("http://127.0.0.1:9/v1/capture", flush_s=0.01, timeout_s=1)
    down.submit([record("x")])
    assert down.flush(5)
    down.close()
    assert down.take_dropped() == {REASON_UNREACHABLE: 1}


def test_a_record_too_large_for_one_post_is_dropped_and_counted(server: Server) -> None:
    client = CaptureClient(server.url + "/v1/capture", flush_s=0.01, max_bytes=500)
    client.submit([record("big", text="x" * 600), record("small")])
    assert client.flush(5)
    client.close()
    assert client.sent == 1 and client.take_dropped() == {"record_too_large": 1}


# --- the handler with capture on --------------------------------------------------------

@pytest.mark.parametrize("rate", ["1", "0"])
def test_the_handler_captures_what_it_served(server: Server, tiny_artifact: Path,
                                             tmp_path: Path, rate: str) -> None:
    from tests.server.test_handler import Worker, wire_row

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MODELLOOP_STATE_DIR", str(tmp_path / "state"))
        mp.setenv("MODELLOOP_CAPTURE_URL", server.url + "/v1/capture")
        mp.setenv("MODELLOOP_CAPTURE_SAMPLE_RATE", rate)
        mp.setenv("MODELLOOP_MODEL_VERSION", "bbc-v7")
        mp.setenv("POD_NAME", "bbc-5d9f-abcde")
        worker = Worker(tiny_artifact)
    results = worker.run(wire_row({"text": "shares rose"}),
                         wire_row({"texts": ["a goal", "new chips"]}, headers={
                             "x-request-id": "client-1"}),
                         wire_row({"text": ""}))
    assert [code for code, _ in results] == [200, 200, 400]
    capture = worker.handler.capture
    assert capture is not None and capture.flush(10)
    capture.close()
    server.collector.close()
    captured = [json.loads(line) for p in sorted(tmp_path.glob("sink/captures/*/*.jsonl"))
                for line in p.read_text().splitlines()]
    if rate == "0":
        assert captured == []
        return
    assert [c["requestId"] for c in captured] == [
        results[0][1]["requestId"], "client-1-0", "client-1-1"]
    first = captured[0]
    assert first["model"]["version"] == "bbc-v7" and first["model"]["digest"].startswith(
        "sha256:")
    assert first["pod"] == "bbc-5d9f-abcde"
    assert first["input"] == {"text": "shares rose"}
    assert first["prediction"]["label"] == results[0][1]["label"]
    assert first["latencyMs"] > 0
