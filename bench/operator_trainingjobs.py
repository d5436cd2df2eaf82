"""How fast the operator turns a burst of TrainingJobs into Jobs, and what it costs.

Starts the local control plane (tests/harness) with one large kwok node, applies the CRDs,
starts the operator as a subprocess, then creates N TrainingJobs (default 500) as fast as
the API server takes them. Watches (in this process, millisecond timestamps) record for
each one when its first status and its first Job appeared. Reports p50/p99 of
create -> first status and create -> Job, and the operator's peak RSS.

Baseline in the same run: N plain batch/v1 Jobs created the same way, timing Job -> first
pod (the built-in Job controller's reaction), so the ratio says how the operator's
reaction compares with Kubernetes' own controller on this machine right now.

    .venv/bin/python bench/operator_trainingjobs.py [--count 500] [--concurrency 16]

Writes bench/results/operator_trainingjobs.json and prints one summary line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from importlib import metadata
from pathlib import Path
from typing import Any, cast

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kubernetes_asyncio import client, config, watch  # noqa: E402

from tests.cluster.conftest import CRD_DIR, RunningOperator  # noqa: E402
from tests.harness.binaries import locate  # noqa: E402
from tests.harness.controlplane import ControlPlane  # noqa: E402

RESULTS = ROOT / "bench" / "results"
NAME = "operator_trainingjobs"
NAMESPACE = "bench"
NODE = "bench-node-0"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def summary(values: list[float]) -> dict[str, float]:
    return {"p50": round(percentile(values, 0.5), 3), "p99": round(percentile(values, 0.99), 3),
            "mean": round(statistics.fmean(values), 3) if values else float("nan"),
            "count": len(values)}


def machine() -> dict[str, Any]:
    cpu = platform.processor()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return {"cores": os.cpu_count(), "cpu": cpu, "python": platform.python_version(),
            "kopf": metadata.version("kopf"),
            "kubernetes_asyncio": metadata.version("kubernetes_asyncio")}


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def training_job(name: str) -> dict[str, Any]:
    return {"apiVersion": "modelloop.dev/v1alpha1", "kind": "TrainingJob",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"model": {"uri": "builtin://all-minilm-l6-v2"},
                     "dataset": {"uri": "builtin://bbc-news"},
                     "output": {"uri": f"s3://bench/{name}"},
                     "resources": {"cpu": "10m", "memory": "16Mi"},
                     "scheduling": {"nodeSelector": {"kubernetes.io/hostname": NODE}}}}


def plain_job(name: str) -> dict[str, Any]:
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"backoffLimit": 0, "template": {"spec": {
                "restartPolicy": "Never",
                "nodeSelector": {"kubernetes.io/hostname": NODE},
                "containers": [{"name": "c", "image": "busybox",
                                "resources": {"requests": {"cpu": "10m",
                                                           "memory": "16Mi"}}}]}}}}


async def first_seen(list_fn: Callable[..., Awaitable[Any]], key: Callable[[Any], str | None],
                     seen: dict[str, float], stop: asyncio.Event, **kwargs: Any) -> None:
    """Record the first time each key shows up in a watch stream."""
    while not stop.is_set():
        stream = watch.Watch()
        try:
            async with stream.stream(list_fn, namespace=NAMESPACE, timeout_seconds=30,
                                     **kwargs) as events:
                async for event in events:
                    k = key(event["object"])
                    if k is not None and k not in seen:
                        seen[k] = time.perf_counter()
                    if stop.is_set():
                        break
        except (TimeoutError, client.ApiException):
            await asyncio.sleep(0.1)


async def create_all(create: Callable[[dict[str, Any]], Awaitable[Any]],
                     bodies: list[dict[str, Any]], concurrency: int) -> dict[str, float]:
    created: dict[str, float] = {}
    queue = list(reversed(bodies))

    async def worker() -> None:
        while queue:
            body = queue.pop()
            started = time.perf_counter()
            await create(body)
            created[body["metadata"]["name"]] = started
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return created


async def wait_until(done: Callable[[], bool], within: float,
                     watchers: list[asyncio.Task[None]]) -> bool:
    """Poll ``done``; a watcher that crashed fails the benchmark instead of a silent wait."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        for task in watchers:
            if task.done():
                task.result()
        if done():
            return True
        await asyncio.sleep(0.2)
    return done()


