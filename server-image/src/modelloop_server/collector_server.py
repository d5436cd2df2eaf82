"""`modelloop-collect`: the collector's HTTP server (the operator runs it, one per deployment).

Endpoints (docs/capture.md):

- `POST /v1/capture`: JSON lines of capture records from the model servers; 204, or 400
  naming the bad lines (the good ones are kept), 507 when the sink cannot be written.
- `POST /v1/models/<name>/feedback`: ground truth from clients.
- `GET /metrics`: Prometheus text; `GET /readyz`, `GET /livez`.

Every option also reads a `MODELLOOP_COLLECT_*` variable, which is how the operator sets it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import socket
import sys
import threading
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from modelloop_trainer.errors import StorageError
from modelloop_trainer.storage import parse_uri, publish
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from modelloop_server.capture_sink import Limits
from modelloop_server.collector import Collector

logger = logging.getLogger("modelloop_server.collector")

FEEDBACK_PATH = re.compile(r"^/v1/models/([A-Za-z0-9][A-Za-z0-9._-]{0,127})/feedback/?$")
TICK_SECONDS = 5.0


def _env(name: str, default: str) -> str:
    return os.environ.get(f"MODELLOOP_COLLECT_{name}", default)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="modelloop-collect", description=__doc__.split("\n")[0])
    p.add_argument("--sink", default=_env("SINK", ""),
                   help="file://, pvc:// or s3:// URI of the capture sink (MODELLOOP_COLLECT_SINK)")
    p.add_argument("--deployment", default=_env("DEPLOYMENT", ""),
                   help="the ModelDeployment's name, accepted in the feedback path")
    p.add_argument("--address", default=_env("ADDRESS", "0.0.0.0"))
    p.add_argument("--port", type=int, default=int(_env("PORT", "8080")))
    p.add_argument("--state-dir", default=_env("STATE_DIR", ""),
                   help="index and staging directory (default: the sink itself when local)")
    p.add_argument("--segment-bytes", type=int, default=int(_env("SEGMENT_BYTES", "67108864")))
    p.add_argument("--segment-seconds", type=float, default=float(_env("SEGMENT_SECONDS", "600")))
    p.add_argument("--retention-bytes", type=int,
                   default=int(_env("RETENTION_BYTES", str(10 * 1024**3))))
    p.add_argument("--retention-seconds", type=float,
                   default=float(_env("RETENTION_SECONDS", str(30 * 86400))))
    p.add_argument("--feedback-seconds", type=float,
                   default=float(_env("FEEDBACK_SECONDS", str(7 * 86400))),
                   help="how long after a prediction feedback for it is still joined")
    p.add_argument("--max-body-bytes", type=int, default=int(_env("MAX_BODY_BYTES", "8388608")))
    args = p.parse_args(argv)
    if not args.sink or not args.deployment:
        p.error("--sink and --deployment are required (or MODELLOOP_COLLECT_SINK/_DEPLOYMENT)")
    return args


def build_collector(args: argparse.Namespace) -> Collector:
    """The Collector for `args`: segments straight into a local sink, or staged and
    published segment by segment to a remote one."""
    location = parse_uri(args.sink)
    limits = Limits(max_bytes=args.segment_bytes, max_age_s=args.segment_seconds,
                    retention_bytes=args.retention_bytes, retention_s=args.retention_seconds)
    if location.is_local:
        root = location.local_path
        state = Path(args.state_dir) if args.state_dir else root
        return Collector(root=root, state_dir=state, deployment=args.deployment,
                         limits=limits, index_max_age_s=args.feedback_seconds)
    if not args.state_dir:
        raise StorageError(f"{args.sink}: a remote sink needs --state-dir for staging")
    staging = Path(args.state_dir) / "staging"

    def upload(segment: Path) -> None:
        publish(segment, location.child(segment.relative_to(staging).as_posix()))
        segment.unlink()

    return Collector(root=staging, state_dir=Path(args.state_dir), deployment=args.deployment,
                     limits=limits, index_max_age_s=args.feedback_seconds, on_close=upload)


def make_handler(collector: Collector, *, max_body: int) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            logger.debug("%s " + format, self.address_string(), *args)

        def _send(self, code: int, body: bytes, content_type: str = "application/json") -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _json(self, code: int, payload: dict[str, Any]) -> None:
            self._send(code, json.dumps(payload, separators=(",", ":")).encode())

        def _body(self) -> bytes | None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > max_body:
                self.close_connection = True
                self._json(413, {"code": 413, "type": "PayloadTooLarge",
                                 "message": f"body of {length} bytes, at most {max_body}"})
                return None
            return self.rfile.read(length)

        def do_GET(self) -> None:
            if self.path in ("/readyz", "/livez"):
                self._json(200, {"status": "ok"})
            elif self.path == "/metrics":
                self._send(200, generate_latest(collector.metrics.registry), CONTENT_TYPE_LATEST)
            else:
                self._json(404, {"code": 404, "type": "NotFound", "message": self.path})

        def do_POST(self) -> None:
            body = self._body()
            if body is None:
                return
            if self.path == "/v1/capture":
                try:
                    _, problems = collector.ingest(body)
                except OSError as exc:
                    logger.error("capture sink write failed: %s", exc)
                    self._json(507, {"code": 507, "type": "InsufficientStorage",
                                     "message": f"the capture sink cannot be written: {exc}"})
                    return
                if problems:
                    self._json(400, {"code": 400, "type": "InvalidInput",
                                     "message": "; ".join(problems[:5])})
                else:
                    self._send(204, b"")
                return
            match = FEEDBACK_PATH.match(self.path)
            if match is None:
                self._json(404, {"code": 404, "type": "NotFound", "message": (
                    f"{self.path}: feedback goes to /v1/models/{collector.deployment}/feedback")})
                return
            try:
                payload = json.loads(body.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                self._json(400, {"code": 400, "type": "InvalidInput",
                                 "message": f"feedback body is not JSON: {exc}"})
                return
            try:
                code, out = collector.feedback(match.group(1), payload)
            except OSError as exc:
                logger.error("labelled sink write failed: %s", exc)
                code, out = 507, {"code": 507, "type": "InsufficientStorage",
                                  "message": f"the capture sink cannot be written: {exc}"}
            self._json(code, out)

    return Handler


class _IPv6Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: "
                        "%(message)s", stream=sys.stdout)
    args = parse_args(argv)
    try:
        collector = build_collector(args)
    except (StorageError, OSError, ValueError) as exc:
        print(f"modelloop-collect: {exc}", file=sys.stderr)
        return 2
    server_class = _IPv6Server if ":" in args.address else ThreadingHTTPServer
    server = server_class((args.address, args.port),
                          make_handler(collector, max_body=args.max_body_bytes))
    server.daemon_threads = True
    stop = threading.Event()

    def ticker() -> None:
        while not stop.wait(TICK_SECONDS):
            try:
                collector.tick()
            except Exception:
                logger.exception("capture sink maintenance failed")

    def shutdown(*_: Any) -> None:
        stop.set()
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
    threading.Thread(target=ticker, name="collector-tick", daemon=True).start()
    logger.info("collecting for %s into %s on %s:%d", args.deployment, args.sink,
                args.address, args.port)
    server.serve_forever()
    collector.close()  # closes the open segments: a clean stop leaves no .partial
    logger.info("stopped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
