"""A real Prometheus for tests, and a metric source it scrapes whose values tests set.

``PrometheusServer`` runs the ``prometheus`` binary that ``hack/build-cluster-binaries.sh
prometheus`` builds from the pinned Go module (hack/go/prometheus) and caches in
``$MODELLOOP_CACHE/bin/prometheus-<version>/`` (``make test`` and ``make demo`` build it) on
loopback with a temporary config and TSDB, scraping every ``scrape_interval`` (1 s by
default). ``TestExporter`` is a tiny ``http.server`` that serves
``/metrics`` in the Prometheus text format from a dict the test changes at will: it plays
the model servers. Its series carry the labels Kubernetes service discovery would give a
real pod (``namespace``, ``pod``) and the server image's own (``model_name``); the scrape
config uses ``honor_labels`` so they reach Prometheus unchanged.

When the binary is missing, ``require_prometheus()`` fails (it never skips, in any tier)
with the step that builds it: the project's own setup provides it, so a missing binary is
a broken setup, not an optional extra.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.harness.binaries import BUILD_SCRIPT
from tests.harness.processes import Component, free_port

BUILD_STEP = "bash hack/build-cluster-binaries.sh prometheus"
"""The step that builds (or reuses) the binary; part of ``make test`` and ``make demo``."""

Labels = tuple[tuple[str, str], ...]


_cached: dict[str, str] = {}
"""The build script's answer, once it named an existing file (it costs a subprocess)."""


def cached_prometheus() -> str | None:
    """The binary built by ``hack/build-cluster-binaries.sh`` if it is built and current.

    Asks the script (``--paths prometheus``, which builds nothing), the one place that knows
    the pinned version and the cache layout, as tests/harness/binaries.py does.
    """
    key = os.environ.get("MODELLOOP_CACHE", "")
    if key in _cached and Path(_cached[key]).is_file():
        return _cached[key]
    if not BUILD_SCRIPT.is_file():
        return None
    bash = shutil.which("bash") or "/bin/bash"
    result = subprocess.run([bash, str(BUILD_SCRIPT), "--paths", "prometheus"],
                            capture_output=True, text=True, check=False, timeout=120)
    for line in result.stdout.splitlines():
        name, sep, value = line.partition("=")
        if result.returncode == 0 and sep and name == "prometheus" and Path(value).is_file():
            _cached[key] = value
            return value
    return None


def prometheus_binary() -> str | None:
    """Path of the prometheus binary, or None.

    ``MODELLOOP_PROMETHEUS`` overrides; then the cached build (:func:`cached_prometheus`);
    then ``prometheus`` on PATH.
    """
    override = os.environ.get("MODELLOOP_PROMETHEUS")
    if override:
        return override if Path(override).is_file() else None
    return cached_prometheus() or shutil.which("prometheus")


def missing_prometheus_message() -> str:
    """Why there is no binary and the step that provides it."""
    override = os.environ.get("MODELLOOP_PROMETHEUS")
    if override:
        return (f"prometheus binary not available: MODELLOOP_PROMETHEUS={override} is not a "
                f"file (unset it to use the cached build from `{BUILD_STEP}`)")
    return (f"prometheus binary not available (not built, or stale): run `{BUILD_STEP}` "
            f"(part of `make test` and `make demo`; cold build ~6 min on 2 cores) or set "
            f"MODELLOOP_PROMETHEUS")


def require_prometheus() -> str:
    """The binary, or fail naming the step that builds it (never a skip)."""
    found = prometheus_binary()
    if found is None:
        pytest.fail(missing_prometheus_message(), pytrace=False)
    return found


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _format(value: float) -> str:
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


