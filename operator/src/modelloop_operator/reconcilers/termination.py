"""Reading the trainer image's termination message (docs/contracts.md, section 3).

The message is the only channel for final results, and it comes from a container we do
not control at runtime: it may be missing (killed before writing), cut at the kubelet's
4,096-byte limit, or not JSON at all (a crash that printed a traceback). Parsing
therefore never raises: it returns what it could read and, when it could not, a short
reason a person can act on. Pure; no I/O.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

MESSAGE_LIMIT: Final = 4096
"""The kubelet's limit on a termination message, in bytes."""


@dataclass(frozen=True)
class TerminationSummary:
    """The fields both commands write (train and optimize); ``raw`` keeps the rest."""

    status: str | None = None
    exit_code: int | None = None
    message: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    output_uri: str | None = None
    checksum: str | None = None
    labels: tuple[str, ...] = ()
    raw: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ParsedTermination:
    """A summary, or why there is none (``error``); never both missing."""

    summary: TerminationSummary | None
    error: str | None = None


def _numbers(value: object) -> dict[str, float]:
    """Finite numeric entries of a JSON object; anything else is dropped, not fatal."""
    if not isinstance(value, Mapping):
        return {}
    out: dict[str, float] = {}
    for key, item in value.items():
        if isinstance(item, bool) or not isinstance(item, int | float):
            continue
        if math.isfinite(item):
            out[str(key)] = float(item)
    return out


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def parse_termination_message(text: str | None) -> ParsedTermination:
    """Parse one container's termination message; tolerant of every kind of garbage."""
    if text is None or not text.strip():
        return ParsedTermination(None, "the container left no termination message")
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        size = len(text.encode())
        if size >= MESSAGE_LIMIT:
            return ParsedTermination(
                None, f"termination message was cut at the kubelet's {MESSAGE_LIMIT}-byte "
                      f"limit ({size} bytes) and is not valid JSON")
        preview = " ".join(text.split())[:80]
        why = getattr(exc, "msg", None) or type(exc).__name__
        return ParsedTermination(None, f"termination message is not JSON ({why}): {preview!r}")
    if not isinstance(data, Mapping):
        return ParsedTermination(
            None, f"termination message is JSON but not an object ({type(data).__name__})")
    exit_code = data.get("exitCode")
    labels = data.get("labels")
    summary = TerminationSummary(
        status=_text(data.get("status")),
        exit_code=exit_code if isinstance(exit_code, int) and not isinstance(exit_code, bool)
        else None,
        message=_text(data.get("message")) or "",
        metrics=_numbers(data.get("metrics")),
        output_uri=_text(data.get("outputUri")),
        checksum=_text(data.get("checksum")),
        labels=tuple(str(x) for x in labels) if isinstance(labels, list) else (),
        raw=data,
    )
    return ParsedTermination(summary)
