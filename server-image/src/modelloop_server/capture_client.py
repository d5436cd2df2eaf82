"""Sends a worker's sampled predictions to the collector, off the request path.

`submit` only puts records in a bounded queue (never blocks, never raises); a daemon thread
drains it in batches of up to `batch` records or every `flush_s`, and POSTs each batch as
JSON lines. When the queue is full or the collector does not answer, records are dropped
and counted, never retried for long: capture is best effort, inference is not.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Sequence

from modelloop_server.capture_records import CaptureRecord, encode

logger = logging.getLogger(__name__)

REASON_QUEUE_FULL = "queue_full"
REASON_UNREACHABLE = "collector_unreachable"
REASON_REFUSED = "collector_refused"
REASON_TOO_LARGE = "record_too_large"


class CaptureClient:
    """A background sender of capture records to `url` (the collector's /v1/capture)."""

    def __init__(self, url: str, *, queue_size: int = 10_000, batch: int = 512,
                 max_bytes: int = 4 * 1024 * 1024, flush_s: float = 1.0,
                 timeout_s: float = 5.0) -> None:
        self.url = url
        self.batch = batch
        self.max_bytes = max_bytes
        self.flush_s = flush_s
        self.timeout_s = timeout_s
        self._queue: queue.Queue[CaptureRecord] = queue.Queue(maxsize=queue_size)
        self._lock = threading.Lock()
        self._dropped: Counter[str] = Counter()
        self._sent = 0
        self._last_warning = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="capture-sender", daemon=True)
        self._thread.start()

    def submit(self, records: Sequence[CaptureRecord]) -> None:
        """Queue `records` for sending; those that do not fit are dropped and counted."""
        for record in records:
            try:
                self._queue.put_nowait(record)
            except queue.Full:
                self._drop(REASON_QUEUE_FULL, 1)

    def take_dropped(self) -> Counter[str]:
        """Drops by reason since the last call (the handler exports them as metrics)."""
        with self._lock:
            out, self._dropped = self._dropped, Counter()
        return out

    @property
    def sent(self) -> int:
        return self._sent

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until the queue is drained (tests and shutdown); whether it was."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._queue.unfinished_tasks == 0:
                return True
            time.sleep(0.01)
        return False

    def close(self) -> None:
        self.flush(self.timeout_s)
        self._stop.set()
        self._thread.join(timeout=self.timeout_s)

    def _drop(self, reason: str, n: int) -> None:
        with self._lock:
            self._dropped[reason] += n

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                first = self._queue.get(timeout=self.flush_s)
            except queue.Empty:
                continue
            lines = self._line(first)
            pending = [lines] if lines else []
            size = len(lines)
            taken = 1
            deadline = time.monotonic() + self.flush_s
            while taken < self.batch:
                try:
                    record = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                taken += 1
                line = self._line(record)
                if pending and size + len(line) > self.max_bytes:
                    self._post(pending)
                    pending, size = [], 0
                if line:
                    pending.append(line)
                    size += len(line)
            try:
                if pending:
                    self._post(pending)
            finally:
                for _ in range(taken):
                    self._queue.task_done()

    def _line(self, record: CaptureRecord) -> bytes:
        line = encode(record.to_json())
        if len(line) > self.max_bytes:
            self._drop(REASON_TOO_LARGE, 1)
            return b""
        return line

    def _post(self, lines: Sequence[bytes]) -> None:
        body = b"".join(lines)
        request = urllib.request.Request(self.url, data=body, method="POST",
                                         headers={"Content-Type": "application/x-ndjson"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                response.read()
            self._sent += len(lines)
        except urllib.error.HTTPError as exc:
            self._drop(REASON_REFUSED, len(lines))
            self._warn(f"collector refused {len(lines)} capture records: HTTP {exc.code} "
                       f"{exc.read()[:200]!r}")
        except (OSError, ValueError) as exc:
            self._drop(REASON_UNREACHABLE, len(lines))
            self._warn(f"collector {self.url} unreachable, {len(lines)} capture records "
                       f"dropped: {exc}")

    def _warn(self, message: str) -> None:
        now = time.monotonic()
        if now - self._last_warning >= 60:
            self._last_warning = now
            logger.warning("%s (repeats are counted in modelloop_capture_dropped_total)",
                           message)
