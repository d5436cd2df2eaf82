"""Shared by the operator benchmarks on kwok (bench/operator_*.py): a control plane with
CRDs and the operator, bulk creates, watches that timestamp when each object first shows
something, percentiles, and the machine facts (load average included) every result
carries.

Timestamps are ``time.perf_counter()`` in the benchmark process; watches parse JSON into
plain dicts (no typed models) so the benchmark itself takes as little CPU as it can from
the operator it measures on a small machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
from modelloop_operator.apitransport import ApiTransport  # noqa: E402
from modelloop_operator.kubeconfig import Connection, load_kubeconfig  # noqa: E402

from tests.cluster.conftest import CRD_DIR, RunningOperator  # noqa: E402
from tests.harness.binaries import locate  # noqa: E402
from tests.harness.controlplane import ControlPlane  # noqa: E402

RESULTS = ROOT / "bench" / "results"
GROUP, VERSION = "modelloop.dev", "v1alpha1"

Key = Callable[[Mapping[str, Any]], str | None]
"""Which object an event is about (a name), or None when the event does not count."""


# --- figures -------------------------------------------------------------------------------

def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile; NaN for no values."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def summary(values: Sequence[float]) -> dict[str, float]:
    """p50, p90, p99, max, mean and count, rounded to milliseconds (p90 and max tell a
    tail of a few slow objects from a slow whole)."""
    return {"p50": round(percentile(values, 0.5), 3), "p90": round(percentile(values, 0.9), 3),
            "p99": round(percentile(values, 0.99), 3),
            "max": round(max(values), 3) if values else float("nan"),
            "mean": round(statistics.fmean(values), 3) if values else float("nan"),
            "count": len(values)}


def latencies(created: Mapping[str, float], seen: Mapping[str, float]) -> list[float]:
    """seen - created for every name seen."""
    return [seen[name] - start for name, start in created.items() if name in seen]


def machine() -> dict[str, Any]:
    """Cores, CPU model, versions: what a figure was measured on."""
    cpu = platform.processor()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return {"cores": os.cpu_count(), "cpu": cpu, "python": platform.python_version(),
            "kopf": metadata.version("kopf"), "aiohttp": metadata.version("aiohttp")}


def peak_rss_mib(pid: int) -> float:
    """The process's peak resident set (VmHWM) in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return round(ticks / os.sysconf("SC_CLK_TCK"), 2)


@dataclass
class LoadSampler:
    """The 1-minute load average every few seconds while a benchmark runs: the figure
    that says how much of a latency was queueing for a shared CPU."""

    every: float = 5.0
    samples: list[float] = field(default_factory=list)

    async def run(self) -> None:
        while True:
            self.samples.append(os.getloadavg()[0])
            await asyncio.sleep(self.every)

    def report(self) -> dict[str, float]:
        values = self.samples or [os.getloadavg()[0]]
        return {"min": round(min(values), 2), "mean": round(statistics.fmean(values), 2),
                "max": round(max(values), 2)}


def write_result(name: str, result: Mapping[str, Any], *, out: Path | None = None) -> Path:
    """bench/results/<name>.json (or ``out``) with the machine facts."""
    path = out or RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"benchmark": name, **result, "machine": machine()}, indent=2)
                    + "\n")
    return path


# --- the cluster -----------------------------------------------------------------------------

@contextlib.contextmanager
def bench_cluster(*, namespace: str, prefix: str, operator_env: Mapping[str, str],
                  keep_log: Path | None = None) -> Iterator[tuple[ControlPlane, RunningOperator]]:
    """A fresh control plane with the CRDs and ``namespace``, and an operator handle (not
    started: the benchmark starts it, so node setup is not measured). Everything stops
    at the end; the operator's log is copied to ``keep_log`` when given."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        plane = ControlPlane(Path(tmp) / "cluster", locate(), tie_to_parent=True)
        plane.start()
        operator = RunningOperator(cluster=plane, log=Path(tmp) / "operator.log",
                                   env_overrides=dict(operator_env))
        try:
            plane.kubectl("create", "namespace", namespace)
            for path in sorted(CRD_DIR.glob("*.yaml")):
                plane.kubectl("apply", "--server-side", "-f", str(path))
            plane.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd",
                          "--all")
            yield plane, operator
        finally:
            operator.stop()
            plane.stop()
            if keep_log is not None and operator.log.exists():
                keep_log.write_bytes(operator.log.read_bytes())


class ApiError(Exception):
    """The API server answered a benchmark request with an error."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"{status}: {text[:200]}")
        self.status = status


