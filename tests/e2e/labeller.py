"""Users and labellers for the closed loop: a thread that sends traffic to a deployment's
serving pods in small batches, and posts each prediction's true label to the collector's
feedback endpoint, as a labelling team would.

Every text is sent once (a retrain must never see a holdout text again under another
request id); like a client that knows the API, it leaves out texts over the server's
per-text limit, and a batch the server refuses (4xx) is counted and not sent again. The
thread keeps per-model counts of what it was told (right or wrong,
from the true label it holds), so live accuracy before and after a promotion is measured on
the traffic itself, independently of the operator's figures.
"""

from __future__ import annotations

import threading
import time
import urllib.error
from collections.abc import Sequence
from dataclasses import dataclass, field

from . import capture, loop
from .stack import Stack

MAX_CHARS = 20000
"""The server's default MODELLOOP_MAX_CHARS (a longer text is refused with 413)."""


@dataclass
class Served:
    """What one model answered on the labeller's traffic."""

    requests: int = 0
    correct: int = 0
    labelled: int = 0

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.requests if self.requests else None


@dataclass
class Labeller:
    """Sends ``traffic`` (text, true label) to ``deployment`` ``batch`` texts every
    ``every`` seconds while running; errors are kept, never raised in the thread."""

    stack: Stack
    deployment: str
    traffic: Sequence[tuple[str, str]]
    batch: int = 10
    every: float = 4.0
    served: dict[str, Served] = field(default_factory=dict)
    """Per archive URI."""
    errors: list[str] = field(default_factory=list)
    """The last 20 errors."""
    failed: int = 0
    """Batches that raised (all of them, not only the last 20)."""
    sent: int = 0
    """Texts of `traffic` done with: answered, refused or over MAX_CHARS."""
    refused: int = 0
    """Texts the server refused (4xx) or the labeller left out (over MAX_CHARS)."""
    _stop: threading.Event = field(default_factory=threading.Event)
    _paused: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _pending: list[tuple[str, str, str, int]] = field(default_factory=list)

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="labeller", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=120)
            self._thread = None

    def pause(self) -> None:
        """Send nothing more (the labels of what was sent are still posted)."""
        self._paused.set()

    def resume(self) -> None:
        self._paused.clear()

    @property
    def paused(self) -> bool:
        return self._paused.is_set()

    def accuracy(self, archive: str) -> Served:
        with self._lock:
            return Served(**vars(self.served.get(archive, Served())))

    def exhausted(self) -> bool:
        return self.sent >= len(self.traffic)

    def _run(self) -> None:
        while not self._stop.is_set() and not self.exhausted():
            started = time.monotonic()
            try:
                if self._paused.is_set():
                    self._flush_feedback()
                else:
                    self.send_one_batch()
            except Exception as exc:  # the loop under test may be rolling: try again
                self.failed += 1
                self.errors.append(f"{type(exc).__name__}: {exc}")
                del self.errors[:-20]
            self._stop.wait(max(0.0, self.every - (time.monotonic() - started)))

    def send_one_batch(self) -> None:
        """One batch to one serving pod, then the true labels of what the collector has
        received by now (the servers send their captures within a second or so)."""
        pods = sorted((ip, uri) for ip, uri in loop.serving_pods(self.stack, self.deployment)
                      if uri)
        collector = capture.collector_ip(self.stack, self.deployment)
        if not pods or collector is None:
            return
        address, archive = pods[self.sent // self.batch % len(pods)]
        window = self.traffic[self.sent:self.sent + self.batch]
        chunk = [(text, label) for text, label in window if len(text) <= MAX_CHARS]
        try:
            predictions = loop.predict(address, loop.model_name_of(archive),
                                       [text for text, _ in chunk]) if chunk else []
        except urllib.error.HTTPError as err:
            if not 400 <= err.code < 500:
                raise  # the server may be rolling: the same batch again
            self.sent += len(window)
            self.refused += len(window)
            raise
        self.sent += len(window)
        self.refused += len(window) - len(chunk)
        with self._lock:
            counts = self.served.setdefault(archive, Served())
            counts.requests += len(chunk)
            counts.correct += sum(p["label"] == label
                                  for p, (_, label) in zip(predictions, chunk, strict=True))
        self._pending += [(p["requestId"], label, archive, 0)
                          for p, (_, label) in zip(predictions, chunk, strict=True)]
        time.sleep(1.5)
        self._post_feedback(collector)

    def _flush_feedback(self) -> None:
        collector = capture.collector_ip(self.stack, self.deployment)
        if collector is not None:
            self._post_feedback(collector)

    def _post_feedback(self, collector: str) -> None:
        if not self._pending:
            return
        code, answer, _ = capture.post_json(
            f"http://{collector}:{capture.COLLECTOR_PORT}/v1/models/{self.deployment}/feedback",
            {"feedback": [{"requestId": rid, "label": label}
                          for rid, label, _, _ in self._pending]})
        if code != 200:  # kept pending: posted again with the next batch
            raise RuntimeError(f"feedback answered {code}: {answer}")
        status = {r.get("requestId"): r.get("status") for r in answer.get("results", [])}
        retry = []
        for rid, label, archive, tries in self._pending:
            if status.get(rid) == "accepted":
                with self._lock:
                    self.served.setdefault(archive, Served()).labelled += 1
            elif status.get(rid) == "unknown_request" and tries < 3:
                retry.append((rid, label, archive, tries + 1))
        self._pending = retry

