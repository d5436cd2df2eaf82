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
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from kwok_bench_common import (
    JOBS,
    LoadSampler,
    api_client,
    bench_cluster,
    create_all,
    custom,
    job_controller_baseline,
    label_key,
    latencies,
    name_of,
    peak_rss_mib,
    record_first,
    stop_watchers,
    summary,
    wait_until,
    write_result,
)

from tests.cluster.conftest import RunningOperator

NAME = "operator_trainingjobs"
NAMESPACE = "bench"
NODE = "bench-node-0"
HOST = {"kubernetes.io/hostname": NODE}


def training_job(name: str) -> dict[str, Any]:
    return {"apiVersion": "modelloop.dev/v1alpha1", "kind": "TrainingJob",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"model": {"uri": "builtin://all-minilm-l6-v2"},
                     "dataset": {"uri": "builtin://bbc-news"},
                     "output": {"uri": f"s3://bench/{name}"},
                     "resources": {"cpu": "10m", "memory": "16Mi"},
                     "scheduling": {"nodeSelector": HOST}}}


async def measure(kubeconfig: Path, count: int, concurrency: int,
                  operator: RunningOperator) -> dict[str, Any]:
    load = LoadSampler()
    sampler = asyncio.create_task(load.run())
    async with api_client(kubeconfig) as api:
        # Baseline: the Job controller's reaction (Job -> first pod).
        baseline = await job_controller_baseline(api, namespace=NAMESPACE, count=count,
                                                 concurrency=concurrency, node_selector=HOST)

        # The operator: TrainingJob -> first status, TrainingJob -> its Job.
        stop = asyncio.Event()
        status_seen: dict[str, float] = {}
        job_seen: dict[str, float] = {}
        watchers = [
            asyncio.create_task(record_first(
                api, custom("trainingjobs"), NAMESPACE,
                [(lambda o: name_of(o) if o.get("status") else None, status_seen)], stop)),
            asyncio.create_task(record_first(
                api, JOBS, NAMESPACE, [(label_key("modelloop.dev/trainingjob"), job_seen)],
                stop, label_selector="modelloop.dev/trainingjob")),
        ]
        names = [f"tj-{i:04d}" for i in range(count)]
        burst_start = time.perf_counter()
        created = await create_all(
            lambda b: api.create(custom("trainingjobs").path(NAMESPACE), b),
            [training_job(n) for n in names], concurrency)
        create_seconds = time.perf_counter() - burst_start
        complete = await wait_until(
            lambda: len(job_seen) >= count and len(status_seen) >= count, 600, watchers)
        all_done = time.perf_counter() - burst_start
        await stop_watchers(stop, watchers)
    sampler.cancel()
    assert operator.component is not None
    return {
        "count": count, "concurrency": concurrency, "allObserved": complete,
        "createBurstSeconds": round(create_seconds, 2),
        "allJobsWithinSeconds": round(all_done, 2),
        "createToFirstStatusSeconds": summary(latencies(created, status_seen)),
        "createToJobSeconds": summary(latencies(created, job_seen)),
        "baselineJobToPodSeconds": baseline,
        "operatorPeakRssMiB": peak_rss_mib(operator.component.pid),
        "loadAverage1m": load.report(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or NAME).splitlines()[0])
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--operator-log", type=Path,
                        help="keep the operator's log here (it is deleted otherwise)")
    args = parser.parse_args()
    with bench_cluster(namespace=NAMESPACE, prefix="bench-operator-",
                       operator_env={"MODELLOOP_RESYNC_SECONDS": "30"},
                       keep_log=args.operator_log) as (plane, operator):
        plane.add_node(NODE, cpu="1000", memory="4Ti", pods=4 * args.count)
        operator.start()
        result = asyncio.run(measure(plane.kubeconfig, args.count, args.concurrency,
                                     operator))
    op, base = result["createToJobSeconds"], result["baselineJobToPodSeconds"]
    result["ratioJobP50VsJobController"] = round(op["p50"] / base["p50"], 2) \
        if base["p50"] else None
    write_result(NAME, result)
    print(f"{NAME}: {args.count} TrainingJobs, create->Job p50 {op['p50']}s p99 {op['p99']}s "
          f"(Job controller job->pod p50 {base['p50']}s, ratio "
          f"{result['ratioJobP50VsJobController']}), create->status p50 "
          f"{result['createToFirstStatusSeconds']['p50']}s, operator peak RSS "
          f"{result['operatorPeakRssMiB']} MiB, load {result['loadAverage1m']['mean']} "
          f"(mean 1-min load average, {os.cpu_count()} cores)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
