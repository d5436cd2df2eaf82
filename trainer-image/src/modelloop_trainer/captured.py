"""Labelled production traffic as training data: the collector's `labelled/` segments.

The model server's collector writes labelled records (`modelloop.dev/labelled/v1`, a
capture joined with the true label a client sent, see docs/capture.md) as JSON-lines
segments under `<sink>/labelled/<YYYY-MM-DD>/<stamp>-<seq>.jsonl`. `load_captured` turns
every closed segment under a URI into train, validation and holdout examples.

The split is a function of the request id alone (`bucket`), never of the order, the time
or the other records: a request that landed in the holdout stays there in every later
retraining run and in the optimizer's evaluation, so no model is ever trained on the rows
it is judged on, however the window (`since`, `max_rows`) moves.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from modelloop_trainer.datasets import Examples
from modelloop_trainer.errors import InputError
from modelloop_trainer.storage import fetch, parse_uri

LABELLED_SCHEMA = "modelloop.dev/labelled/v1"
SEGMENT_SUFFIX = ".jsonl"
LABELLED_DIR = "labelled"


def bucket(request_id: str) -> float:
    """Where a request id falls in [0, 1): the first 8 bytes of its sha256, big-endian / 2**64."""
    digest = hashlib.sha256(request_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@dataclass(frozen=True)
class CapturedSplits:
    """Labelled records split by request id, each split sorted by (time, requestId).

    `rows` counts the records left after validation, dedupe and the `since` filter (before
    the `max_rows` cap); `skipped` counts the lines that were not valid labelled records.
    """

    train: Examples
    validation: Examples
    holdout: Examples
    rows: int
    skipped: int
    since: str | None


@dataclass(frozen=True)
class _Record:
    request_id: str
    time: datetime
    labelled_at: datetime | None
    text: str
    label: str


def parse_time(value: str, what: str = "time", *, needs_zone: bool = False) -> datetime:
    """An RFC 3339 timestamp as an aware datetime.

    Without an offset the value is taken as UTC, unless `needs_zone` (user input such as
    `--captured-since`, where a missing zone is more likely a mistake than UTC).
    """
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError as exc:
        raise InputError(f"{what} {value!r}: not an RFC 3339 time ({exc})") from exc
    if moment.tzinfo is None:
        if needs_zone:
            raise InputError(f"{what} {value!r}: needs a time zone (Z or +hh:mm)")
        moment = moment.replace(tzinfo=UTC)
    return moment


def load_captured(
    uri: str,
    *,
    since: str | None = None,
    holdout_fraction: float = 0.2,
    validation_split: float = 0.1,
    max_rows: int | None = None,
) -> CapturedSplits:
    """Train, validation and holdout examples from the labelled segments under `uri`.

    - `uri` is a directory (file://, pvc://<claim>/<path> or s3://, resolved as storage.py
      does; a remote directory is downloaded to a temporary directory first) or a single
      segment file. When the directory holds a `labelled/` subdirectory (the URI is the
      sink itself) only that subdirectory is read, so the capture records next to it are
      neither read nor counted as skipped.
    - Every closed `*.jsonl` below it, recursively, is read in sorted path order and line
      order; open segments (`*.partial`) and other files are ignored. Blank lines are
      ignored; lines that are not JSON objects of schema `modelloop.dev/labelled/v1` with
      non-empty string `requestId`, `text`, `label` and an RFC 3339 `time` are counted in
      `skipped` and dropped.
    - Records are deduplicated by `requestId`: the one with the latest `labelledAt` wins
      (a missing or unparsable `labelledAt` counts as the earliest; on a tie the record
      read last wins, i.e. a correction written later overrides).
    - With `since` (RFC 3339 with a time zone, else InputError), only records whose `time`
      (when the prediction was served) is at or after it are kept, compared as datetimes
      (a record `time` without an offset is taken as UTC).
    - Each record goes by `u = bucket(requestId)`: `u < holdout_fraction` -> holdout, else
      `u < holdout_fraction + (1 - holdout_fraction) * validation_split` -> validation,
      else train.
    - `max_rows` caps train + validation together, keeping the newest records by `time`
      (ties broken by requestId). The holdout is never capped: it is what the trained
      model is judged on, its membership must not depend on how much training data a run
      asked for, and it only costs evaluation time.

    Every split is sorted by (time, requestId), so the output is the same whatever the
    file layout or listing order. A missing URI is an InputError naming it.
    """
    if not 0.0 <= holdout_fraction < 1.0:
        raise InputError(f"--holdout-fraction must be in [0, 1), got {holdout_fraction}")
    if not 0.0 <= validation_split < 1.0:
        raise InputError(f"validation split must be in [0, 1), got {validation_split}")
    if max_rows is not None and max_rows < 1:
        raise InputError(f"--captured-max-rows must be >= 1, got {max_rows}")
    since_time = None if since is None else parse_time(since, "since", needs_zone=True)

    location = parse_uri(uri)
    if not location.exists():
        raise InputError(f"captured data {uri}: does not exist")
    with tempfile.TemporaryDirectory(prefix="modelloop-captured-") as cache:
        root = fetch(location, cache_dir=Path(cache))
        records, skipped = _read_all(root)

    latest: dict[str, _Record] = {}
    for record in records:
        kept = latest.get(record.request_id)
        if kept is None or _labelled_key(record) >= _labelled_key(kept):
            latest[record.request_id] = record
    chosen = [r for r in latest.values() if since_time is None or r.time >= since_time]
    chosen.sort(key=lambda r: (r.time, r.request_id))

    validation_edge = holdout_fraction + (1.0 - holdout_fraction) * validation_split
    train: list[_Record] = []
    validation: list[_Record] = []
    holdout: list[_Record] = []
    for record in chosen:
        u = bucket(record.request_id)
        if u < holdout_fraction:
            holdout.append(record)
        elif u < validation_edge:
            validation.append(record)
        else:
            train.append(record)

    if max_rows is not None and len(train) + len(validation) > max_rows:
        pool = sorted(train + validation, key=lambda r: (r.time, r.request_id), reverse=True)
        keep = {r.request_id for r in pool[:max_rows]}
        train = [r for r in train if r.request_id in keep]
        validation = [r for r in validation if r.request_id in keep]

    return CapturedSplits(
        train=_examples(train),
        validation=_examples(validation),
        holdout=_examples(holdout),
        rows=len(chosen),
        skipped=skipped,
        since=since,
    )


def _labelled_key(record: _Record) -> datetime:
    return record.labelled_at or datetime.min.replace(tzinfo=UTC)


def _examples(records: list[_Record]) -> Examples:
    return Examples([r.text for r in records], [r.label for r in records])


def _segments(root: Path) -> list[Path]:
    if root.is_file():
        return [root] if root.name.endswith(SEGMENT_SUFFIX) else []
    if (root / LABELLED_DIR).is_dir():
        root = root / LABELLED_DIR
    return sorted(
        (p for p in root.rglob("*" + SEGMENT_SUFFIX) if p.is_file()),
        key=lambda p: p.relative_to(root).as_posix(),
    )


def _read_all(root: Path) -> tuple[list[_Record], int]:
    records: list[_Record] = []
    skipped = 0
    for path in _segments(root):
        for raw in path.read_bytes().split(b"\n"):
            if not raw.strip():
                continue
            record = _parse_line(raw)
            if record is None:
                skipped += 1
            else:
                records.append(record)
    return records, skipped


def _parse_line(raw: bytes) -> _Record | None:
    try:
        value = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(value, dict) or value.get("schema") != LABELLED_SCHEMA:
        return None
    fields: dict[str, str] = {}
    for name in ("requestId", "time", "text", "label"):
        field = value.get(name)
        if not isinstance(field, str) or not field.strip():
            return None
        fields[name] = field
    try:
        time = parse_time(fields["time"])
    except InputError:
        return None
    labelled_at: datetime | None = None
    stamp = value.get("labelledAt")
    if isinstance(stamp, str):
        try:
            labelled_at = parse_time(stamp)
        except InputError:
            labelled_at = None
    return _Record(
        request_id=fields["requestId"],
        time=time,
        labelled_at=labelled_at,
        text=fields["text"],
        label=fields["label"],
    )
