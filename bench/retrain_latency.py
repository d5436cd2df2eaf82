"""Time from a metric crossing its threshold to the retraining TrainingJob existing.

Starts the local control plane (tests/harness) with a kwok node, Prometheus (built by
hack/build-cluster-binaries.sh) scraping a test exporter every second, and the operator
(resync 1 s). For each trial a ModelDeployment with ``monitoring.interval: 1s`` and
``failureLimit: 3`` is made Healthy, then its exporter series jumps over the drift
threshold; the clock runs from that moment until its ``<name>-rt-1`` TrainingJob can be
read from the API server. Also timed: when Prometheus first answers the new value (scrape
delay), and when status first shows the deployment Degraded.

Target: latency <= failureLimit x interval + 5 s. The ratio to failureLimit x interval
(the analysis' own minimum) is the figure to compare between runs, since absolute times
drift on a shared machine.

    .venv/bin/python bench/retrain_latency.py [--trials 5]

Writes bench/results/retrain_latency.json and prints one summary line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.cluster.conftest import CRD_DIR, RunningOperator  # noqa: E402
from tests.harness.binaries import locate  # noqa: E402
from tests.harness.controlplane import ControlPlane  # noqa: E402
from tests.harness.prometheus import (  # noqa: E402
    PrometheusServer,
    TestExporter,
    missing_prometheus_message,
    prometheus_binary,
)

RESULTS = ROOT / "bench" / "results"
NAME = "retrain_latency"
NAMESPACE = "bench"
NODE = "bench-node-0"
INTERVAL_SECONDS = 1
FAILURE_LIMIT = 3
THRESHOLD = 0.2


def machine() -> dict[str, Any]:
    cpu = platform.processor()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    version = subprocess.run([prometheus_binary() or "prometheus", "--version"],
                             capture_output=True, text=True, check=False).stdout.split("\n")[0]
    return {"cores": os.cpu_count(), "cpu": cpu, "python": platform.python_version(),
            "prometheus": version, "loadavg": os.getloadavg()}


def model_deployment(name: str, prometheus_url: str) -> dict[str, Any]:
    template = {"model": {"uri": "builtin://all-minilm-l6-v2"},
                "dataset": {"uri": "builtin://bbc-news"},
                "output": {"uri": "file:///models/retrained"},
                "podTemplate": {"metadata": {"annotations": {
                    "modelloop.dev/kwok-complete": "false"}}},
                "scheduling": {"nodeSelector": {"kubernetes.io/hostname": NODE}}}
    return {"apiVersion": "modelloop.dev/v1alpha1", "kind": "ModelDeployment",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"model": {"archiveUri": "file:///models/v1/model.mar"}, "replicas": 1,
                     "scheduling": {"nodeSelector": {"kubernetes.io/hostname": NODE}},
                     "monitoring": {"prometheusUrl": prometheus_url,
                                    "interval": f"{INTERVAL_SECONDS}s", "window": "30s",
                                    "failureLimit": FAILURE_LIMIT, "minSamples": 300,
                                    "drift": {"max": THRESHOLD}},
                     "retrain": {"enabled": True, "cooldown": "1h",
                                 "trainingJobTemplate": {"spec": template}}}}


def poll(what: str, probe: Callable[[], bool], timeout: float = 120) -> float:
    """Monotonic time at which ``probe`` first held (polled every 50 ms)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if probe():
            return time.monotonic()
        time.sleep(0.05)
    raise TimeoutError(f"timed out waiting for {what}")


def mdep_status(plane: ControlPlane, name: str) -> dict[str, Any]:
    path = f"/apis/modelloop.dev/v1alpha1/namespaces/{NAMESPACE}/modeldeployments/{name}"
    status: dict[str, Any] = plane.api_get(path).get("status") or {}
    return status


def exists(plane: ControlPlane, path: str) -> bool:
    try:
        plane.api_get(path)
        return True
    except urllib.error.HTTPError as err:
        if err.code == 404:
            return False
        raise


