"""The handler registry and its event filters (no cluster: kopf is not started)."""

from __future__ import annotations

import asyncio
import copy
import logging
from typing import Any, cast

import kopf
import pytest
from modelloop_operator import handlers
from modelloop_operator.builders.labels import MODEL_DEPLOYMENT, OPTIMIZATION_JOB, TRAINING_JOB
from modelloop_operator.config import OperatorConfig
from modelloop_operator.errors import (
    ConflictError,
    ForbiddenError,
    InvalidSpecError,
    KubeError,
    UnprocessableError,
    WaitingError,
)
from modelloop_operator.handlers import (
    FINISHED_TRAINING_JOBS,
    MODEL_DEPLOYMENTS_BY_SOURCE,
    OPTIMIZATION_JOBS_BY_SOURCE,
    QUEUED_STATUS_CLIENT,
    RECONCILE_RUNNER,
    _pod_ended_or_disrupted,
    _unfinished,
    build_registry,
    indexed,
    listed_child_of_finished_job,
    model_deployment_source_keys,
    optimization_job_source_keys,
)
from modelloop_operator.metrics import OperatorMetrics
from modelloop_operator.reconcilers.modeldeployment import MODEL_DEPLOYMENTS, references
from modelloop_operator.reconcilers.optimizationjob import (
    OPTIMIZATION_JOBS,
    references_training_job,
)
from modelloop_operator.reconcilers.runtime import Runtime
from modelloop_operator.reconcilers.trainingjob import TRAINING_JOBS
from modelloop_operator.runner import (
    API_RETRY_SECONDS,
    ERROR_RETRY_SECONDS,
    FORBIDDEN_RETRY_SECONDS,
    ReconcileRunner,
    retry_delay,
)
from modelloop_operator.slots import ReconcileSlots, Trigger

from .memory_kube import MemoryKube


def test_every_trigger_of_the_trainingjob_reconcile_is_registered() -> None:
    registry = build_registry(config=OperatorConfig(resync_seconds=7))
    changing = [h for h in registry._changing.get_all_handlers()]
    assert {h.id for h in changing} >= {"trainingjob-resume", "trainingjob-create",
                                        "trainingjob-update"}
    timers = list(registry._spawning.get_all_handlers())
    assert ("trainingjob-resync", 7) in [  # other kinds add their own timers
        (t.id, t.interval) for t in timers]  # type: ignore[attr-defined]
    watching = {h.id for h in registry._watching.get_all_handlers()}
    assert watching >= {"trainingjob-job", "trainingjob-pod"}


def test_pod_events_that_matter() -> None:
    assert _pod_ended_or_disrupted({"phase": "Succeeded"})
    assert _pod_ended_or_disrupted({"phase": "Failed"})
    assert _pod_ended_or_disrupted({"phase": "Running", "conditions": [
        {"type": "DisruptionTarget", "status": "True"}]})
    assert not _pod_ended_or_disrupted({"phase": "Running", "conditions": [
        {"type": "Ready", "status": "True"}]})
    assert not _pod_ended_or_disrupted({})


def test_the_resync_timer_runs_only_until_the_end() -> None:
    assert _unfinished({}) and _unfinished({"phase": "Running"})
    assert _unfinished({"phase": "Suspended"})
    assert not _unfinished({"phase": "Succeeded"}) and not _unfinished({"phase": "Failed"})


# --- who a TrainingJob or OptimizationJob event wakes up: kopf indexes, not lists -------

MDEP_SERVING_TJ: dict[str, Any] = {"metadata": {"name": "md-a", "namespace": "team"},
                   "spec": {"model": {"trainingJobRef": {"name": "tj-1"}}}}
MDEP_SERVING_OJ: dict[str, Any] = {"metadata": {"name": "md-b", "namespace": "team"},
                   "spec": {"model": {"optimizationJobRef": {"name": "oj-1"}}}}
MDEP_SERVING_ARCHIVE: dict[str, Any] = {"metadata": {"name": "md-c", "namespace": "team"},
                        "spec": {"model": {"archiveUri": "s3://bucket/model.mar"}}}
