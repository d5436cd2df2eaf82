"""The operator at scale: 1,000 TrainingJobs and 500 ModelDeployments on 100 GPU nodes.

Starts the local control plane (tests/harness) with N kwok nodes (8 ``nvidia.com/gpu``
each), applies the CRDs, starts the operator, then creates every TrainingJob (1 GPU each;
kwok completes their pods after 1 s) and every ModelDeployment (an ``s3://`` archive;
kwok makes their pods Ready) at once, interleaved. Watches in this process timestamp:

* create -> first status, for both kinds;
* create -> children: the Job (TrainingJob); the Deployment and a Service (ModelDeployment);
* the time until every TrainingJob is ``Succeeded`` and every ModelDeployment ``Ready``;
* the operator's peak RSS and CPU seconds for all of that.

Then the restart: SIGKILL the operator, start it again, and time how long until it has
re-observed every object (its ``modelloop_reconcile_total{trigger="resume"}`` reaches
the object counts) and until it goes quiet (no reconcile for 5 s); the numbers of Jobs,
Deployments and Services must not change (no duplicate children).

Baseline in the same run: plain batch/v1 Jobs (``--baseline-jobs``), Job -> first pod,
the built-in Job controller's reaction on this machine right now.

    .venv/bin/python bench/operator_scale.py                     # 1000 TJ, 500 MDEP, 100 nodes
    .venv/bin/python bench/operator_scale.py --trainingjobs 20 --deployments 10 --nodes 4

Writes bench/results/operator_scale.json (``--out`` to change) and prints one summary
line. Record the machine's load with the figures: on a shared 2-core machine most of a
latency can be queueing for the CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from kwok_bench_common import (
    DEPLOYMENTS,
    JOBS,
    SERVICES,
    LoadSampler,
    api_client,
    bench_cluster,
    condition_true,
    cpu_seconds,
    create_all,
    custom,
    job_controller_baseline,
    label_key,
    latencies,
    list_objects,
    name_of,
    peak_rss_mib,
    record_first,
    stop_watchers,
    summary,
    wait_until,
    write_result,
)

from tests.cluster.conftest import RunningOperator
from tests.harness.controlplane import ControlPlane
from tests.harness.nodes import node_manifest

NAME = "operator_scale"
NAMESPACE = "bench"
TJ_LABEL = "modelloop.dev/trainingjob"
MDEP_LABEL = "modelloop.dev/modeldeployment"
GPU_NODE = {"modelloop.dev/bench-gpu": "true"}
GPUS_PER_NODE = 8


def training_job(name: str) -> dict[str, Any]:
    return {"apiVersion": "modelloop.dev/v1alpha1", "kind": "TrainingJob",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"model": {"uri": "builtin://all-minilm-l6-v2"},
                     "dataset": {"uri": "builtin://bbc-news"},
                     "output": {"uri": f"s3://bench/{name}"},
                     "resources": {"gpus": 1, "cpu": "10m", "memory": "16Mi"},
                     "scheduling": {"nodeSelector": GPU_NODE}}}


def model_deployment(name: str) -> dict[str, Any]:
    return {"apiVersion": "modelloop.dev/v1alpha1", "kind": "ModelDeployment",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"model": {"archiveUri": f"s3://bench/{name}/model.mar"},
                     "replicas": 1,
                     "resources": {"cpu": "10m", "memory": "16Mi"}}}


def add_gpu_nodes(plane: ControlPlane, count: int, *, timeout: float = 300) -> float:
    """Create ``count`` kwok GPU nodes at once and wait until all are Ready and untainted;
    returns the seconds it took."""
    started = time.perf_counter()
    manifests = [node_manifest(f"gpu-node-{i:03d}", gpus=GPUS_PER_NODE, cpu="64",
                               memory="512Gi", pods=110, labels=GPU_NODE)
                 for i in range(count)]
    plane.kubectl("create", "-f", "-",
                  input=json.dumps({"apiVersion": "v1", "kind": "List", "items": manifests}))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        nodes = plane.api_get("/api/v1/nodes?labelSelector=modelloop.dev%2Fbench-gpu")["items"]
        ready = [n for n in nodes
                 if any(c["type"] == "Ready" and c["status"] == "True"
                        for c in n.get("status", {}).get("conditions", []))
                 and not any(t["key"] == "node.kubernetes.io/not-ready"
                             for t in n.get("spec", {}).get("taints", []))]
        if len(ready) >= count:
            return round(time.perf_counter() - started, 1)
        time.sleep(1)
    raise TimeoutError(f"{count} kwok nodes not Ready within {timeout}s")


def reconcile_counts(operator: RunningOperator) -> dict[tuple[str, str], float]:
    """``modelloop_reconcile_total`` by (kind, trigger), from the operator's /metrics."""
    url = f"http://127.0.0.1:{operator.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    counts: dict[tuple[str, str], float] = {}
    pattern = re.compile(r'^modelloop_reconcile_total\{(.*)\} (\S+)$')
    for line in text.splitlines():
        match = pattern.match(line)
        if match:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1)))
            counts[(labels["kind"], labels["trigger"])] = float(match.group(2))
    return counts


