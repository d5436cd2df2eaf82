"""The closed loop on the local stack, step by step, shared by the e2e test and `make demo`.

After the quickstart serves its model: a real Prometheus scrapes the serving pods, the
deployment gets drift monitoring and automatic retraining (retrain.monitored_deployment),
traffic shifts towards sport, the drift PSI crosses its bound in Prometheus, the operator
marks the deployment Degraded and creates one retraining TrainingJob (on data with the new
mix), optimizes it, promotes it, and the same traffic then leaves the drift under the bound.

:func:`run` performs each step and waits for the transition the operator promises; it
asserts nothing and records what it saw (:class:`Observed`), so the test asserts on that
and the demo narrates it. ``on_tick`` is called at every poll, for a live progress view
(:class:`ProgressView` prints one line whenever the loop's state changes).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import loop, retrain
from .prometheus import Prometheus
from .stack import Stack

Json = dict[str, Any]
DEPLOYMENT = "quickstart"
RETRAIN_SELECTOR = f"modelloop.dev/modeldeployment={DEPLOYMENT}"
SERVER_SELECTOR = f"{RETRAIN_SELECTOR},app.kubernetes.io/component=server"
"""The serving pods of both tracks (the inference Service's selector)."""
DRIFT_MAX = 0.2
"""The drift check's bound in retrain.monitored_deployment."""
SHIFTED_BATCHES = 10
"""Batches of 20 shifted texts: 200 predictions, over the check's minSamples (100)."""


def drift_query(namespace: str) -> str:
    """The largest class-distribution PSI of this deployment's serving pods (both tracks),
    as Prometheus has it: other deployments of the namespace are not its business."""
    pods = f"{DEPLOYMENT}(-canary)?-[a-z0-9]+-[a-z0-9]+"
    return f'max(modelloop_drift_psi{{distribution="class",namespace="{namespace}",pod=~"{pods}"}})'


def start_prometheus(stack: Stack) -> Prometheus:
    """A real Prometheus discovering the namespace's annotated pods (stop it when done)."""
    prom = Prometheus(workdir=stack.workdir / "prometheus", list_pods=lambda: stack.list("pods"))
    prom.start()
    return prom


@dataclass
class Observed:
    """What the loop went through, in order."""

    monitored: Json = field(default_factory=dict)
    """The ModelDeployment once monitoring and retraining are on (Ready)."""
    drifted: float = 0.0
    """The drift PSI Prometheus reported for the shifted traffic on the first model."""
    degraded: Json = field(default_factory=dict)
    retrain_jobs: list[str] = field(default_factory=list)
    """The retraining TrainingJobs that existed when the first one appeared."""
    training_job: Json = field(default_factory=dict)
    optimization_job: Json = field(default_factory=dict)
    promoted: Json = field(default_factory=dict)
    """The ModelDeployment when the promoted model first served with one replica."""
    after_promotion: list[tuple[str, str, str]] = field(default_factory=list)
    """(phase, Degraded status, Degraded reason) at every poll from the first status that
    names the promoted model until the analysis is Healthy: each distinct state once."""
    healthy: Json = field(default_factory=dict)
    recovered: float | None = None
    """The drift PSI after the same traffic on the promoted model."""
    retrain_jobs_at_end: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


def _mdep(stack: Stack) -> Json | None:
    return stack.get("modeldeployment", DEPLOYMENT)


def _status_of(obj: Json | None, key: str) -> str:
    return str((loop.condition(obj, key) or {}).get("status", ""))


def run(stack: Stack, prom: Prometheus, *, model: str, archive: str,
        on_tick: Callable[[], None] = lambda: None,
        on_step: Callable[[str], None] = lambda _: None) -> Observed:
    """The loop from the served quickstart model (`model`, from `archive`) to a promoted
    retrained one with its drift back to normal. Raises StackError when a wait times out."""
    seen = Observed()
    started = time.monotonic()
    mark = started

    def lap(name: str) -> None:
        nonlocal mark
        now = time.monotonic()
        seen.timings[name] = now - mark
        mark = now

    def wait(what: str, probe: Callable[[], Any], timeout: float) -> Any:
        def ticking() -> Any:
            on_tick()
            return probe()
        return stack.wait_for(what, ticking, timeout=timeout)

    pools = retrain.traffic_pools()
    retrain.write_dataset(stack.models_dir / retrain.DATASET_PATH)
    on_step(f"wrote the retraining data (the new topic mix) to pvc://models/"
            f"{retrain.DATASET_PATH}; applying monitoring (drift PSI max {DRIFT_MAX}) and "
            "automatic retraining to ModelDeployment quickstart")
    stack.apply(retrain.monitored_deployment(prometheus_url=prom.url))
    # Traffic only once the operator has taken in the new spec (and rolled, if it must).
    seen.monitored = wait("ModelDeployment Ready at its new generation", lambda: (
        (obj := _mdep(stack)) is not None
        and loop.dig(obj, "status", "observedGeneration") == obj["metadata"]["generation"]
        and loop.phase(obj) == "Ready" and obj), timeout=600)
    lap("monitoring applied")

    address = loop.wait_serving_address(stack, DEPLOYMENT)
    on_step(f"sending {SHIFTED_BATCHES * 20} requests from a shifted distribution "
            f"({int(retrain.MIX[retrain.SHIFTED_TOPIC] * 100)}% {retrain.SHIFTED_TOPIC}, "
            f"{int(retrain.OTHER_SHARE * 100)}% each other topic) to {address}")
    retrain.send_shifted(address, model, pools, batches=SHIFTED_BATCHES)
    query = drift_query(stack.namespace)
    seen.drifted = wait(f"drift PSI above {DRIFT_MAX} in Prometheus", lambda: (
        (v := prom.value(query)) is not None and v > DRIFT_MAX and v), timeout=120)
    on_step(f"Prometheus: {query} = {seen.drifted:.3f} (> {DRIFT_MAX})")
    lap("drift in Prometheus")

    seen.degraded = wait("ModelDeployment Degraded by the drift check", lambda: (
        (obj := _mdep(stack)) is not None and _status_of(obj, "Degraded") == "True" and obj),
        timeout=300)
    on_step("ModelDeployment Degraded: "
            + str((loop.condition(seen.degraded, "Degraded") or {}).get("message", "")))
    lap("Degraded")

    jobs: list[Json] = wait("the retraining TrainingJob",
                            lambda: stack.list("trainingjobs", RETRAIN_SELECTOR), timeout=120)
    seen.retrain_jobs = [j["metadata"]["name"] for j in jobs]
    name = seen.retrain_jobs[0]
    on_step(f"retraining: TrainingJob {name} created by the operator, dataset "
            f"{loop.dig(jobs[0], 'spec', 'dataset', 'uri')}")
    seen.training_job = loop.wait_phase(stack, "trainingjob", name, {"Succeeded"},
                                        timeout=1800, on_poll=on_tick)
    on_step(f"TrainingJob {name} Succeeded: {seen.training_job['status'].get('metrics')}")
    lap("retraining")

    oj_name = wait("the retrain OptimizationJob", lambda: next(
        (r.get("optimizationJob") for r in loop.dig(_mdep(stack), "status", "retrain",
                                                    "history") or []
         if r.get("trainingJob") == name and r.get("optimizationJob")), None), timeout=300)
    seen.optimization_job = loop.wait_phase(stack, "optimizationjob", oj_name, {"Succeeded"},
                                            timeout=1200, on_poll=on_tick)
    on_step(f"OptimizationJob {oj_name} Succeeded, Accepted="
            f"{_status_of(seen.optimization_job, 'Accepted')}; archive "
            f"{loop.dig(seen.optimization_job, 'status', 'archiveUri')}")
    lap("optimization")

    def promoted_and_served() -> Json | None:
        obj = _mdep(stack)
        active = loop.dig(obj, "status", "activeModel", "archiveUri")
        if obj is None or active in (None, archive):
            return None
        _record_after_promotion(seen, obj)
        # Served means the rolling update is over: the Service's ready pods all serve the
        # promoted model (status counts may still be the old ReplicaSet's at first).
        ready = loop.serving_addresses(stack, DEPLOYMENT)
        rolled = bool(ready) and ready == loop.serving_addresses(stack, DEPLOYMENT,
                                                                 model_uri=active)
        servers = stack.list("pods", SERVER_SELECTOR)
        return obj if rolled and len(servers) == len(ready) else None

    seen.promoted = wait("the retrained model promoted and served", promoted_and_served,
                         timeout=1200)
    active = seen.promoted["status"]["activeModel"]
    on_step(f"promoted: ModelDeployment serves {active['archiveUri']} (phase "
            f"{loop.phase(seen.promoted)}, Degraded "
            f"{_status_of(seen.promoted, 'Degraded')})")
    lap("promotion")

    address = loop.wait_serving_address(stack, DEPLOYMENT, model_uri=active["archiveUri"])
    on_step(f"the same shifted traffic on the promoted model at {address}")
    retrain.send_shifted(address, loop.model_name_of(active["archiveUri"]), pools,
                         batches=SHIFTED_BATCHES)

    def healthy() -> Json | None:
        obj = _mdep(stack)
        if obj is None:
            return None
        _record_after_promotion(seen, obj)
        return obj if loop.dig(obj, "status", "analysis", "result") == "Healthy" else None

    seen.healthy = wait("drift back under the bound and the analysis Healthy", healthy,
                        timeout=300)
    seen.recovered = prom.value(query)
    shown = "no data" if seen.recovered is None else f"{seen.recovered:.3f}"
    on_step(f"Prometheus: {query} = {shown}; analysis Healthy, phase "
            f"{loop.phase(seen.healthy)}")
    lap("recovery")
    seen.retrain_jobs_at_end = [j["metadata"]["name"]
                                for j in stack.list("trainingjobs", RETRAIN_SELECTOR)]
    return seen


def _record_after_promotion(seen: Observed, obj: Json) -> None:
    degraded = loop.condition(obj, "Degraded") or {}
    state = (loop.phase(obj), str(degraded.get("status", "")), str(degraded.get("reason", "")))
    if not seen.after_promotion or seen.after_promotion[-1] != state:
        seen.after_promotion.append(state)


# --- live progress ----------------------------------------------------------------------

def progress_line(stack: Stack, prom: Prometheus | None) -> str:
    """One line: the deployment's phase, analysis and served model, the drift in
    Prometheus, and every retraining job with its phase (and the trainer's step)."""
    mdep = _mdep(stack)
    analysis = loop.dig(mdep, "status", "analysis") or {}
    checks = ", ".join(
        f"{c['name']}={'n/a' if c.get('value') is None else format(c['value'], '.3f')} "
        f"{c['result']}" for c in analysis.get("checks", []))
    parts = [f"mdep {loop.phase(mdep) or '?'}",
             f"analysis {analysis.get('result', '-')} ({checks or 'none yet'}; "
             f"failures {analysis.get('consecutiveFailures', 0)})",
             f"serving {loop.dig(mdep, 'status', 'activeModel', 'version') or '-'}"]
    if prom is not None:
        try:
            value = prom.value(drift_query(stack.namespace))
        except OSError:
            value = None
        parts.append(f"PSI {value:.3f}" if value is not None else "PSI n/a")
    for plural, kind in (("trainingjobs", "TrainingJob"),
                         ("optimizationjobs", "OptimizationJob")):
        for job in stack.list(plural, RETRAIN_SELECTOR):
            name, phase = job["metadata"]["name"], loop.phase(job) or "Pending"
            step = loop.trainer_progress(stack, name) if (
                phase == "Running" and kind == "TrainingJob") else ""
            parts.append(f"{kind} {name} {phase}" + (f" ({step})" if step else ""))
    return " | ".join(parts)


@dataclass
class ProgressView:
    """Prints `progress_line` whenever it changes, at most every `every` seconds."""

    stack: Stack
    prom: Prometheus | None
    say: Callable[[str], None]
    every: float = 3.0
    _last: str = ""
    _at: float = 0.0

    def tick(self) -> None:
        """Show the loop's progress line (throttled; only when it changed)."""
        if time.monotonic() - self._at < self.every:
            return
        try:
            line = progress_line(self.stack, self.prom)
        except Exception as err:  # a view must never break the loop it shows
            line = f"(progress unavailable: {err})"
        self.show("  " + line)

    def show(self, line: str) -> None:
        """Print `line` unless it is the last one printed or one was printed less than
        `every` seconds ago."""
        now = time.monotonic()
        if line == self._last or now - self._at < self.every:
            return
        self._at, self._last = now, line
        self.say(line)