def trial(plane: ControlPlane, server: PrometheusServer, exporter: TestExporter,
          index: int) -> dict[str, float]:
    name = f"lat-{index}"
    pod = f"{name}-6b8f9c7d5-k2j4x"
    labels = {"namespace": NAMESPACE, "pod": pod, "model_name": "model"}
    exporter.set("modelloop_drift_window_samples", 1000, **labels)
    exporter.set("modelloop_drift_psi", 0.05, distribution="class", **labels)
    server.wait_for(f'modelloop_drift_psi{{pod="{pod}"}} == 0.05')
    plane.kubectl("apply", "-f", "-", input=json.dumps(model_deployment(name, server.url)))
    poll("Healthy", lambda: (mdep_status(plane, name).get("analysis") or {}).get(
        "result") == "Healthy")

    crossed = time.monotonic()
    exporter.set("modelloop_drift_psi", 0.35, distribution="class", **labels)
    tj = f"/apis/modelloop.dev/v1alpha1/namespaces/{NAMESPACE}/trainingjobs/{name}-rt-1"
    in_prometheus = poll("the new value in Prometheus", lambda: bool(server.query(
        f'modelloop_drift_psi{{pod="{pod}"}} == 0.35')))
    created = poll("the TrainingJob", lambda: exists(plane, tj))
    degraded = poll("Degraded in status", lambda: any(
        c.get("type") == "Degraded" and c.get("status") == "True"
        for c in mdep_status(plane, name).get("conditions", [])))
    return {"scrapeSeconds": round(in_prometheus - crossed, 3),
            "trainingJobSeconds": round(created - crossed, 3),
            "degradedInStatusSeconds": round(degraded - crossed, 3)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=5)
    args = parser.parse_args()
    if prometheus_binary() is None:
        print(f"{NAME}: failed: {missing_prometheus_message()}")
        return 2
    with tempfile.TemporaryDirectory(prefix="bench-retrain-") as tmp:
        plane = ControlPlane(Path(tmp) / "cluster", locate(), tie_to_parent=True)
        plane.start()
        exporter = TestExporter()
        exporter.start()
        server = PrometheusServer(workdir=Path(tmp) / "prometheus",
                                  targets=[f"127.0.0.1:{exporter.port}"])
        operator = RunningOperator(cluster=plane, log=Path(tmp) / "operator.log")
        try:
            server.start()
            server.wait_scraped()
            plane.add_node(NODE)
            plane.kubectl("create", "namespace", NAMESPACE)
            for path in sorted(CRD_DIR.glob("*.yaml")):
                plane.kubectl("apply", "--server-side", "-f", str(path))
            plane.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd",
                          "--all")
            operator.start()
            trials = [trial(plane, server, exporter, i) for i in range(args.trials)]
        finally:
            operator.stop()
            server.stop()
            exporter.stop()
            plane.stop()
    latencies = [t["trainingJobSeconds"] for t in trials]
    floor = FAILURE_LIMIT * INTERVAL_SECONDS
    target = floor + 5
    result: dict[str, Any] = {
        "benchmark": NAME,
        "settings": {"intervalSeconds": INTERVAL_SECONDS, "failureLimit": FAILURE_LIMIT,
                     "scrapeIntervalSeconds": 1, "operatorResyncSeconds": 1,
                     "trials": args.trials},
        "trials": trials,
        "trainingJobSeconds": {"min": min(latencies), "median": statistics.median(latencies),
                               "max": max(latencies)},
        "medianInIntervals": round(statistics.median(latencies) / INTERVAL_SECONDS, 2),
        "ratioMedianToAnalysisFloor": round(statistics.median(latencies) / floor, 2),
        "targetSeconds": target,
        "withinTarget": max(latencies) <= target,
        "machine": machine(),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{NAME}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"{NAME}: threshold crossed -> TrainingJob median "
          f"{result['trainingJobSeconds']['median']}s (max {max(latencies)}s) = "
          f"{result['medianInIntervals']} intervals, {result['ratioMedianToAnalysisFloor']}x "
          f"the failureLimit x interval floor of {floor}s; target <= {target}s: "
          f"{'met' if result['withinTarget'] else 'MISSED'} ({args.trials} trials)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
