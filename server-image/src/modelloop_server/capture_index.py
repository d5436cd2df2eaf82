"""The collector's index of captured predictions, which feedback is joined against.

One SQLite file beside the segments (WAL; the collector is its only writer). A row per
captured request id keeps the capture record until `max_age_s` has passed: feedback for a
request older than that, or for one that was not sampled, is unknown. The first capture of
an id wins (a client that reuses ids gets feedback joined to the first); the first label
of an id wins too, and a different later label is a conflict, never a silent overwrite.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from modelloop_server.capture_records import CaptureRecord, parse_capture

_SCHEMA = """
CREATE TABLE IF NOT EXISTS captures (
    request_id TEXT PRIMARY KEY,
    at REAL NOT NULL,
    version TEXT NOT NULL,
    record TEXT NOT NULL,
    label TEXT,
    labelled_at REAL
);
CREATE INDEX IF NOT EXISTS captures_at ON captures (at);
"""


class Outcome(StrEnum):
    """What became of one feedback item."""

    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    CONFLICT = "conflict"
    UNKNOWN_REQUEST = "unknown_request"
    UNKNOWN_LABEL = "unknown_label"


@dataclass(frozen=True)
class Joined:
    """The result of labelling one request id."""

    outcome: Outcome
    record: CaptureRecord | None = None
    message: str = ""


class CaptureIndex:
    """Captured predictions by request id, and the labels sent for them."""

    def __init__(self, path: Path, *, max_age_s: float) -> None:
        if max_age_s <= 0:
            raise ValueError("max_age_s must be positive")
        self.max_age_s = max_age_s
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def add(self, records: Sequence[CaptureRecord], *, now: float,
            lines: Sequence[bytes] | None = None) -> int:
        """Index `records` (``lines``: their JSON, when the caller has it already); returns
        how many were new (a repeated request id is ignored)."""
        encoded = lines if lines is not None else [json.dumps(r.to_json()).encode()
                                                  for r in records]
        cur = self._db.cursor()
        cur.execute("BEGIN")
        try:
            before = self._db.total_changes
            cur.executemany(
                "INSERT OR IGNORE INTO captures (request_id, at, version, record)"
                " VALUES (?, ?, ?, ?)",
                [(r.request_id, now, r.model.version, line.decode().strip())
                 for r, line in zip(records, encoded, strict=True)])
            added = self._db.total_changes - before
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        return added

    def label(self, request_id: str, label: str, *, now: float) -> Joined:
        """Join `label` to the captured `request_id`."""
        row = self._db.execute(
            "SELECT record, label FROM captures WHERE request_id = ?", (request_id,)).fetchone()
        if row is None:
            return Joined(Outcome.UNKNOWN_REQUEST, message=(
                f"request id {request_id!r} was not captured (not sampled, older than the "
                "capture index keeps, or never served)"))
        record = parse_capture(json.loads(row[0]))
        if label not in record.scores:
            valid = ", ".join(record.labels)
            return Joined(Outcome.UNKNOWN_LABEL, record, (
                f"label {label!r} is not one of model {record.model.version}'s labels: {valid}"))
        if row[1] is not None:
            if row[1] == label:
                return Joined(Outcome.DUPLICATE, record, "already labelled with this label")
            return Joined(Outcome.CONFLICT, record,
                          f"already labelled {row[1]!r}; the first label is kept")
        self._db.execute("UPDATE captures SET label = ?, labelled_at = ? WHERE request_id = ?",
                         (label, now, request_id))
        return Joined(Outcome.ACCEPTED, record)

    def prune(self, *, now: float) -> int:
        """Forget captures older than `max_age_s`; returns how many went."""
        cur = self._db.execute("DELETE FROM captures WHERE at < ?", (now - self.max_age_s,))
        return cur.rowcount

    def size(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM captures").fetchone()[0])

    def versions(self) -> list[str]:
        return [r[0] for r in self._db.execute("SELECT DISTINCT version FROM captures")]
