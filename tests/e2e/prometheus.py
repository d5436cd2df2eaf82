"""A real Prometheus for the local stack, finding the model servers as in a cluster.

The binary is the one hack/build-cluster-binaries.sh builds (tests/harness/prometheus.py
finds it). Kubernetes service discovery is not configured: a small thread does what that
discovery would: every second it lists the namespace's Running pods annotated
`prometheus.io/scrape` and writes them as a `file_sd_configs` target file,
`<pod IP>:<prometheus.io/port>` with the `namespace` and `pod` labels Kubernetes discovery
attaches. Those are the labels the operator's `$selector` matches (docs/monitoring.md), so
the operator's analysis runs unchanged against it.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.harness.processes import Component, free_port
from tests.harness.prometheus import missing_prometheus_message, prometheus_binary

_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def scrape_config(*, targets_file: Path, interval: str) -> dict[str, Any]:
    """prometheus.yml (JSON is YAML): whatever the target file lists."""
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "scrape_configs": [{
            "job_name": "pods",
            "file_sd_configs": [{"files": [str(targets_file)], "refresh_interval": "1s"}],
        }],
    }


def pod_targets(pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """file_sd entries for the Running pods annotated for scraping."""
    out = []
    for pod in pods:
        notes = pod["metadata"].get("annotations") or {}
        ip = pod.get("status", {}).get("podIP")
        if (notes.get("prometheus.io/scrape") != "true" or not ip
                or pod["status"].get("phase") != "Running"):
            continue
        out.append({"targets": [f"{ip}:{notes.get('prometheus.io/port', '80')}"],
                    "labels": {"namespace": pod["metadata"]["namespace"],
                               "pod": pod["metadata"]["name"],
                               "__metrics_path__": notes.get("prometheus.io/path", "/metrics")}})
    return out


@dataclass
class Prometheus:
    """The process, its URL and instant queries."""

    workdir: Path
    list_pods: Callable[[], list[dict[str, Any]]]
    interval: str = "2s"
    port: int = field(default_factory=free_port)
    component: Component | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, *, timeout: float = 60) -> None:
        binary = prometheus_binary()
        if binary is None:
            raise RuntimeError(missing_prometheus_message())
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "prometheus.yml"
        targets = self.workdir / "targets.json"
        self._write_targets(targets)
        config.write_text(json.dumps(scrape_config(targets_file=targets,
                                                   interval=self.interval)))
        self._thread = threading.Thread(target=self._discover, args=(targets,),
                                        name="prometheus-discovery", daemon=True)
        self._thread.start()
        self.component = Component(name="prometheus", log=self.workdir / "prometheus.log", argv=[
            binary, f"--config.file={config}", f"--storage.tsdb.path={self.workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}", "--storage.tsdb.retention.time=2h",
            "--log.level=warn"])
        self.component.start(tie_to_parent=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.component.check_running()
            try:
                with _DIRECT.open(f"{self.url}/-/ready", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.3)
        raise self.component.failure(f"not ready within {timeout}s")

    def _write_targets(self, path: Path) -> None:
        text = json.dumps(pod_targets(self.list_pods()))
        if not path.exists() or path.read_text() != text:
            partial = path.with_suffix(".tmp")
            partial.write_text(text)
            partial.replace(path)  # atomic: Prometheus never reads half a file

    def _discover(self, path: Path) -> None:
        while not self._stop.wait(1.0):
            with contextlib.suppress(Exception):  # a failed listing: try again next second
                self._write_targets(path)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        if self.component is not None:
            self.component.stop()
            self.component = None

    def query(self, promql: str) -> list[dict[str, Any]]:
        """Instant query: the result vector."""
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with _DIRECT.open(url, timeout=10) as response:
            body = json.loads(response.read())
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def value(self, promql: str) -> float | None:
        """The single number of an aggregated query, or None without data."""
        result = self.query(promql)
        return float(result[0]["value"][1]) if result else None
