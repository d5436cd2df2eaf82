"""The records that request capture and feedback write (schema in docs/capture.md).

A *capture record* is one prediction the server made, as it was made: request id, time,
model version and digest, pod, the input text, the prediction with every label's score, and
the latency. A *labelled record* is a capture record joined with the true label a client
sent back; it keeps `text` and `label` at the top level so that a labelled segment is a
JSON-lines dataset the trainer reads as is (`text_field: text`, `label_field: label`).

Everything here is pure: building, validating and encoding records, and request ids.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

CAPTURE_SCHEMA: Final = "modelloop.dev/capture/v1"
LABELLED_SCHEMA: Final = "modelloop.dev/labelled/v1"

REQUEST_ID_HEADER: Final = "x-request-id"
"""Where a client sends its own request id."""
RESPONSE_ID_HEADER: Final = "x-modelloop-request-id"
"""Where the answer carries the id: TorchServe's frontend overwrites `x-request-id` in
every response with its own internal id, which is ours only when the client chose none."""
REQUEST_ID_PATTERN: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
"""What a client may send as its own request id: 1-128 characters, no spaces or slashes."""


class RecordError(ValueError):
    """A record or request id that does not follow the schema; the message says why."""


@dataclass(frozen=True)
class ModelIdentity:
    """Which model made a prediction."""

    name: str
    version: str
    digest: str

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "version": self.version, "digest": self.digest}


@dataclass(frozen=True)
class CaptureRecord:
    """One captured prediction."""

    request_id: str
    time: str
    model: ModelIdentity
    pod: str
    text: str
    label: str
    confidence: float
    scores: Mapping[str, float]
    latency_ms: float

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": CAPTURE_SCHEMA,
            "requestId": self.request_id,
            "time": self.time,
            "model": self.model.to_json(),
            "pod": self.pod,
            "input": {"text": self.text},
            "prediction": {"label": self.label, "confidence": self.confidence,
                           "scores": dict(self.scores)},
            "latencyMs": self.latency_ms,
        }

    @property
    def labels(self) -> tuple[str, ...]:
        """The model's labels, in the order the scores list them."""
        return tuple(self.scores)


def encode(record: Mapping[str, Any]) -> bytes:
    """One JSON line (compact, UTF-8, newline-terminated)."""
    return (json.dumps(record, separators=(",", ":"), ensure_ascii=False) + "\n").encode()


def utc_timestamp(seconds: float) -> str:
    """RFC 3339 in UTC with milliseconds, e.g. 2026-12-06T12:00:00.123Z."""
    moment = datetime.fromtimestamp(seconds, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def new_request_id() -> str:
    """A fresh random request id (32 hex digits)."""
    return uuid.uuid4().hex


def check_request_id(value: str) -> str:
    """`value` if it is a valid client-chosen request id, else RecordError."""
    if not REQUEST_ID_PATTERN.match(value):
        raise RecordError(
            f"request id {value[:40]!r} is invalid: use 1-128 characters from A-Z a-z 0-9 "
            "and . _ : -, starting with a letter or digit")
    return value


def item_request_id(request_id: str, index: int) -> str:
    """The id of the index-th text of a batched request (`<id>-<index>`)."""
    return f"{request_id}-{index}"


def parse_capture(data: Any) -> CaptureRecord:
    """A capture record from its decoded JSON form; RecordError names the first problem."""
    if not isinstance(data, dict):
        raise RecordError("a capture record must be a JSON object")
    if data.get("schema") != CAPTURE_SCHEMA:
        raise RecordError(f"schema must be {CAPTURE_SCHEMA!r}, got {data.get('schema')!r}")
    try:
        model = data["model"]
        prediction = data["prediction"]
        scores = prediction["scores"]
        record = CaptureRecord(
            request_id=check_request_id(_string(data["requestId"], "requestId")),
            time=_string(data["time"], "time"),
            model=ModelIdentity(name=_string(model["name"], "model.name"),
                                version=_string(model["version"], "model.version"),
                                digest=str(model.get("digest", ""))),
            pod=str(data.get("pod", "")),
            text=_string(data["input"]["text"], "input.text"),
            label=_string(prediction["label"], "prediction.label"),
            confidence=float(prediction["confidence"]),
            scores={str(k): float(v) for k, v in dict(scores).items()},
            latency_ms=float(data.get("latencyMs", 0.0)),
        )
    except (KeyError, TypeError, AttributeError) as exc:
        raise RecordError(f"capture record is missing or mistypes {exc}") from exc
    if record.label not in record.scores:
        raise RecordError(f"prediction.label {record.label!r} is not among its scores")
    return record


def labelled_record(record: CaptureRecord, *, label: str, labelled_at: float) -> dict[str, Any]:
    """The labelled (joined) form of `record` with its true `label`."""
    return {
        "schema": LABELLED_SCHEMA,
        "requestId": record.request_id,
        "time": record.time,
        "labelledAt": utc_timestamp(labelled_at),
        "model": record.model.to_json(),
        "text": record.text,
        "label": label,
        "predicted": record.label,
        "confidence": record.confidence,
    }


def _string(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value:
        raise RecordError(f"{field} must be a non-empty string")
    return value
