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

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from . import loop
from .stack import Stack

Json = dict[str, Any]
COLLECTOR_PORT = 8080
MAX_CHARS = 20000
"""The server's default MODELLOOP_MAX_CHARS (a longer text is refused with 413)."""
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


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
        pods = _serving_pods(self.stack, self.deployment)
        collector = _collector_ip(self.stack, self.deployment)
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
        collector = _collector_ip(self.stack, self.deployment)
        if collector is not None:
            self._post_feedback(collector)

    def _post_feedback(self, collector: str) -> None:
        if not self._pending:
            return
        answer = _post(f"http://{collector}:{COLLECTOR_PORT}/v1/models/{self.deployment}"
                       "/feedback", {"feedback": [{"requestId": rid, "label": label}
                                                  for rid, label, _, _ in self._pending]})
        status = {r.get("requestId"): r.get("status") for r in answer.get("results", [])}
        retry = []
        for rid, label, archive, tries in self._pending:
            if status.get(rid) == "accepted":
                with self._lock:
                    self.served.setdefault(archive, Served()).labelled += 1
            elif status.get(rid) == "unknown_request" and tries < 3:
                retry.append((rid, label, archive, tries + 1))
        self._pending = retry


def _serving_pods(stack: Stack, deployment: str) -> list[tuple[str, str]]:
    """(address, archive URI) of the Ready server pods behind the deployment's Service."""
    out = []
    for pod in stack.list("pods", f"modelloop.dev/modeldeployment={deployment},"
                                  "app.kubernetes.io/component=server"):
        archive = (pod["metadata"].get("annotations") or {}).get(loop.MODEL_URI_ANNOTATION)
        ready = (loop.condition(pod, "Ready") or {}).get("status") == "True"
        if archive and ready and pod["status"].get("podIP") and \
                pod["metadata"].get("deletionTimestamp") is None:
            out.append((pod["status"]["podIP"], archive))
    return sorted(out)


def _collector_ip(stack: Stack, deployment: str) -> str | None:
    pod = stack.get("pod", f"{deployment}-collector-0")
    if pod is None or (loop.condition(pod, "Ready") or {}).get("status") != "True":
        return None
    ip: str | None = pod["status"].get("podIP")
    return ip


def _post(url: str, body: Json) -> Json:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with _DIRECT.open(request, timeout=60) as response:
        answer: Json = json.loads(response.read())
    return answer