async def children(api: Any) -> tuple[dict[str, Any], dict[str, dict[str, str]]]:
    """How many Jobs, Deployments and Services the operator owns, whether any owner has
    more than one of a kind it should have one of, and each child's spec version:
    ``generation`` for Jobs and Deployments (a changed spec; a Deployment's status moves
    its resourceVersion all the time), ``resourceVersion`` for Services (no generation).
    What a restart must leave alone."""
    listed: dict[str, list[dict[str, Any]]] = {}
    versions: dict[str, dict[str, str]] = {}
    for plural, collection, selector, key in (
            ("jobs", JOBS, TJ_LABEL, "generation"),
            ("deployments", DEPLOYMENTS, MDEP_LABEL, "generation"),
            ("services", SERVICES, f"{MDEP_LABEL},app.kubernetes.io/managed-by",
             "resourceVersion")):
        listed[plural] = await list_objects(api, collection, NAMESPACE, label_selector=selector)
        versions[plural] = {name_of(o): str(o["metadata"].get(key)) for o in listed[plural]}
    per_tj = Counter(label_key(TJ_LABEL)(j) for j in listed["jobs"])
    per_md = Counter(label_key(MDEP_LABEL)(d) for d in listed["deployments"])
    counts = {"jobs": len(listed["jobs"]), "deployments": len(listed["deployments"]),
              "services": len(listed["services"]),
              "ownersWithSeveralJobs": sum(1 for n in per_tj.values() if n > 1),
              "ownersWithSeveralDeployments": sum(1 for n in per_md.values() if n > 1)}
    return counts, versions


REQUEST_LINE = re.compile(r'^apiserver_request_total\{(.*)\} (\S+)$')


def apiserver_requests(plane: ControlPlane) -> Counter[str]:
    """``apiserver_request_total`` summed by ``verb resource[/subresource]``: everything
    the API server has served so far, from every client."""
    text = plane.kubectl("get", "--raw", "/metrics").stdout
    counts: Counter[str] = Counter()
    for line in text.splitlines():
        match = REQUEST_LINE.match(line)
        if match:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1)))
            what = labels.get("resource", "") + (f"/{labels['subresource']}"
                                                 if labels.get("subresource") else "")
            counts[f"{labels.get('verb', '')} {what}"] += int(float(match.group(2)))
    return counts


def requests_between(before: Counter[str], after: Counter[str],
                     per: int) -> dict[str, Any]:
    """Requests served between two snapshots, by verb and resource, and per object."""
    delta = {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0) > 0}
    total = sum(delta.values())
    return {"total": total, "perObject": round(total / max(per, 1), 1),
            "byVerbAndResource": dict(sorted(delta.items(), key=lambda kv: -kv[1]))}


def _seconds(start: float, end: float | None) -> float | None:
    return round(end - start, 2) if end is not None else None


async def wait_for_metrics(operator: RunningOperator, done: Any, within: float) -> float | None:
    """Poll the operator's reconcile counters until ``done(counts)``; the time it became
    true (perf_counter), or None."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            counts = await asyncio.to_thread(reconcile_counts, operator)
        except OSError:
            counts = {}
        if done(counts):
            return time.perf_counter()
        operator.check_running()
        await asyncio.sleep(0.5)
    return None


def _stamp(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class ServerSideFirstStatus:
    """A tracker key that also records, for each object's first status, the API server's
    own times: its status write (the operator's ``managedFields`` entry for the status
    subresource) minus its ``creationTimestamp``. Whole seconds only, but independent of
    how late this process's watch delivered the event: a tail here is the operator's, a
    tail only in the watch-timed figure is the benchmark's."""

    def __init__(self) -> None:
        self.latency: dict[str, float] = {}

    def __call__(self, obj: Mapping[str, Any]) -> str | None:
        if not obj.get("status"):
            return None
        name = name_of(obj)
        if name not in self.latency:
            meta = obj["metadata"]
            writes = [_stamp(e["time"]) for e in meta.get("managedFields") or []
                      if e.get("subresource") == "status" and e.get("time")]
            if writes and meta.get("creationTimestamp"):
                self.latency[name] = min(writes) - _stamp(meta["creationTimestamp"])
        return name


