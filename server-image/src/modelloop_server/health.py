"""The pod's health endpoints, served by `modelloop-serve` on its own port (default 8090).

Kubernetes HTTP probes hit the pod IP, where only the inference and metrics ports listen, and
TorchServe's own `/ping` answers `Healthy` before any worker can answer a prediction (and
keeps doing so while a broken model reloads forever). These endpoints answer from what the
supervisor last learnt from the loopback management API instead:

- `GET /readyz`: 200 when at least one worker is READY and the management API answered in
  the last `ready_staleness_s` seconds; 503 otherwise.
- `GET /livez`: 200 while TorchServe's process runs and (once it has answered at all) its
  management API answered in the last `live_staleness_s` seconds; 503 otherwise. Before the
  first answer it only checks the process, so a slow model load is not killed by liveness.

Bodies are small JSON objects for humans: `{"status": "ok"|"unavailable", "phase", "message"}`.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from modelloop_server.supervisor import Phase, Verdict

logger = logging.getLogger(__name__)

DEFAULT_HEALTH_PORT = 8090


@dataclass
class HealthState:
    """What the probes read; written by the supervisor loop, read by the HTTP threads."""

    process_alive: Callable[[], bool]
    ready_staleness_s: float = 5.0
    live_staleness_s: float = 30.0
    clock: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._verdict = Verdict(Phase.STARTING, "starting")
        self._last_answer_at: float | None = None

    def update(self, verdict: Verdict, *, answered: bool) -> None:
        with self._lock:
            self._verdict = verdict
            if answered:
                self._last_answer_at = self.clock()

    def readiness(self) -> tuple[bool, Verdict]:
        with self._lock:
            verdict, last = self._verdict, self._last_answer_at
        fresh = last is not None and self.clock() - last <= self.ready_staleness_s
        return verdict.ready and fresh and self.process_alive(), verdict

    def liveness(self) -> tuple[bool, Verdict]:
        with self._lock:
            verdict, last = self._verdict, self._last_answer_at
        if verdict.phase is Phase.FAILED or not self.process_alive():
            return False, verdict
        if last is None:
            return True, verdict
        return self.clock() - last <= self.live_staleness_s, verdict


class _Handler(BaseHTTPRequestHandler):
    server: _HealthServer

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/readyz":
            self._answer(*self.server.state.readiness())
        elif path == "/livez":
            self._answer(*self.server.state.liveness())
        else:
            self._send(404, {"status": "not found", "paths": ["/readyz", "/livez"]})

    def _answer(self, ok: bool, verdict: Verdict) -> None:
        self._send(
            200 if ok else 503,
            {
                "status": "ok" if ok else "unavailable",
                "phase": verdict.phase.value,
                "message": verdict.message,
            },
        )

    def _send(self, code: int, body: dict[str, object]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass  # probes every few seconds would drown the server's own log


class _HealthServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], state: HealthState) -> None:
        super().__init__(address, _Handler)
        self.state = state


def start_health_server(state: HealthState, *, host: str, port: int) -> ThreadingHTTPServer:
    """Serve the probes in a daemon thread; `server.shutdown()` stops it."""
    server = _HealthServer((host, port), state)
    thread = threading.Thread(target=server.serve_forever, name="health", daemon=True)
    thread.start()
    logger.info("health endpoints on http://%s:%d/readyz and /livez", host, server.server_port)
    return server