@dataclass
class TestExporter:
    """Serves ``/metrics`` from ``series`` (name -> labels -> value), thread-safe."""

    __test__ = False  # not a pytest test class

    series: dict[str, dict[Labels, float]] = field(default_factory=dict)
    port: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None
    scrapes: int = 0

    def set(self, name: str, value: float, **labels: str) -> None:
        """Set one series (created if new)."""
        key = tuple(sorted(labels.items()))
        with self._lock:
            self.series.setdefault(name, {})[key] = value

    def add(self, name: str, amount: float, **labels: str) -> None:
        """Increase a counter series by ``amount``."""
        key = tuple(sorted(labels.items()))
        with self._lock:
            current = self.series.setdefault(name, {}).get(key, 0.0)
            self.series[name][key] = current + amount

    def remove(self, name: str) -> None:
        """Stop exporting every series of ``name`` (Prometheus marks them stale)."""
        with self._lock:
            self.series.pop(name, None)

    def clear(self) -> None:
        with self._lock:
            self.series.clear()

    def render(self) -> str:
        with self._lock:
            lines = []
            for name, by_labels in sorted(self.series.items()):
                for labels, value in sorted(by_labels.items()):
                    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
                    lines.append(f"{name}{{{inner}}} {_format(value)}")
            self.scrapes += 1
        return "\n".join(lines) + "\n"

    def start(self) -> None:
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = exporter.render().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True,
                         name="test-exporter").start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


@dataclass
class PrometheusServer:
    """Prometheus on loopback, scraping ``targets`` every ``scrape_interval``."""

    workdir: Path
    targets: list[str]
    scrape_interval: str = "1s"
    port: int = field(default_factory=free_port)
    component: Component | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _config(self) -> str:
        return json.dumps({  # JSON is YAML
            "global": {"scrape_interval": self.scrape_interval,
                       "evaluation_interval": self.scrape_interval},
            "scrape_configs": [{"job_name": "models", "honor_labels": True,
                                "static_configs": [{"targets": self.targets}]}],
        })

    def start(self, *, timeout: float = 60) -> None:
        binary = require_prometheus()
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "prometheus.yml"
        config.write_text(self._config())
        argv = [binary, f"--config.file={config}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--storage.tsdb.retention.time=1h", "--log.level=warn"]
        self.component = Component(name="prometheus", argv=argv,
                                   log=self.workdir / "prometheus.log")
        self.component.start(tie_to_parent=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.component.check_running()
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                    if response.status == 200:
                        return
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.2)
        raise self.component.failure(f"not ready within {timeout}s")

    def stop(self) -> None:
        if self.component is not None:
            self.component.stop()

    def query(self, promql: str) -> list[Mapping[str, Any]]:
        """Instant query; the ``result`` list (raises on an error answer)."""
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.loads(response.read())
        assert body["status"] == "success", body
        result: list[Mapping[str, Any]] = body["data"]["result"]
        return result

    def wait_for(self, promql: str, predicate: Any = bool, timeout: float = 30) -> Any:
        """Poll ``promql`` until ``predicate(result)`` holds; returns the result."""
        deadline = time.monotonic() + timeout
        result: Any = None
        while time.monotonic() < deadline:
            result = self.query(promql)
            if predicate(result):
                return result
            time.sleep(0.25)
        raise AssertionError(f"{promql!r} never satisfied the predicate; last: {result!r}")

    def wait_scraped(self, timeout: float = 30) -> None:
        """Until every target was scraped successfully at least once."""
        self.wait_for('up{job="models"} == 1',
                      lambda r: len(r) == len(self.targets), timeout=timeout)


@contextmanager
def prometheus_scraping_exporter(workdir: Path) -> Iterator[tuple[PrometheusServer,
                                                                  TestExporter]]:
    """A started exporter and a Prometheus scraping it every second (fails without the
    binary, naming the step that builds it); both stopped on exit."""
    require_prometheus()
    exporter = TestExporter()
    exporter.start()
    server = PrometheusServer(workdir=workdir, targets=[f"127.0.0.1:{exporter.port}"])
    try:
        server.start()
        server.wait_scraped()
        yield server, exporter
    finally:
        server.stop()
        exporter.stop()
