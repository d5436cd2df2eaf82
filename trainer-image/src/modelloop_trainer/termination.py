"""The termination message: the compact JSON summary the operator reads from the pod status.

The kubelet keeps at most 4,096 bytes of it, so a summary that would be longer is shrunk in
a fixed order (least useful first) rather than cut mid-JSON, which would leave the operator
with nothing parseable. See docs/contracts.md section 3.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

LIMIT_BYTES = 4096
DEFAULT_PATH = "/dev/termination-log"
# Dropped one after another until the message fits.
_SHRINK_ORDER = ("labels", "samples", "report", "metrics")


def default_termination_path() -> str | None:
    """The kubelet's default path when it is writable (inside a pod), otherwise none."""
    path = Path(DEFAULT_PATH)
    if path.exists() and os.access(path, os.W_OK):
        return DEFAULT_PATH
    return None


def encode(summary: dict[str, Any]) -> str:
    """Compact JSON of `summary`, shrunk to fit in LIMIT_BYTES."""
    data = dict(summary)
    text = json.dumps(data, separators=(",", ":"), default=str)
    for key in _SHRINK_ORDER:
        if len(text.encode()) < LIMIT_BYTES:
            return text
        if key in data:
            data.pop(key)
            data["truncated"] = True
            text = json.dumps(data, separators=(",", ":"), default=str)
    while len(text.encode()) >= LIMIT_BYTES and data.get("message"):
        data["message"] = str(data["message"])[: max(0, len(str(data["message"])) // 2)] + "..."
        text = json.dumps(data, separators=(",", ":"), default=str)
    return text


def write_termination_message(path: str | None, summary: dict[str, Any]) -> None:
    if not path:
        return
    Path(path).write_text(encode(summary))