OJ_OF_TJ: dict[str, Any] = {"metadata": {"name": "oj-1", "namespace": "team"},
            "spec": {"source": {"trainingJobRef": {"name": "tj-1"}}}}
OJ_OF_URI: dict[str, Any] = {"metadata": {"name": "oj-2", "namespace": "team"},
             "spec": {"source": {"modelUri": "s3://bucket/model"}}}


def test_model_deployment_index_keys_agree_with_the_reconcilers_reference_check() -> None:
    for obj in (MDEP_SERVING_TJ, MDEP_SERVING_OJ, MDEP_SERVING_ARCHIVE):
        keys = model_deployment_source_keys(namespace="team", spec=obj["spec"])
        for kind, name in (("TrainingJob", "tj-1"), ("OptimizationJob", "oj-1"),
                           ("TrainingJob", "other")):
            assert (("team", kind, name) in keys) == references(obj, kind=kind, name=name)
    assert model_deployment_source_keys(namespace="team", spec=MDEP_SERVING_ARCHIVE["spec"]) \
        == []


def test_optimization_job_index_keys_agree_with_the_reconcilers_reference_check() -> None:
    for obj in (OJ_OF_TJ, OJ_OF_URI):
        keys = optimization_job_source_keys(namespace="team", spec=obj["spec"])
        for name in ("tj-1", "other"):
            assert (("team", "TrainingJob", name) in keys) == \
                references_training_job(obj, name)


def test_source_lookups_are_registered_as_kopf_indexes() -> None:
    registry = build_registry(config=OperatorConfig())
    ids = {h.id for h in registry._indexing.get_all_handlers()}
    assert ids >= {OPTIMIZATION_JOBS_BY_SOURCE, MODEL_DEPLOYMENTS_BY_SOURCE}
    # kopf hands an index to handlers as a keyword argument named after its id.
    assert all(i.isidentifier() for i in ids)


def test_indexed_names_are_distinct_and_sorted() -> None:
    index = {("team", "TrainingJob", "tj-1"): ["md-b", "md-a", "md-b"]}
    assert indexed(index, ("team", "TrainingJob", "tj-1")) == ["md-a", "md-b"]
    assert indexed(index, ("team", "TrainingJob", "tj-2")) == []


