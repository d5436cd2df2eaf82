"""The closed loop on the local stack, step by step, shared by the e2e test and `make demo`.

After the quickstart serves its model, a real Prometheus scrapes the pods and the deployment
gains capture, live accuracy from feedback and retraining on labelled traffic
(retrain.monitored_deployment). Users start sending coded text (shift.py: the same topics in
a new vocabulary) and a labeller posts the true label of every answer (labeller.py). Live
accuracy falls under its bound, the deployment turns Degraded, and once enough labels are in
the operator retrains on base data + labelled traffic:

1. with the hasty template: its candidate collapses, the champion/challenger gate rejects
   it with both models' figures, and the served model stays;
2. with the careful template (applied while the first run trains, as a team would fix it):
   its candidate beats the served model on the labelled holdout, is promoted, and the same
   traffic's live accuracy on it is back over the bound: analysis Healthy.

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

from . import loop, retrain, shift
from .labeller import Labeller, Served
from .prometheus import Prometheus
from .stack import Stack

Json = dict[str, Any]
DEPLOYMENT = "quickstart"
RETRAIN_SELECTOR = f"modelloop.dev/modeldeployment={DEPLOYMENT}"
SERVER_SELECTOR = f"{RETRAIN_SELECTOR},app.kubernetes.io/component=server"
"""The serving pods of both tracks (the inference Service's selector)."""


def start_prometheus(stack: Stack) -> Prometheus:
    """A real Prometheus discovering the namespace's annotated pods (stop it when done)."""
    prom = Prometheus(workdir=stack.workdir / "prometheus", list_pods=lambda: stack.list("pods"))
    prom.start()
    return prom


@dataclass
class Observed:
    """What the loop went through, in order."""

    monitored: Json = field(default_factory=dict)
    """The ModelDeployment once capture, monitoring and retraining are on (Ready)."""
    degraded: Json = field(default_factory=dict)
    waiting_for_labels: str = ""
    """The Retraining condition's message while it waited for labels ("" if never seen)."""
    rejected: Json = field(default_factory=dict)
    """The hasty run's history entry once Rejected."""
    rejected_optimization_job: Json = field(default_factory=dict)
    served_after_rejection: str = ""
    """The archive the deployment served once the hasty run was Rejected."""
    training_job: Json = field(default_factory=dict)
    """The careful run's TrainingJob, Succeeded."""
    optimization_job: Json = field(default_factory=dict)
    promoted: Json = field(default_factory=dict)
    """The ModelDeployment when the promoted model first served with every replica."""
    after_promotion: list[tuple[str, str, str]] = field(default_factory=list)
    """(phase, Degraded status, Degraded reason) at every poll from the first status that
    names the promoted model until the analysis is Healthy: each distinct state once."""
    healthy: Json = field(default_factory=dict)
    live_before: Served = field(default_factory=Served)
    """The labeller's count for the first model: its live accuracy on the coded traffic."""
    live_after: Served = field(default_factory=Served)
    """The same for the promoted model, once its analysis is Healthy."""
    drift_before: dict[str, float | None] = field(default_factory=dict)
    """Class and input PSI of the first model's pods (Prometheus) once the hasty run was
    Rejected: the coded traffic against the first model's training reference."""
    drift_after: dict[str, float | None] = field(default_factory=dict)
    """The same for the promoted model's pods once Healthy: against its own reference,
    built from its training snapshot's validation split (base + labelled traffic)."""
    labeller_errors: list[str] = field(default_factory=list)
    retrain_jobs_at_end: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


def _mdep(stack: Stack) -> Json | None:
    return stack.get("modeldeployment", DEPLOYMENT)


def _status_of(obj: Json | None, key: str) -> str:
    return str((loop.condition(obj, key) or {}).get("status", ""))


def history(obj: Json | None) -> list[Json]:
    """status.retrain.history, newest first."""
    found: list[Json] = loop.dig(obj, "status", "retrain", "history") or []
    return found


def _run_of(stack: Stack, training_job: str) -> Json | None:
    return next((r for r in history(_mdep(stack)) if r.get("trainingJob") == training_job),
                None)


def gate_line(record: Json) -> str:
    """The gate's figures of a history entry, e.g. "holdout 0.717 -> 0.862 (n=94) ..."."""
    gate = record.get("gate") or {}
    champion, candidate = gate.get("champion") or {}, gate.get("candidate") or {}

    def pair(section: str) -> str:
        old, new = champion.get(section) or {}, candidate.get(section) or {}
        return (f"{section} accuracy {loop.dig(old, 'accuracy')} (served) vs "
                f"{loop.dig(new, 'accuracy')} (candidate), n={new.get('samples')}")

    verdict = "passed" if gate.get("passed") else "failed"
    return f"gate {verdict}: {pair('holdout')}; {pair('original')}"


def run(stack: Stack, prom: Prometheus, *, model: str, archive: str,
        settings: loop.Settings = loop.E2E,
        view: ProgressView | None = None,
        on_step: Callable[[str], None] = lambda _: None) -> Observed:
    """The loop from the served quickstart model (`model`, from `archive`, trained with
    `settings`) to a promoted retrained one with its live accuracy back over the bound.
    Raises StackError when a wait times out."""
    steps = _Steps(stack, prom, settings, view.tick if view else lambda: None, on_step)
    if view is not None:
        view.labeller = steps.labeller
    steps.monitor()
    steps.labeller.start()
    try:
        steps.degrade_and_reject()
        steps.promote_and_recover(archive=archive, model=model)
    finally:
        steps.labeller.stop()
        steps.seen.labeller_errors = list(steps.labeller.errors)
    steps.seen.retrain_jobs_at_end = [j["metadata"]["name"]
                                      for j in stack.list("trainingjobs", RETRAIN_SELECTOR)]
    return steps.seen


@dataclass
class _Steps:
    stack: Stack
    prom: Prometheus
    settings: loop.Settings
    on_tick: Callable[[], None]
    on_step: Callable[[str], None]
    seen: Observed = field(default_factory=Observed)
    labeller: Labeller = field(init=False)
    _mark: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        base = loop.training_job(self.settings)["spec"]["dataset"]["maxSamples"]
        self.traffic = shift.traffic(max_samples=base)
        self.labeller = Labeller(self.stack, DEPLOYMENT, self.traffic.shifted)

    def lap(self, name: str) -> None:
        now = time.monotonic()
        self.seen.timings[name] = now - self._mark
        self._mark = now

    def wait(self, what: str, probe: Callable[[], Any], timeout: float) -> Any:
        def ticking() -> Any:
            self.on_tick()
            return probe()
        return self.stack.wait_for(what, ticking, timeout=timeout)

    def drift(self) -> dict[str, float | None]:
        """The worst stable-track pod's class and input PSI, as the drift checks read it."""
        pods = f'namespace="{self.stack.namespace}",pod=~"{DEPLOYMENT}-[a-z0-9]+-[a-z0-9]+"'
        return {kind: self.prom.value(
                    f'max(modelloop_drift_psi{{distribution="{kind}",{pods}}})')
                for kind in ("class", "input")}

    def apply(self, template: retrain.Template) -> None:
        self.stack.apply(retrain.monitored_deployment(
            prometheus_url=self.prom.url, settings=self.settings, template=template))

    def monitor(self) -> None:
        self.on_step(f"applying capture (sink pvc://models/{retrain.SINK_PATH}), live "
                     f"accuracy (min {self.settings.live_accuracy_min}) and retraining on labelled "
                     f"traffic (minRows {retrain.MIN_LABELLED}, gate {retrain.GATE}) to "
                     f"ModelDeployment {DEPLOYMENT}, with the hasty template (1 epoch, "
                     "learning rate 0.01, no evaluation gate of its own)")
        self.apply("hasty")
        self.seen.monitored = self.wait("ModelDeployment Ready at its new generation", lambda: (
            (obj := _mdep(self.stack)) is not None
            and loop.dig(obj, "status", "observedGeneration") == obj["metadata"]["generation"]
            and loop.phase(obj) == "Ready"
            and self.stack.get("pod", f"{DEPLOYMENT}-collector-0") is not None and obj), 600)
        self.lap("capture applied")
        example = self.traffic.shifted[0][0].splitlines()[0][:60]
        self.on_step(f"users send coded articles ({len(self.traffic.shifted)} at most; every "
                     f"word of {shift.CODED_MIN_LETTERS}+ letters pseudonymised, e.g. "
                     f"{example!r}); a labeller posts each answer's true label to the "
                     "collector")

    def degrade_and_reject(self) -> None:
        seen, stack = self.seen, self.stack
        seen.degraded = self.wait("ModelDeployment Degraded by the accuracy check", lambda: (
            (obj := _mdep(stack)) is not None and _status_of(obj, "Degraded") == "True"
            and obj), 600)
        self.on_step("ModelDeployment Degraded: " + str(
            (loop.condition(seen.degraded, "Degraded") or {}).get("message", "")))
        self.lap("Degraded")

        def first_job() -> str | None:
            retraining = loop.condition(_mdep(stack), "Retraining") or {}
            if (retraining.get("reason") == "RetrainWaitingForLabels"
                    and not seen.waiting_for_labels):
                seen.waiting_for_labels = str(retraining.get("message", ""))
                self.on_step(f"Retraining: {seen.waiting_for_labels}")
            jobs = stack.list("trainingjobs", RETRAIN_SELECTOR)
            return str(jobs[0]["metadata"]["name"]) if jobs else None

        hasty: str = self.wait(f"the first retraining TrainingJob ({retrain.MIN_LABELLED} "
                               "labels)", first_job, 600)
        tj = stack.get("trainingjob", hasty) or {}
        self.on_step(f"retraining: TrainingJob {hasty} created by the operator on base data + "
                     f"labelled traffic {loop.dig(tj, 'spec', 'dataset', 'captured')}")
        self.lap("labels")
        self.on_step("the team fixes the template (the quickstart's own training) while it "
                     "trains: the next run uses it")
        self.apply("careful")
        seen.rejected = self.wait(f"the champion/challenger gate to decide on {hasty}", lambda: (
            (r := _run_of(stack, hasty)) is not None
            and r.get("outcome") in ("Rejected", "Failed", "Promoted") and r), 1800)
        seen.drift_before = self.drift()
        seen.served_after_rejection = str(loop.dig(_mdep(stack), "status", "activeModel",
                                                   "archiveUri") or "")
        oj = seen.rejected.get("optimizationJob")
        seen.rejected_optimization_job = (stack.get("optimizationjob", oj) or {}) if oj else {}
        self.on_step(f"{hasty} {seen.rejected.get('outcome')}: {gate_line(seen.rejected)}; "
                     f"still serving {seen.served_after_rejection}")
        self.lap("hasty run")

    def promote_and_recover(self, *, archive: str, model: str) -> None:
        seen, stack = self.seen, self.stack
        hasty = str(seen.rejected.get("trainingJob"))

        def careful_job() -> str | None:
            names = [r.get("trainingJob") for r in history(_mdep(stack))]
            return next((str(n) for n in names if n and n != hasty), None)

        name: str = self.wait("the second retraining TrainingJob", careful_job, 600)
        self.labeller.pause()  # what arrives while it trains is not in its data
        self.on_step(f"retraining: TrainingJob {name} (the careful template) created; "
                     f"traffic paused while it trains ({self.labeller.sent} requests so far)")
        seen.training_job = loop.wait_phase(stack, "trainingjob", name, {"Succeeded"},
                                            timeout=1800, on_poll=self.on_tick)
        self.on_step(f"TrainingJob {name} Succeeded: {seen.training_job['status'].get('metrics')}"
                     f", dataset {loop.dig(seen.training_job, 'status', 'dataset')}")
        oj_name: str = self.wait("the careful run's OptimizationJob", lambda: (
            (r := _run_of(stack, name)) is not None and r.get("optimizationJob")), 300)
        seen.optimization_job = loop.wait_phase(stack, "optimizationjob", oj_name,
                                                {"Succeeded"}, timeout=1200,
                                                on_poll=self.on_tick)
        self.lap("careful run")

        def promoted_and_served() -> Json | None:
            obj = _mdep(stack)
            active = loop.dig(obj, "status", "activeModel", "archiveUri")
            if obj is None or active in (None, archive):
                return None
            _record_after_promotion(seen, obj)
            # Served means the rolling update is over: the Service's ready pods all serve
            # the promoted model (status counts may still be the old ReplicaSet's at first).
            ready = loop.serving_addresses(stack, DEPLOYMENT)
            rolled = bool(ready) and ready == loop.serving_addresses(stack, DEPLOYMENT,
                                                                     model_uri=active)
            servers = stack.list("pods", SERVER_SELECTOR)
            return obj if rolled and len(servers) == len(ready) else None

        seen.promoted = self.wait("the retrained model promoted and served",
                                  promoted_and_served, 1200)
        active = seen.promoted["status"]["activeModel"]
        self.on_step(f"promoted: {gate_line(_run_of(stack, name) or {})}; ModelDeployment "
                     f"serves {active['archiveUri']}")
        self.lap("promotion")
        seen.live_before = self.labeller.accuracy(archive)
        self.on_step("the same users and labeller go on, answered by the promoted model")
        self.labeller.resume()

        def healthy() -> Json | None:
            obj = _mdep(stack)
            if obj is None:
                return None
            _record_after_promotion(seen, obj)
            return obj if loop.dig(obj, "status", "analysis", "result") == "Healthy" else None

        seen.healthy = self.wait("live accuracy over the bound and the analysis Healthy",
                                 healthy, 600)
        seen.live_after = self.labeller.accuracy(active["archiveUri"])
        seen.drift_after = self.drift()
        checks = loop.dig(seen.healthy, "status", "analysis", "checks") or []
        self.on_step("analysis Healthy: " + ", ".join(
            f"{c.get('name')} {c['value']:.3f}" if isinstance(c.get("value"), float)
            else f"{c.get('name')} {c.get('value')}" for c in checks)
                     + f"; live accuracy on the coded traffic {_share(seen.live_before)} "
                       f"({model}, first) -> {_share(seen.live_after)} (promoted); drift PSI "
                       f"{seen.drift_before} -> {seen.drift_after}")
        self.lap("recovery")


def _share(served: Served) -> str:
    return ("n/a" if served.accuracy is None
            else f"{served.accuracy:.3f} ({served.correct}/{served.requests})")


def _record_after_promotion(seen: Observed, obj: Json) -> None:
    degraded = loop.condition(obj, "Degraded") or {}
    state = (loop.phase(obj), str(degraded.get("status", "")), str(degraded.get("reason", "")))
    if not seen.after_promotion or seen.after_promotion[-1] != state:
        seen.after_promotion.append(state)


# --- live progress ----------------------------------------------------------------------

def progress_line(stack: Stack, labeller: Labeller | None = None) -> str:
    """One line: the deployment's phase, analysis and served model, what the users and
    labeller sent, and every retraining job with its phase (and the trainer's step)."""
    mdep = _mdep(stack)
    analysis = loop.dig(mdep, "status", "analysis") or {}
    checks = ", ".join(
        f"{c['name']}={'n/a' if c.get('value') is None else format(c['value'], '.3f')} "
        f"{c['result']}" for c in analysis.get("checks", []))
    parts = [f"mdep {loop.phase(mdep) or '?'}",
             f"analysis {analysis.get('result', '-')} ({checks or 'none yet'}; "
             f"failures {analysis.get('consecutiveFailures', 0)})",
             f"serving {loop.dig(mdep, 'status', 'activeModel', 'version') or '-'}"]
    if labeller is not None:
        labelled = sum(s.labelled for s in labeller.served.values())
        parts.append(f"users {labeller.sent} sent ({labeller.refused} refused), "
                     f"{labelled} labelled"
                     + (" (paused)" if labeller.paused else "")
                     + (f", {labeller.failed} failed, last {labeller.errors[-1]}"
                        if labeller.errors else ""))
    retraining = loop.condition(mdep, "Retraining") or {}
    if retraining.get("reason"):
        parts.append(f"Retraining {retraining['reason']}")
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
    say: Callable[[str], None]
    every: float = 3.0
    labeller: Labeller | None = None
    """Set by :func:`run` for its users and labeller."""
    _last: str = ""
    _at: float = 0.0

    def tick(self) -> None:
        """Show the loop's progress line (throttled; only when it changed)."""
        if time.monotonic() - self._at < self.every:
            return
        try:
            line = progress_line(self.stack, self.labeller)
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