async def measure(kubeconfig: Path, count: int, concurrency: int,
                  operator: RunningOperator) -> dict[str, Any]:
    cfg = client.Configuration()
    await config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)
    async with client.ApiClient(cfg) as api:
        custom, batch, core = client.CustomObjectsApi(api), client.BatchV1Api(api), \
            client.CoreV1Api(api)
        stop = asyncio.Event()

        # Baseline: the Job controller's reaction (Job -> first pod).
        pod_seen: dict[str, float] = {}
        watcher = asyncio.create_task(first_seen(
            core.list_namespaced_pod, lambda o: (o.metadata.labels or {}).get("job-name"),
            pod_seen, stop, label_selector="job-name"))
        names = [f"plain-{i:04d}" for i in range(count)]
        created = await create_all(
            lambda b: batch.create_namespaced_job(NAMESPACE, cast(Any, b)),
            [plain_job(n) for n in names], concurrency)
        await wait_until(lambda: len(pod_seen) >= count, 300, [watcher])
        stop.set()
        watcher.cancel()
        baseline = [pod_seen[n] - created[n] for n in names if n in pod_seen]

        # The operator: TrainingJob -> first status, TrainingJob -> its Job.
        stop = asyncio.Event()
        status_seen: dict[str, float] = {}
        job_seen: dict[str, float] = {}

        def status_key(obj: Any) -> str | None:
            return str(obj["metadata"]["name"]) if obj.get("status") else None
        watchers = [
            asyncio.create_task(first_seen(
                custom.list_namespaced_custom_object, status_key, status_seen, stop,
                group="modelloop.dev", version="v1alpha1", plural="trainingjobs")),
            asyncio.create_task(first_seen(
                batch.list_namespaced_job,
                lambda o: (o.metadata.labels or {}).get("modelloop.dev/trainingjob"),
                job_seen, stop, label_selector="modelloop.dev/trainingjob")),
        ]
        names = [f"tj-{i:04d}" for i in range(count)]
        burst_start = time.perf_counter()
        created = await create_all(
            lambda b: custom.create_namespaced_custom_object(
                "modelloop.dev", "v1alpha1", NAMESPACE, "trainingjobs", b),
            [training_job(n) for n in names], concurrency)
        create_seconds = time.perf_counter() - burst_start
        complete = await wait_until(
            lambda: len(job_seen) >= count and len(status_seen) >= count, 600, watchers)
        all_done = time.perf_counter() - burst_start
        stop.set()
        for task in watchers:
            task.cancel()
        assert operator.component is not None
        return {
            "count": count, "concurrency": concurrency, "allObserved": complete,
            "createBurstSeconds": round(create_seconds, 2),
            "allJobsWithinSeconds": round(all_done, 2),
            "createToFirstStatusSeconds": summary(
                [status_seen[n] - created[n] for n in names if n in status_seen]),
            "createToJobSeconds": summary(
                [job_seen[n] - created[n] for n in names if n in job_seen]),
            "baselineJobToPodSeconds": summary(baseline),
            "operatorPeakRssMiB": peak_rss_mib(operator.component.pid),
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--operator-log", type=Path,
                        help="keep the operator's log here (it is deleted otherwise)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-operator-") as tmp:
        plane = ControlPlane(Path(tmp) / "cluster", locate(), tie_to_parent=True)
        plane.start()
        operator = RunningOperator(cluster=plane, log=Path(tmp) / "operator.log",
                                   env_overrides={"MODELLOOP_RESYNC_SECONDS": "30"})
        try:
            plane.add_node(NODE, cpu="1000", memory="4Ti", pods=4 * args.count)
            plane.kubectl("create", "namespace", NAMESPACE)
            for path in sorted(CRD_DIR.glob("*.yaml")):
                plane.kubectl("apply", "--server-side", "-f", str(path))
            plane.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd",
                          "--all")
            operator.start()
            result = asyncio.run(measure(plane.kubeconfig, args.count, args.concurrency,
                                         operator))
        finally:
            operator.stop()
            plane.stop()
            if args.operator_log is not None:
                shutil.copyfile(operator.log, args.operator_log)
    op, base = result["createToJobSeconds"], result["baselineJobToPodSeconds"]
    result["ratioJobP50VsJobController"] = round(op["p50"] / base["p50"], 2) \
        if base["p50"] else None
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{NAME}.json"
    out.write_text(json.dumps({"benchmark": NAME, **result, "machine": machine()}, indent=2)
                   + "\n")
    print(f"{NAME}: {args.count} TrainingJobs, create->Job p50 {op['p50']}s p99 {op['p99']}s "
          f"(Job controller job->pod p50 {base['p50']}s, ratio "
          f"{result['ratioJobP50VsJobController']}), create->status p50 "
          f"{result['createToFirstStatusSeconds']['p50']}s, operator peak RSS "
          f"{result['operatorPeakRssMiB']} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
