"""The inference API's JSON request and response bodies (documented in server-image/README.md).

Request, one JSON object per HTTP request (`POST /predictions/<model>`):

    {"text": "one document"}                -> one prediction object
    {"texts": ["first", "second", ...]}     -> {"predictions": [prediction, ...]}

Prediction: `{"label": "sport", "confidence": 0.93, "scores": {"business": 0.01, ...}}`, with
`scores` holding every label's probability.

Anything else is the client's mistake and gets a 4xx body in TorchServe's own error shape,
`{"code": 400, "type": "InvalidInput", "message": "..."}`: an empty body, malformed JSON, a
body that is not UTF-8, unknown keys, a text that is not a string or is blank, too many
texts (413), a text longer than the limit (413). A body over TorchServe's
`max_request_size` never reaches the handler: TorchServe answers 413 itself.
Parsing is pure so that every rule is tested without a server.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

DEFAULT_MAX_TEXTS = 64
DEFAULT_MAX_CHARS = 20_000


@dataclass(frozen=True)
class InputLimits:
    """Bounds on one request, so that a single client cannot occupy a worker for long.

    Texts longer than the model's max_length tokens are truncated, as in training; the
    character limit is only a guard against absurd payloads.
    """

    max_texts: int = DEFAULT_MAX_TEXTS
    max_chars: int = DEFAULT_MAX_CHARS


@dataclass(frozen=True)
class TextRequest:
    """A valid request: its texts, and whether the client sent one text or a list."""

    texts: tuple[str, ...]
    single: bool


class RequestError(Exception):
    """A request the client must fix; `code` is the HTTP status to answer with."""

    def __init__(self, message: str, *, code: int = 400, kind: str = "InvalidInput") -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.kind = kind

    def body(self) -> dict[str, Any]:
        return {"code": self.code, "type": self.kind, "message": self.message}


@dataclass(frozen=True)
class Prediction:
    label: str
    confidence: float
    scores: Mapping[str, float]

    def to_json(self) -> dict[str, Any]:
        return {"label": self.label, "confidence": self.confidence, "scores": dict(self.scores)}


def request_payload(row: Mapping[str, Any]) -> Any:
    """The body of one TorchServe request row, decoded to a JSON value.

    TorchServe hands the body over as `body` (or `data` for form posts), already decoded
    from JSON when the client sent `Content-Type: application/json`, a str for `text/*`, and
    bytes otherwise. All three are accepted, so the content type is a hint, not a trap.
    """
    raw = row.get("body")
    if raw is None:
        raw = row.get("data")
    if raw is None:
        # Form posts (curl -d without a Content-Type) arrive as named fields instead.
        hint = " with Content-Type: application/json" if row else ""
        raise RequestError(f'empty request: send a JSON body such as {{"text": "..."}}{hint}')
    if isinstance(raw, bytes | bytearray):
        try:
            raw = bytes(raw).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RequestError(f"request body is not UTF-8: {exc.reason}") from exc
    if isinstance(raw, str):
        if not raw.strip():
            raise RequestError('request body is empty: send a JSON object such as {"text": "..."}')
        try:
            return json.loads(raw)
        except json.JSONDecodeError as exc:
            raise RequestError(f"request body is not valid JSON: {exc.msg}") from exc
    return raw


def parse_request(payload: Any, limits: InputLimits) -> TextRequest:
    """Validate a decoded request body against the API above and `limits`."""
    if not isinstance(payload, dict):
        raise RequestError(
            f'request body must be a JSON object like {{"text": "..."}}, got {_kind(payload)}'
        )
    keys = set(payload)
    if keys == {"text"}:
        return TextRequest(texts=(_check_text(payload["text"], "text", limits),), single=True)
    if keys == {"texts"}:
        texts = payload["texts"]
        if not isinstance(texts, list):
            raise RequestError(f'"texts" must be a list of strings, got {_kind(texts)}')
        if not texts:
            raise RequestError('"texts" is empty: send at least one text')
        if len(texts) > limits.max_texts:
            raise RequestError(
                f'"texts" has {len(texts)} items, at most {limits.max_texts} are allowed per '
                "request",
                code=413,
                kind="PayloadTooLarge",
            )
        checked = tuple(_check_text(t, f"texts[{i}]", limits) for i, t in enumerate(texts))
        return TextRequest(texts=checked, single=False)
    if not keys:
        raise RequestError('request object is empty: send {"text": "..."} or {"texts": [...]}')
    unknown = sorted(keys - {"text", "texts"})
    if unknown:
        raise RequestError(
            f"unknown field(s) {', '.join(map(repr, unknown))}: "
            'send {"text": "..."} or {"texts": [...]}'
        )
    raise RequestError('send either "text" or "texts", not both')


def response_body(request: TextRequest, predictions: Sequence[Prediction]) -> dict[str, Any]:
    """The JSON response for `request`, shaped like the request (one object or a list)."""
    if len(predictions) != len(request.texts):
        raise ValueError(f"{len(predictions)} predictions for {len(request.texts)} texts")
    if request.single:
        return predictions[0].to_json()
    return {"predictions": [p.to_json() for p in predictions]}


def _check_text(value: Any, where: str, limits: InputLimits) -> str:
    if not isinstance(value, str):
        raise RequestError(f'"{where}" must be a string, got {_kind(value)}')
    if not value.strip():
        raise RequestError(f'"{where}" is empty or blank')
    if len(value) > limits.max_chars:
        raise RequestError(
            f'"{where}" has {len(value)} characters, at most {limits.max_chars} are allowed',
            code=413,
            kind="PayloadTooLarge",
        )
    return value


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
