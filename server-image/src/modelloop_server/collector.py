"""The capture collector: the one writer of a ModelDeployment's capture sink.

Every TorchServe worker of every replica sends its sampled predictions here
(`POST /v1/capture`, JSON lines, off the request path: `capture_client.py`), and clients
send ground truth here (`POST /v1/models/<name>/feedback`). One process owning the sink is
what makes the join possible across replicas and keeps segments whole: it appends captures
to the `captures` stream, indexes them by request id, and on feedback writes the joined
record to the `labelled` stream, which is a training dataset as it stands. Its Prometheus
metrics (`GET /metrics`) count labelled and correct predictions by model version, the
input of the monitor's `accuracy` and `macroF1` checks. docs/capture.md has the API.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from modelloop_server.capture_index import CaptureIndex, Joined, Outcome
from modelloop_server.capture_records import (
    CaptureRecord,
    RecordError,
    check_request_id,
    encode,
    labelled_record,
    parse_capture,
)
from modelloop_server.capture_sink import Limits, SegmentWriter

logger = logging.getLogger(__name__)

CAPTURES = "captures"
LABELLED = "labelled"
INDEX_FILE = "index.sqlite"
DEFAULT_MAX_FEEDBACK_ITEMS = 1000

_CODES = {
    Outcome.ACCEPTED: 200,
    Outcome.DUPLICATE: 200,
    Outcome.CONFLICT: 409,
    Outcome.UNKNOWN_REQUEST: 404,
    Outcome.UNKNOWN_LABEL: 400,
}


class FeedbackError(ValueError):
    """A feedback body the client must fix (HTTP 400 or 413)."""

    def __init__(self, message: str, *, code: int = 400) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class FeedbackItem:
    request_id: str
    label: str


def parse_feedback(payload: Any, *, max_items: int) -> tuple[list[FeedbackItem], bool]:
    """The items of a feedback body and whether it was a single object (not a batch).

    Accepted: `{"requestId": "...", "label": "..."}` or `{"feedback": [those, ...]}`.
    """
    if not isinstance(payload, dict):
        raise FeedbackError('feedback must be a JSON object: {"requestId": ..., "label": ...}'
                            ' or {"feedback": [...]}')
    if "feedback" in payload:
        if set(payload) != {"feedback"}:
            raise FeedbackError('a batch has only the field "feedback"')
        items = payload["feedback"]
        if not isinstance(items, list) or not items:
            raise FeedbackError('"feedback" must be a non-empty list of '
                                '{"requestId": ..., "label": ...}')
        if len(items) > max_items:
            raise FeedbackError(f'"feedback" has {len(items)} items, at most {max_items} are '
                                "allowed per request", code=413)
        return [_item(item, f"feedback[{i}]") for i, item in enumerate(items)], False
    return [_item(payload, "feedback")], True


def _item(value: Any, where: str) -> FeedbackItem:
    if not isinstance(value, dict) or set(value) != {"requestId", "label"}:
        raise FeedbackError(f'{where} must be an object with exactly "requestId" and "label"')
    request_id, label = value["requestId"], value["label"]
    if not isinstance(request_id, str) or not isinstance(label, str) or not label:
        raise FeedbackError(f"{where}: requestId and label must be non-empty strings")
    try:
        check_request_id(request_id)
    except RecordError as exc:
        raise FeedbackError(f"{where}: {exc}") from exc
    return FeedbackItem(request_id=request_id, label=label)


@dataclass
class CollectorMetrics:
    """The collector's Prometheus series (docs/metrics.md)."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.captured = Counter("modelloop_captured", "Predictions written to the capture sink",
                                ["model_version"], registry=r)
        self.capture_rejected = Counter(
            "modelloop_capture_rejected", "Capture records refused (malformed, or the sink "
            "could not be written)", ["reason"], registry=r)
        self.feedback = Counter(
            "modelloop_feedback", "Labelled predictions: true label, predicted label, and "
            "whether they agree", ["model_version", "label", "predicted", "correct"],
            registry=r)
        self.feedback_rejected = Counter(
            "modelloop_feedback_rejected", "Feedback items not joined", ["reason"], registry=r)
        self.indexed = Gauge("modelloop_capture_index_size",
                             "Captured requests that feedback can still refer to", registry=r)
        self._seen: set[str] = set()

    def version_seen(self, version: str, labels: Sequence[str]) -> None:
        """Create every series of a new version at 0, so `increase()` sees its first count."""
        if version in self._seen:
            return
        self._seen.add(version)
        self.captured.labels(version)
        for truth in labels:
            for predicted in labels:
                self.feedback.labels(version, truth, predicted,
                                     "true" if truth == predicted else "false")