async def events_since(api: Any, since: datetime) -> dict[str, int]:
    """Events recorded in any namespace since ``since``, by namespace, who recorded them
    and why (``namespace/component/reason``): who is busy after a restart."""
    async with await api.request("GET", "/api/v1/events") as response:
        listed = json.loads(await response.read())
    counts: Counter[str] = Counter()
    for event in listed.get("items", []):
        try:
            when = _stamp(str(event.get("lastTimestamp") or event.get("eventTime") or ""))
        except ValueError:
            continue
        if when >= since.timestamp():
            component = (event.get("reportingComponent")
                         or (event.get("source") or {}).get("component") or "?")
            namespace = event["metadata"].get("namespace", "")
            counts[f"{namespace}/{component}/{event.get('reason')}"] += 1
    return dict(counts.most_common(10))


def rewritten(before: Mapping[str, Mapping[str, str]],
              after: Mapping[str, Mapping[str, str]]) -> dict[str, int]:
    """Per kind, how many children that existed before got a new spec version."""
    return {plural: sum(1 for name, version in old.items()
                        if name in after[plural] and after[plural][name] != version)
            for plural, old in before.items()}


async def restart(api: Any, plane: ControlPlane, operator: RunningOperator, *, tjs: int,
                  mdeps: int, within: float) -> dict[str, Any]:
    """SIGKILL, start again, time the re-observation of everything and the quiet after."""
    before, versions_before = await children(api)
    requests_before = await asyncio.to_thread(apiserver_requests, plane)
    killed_at = datetime.now(UTC).replace(microsecond=0)
    operator.kill()
    started = time.perf_counter()
    operator.start(timeout=within)
    live = time.perf_counter()

    def resumed(counts: Mapping[tuple[str, str], float]) -> bool:
        return (counts.get(("TrainingJob", "resume"), 0) >= tjs
                and counts.get(("ModelDeployment", "resume"), 0) >= mdeps)
    all_resumed = await wait_for_metrics(operator, resumed, within)

    # Quiet: no reconcile for 5 s (child events after the resume), resync timers aside.
    quiet_at: float | None = None
    last_total, last_change = -1.0, time.perf_counter()
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        counts = await asyncio.to_thread(reconcile_counts, operator)
        total = sum(v for (_, trigger), v in counts.items() if trigger != "timer")
        now = time.perf_counter()
        if total != last_total:
            last_total, last_change = total, now
        elif now - last_change >= 5:
            quiet_at = last_change
            break
        await asyncio.sleep(0.5)
    after, versions_after = await children(api)
    changed = rewritten(versions_before, versions_after)
    requests = requests_between(requests_before,
                                await asyncio.to_thread(apiserver_requests, plane),
                                per=tjs + mdeps)
    assert operator.component is not None
    counts = reconcile_counts(operator)
    return {
        "toLiveSeconds": _seconds(started, live),
        "toAllResumedSeconds": _seconds(started, all_resumed),
        "toQuietSeconds": _seconds(started, quiet_at),
        "reconcilesByTrigger": {f"{k}/{t}": int(v) for (k, t), v in sorted(counts.items())},
        "childrenBefore": before, "childrenAfter": after,
        "childrenUnchanged": before == after,
        "childrenRewritten": changed,
        "eventsRecorded": await events_since(api, killed_at),
        "apiserverRequests": requests,
        "operatorPeakRssMiB": peak_rss_mib(operator.component.pid),
        "operatorCpuSeconds": cpu_seconds(operator.component.pid),
    }