class _NoApi:
    """A client that fails the test if the handler touches the API server."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the source handler called the API: {name}")


def no_api_memo() -> kopf.Memo:
    """kopf's memo as the startup handler leaves it, with a client that fails the test
    if a handler touches the API server."""
    memo = kopf.Memo()
    memo["runtime"] = Runtime(config=OperatorConfig(), kube=cast(Any, _NoApi()),
                              metrics=OperatorMetrics())
    return memo


def watch_handler(registry: kopf.OperatorRegistry, handler_id: str) -> Any:
    """The registered watch handler ``handler_id``."""
    return next(h for h in registry._watching.get_all_handlers() if h.id == handler_id)


async def test_a_training_job_event_wakes_indexed_deployments_and_its_retrain_owner(
        monkeypatch: pytest.MonkeyPatch) -> None:
    woken: list[tuple[str, str]] = []

    async def fake_reconcile(*, runtime: Runtime, namespace: str, name: str,
                             trigger: str) -> None:
        woken.append((name, trigger))
    monkeypatch.setattr(handlers, "reconcile_model_deployment", fake_reconcile)
    registry = build_registry(config=OperatorConfig())
    handler = watch_handler(registry, "modeldeployment-source-trainingjob")
    memo = no_api_memo()
    index = {("team", "TrainingJob", "tj-1"): ["md-a", "md-z"],
             ("other", "TrainingJob", "tj-1"): ["md-elsewhere"]}
    fn = cast(Any, handler.fn)  # kopf passes many more keywords; the handler reads these
    await fn(namespace="team", name="tj-1", labels={MODEL_DEPLOYMENT: "md-owner"},
             memo=memo, **{MODEL_DEPLOYMENTS_BY_SOURCE: index})
    await handlers._runner(memo).drain()  # source events reconcile in the background
    assert woken == [("md-a", "source"), ("md-z", "source"), ("md-owner", "source")]


# --- the startup listing of a finished job's children is not reconciled again ----------

async def test_only_finished_jobs_are_indexed_as_finished() -> None:
    registry = build_registry(config=OperatorConfig())
    index_fn = next(h.fn for h in registry._indexing.get_all_handlers()
                    if h.id == FINISHED_TRAINING_JOBS)
    fn = cast(Any, index_fn)
    assert await fn(namespace="team", name="a", status={"phase": "Succeeded"}) == \
        {("team", "a"): True}
    assert await fn(namespace="team", name="b", status={"phase": "Failed"}) == \
        {("team", "b"): True}
    assert await fn(namespace="team", name="c", status={"phase": "Running"}) is None
    assert await fn(namespace="team", name="d", status={}) is None


def test_listed_children_of_finished_jobs_are_left_to_the_resume_reconcile() -> None:
    finished = {("team", "done"): True}
    assert listed_child_of_finished_job(event_type=None, namespace="team", owner="done",
                                        finished=finished)
    # A real change of a finished job's child still reconciles (tidy-up, retries).
    assert not listed_child_of_finished_job(event_type="MODIFIED", namespace="team",
                                            owner="done", finished=finished)
    # The listing of a running job's children reconciles as before.
    assert not listed_child_of_finished_job(event_type=None, namespace="team",
                                            owner="running", finished=finished)


async def test_a_listed_job_of_a_finished_training_job_is_skipped_and_a_change_is_not(
        monkeypatch: pytest.MonkeyPatch) -> None:
    woken: list[tuple[str, str]] = []

    async def fake_reconcile(*, runtime: Runtime, namespace: str, name: str,
                             trigger: str) -> None:
        woken.append((name, trigger))
    monkeypatch.setattr(handlers, "reconcile_training_job", fake_reconcile)
    registry = build_registry(config=OperatorConfig())
    handler = watch_handler(registry, "trainingjob-job")
    memo = no_api_memo()
    fn = cast(Any, handler.fn)
    finished = {FINISHED_TRAINING_JOBS: {("team", "done"): True}}
    for owner, event_type in (("done", None), ("done", "MODIFIED"), ("running", None)):
        await fn(namespace="team", labels={TRAINING_JOB: owner}, memo=memo,
                 type=event_type, **finished)
    await handlers._runner(memo).drain()
    assert woken == [("done", "job"), ("running", "job")]


# --- concurrent reconciles are bounded (max_concurrent_reconciles) ---------------------

async def test_reconciles_beyond_the_bound_wait_their_turn_in_order() -> None:
    running, peak, order = 0, 0, []

    async def reconcile(*, runtime: Runtime, namespace: str, name: str, trigger: str) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        order.append(name)
        await asyncio.sleep(0.01)
        running -= 1
    memo = no_api_memo()
    memo[RECONCILE_RUNNER] = ReconcileRunner(runtime=memo["runtime"], slots=ReconcileSlots(2))
    names = [f"obj-{i}" for i in range(6)]
    await asyncio.gather(*(handlers._guarded(reconcile, memo=memo, namespace="team", name=n,
                                             trigger=Trigger.CREATE) for n in names))
    assert peak == 2 and order == names


class GatedReconcile:
    """A reconcile that records its calls; the object named "busy" holds its slot until
    ``gate`` is set. With a runner of one slot in ``memo``."""

    def __init__(self) -> None:
        self.order: list[tuple[str, str]] = []
        self.gate = asyncio.Event()
        self.memo = no_api_memo()
        self.runner = self.memo[RECONCILE_RUNNER] = ReconcileRunner(
            runtime=self.memo["runtime"], slots=ReconcileSlots(1))

    async def __call__(self, *, runtime: Runtime, namespace: str, name: str,
                       trigger: str) -> None:
        self.order.append((name, trigger))
        if name == "busy":
            await self.gate.wait()


async def test_first_reconciles_go_before_child_events_and_a_queued_object_skips_its_timer(
) -> None:
    reconcile = GatedReconcile()
    memo, order, gate = reconcile.memo, reconcile.order, reconcile.gate

    def guarded(name: str, trigger: Trigger) -> Any:
        return asyncio.create_task(handlers._guarded(reconcile, memo=memo, namespace="team",
                                                     name=name, trigger=trigger))
    busy = guarded("busy", Trigger.CREATE)
    await asyncio.sleep(0)
    queued = [guarded("old", Trigger.JOB), guarded("old", Trigger.POD),
              guarded("old", Trigger.TIMER), guarded("other", Trigger.TIMER),
              guarded("new", Trigger.CREATE), guarded("busy", Trigger.TIMER),
              guarded("old", Trigger.UPDATE)]
    await asyncio.sleep(0)
    gate.set()
    await asyncio.gather(busy, *queued)
    await handlers._runner(memo).drain()
    # "old" had a job-event reconcile queued: its pod event and timer tick were dropped
    # (that reconcile reads everything when it starts), but not the more urgent update;
    # the timer tick of the running "busy" was dropped too.
    assert order == [("busy", "create"), ("new", "create"), ("old", "update"),
                     ("old", "job"), ("other", "timer")]


def test_the_bound_is_a_setting() -> None:
    assert OperatorConfig().max_concurrent_reconciles == 32
    assert OperatorConfig(max_concurrent_reconciles=4).max_concurrent_reconciles == 4


@pytest.mark.parametrize(("error", "expected", "delay"), [
    (ForbiddenError("create Job team/x: forbidden (403)", status=403), kopf.TemporaryError,
     FORBIDDEN_RETRY_SECONDS),
    (KubeError("throttled (429)", status=429), kopf.TemporaryError, 5),
    (UnprocessableError("bad (422)", status=422), kopf.PermanentError, None),
])
async def test_api_refusals_map_to_kopf_retries_or_permanent_failures(
        error: KubeError, expected: type[Exception], delay: float | None) -> None:
    """A 403 is retried slowly (RBAC is fixed without a restart; an API server that has
    just restarted refuses until its caches sync), throttling soon, a 422 never."""
    async def reconcile(**_: Any) -> None:
        raise error
    memo = no_api_memo()
    with pytest.raises(expected) as raised:  # the object's own change: kopf retries
        await handlers._guarded(reconcile, memo=memo, namespace="team", name="x",
                                trigger=Trigger.CREATE)
    if delay is not None:
        assert isinstance(raised.value, kopf.TemporaryError)
        assert raised.value.delay == delay


@pytest.mark.parametrize(("error", "delay"), [
    (ForbiddenError("create Job team/x: forbidden (403)", status=403),
     FORBIDDEN_RETRY_SECONDS),
    (KubeError("throttled (429)", status=429), API_RETRY_SECONDS),
    (KubeError("API server unreachable", status=0), API_RETRY_SECONDS),
    (WaitingError("waiting for the source", delay=7), 7.0),
    (UnprocessableError("bad (422)", status=422), None),
    (InvalidSpecError("spec.x: bad"), None),
    (RuntimeError("a bug"), ERROR_RETRY_SECONDS),
])
def test_background_failures_map_to_the_retry_delays_kopf_would_use(
        error: Exception, delay: float | None) -> None:
    assert retry_delay(error) == delay


async def test_a_child_event_returns_at_once_and_its_reconcile_retries_by_itself(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="modelloop_operator.runner")
    calls: list[str] = []

    async def reconcile(*, name: str, **_: Any) -> None:
        calls.append(name)
        if name == "conflict" and calls.count(name) < 3:
            raise ConflictError("changed (409)", status=409)
        if name == "waiting" and calls.count(name) < 2:
            raise WaitingError("source not ready", delay=0.05)
        if name == "invalid":
            raise InvalidSpecError("spec.x: bad")
    memo = no_api_memo()
    runner = handlers._runner(memo)
    for name in ("conflict", "waiting", "invalid"):
        await handlers._guarded(reconcile, memo=memo, namespace="team", name=name,
                                trigger=Trigger.JOB)
    assert calls == [] and runner.in_flight == 3  # queued, not run in the handler
    await runner.drain()
    assert calls.count("conflict") == 3 and calls.count("invalid") == 1
    assert calls.count("waiting") == 1
    await asyncio.sleep(0.2)  # the retry of "waiting" is submitted after its delay
    await runner.drain()
    assert calls.count("waiting") == 2 and calls.count("invalid") == 1
    assert "source not ready; retrying in 0.05 s" in caplog.text
    assert "spec.x: bad; not retried" in caplog.text
    await runner.close()
    assert not runner.submit(reconcile, namespace="team", name="late", trigger=Trigger.JOB)


def test_gang_children_are_watched_by_owner_label_and_pods_only_when_they_end() -> None:
    registry = build_registry(config=OperatorConfig())
    for kind, label in (("trainingjob", TRAINING_JOB), ("optimizationjob", OPTIMIZATION_JOB)):
        job, pod = watch_handler(registry, f"{kind}-job"), watch_handler(registry, f"{kind}-pod")
        assert job.labels == pod.labels == {label: kopf.PRESENT}
        assert job.when is None and pod.when is _pod_ended_or_disrupted


# --- the queued status of a new object ---------------------------------------------------

@pytest.mark.parametrize("kind", ["trainingjob", "optimizationjob", "modeldeployment"])
async def test_a_new_object_gets_a_queued_status_at_once_and_only_once(kind: str) -> None:
    kube = MemoryKube()
    memo = kopf.Memo()
    memo[QUEUED_STATUS_CLIENT] = kube
    resource = {"trainingjob": TRAINING_JOBS, "optimizationjob": OPTIMIZATION_JOBS,
                "modeldeployment": MODEL_DEPLOYMENTS}[kind]
    stored = kube.put(resource, {"metadata": {"name": "new", "namespace": "team"},
                                 "spec": {}})
    fn = cast(Any, watch_handler(build_registry(config=OperatorConfig()), f"{kind}-queued").fn)
    await fn(body=copy.deepcopy(stored), type="ADDED", memo=memo)
    assert kube.writes == [("patch/status", resource.plural, "new")]
    st = stored["status"]
    assert st["phase"] == "Pending" and "observedGeneration" not in st
    (progressing,) = st["conditions"]
    assert (progressing["type"], progressing["status"], progressing["reason"]) == \
        ("Progressing", "True", "Queued")
    # An object with a status, a deleted one, one being deleted: nothing more.
    await fn(body=copy.deepcopy(stored), type="MODIFIED", memo=memo)
    await fn(body={"metadata": {"name": "new", "namespace": "team"}}, type="DELETED",
             memo=memo)
    await fn(body={"metadata": {"name": "new", "namespace": "team", "resourceVersion": "9",
                                "deletionTimestamp": "2026-11-28T00:00:00Z"}},
             type="MODIFIED", memo=memo)
    assert len(kube.writes) == 1


async def test_a_queued_status_that_loses_a_race_is_left_to_the_reconcile() -> None:
    kube = MemoryKube()
    memo = kopf.Memo()
    memo[QUEUED_STATUS_CLIENT] = kube
    stale = copy.deepcopy(kube.put(TRAINING_JOBS, {"metadata": {"name": "raced",
                                                                "namespace": "team"}}))
    kube.put(TRAINING_JOBS, {"metadata": {"name": "raced", "namespace": "team"},
                             "status": {"phase": "Running"}})  # the reconcile got there first
    fn = cast(Any, watch_handler(build_registry(config=OperatorConfig()),
                                 "trainingjob-queued").fn)
    await fn(body=stale, type="ADDED", memo=memo)  # a 409, swallowed
    stored = kube.stored(TRAINING_JOBS, "team", "raced")
    assert stored is not None and stored["status"] == {"phase": "Running"}


async def test_a_resume_is_queued_not_awaited_but_still_goes_first() -> None:
    """At a restart every object resumes at once: their handlers must not each hold an
    object body while they wait for a slot."""
    reconcile = GatedReconcile()
    memo, order, gate, runner = reconcile.memo, reconcile.order, reconcile.gate, \
        reconcile.runner
    for name, trigger in (("busy", Trigger.RESUME), ("child", Trigger.JOB),
                          ("resumed", Trigger.RESUME)):
        await handlers._guarded(reconcile, memo=memo, namespace="team", name=name,
                                trigger=trigger)
        await asyncio.sleep(0)  # let its task reach the slots
    assert runner.in_flight == 3  # every handler returned at once
    gate.set()
    await runner.drain()
    assert order == [("busy", "resume"), ("resumed", "resume"), ("child", "job")]