class Collector:
    """Sink, index and metrics behind one lock (the HTTP threads call in)."""

    def __init__(self, *, root: Path, state_dir: Path, deployment: str, limits: Limits,
                 index_max_age_s: float, max_feedback_items: int = DEFAULT_MAX_FEEDBACK_ITEMS,
                 on_close: Callable[[Path], None] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.deployment = deployment
        self.max_feedback_items = max_feedback_items
        self.metrics = CollectorMetrics()
        self._clock = clock
        self._lock = threading.Lock()
        self._captures = SegmentWriter(root / CAPTURES, limits=limits, clock=clock,
                                       on_close=on_close)
        self._labelled = SegmentWriter(root / LABELLED, limits=limits, clock=clock,
                                       on_close=on_close)
        self._index = CaptureIndex(state_dir / INDEX_FILE, max_age_s=index_max_age_s)
        self._model_names: set[str] = {deployment}
        for version in self._index.versions():
            self.metrics.captured.labels(version)
        self.metrics.indexed.set(self._index.size())

    def close(self) -> None:
        with self._lock:
            self._captures.close()
            self._labelled.close()
            self._index.close()

    def ingest(self, body: bytes) -> tuple[int, list[str]]:
        """Write the capture records of a JSON-lines body; (written, problems)."""
        records: list[CaptureRecord] = []
        lines: list[bytes] = []  # written as received: validated, never re-encoded
        problems: list[str] = []
        for number, line in enumerate(body.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                records.append(parse_capture(json.loads(line)))
                lines.append(line.strip() + b"\n")
            except (ValueError, RecordError) as exc:
                problems.append(f"line {number}: {exc}")
        if problems:
            self.metrics.capture_rejected.labels("invalid").inc(len(problems))
        if not records:
            return 0, problems
        with self._lock:
            now = self._clock()
            try:
                self._captures.append(lines)
            except OSError:
                self.metrics.capture_rejected.labels("sink_error").inc(len(records))
                raise
            self._index.add(records, now=now, lines=lines)
            for record in records:
                self._model_names.add(record.model.name)
                self.metrics.version_seen(record.model.version, record.labels)
                self.metrics.captured.labels(record.model.version).inc()
            self.metrics.indexed.set(self._index.size())
        return len(records), problems

    def feedback(self, model: str, payload: Any) -> tuple[int, dict[str, Any]]:
        """Join a feedback body; (HTTP status, JSON body)."""
        if model not in self._model_names:
            known = ", ".join(sorted(self._model_names))
            return 404, _error(404, "ModelNotFound",
                               f"no model {model!r} here; feedback goes to: {known}")
        try:
            items, single = parse_feedback(payload, max_items=self.max_feedback_items)
        except FeedbackError as exc:
            self.metrics.feedback_rejected.labels("invalid").inc()
            return exc.code, _error(exc.code, "InvalidInput", str(exc))
        results: list[tuple[FeedbackItem, Joined]] = []
        with self._lock:
            now = self._clock()
            for item in items:
                results.append((item, self._index.label(item.request_id, item.label, now=now)))
            accepted = [(item, j) for item, j in results if j.outcome is Outcome.ACCEPTED]
            if accepted:
                self._labelled.append([
                    encode(labelled_record(j.record, label=item.label, labelled_at=now))
                    for item, j in accepted if j.record is not None])
            for item, joined in results:
                if joined.outcome is Outcome.ACCEPTED and joined.record is not None:
                    r = joined.record
                    self.metrics.feedback.labels(
                        r.model.version, item.label, r.label,
                        "true" if item.label == r.label else "false").inc()
                elif joined.outcome is not Outcome.DUPLICATE:
                    self.metrics.feedback_rejected.labels(joined.outcome.value).inc()
        if single:
            item, joined = results[0]
            code = _CODES[joined.outcome]
            if code != 200:
                return code, _error(code, _kind(joined.outcome), joined.message)
            return 200, {"requestId": item.request_id, "status": joined.outcome.value}
        body = {
            "accepted": sum(j.outcome in (Outcome.ACCEPTED, Outcome.DUPLICATE)
                            for _, j in results),
            "rejected": sum(_CODES[j.outcome] != 200 for _, j in results),
            "results": [_result(item, j) for item, j in results],
        }
        return (200 if body["rejected"] == 0 else 207), body

    def tick(self) -> None:
        """Rotate aged segments, apply retention, forget captures too old for feedback."""
        with self._lock:
            self._captures.tick()
            self._labelled.tick()
            self._index.prune(now=self._clock())
            self.metrics.indexed.set(self._index.size())


def _kind(outcome: Outcome) -> str:
    return {Outcome.CONFLICT: "Conflict", Outcome.UNKNOWN_REQUEST: "RequestNotFound",
            Outcome.UNKNOWN_LABEL: "InvalidInput"}.get(outcome, "Error")


def _result(item: FeedbackItem, joined: Joined) -> dict[str, Any]:
    out: dict[str, Any] = {"requestId": item.request_id, "status": joined.outcome.value,
                           "code": _CODES[joined.outcome]}
    if joined.message and _CODES[joined.outcome] != 200:
        out["message"] = joined.message
    return out


def _error(code: int, kind: str, message: str) -> dict[str, Any]:
    return {"code": code, "type": kind, "message": message}