async def measure(plane: ControlPlane, operator: RunningOperator, *, tjs: int, mdeps: int,
                  concurrency: int, baseline_jobs: int, within: float) -> dict[str, Any]:
    load = LoadSampler()
    sampler = asyncio.create_task(load.run())
    async with api_client(plane.kubeconfig) as api:
        baseline = await job_controller_baseline(
            api, namespace=NAMESPACE, count=baseline_jobs, concurrency=concurrency,
            node_selector=GPU_NODE) if baseline_jobs else None
        if baseline_jobs:
            plane.kubectl("delete", "jobs", "-n", NAMESPACE, "--all", "--wait=false")

        operator.start()
        assert operator.component is not None
        cpu_at_start = cpu_seconds(operator.component.pid)
        requests_at_start = await asyncio.to_thread(apiserver_requests, plane)
        stop = asyncio.Event()
        tj_status: dict[str, float] = {}
        tj_server, md_server = ServerSideFirstStatus(), ServerSideFirstStatus()
        tj_done: dict[str, float] = {}
        tj_failed: dict[str, float] = {}
        job_seen: dict[str, float] = {}
        md_status: dict[str, float] = {}
        md_ready: dict[str, float] = {}
        dep_seen: dict[str, float] = {}
        svc_seen: dict[str, float] = {}

        def phase_is(phase: str) -> Any:
            return lambda o: name_of(o) if (o.get("status") or {}).get("phase") == phase \
                else None
        watchers = [
            asyncio.create_task(record_first(api, custom("trainingjobs"), NAMESPACE, [
                (tj_server, tj_status),
                (phase_is("Succeeded"), tj_done), (phase_is("Failed"), tj_failed)], stop)),
            asyncio.create_task(record_first(api, custom("modeldeployments"), NAMESPACE, [
                (md_server, md_status),
                (lambda o: name_of(o) if condition_true(o, "Ready") else None, md_ready)],
                stop)),
            asyncio.create_task(record_first(api, JOBS, NAMESPACE,
                                             [(label_key(TJ_LABEL), job_seen)], stop,
                                             label_selector=TJ_LABEL)),
            asyncio.create_task(record_first(api, DEPLOYMENTS, NAMESPACE,
                                             [(label_key(MDEP_LABEL), dep_seen)], stop,
                                             label_selector=MDEP_LABEL)),
            asyncio.create_task(record_first(api, SERVICES, NAMESPACE,
                                             [(label_key(MDEP_LABEL), svc_seen)], stop,
                                             label_selector=MDEP_LABEL)),
        ]
        tj_names = [f"tj-{i:04d}" for i in range(tjs)]
        md_names = [f"md-{i:04d}" for i in range(mdeps)]
        # Interleaved, as a GitOps sync of many teams' manifests would arrive.
        bodies: list[tuple[str, dict[str, Any]]] = []
        for i in range(max(tjs, mdeps)):
            for plural, names, build in (("trainingjobs", tj_names, training_job),
                                         ("modeldeployments", md_names, model_deployment)):
                if i < len(names):
                    bodies.append((plural, build(names[i])))
        plural_of = {body["metadata"]["name"]: plural for plural, body in bodies}
        burst_start = time.perf_counter()
        created = await create_all(
            lambda b: api.create(custom(plural_of[b["metadata"]["name"]]).path(NAMESPACE), b),
            [body for _, body in bodies], concurrency)
        create_seconds = time.perf_counter() - burst_start
        tj_created = {n: created[n] for n in tj_names}
        md_created = {n: created[n] for n in md_names}
        md_children = {n: max(dep_seen[n], svc_seen[n]) for n in md_names
                       if n in dep_seen and n in svc_seen}

        def converged() -> bool:
            md_children.update({n: max(dep_seen[n], svc_seen[n]) for n in md_names
                                if n in dep_seen and n in svc_seen})
            return (len(tj_done) + len(tj_failed) >= tjs and len(md_ready) >= mdeps
                    and len(job_seen) >= tjs and len(md_children) >= mdeps)
        complete = await wait_until(converged, within, watchers, every=0.5)
        all_done = time.perf_counter()
        await stop_watchers(stop, watchers)
        requests = requests_between(requests_at_start,
                                    await asyncio.to_thread(apiserver_requests, plane),
                                    per=tjs + mdeps)
        first = {
            "allConverged": complete,
            "createBurstSeconds": round(create_seconds, 2),
            "allDoneSeconds": round(all_done - burst_start, 2),
            "trainingJobs": {
                "createToFirstStatusSeconds": summary(latencies(tj_created, tj_status)),
                "createToFirstStatusServerSeconds": summary(list(tj_server.latency.values())),
                "createToJobSeconds": summary(latencies(tj_created, job_seen)),
                "createToSucceededSeconds": summary(latencies(tj_created, tj_done)),
                "allSucceededSeconds": _seconds(burst_start, max(tj_done.values(),
                                                                 default=None)),
                "succeeded": len(tj_done), "failed": len(tj_failed)},
            "modelDeployments": {
                "createToFirstStatusSeconds": summary(latencies(md_created, md_status)),
                "createToFirstStatusServerSeconds": summary(list(md_server.latency.values())),
                "createToChildrenSeconds": summary(latencies(md_created, md_children)),
                "createToReadySeconds": summary(latencies(md_created, md_ready)),
                "allReadySeconds": _seconds(burst_start, max(md_ready.values(), default=None)),
                "ready": len(md_ready)},
            "operatorPeakRssMiB": peak_rss_mib(operator.component.pid),
            "operatorCpuSeconds": round(cpu_seconds(operator.component.pid) - cpu_at_start, 2),
            "reconcilesByTrigger": {f"{k}/{t}": int(v) for (k, t), v in
                                    sorted(reconcile_counts(operator).items())},
            # Every client's requests (the operator's, the controllers', kwok's, these
            # watches): the API server's CPU, not the operator's, bounds this machine.
            "apiserverRequests": requests,
        }
        first_load = load.report()
        load.samples.clear()
        restarted = await restart(api, plane, operator, tjs=tjs, mdeps=mdeps, within=within)
    sampler.cancel()
    return {"run": {**first, "loadAverage1m": first_load},
            "restart": {**restarted, "loadAverage1m": load.report()},
            "baselineJobToPodSeconds": baseline}


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or NAME).splitlines()[0])
    parser.add_argument("--trainingjobs", type=int, default=1000)
    parser.add_argument("--deployments", type=int, default=500)
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--baseline-jobs", type=int, default=200,
                        help="plain Jobs for the Job-controller baseline (0: none)")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--resync-seconds", default="30",
                        help="MODELLOOP_RESYNC_SECONDS of the operator")
    parser.add_argument("--timeout", type=float, default=1800,
                        help="give up waiting for convergence (and again for the restart)")
    parser.add_argument("--out", type=Path, help="result file (default bench/results/"
                        f"{NAME}.json)")
    parser.add_argument("--label", default="", help="free text stored with the result")
    parser.add_argument("--operator-log", type=Path,
                        help="keep the operator's log here (it is deleted otherwise)")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    with bench_cluster(namespace=NAMESPACE, prefix="bench-scale-",
                       operator_env={"MODELLOOP_RESYNC_SECONDS": args.resync_seconds},
                       keep_log=args.operator_log) as (plane, operator):
        nodes_seconds = add_gpu_nodes(plane, args.nodes)
        result = asyncio.run(measure(plane, operator, tjs=args.trainingjobs,
                                     mdeps=args.deployments, concurrency=args.concurrency,
                                     baseline_jobs=args.baseline_jobs, within=args.timeout))
    settings = {"trainingJobs": args.trainingjobs, "modelDeployments": args.deployments,
                "nodes": args.nodes, "gpusPerNode": GPUS_PER_NODE,
                "concurrency": args.concurrency, "resyncSeconds": args.resync_seconds,
                "label": args.label, "loadAverageBefore": round(load_before, 2),
                "nodesReadySeconds": nodes_seconds}
    out = write_result(NAME, {"settings": settings, **result}, out=args.out)
    run, again = result["run"], result["restart"]
    tj, md = run["trainingJobs"], run["modelDeployments"]
    print(f"{NAME}: {args.trainingjobs} TJ + {args.deployments} MDEP on {args.nodes} nodes: "
          f"create->status p50/p99 TJ {tj['createToFirstStatusSeconds']['p50']}/"
          f"{tj['createToFirstStatusSeconds']['p99']}s MDEP "
          f"{md['createToFirstStatusSeconds']['p50']}/{md['createToFirstStatusSeconds']['p99']}s "
          f"(server-side p99/max TJ {tj['createToFirstStatusServerSeconds']['p99']}/"
          f"{tj['createToFirstStatusServerSeconds']['max']}s MDEP "
          f"{md['createToFirstStatusServerSeconds']['p99']}/"
          f"{md['createToFirstStatusServerSeconds']['max']}s), "
          f"create->children p99 TJ {tj['createToJobSeconds']['p99']}s MDEP "
          f"{md['createToChildrenSeconds']['p99']}s, all done {run['allDoneSeconds']}s, "
          f"peak RSS {run['operatorPeakRssMiB']} MiB, CPU {run['operatorCpuSeconds']}s, "
          f"API requests/object {run['apiserverRequests']['perObject']}; "
          f"restart: all resumed {again['toAllResumedSeconds']}s, quiet "
          f"{again['toQuietSeconds']}s, peak RSS {again['operatorPeakRssMiB']} MiB, children "
          f"unchanged {again['childrenUnchanged']} rewritten {again['childrenRewritten']}; "
          f"load {run['loadAverage1m']['mean']}/{again['loadAverage1m']['mean']} "
          f"({os.cpu_count()} cores) -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
