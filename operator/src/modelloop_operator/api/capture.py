"""Request capture and ground-truth feedback for a ModelDeployment (docs/capture.md).

With `spec.capture` set, the operator runs one collector per deployment (a StatefulSet of
one pod behind the `<name>-feedback` Service): the model servers send it a sample of what
they served, clients send it the true labels, and it keeps both in the sink as JSON-lines
segments. The labelled segments feed the `accuracy` and `macroF1` checks and retraining.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Final

from pydantic import AfterValidator, Field

from .base import SpecModel, StatusModel
from .scalars import Duration, OutputURI, Quantity, parse_duration

_BINARY: Final = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50,
                  "Ei": 2**60}
_DECIMAL: Final = {"k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15,
                   "E": 10**18}
MIN_SEGMENT_BYTES: Final = 1024


def quantity_bytes(value: int | str) -> int:
    """A byte quantity (``64Mi``, ``1G``, ``1048576``) as an integer number of bytes."""
    if isinstance(value, int):
        return value
    match = re.fullmatch(r"([0-9.]+(?:[eE][+-]?[0-9]+)?)([KMGTPE]i|[kMGTPE])?", value)
    if match is None:
        raise ValueError(f"{value!r} is not a byte size such as 64Mi or 10Gi")
    number, suffix = match.groups()
    factor = _BINARY.get(suffix or "") or _DECIMAL.get(suffix or "") or 1
    return int(float(number) * factor)


def _byte_size(value: int | str) -> int | str:
    if quantity_bytes(value) < MIN_SEGMENT_BYTES:
        raise ValueError(f"must be at least {MIN_SEGMENT_BYTES} bytes (1Ki), got {value!r}")
    return value


ByteSize = Annotated[Quantity, AfterValidator(_byte_size)]


class CaptureSpec(SpecModel):
    """Which requests to keep, where, and for how long."""

    sink: OutputURI
    """Where captured and labelled records go: pvc://<claim>/<path>, s3://<bucket>/<key>
    or file:// (a path inside the collector's container: for tests). Records land under
    captures/ and labelled/ as JSON-lines segments (docs/capture.md)."""

    sample_rate: Annotated[float, Field(ge=0, le=1)] = 1.0
    """Fraction of requests captured, 0-1. Feedback can only be joined to captured
    requests."""

    max_segment_size: ByteSize = "64Mi"
    """A segment is closed (and becomes readable) at this size."""

    max_segment_age: Duration = "10m"
    """...or at this age, whichever comes first."""

    retention_size: ByteSize = "10Gi"
    """Closed segments of each stream beyond this total are deleted, oldest first."""

    retention: Duration = "720h"
    """Closed segments older than this are deleted."""

    feedback_window: Duration = "168h"
    """How long after a prediction its true label is still accepted; later feedback for
    it is answered 404."""

    def segment_bytes(self) -> int:
        return quantity_bytes(self.max_segment_size)

    def retention_bytes(self) -> int:
        return max(quantity_bytes(self.retention_size), self.segment_bytes())

    def seconds(self, value: str) -> int:
        return max(1, int(parse_duration(value) / timedelta(seconds=1)))


class CaptureStatus(StatusModel):
    """Where the collector is."""

    feedback_url: Annotated[str, Field(max_length=1024)] | None = None
    """POST the true labels here (docs/capture.md)."""

    sink: Annotated[str, Field(max_length=2048)] | None = None
    """The sink records are written to."""

    ready: bool = False
    """Whether the collector answers its readiness probe."""
