"""Append-only JSON-lines segments: how captures and labelled records reach the sink.

A stream (`captures` or `labelled`) is a directory of segments
`<stream>/<YYYY-MM-DD>/<YYYYmmddTHHMMSSZ>-<seq>.jsonl`. The open segment ends in `.partial`;
it is closed (fsync, then renamed without the suffix) when it reaches `max_bytes` or
`max_age_s`, so a reader that lists `*.jsonl` only ever sees complete, immutable files. Each
append is one write of whole lines followed by fsync: what the collector acknowledged is on
disk. A crash can leave a torn last line in a `.partial`; on start it is cut back to the
last complete line and closed, so nothing acknowledged is lost and nothing half-written is
read. Closed segments are deleted oldest first beyond `retention_bytes` or `retention_s`.

`on_close` hands a closed segment to a publisher (an `s3://` sink uploads it and removes
the local copy).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

logger = logging.getLogger(__name__)

PARTIAL: str = ".partial"
SUFFIX: str = ".jsonl"


@dataclass(frozen=True)
class Limits:
    """Rotation and retention of one stream."""

    max_bytes: int = 64 * 1024 * 1024
    max_age_s: float = 600.0
    retention_bytes: int = 10 * 1024 * 1024 * 1024
    retention_s: float = 30 * 86400.0

    def __post_init__(self) -> None:
        if self.max_bytes < 1 or self.max_age_s <= 0:
            raise ValueError("segment limits must be positive")
        if self.retention_bytes < self.max_bytes:
            raise ValueError("retention_bytes must be at least one segment (max_bytes)")
        if self.retention_s <= 0:
            raise ValueError("retention_s must be positive")


class SegmentWriter:
    """The single writer of one stream's directory (not thread-safe: the caller locks)."""

    def __init__(self, root: Path, *, limits: Limits,
                 clock: Callable[[], float] = time.time,
                 on_close: Callable[[Path], None] | None = None) -> None:
        self.root = root
        self.limits = limits
        self._clock = clock
        self._on_close = on_close
        self._open: Path | None = None
        self._opened_at = 0.0
        self._size = 0
        self._seq = 0
        root.mkdir(parents=True, exist_ok=True)
        for leftover in sorted(root.glob(f"*/*{SUFFIX}{PARTIAL}")):
            self._recover(leftover)

    @property
    def open_segment(self) -> Path | None:
        return self._open

    def append(self, lines: Sequence[bytes]) -> None:
        """Write whole lines durably, rotating first when the open segment is full or old."""
        if not lines:
            return
        data = b"".join(lines)
        now = self._clock()
        if self._open is not None and (self._size + len(data) > self.limits.max_bytes
                                       or now - self._opened_at >= self.limits.max_age_s):
            self.close()
        if self._open is None:
            self._start(now)
        assert self._open is not None
        with self._open.open("ab") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        self._size += len(data)

    def tick(self) -> None:
        """Close an open segment that has grown too old, and apply retention."""
        if self._open is not None and self._clock() - self._opened_at >= self.limits.max_age_s:
            self.close()
        self.prune()

    def close(self) -> Path | None:
        """Close the open segment (if any): it becomes a complete `.jsonl` file."""
        if self._open is None:
            return None
        closed = self._finish(self._open)
        self._open = None
        self._size = 0
        return closed

    def segments(self) -> list[Path]:
        """Closed segments, oldest first."""
        return sorted(self.root.glob(f"*/*{SUFFIX}"), key=lambda p: p.name)

    def prune(self) -> list[Path]:
        """Delete closed segments beyond the retention limits, oldest first."""
        segments = self.segments()
        now = self._clock()
        sizes = {p: p.stat().st_size for p in segments}
        total = sum(sizes.values()) + self._size
        removed: list[Path] = []
        for path in segments:
            too_old = now - path.stat().st_mtime > self.limits.retention_s
            if not too_old and total <= self.limits.retention_bytes:
                break
            total -= sizes[path]
            path.unlink(missing_ok=True)
            removed.append(path)
        for day in {p.parent for p in removed}:
            if day.exists() and not any(day.iterdir()):
                day.rmdir()
        return removed

    def _start(self, now: float) -> None:
        moment = datetime.fromtimestamp(now, tz=UTC)
        day = self.root / moment.strftime("%Y-%m-%d")
        day.mkdir(parents=True, exist_ok=True)
        while True:
            self._seq += 1
            name = f"{moment.strftime('%Y%m%dT%H%M%SZ')}-{self._seq:06d}{SUFFIX}"
            if not (day / name).exists() and not (day / (name + PARTIAL)).exists():
                break
        self._open = day / (name + PARTIAL)
        self._open.touch()
        self._opened_at = now
        self._size = 0

    def _finish(self, partial: Path) -> Path | None:
        with partial.open("rb+") as fh:
            os.fsync(fh.fileno())
        if partial.stat().st_size == 0:
            partial.unlink()
            return None
        closed = partial.with_name(partial.name[: -len(PARTIAL)])
        partial.rename(closed)
        _fsync_dir(closed.parent)
        if self._on_close is not None:
            try:
                self._on_close(closed)
            except Exception:  # the segment stays on disk; the next start retries nothing
                logger.exception("could not publish capture segment %s", closed)
        return closed

    def _recover(self, partial: Path) -> None:
        data = partial.read_bytes()
        keep = data.rfind(b"\n") + 1
        if keep < len(data):
            logger.warning("%s: dropping a torn last line of %d bytes left by a crash",
                           partial, len(data) - keep)
            with partial.open("rb+") as fh:
                fh.truncate(keep)
        self._finish(partial)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