class BenchApi:
    """Raw HTTP to the API server for the benchmark's own creates, lists and watches
    (the operator's kubeconfig loader and HTTP transport; bodies stay raw JSON)."""

    def __init__(self, connection: Connection, *, connections: int = 64) -> None:
        self._transport = ApiTransport(connection=connection, request_timeout=120,
                                       connections=connections)

    async def close(self) -> None:
        await self._transport.close()

    async def request(self, method: str, path: str, *, query: Sequence[tuple[str, str]] = (),
                      body: Any = None, limit_s: float | None = 120) -> aiohttp.ClientResponse:
        """The response, body unread (the caller reads or streams it, then releases)."""
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        return await self._transport.open(
            method, path, query=query, headers=headers,
            body=None if body is None else json.dumps(body).encode(),
            limit=aiohttp.ClientTimeout(total=limit_s))

    async def create(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST ``body`` to the collection at ``path``; an error answer raises."""
        async with await self.request("POST", path, body=body) as response:
            text = await response.text()
            if response.status >= 300:
                raise ApiError(response.status, text)
            created: dict[str, Any] = json.loads(text)
            return created


@contextlib.asynccontextmanager
async def api_client(kubeconfig: Path) -> AsyncIterator[BenchApi]:
    """A :class:`BenchApi` for the admin kubeconfig."""
    api = BenchApi(load_kubeconfig([kubeconfig]))
    try:
        yield api
    finally:
        await api.close()


def labels_of(obj: Mapping[str, Any]) -> Mapping[str, str]:
    """An object's labels (raw JSON)."""
    return (obj.get("metadata") or {}).get("labels") or {}


def name_of(obj: Mapping[str, Any]) -> str:
    """An object's name (raw JSON)."""
    return str(obj["metadata"]["name"])


def label_key(label: str) -> Key:
    """Key on the value of ``label`` (the owner's name on our children)."""
    return lambda obj: labels_of(obj).get(label)


def condition_true(obj: Mapping[str, Any], type_: str) -> bool:
    """Whether ``status.conditions`` has ``type_`` with status True."""
    return any(c.get("type") == type_ and c.get("status") == "True"
               for c in (obj.get("status") or {}).get("conditions") or [])


@dataclass(frozen=True)
class Collection:
    """A namespaced collection to watch, as a path (any group, raw JSON back)."""

    group: str
    version: str
    plural: str

    def path(self, namespace: str) -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        return f"{base}/namespaces/{namespace}/{self.plural}"


JOBS = Collection("batch", "v1", "jobs")
PODS = Collection("", "v1", "pods")
DEPLOYMENTS = Collection("apps", "v1", "deployments")
SERVICES = Collection("", "v1", "services")


def custom(plural: str) -> Collection:
    """One of our kinds."""
    return Collection(GROUP, VERSION, plural)


async def _list_raw(api: BenchApi, path: str, **query: Any) -> aiohttp.ClientResponse:
    params = [(k, str(v)) for k, v in query.items() if v is not None]
    return await api.request("GET", path, query=params,
                             limit_s=None if query.get("watch") else 120)


async def list_objects(api: BenchApi, collection: Collection, namespace: str,
                       label_selector: str | None = None) -> list[dict[str, Any]]:
    """Every object of ``collection`` in ``namespace`` (raw JSON)."""
    for _ in range(30):
        response = await _list_raw(api, collection.path(namespace),
                                   labelSelector=label_selector)
        async with response:
            listed = json.loads(await response.read())
        if response.status == 200 and "items" in listed:
            items: list[dict[str, Any]] = listed["items"]
            return items
        await asyncio.sleep(1)  # e.g. 429 while a new resource's storage initializes
    raise ApiError(response.status, str(listed))


async def record_first(api: BenchApi, collection: Collection, namespace: str,
                       trackers: Sequence[tuple[Key, dict[str, float]]], stop: asyncio.Event,
                       *, label_selector: str | None = None) -> None:
    """Watch ``collection`` and record, for each tracker, the first time each key shows
    up (a list first, then a watch from its resourceVersion; relists after a gap)."""
    def note(obj: Mapping[str, Any]) -> None:
        now = time.perf_counter()
        for key, seen in trackers:
            k = key(obj)
            if k is not None and k not in seen:
                seen[k] = now

    while not stop.is_set():
        try:
            response = await _list_raw(api, collection.path(namespace),
                                       labelSelector=label_selector)
            async with response:
                listed = json.loads(await response.read())
            if response.status != 200 or "items" not in listed:
                raise ApiError(response.status, str(listed))
            for obj in listed.get("items", []):
                note(obj)
            version = listed["metadata"]["resourceVersion"]
            while not stop.is_set():
                response = await _list_raw(
                    api, collection.path(namespace), labelSelector=label_selector,
                    watch="true", resourceVersion=version, timeoutSeconds=240,
                    allowWatchBookmarks="true")
                async with response:
                    async for line in response.content:
                        if not line.strip():
                            continue
                        event = json.loads(line)
                        if event["type"] == "ERROR":
                            raise ApiError(410, "watch expired")
                        obj = event["object"]
                        version = obj["metadata"]["resourceVersion"]
                        if event["type"] in ("ADDED", "MODIFIED"):
                            note(obj)
                        if stop.is_set():
                            break
        except (TimeoutError, ApiError, aiohttp.ClientError, OSError, ValueError):
            await asyncio.sleep(0.2)


async def create_all(create: Callable[[dict[str, Any]], Awaitable[Any]],
                     bodies: Sequence[dict[str, Any]], concurrency: int) -> dict[str, float]:
    """Create every body with ``concurrency`` clients; returns each name's create time
    (taken just before its request)."""
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
                     watchers: Sequence[asyncio.Task[None]], every: float = 0.2) -> bool:
    """Poll ``done``; a watcher that crashed fails the benchmark instead of a silent wait."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        for task in watchers:
            if task.done():
                task.result()
        if done():
            return True
        await asyncio.sleep(every)
    return done()


async def stop_watchers(stop: asyncio.Event, watchers: Sequence[asyncio.Task[None]]) -> None:
    """Stop and reap the watch tasks."""
    stop.set()
    for task in watchers:
        task.cancel()
    await asyncio.gather(*watchers, return_exceptions=True)


# --- the Job controller as a baseline ------------------------------------------------------

def plain_job(name: str, *, namespace: str, node_selector: Mapping[str, str]) -> dict[str, Any]:
    """A one-pod batch/v1 Job: what the built-in Job controller turns into a pod."""
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"backoffLimit": 0, "template": {"spec": {
                "restartPolicy": "Never",
                "nodeSelector": dict(node_selector),
                "containers": [{"name": "c", "image": "busybox",
                                "resources": {"requests": {"cpu": "10m",
                                                           "memory": "16Mi"}}}]}}}}


async def job_controller_baseline(api: BenchApi, *, namespace: str, count: int, concurrency: int,
                                  node_selector: Mapping[str, str],
                                  within: float = 300) -> dict[str, float]:
    """Job -> first pod latency of ``count`` plain Jobs created the same way: the
    built-in controller's reaction on this machine right now."""
    stop = asyncio.Event()
    pod_seen: dict[str, float] = {}
    watcher = asyncio.create_task(record_first(
        api, PODS, namespace, [(label_key("job-name"), pod_seen)], stop,
        label_selector="job-name"))
    names = [f"plain-{i:04d}" for i in range(count)]
    created = await create_all(
        lambda b: api.create(JOBS.path(namespace), b),
        [plain_job(n, namespace=namespace, node_selector=node_selector) for n in names],
        concurrency)
    await wait_until(lambda: len(pod_seen) >= count, within, [watcher])
    await stop_watchers(stop, [watcher])
    return summary(latencies(created, pod_seen))
