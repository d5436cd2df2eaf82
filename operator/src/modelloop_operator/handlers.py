"""Every kopf registration of the operator, and nothing else.

Handlers are thin: find out which object to reconcile, call its reconciler, and map our
typed errors to kopf's (invalid spec -> permanent, waiting -> temporary with a delay).
They are registered into a registry built at startup by :func:`build_registry` rather
than at import time, so importing this module changes nothing and the resync interval
comes from the configuration.

Which events reconcile a TrainingJob (always the same idempotent reconcile):
* the object itself: create, spec/label change, operator resume;
* its children: any event of a Job or the end/disruption of a pod carrying
  ``modelloop.dev/trainingjob: <name>``;
* a resync timer while the job is unfinished (deadlines, missed events).

Lookups that used to list a namespace (who serves from this TrainingJob? is this job
finished?) read kopf indexes instead, kept current from the watches kopf already has
(bench/operator_scale.py: at 1,000 TrainingJobs and 500 ModelDeployments the lists made
every TrainingJob event cost O(ModelDeployments) and the operator fell behind for good).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Final

import kopf

from .builders.labels import MODEL_DEPLOYMENT, OPTIMIZATION_JOB, TRAINING_JOB
from .config import OperatorConfig
from .errors import ForbiddenError, InvalidSpecError, KubeError, WaitingError
from .kopf_settings import apply_kopf_settings
from .kube import KubeClient, Resource, shared_session
from .metrics import OperatorMetrics
from .reconcilers.gangjob import is_terminal_phase
from .reconcilers.modeldeployment import (
    DEPLOYMENTS,
    MODEL_DEPLOYMENTS,
    reconcile_model_deployment,
)
from .reconcilers.observe import DISRUPTION_TARGET
from .reconcilers.optimizationjob import (
    OPTIMIZATION_JOBS,
    reconcile_optimization_job,
)
from .reconcilers.runtime import Runtime
from .reconcilers.trainingjob import TRAINING_JOBS, reconcile_training_job
from .runner import Reconcile, ReconcileRunner, retry_delay
from .slots import ReconcileSlots, Trigger
from .status import queued_status

logger = logging.getLogger(__name__)

SourceKey = tuple[str, str, str]
"""(namespace, kind, name) of a TrainingJob or OptimizationJob that objects take their
model from: the key of the two source indexes below."""

OPTIMIZATION_JOBS_BY_SOURCE: Final = "optimizationjobs_by_source"
MODEL_DEPLOYMENTS_BY_SOURCE: Final = "modeldeployments_by_source"
"""kopf index ids (also the keyword under which kopf hands the index to handlers).

Who to wake up when a TrainingJob or OptimizationJob changes is looked up in kopf's
in-memory indexes, kept current from the watches kopf already has, instead of listing
every OptimizationJob and ModelDeployment of the namespace on each such event: at 1,000
TrainingJobs and 500 ModelDeployments those lists were O(N x M) and dominated the
operator's time (bench/operator_scale.py). kopf runs no handler until every index has
seen the initial listing, so a lookup never misses an object that existed at startup."""

FINISHED_TRAINING_JOBS: Final = "trainingjobs_finished"
FINISHED_OPTIMIZATION_JOBS: Final = "optimizationjobs_finished"
"""kopf indexes of the jobs whose phase is terminal, keyed (namespace, name).

At operator start kopf lists every Job and pod we own and hands each to the child
handlers as an event, on top of the resume reconcile it runs for every job itself. For a
finished job (sticky: nothing is ever recreated) that listing only repeats the resume
reconcile two or three times; skipping it cut the restart work of 1,000 finished
TrainingJobs by about two thirds. Real changes (``type`` set) always reconcile."""


async def _index_finished(namespace: str | None, name: str | None, status: Mapping[str, Any],
                          **_: Any) -> dict[tuple[str, str], bool] | None:
    """The index entry of a finished job; nothing for one still running."""
    if namespace and name and is_terminal_phase(status.get("phase")):
        return {(namespace, name): True}
    return None


def listed_child_of_finished_job(*, event_type: str | None, namespace: str | None,
                                 owner: str | None,
                                 finished: Mapping[tuple[str, str], Any]) -> bool:
    """Whether a child event is only the startup listing of a child whose owner has
    already finished: the owner's own resume reconcile covers it."""
    return event_type is None and bool(namespace and owner) and \
        (namespace, owner) in finished


_MODEL_SOURCE_FIELDS: Final = (("OptimizationJob", "optimizationJobRef"),
                               ("TrainingJob", "trainingJobRef"))


def model_deployment_source_keys(*, namespace: str | None,
                                 spec: Mapping[str, Any]) -> list[SourceKey]:
    """The jobs a ModelDeployment (raw spec) serves from; the same fields as
    ``reconcilers.modeldeployment.references``."""
    model = spec.get("model") or {}
    keys: list[SourceKey] = []
    for kind, field in _MODEL_SOURCE_FIELDS:
        ref = (model.get(field) or {}).get("name")
        if namespace and isinstance(ref, str) and ref:
            keys.append((namespace, kind, ref))
    return keys


def optimization_job_source_keys(*, namespace: str | None,
                                 spec: Mapping[str, Any]) -> list[SourceKey]:
    """The TrainingJob an OptimizationJob (raw spec) optimizes; the same field as
    ``reconcilers.optimizationjob.references_training_job``."""
    ref = ((spec.get("source") or {}).get("trainingJobRef") or {}).get("name")
    return [(namespace, "TrainingJob", ref)] if namespace and isinstance(ref, str) and ref \
        else []


def indexed(index: Mapping[SourceKey, Iterable[str]], key: SourceKey) -> list[str]:
    """The distinct names stored under ``key``, sorted (kopf keeps one value per object)."""
    return sorted(set(index.get(key, ())))


def _runtime(memo: kopf.Memo) -> Runtime:
    runtime = memo.get("runtime")
    if not isinstance(runtime, Runtime):
        raise kopf.TemporaryError("operator is still starting", delay=1)
    return runtime


IN_HANDLER_TRIGGERS: Final = frozenset({Trigger.CREATE, Trigger.UPDATE})
"""Triggers reconciled inside kopf's handler: kopf writes its annotations (diff base,
progress) when such a handler returns, so these stay paced by the reconcile slots."""

RECONCILE_RUNNER: Final = "reconcile_runner"
"""memo key of the :class:`ReconcileRunner` (made by the startup handler)."""

UNSTARTED_SLOTS: Final = 1024


def _runner(memo: kopf.Memo) -> ReconcileRunner:
    runner = memo.get(RECONCILE_RUNNER)
    if not isinstance(runner, ReconcileRunner):  # only before startup ran (unit tests)
        runner = memo[RECONCILE_RUNNER] = ReconcileRunner(
            runtime=_runtime(memo), slots=ReconcileSlots(UNSTARTED_SLOTS))
    return runner


async def _guarded(reconcile: Reconcile, *, memo: kopf.Memo, namespace: str | None,
                   name: str | None, trigger: Trigger) -> None:
    """Reconcile one object through the runner (:mod:`.runner`, :mod:`.slots`).

    A created or changed object is reconciled here and our errors become kopf's
    (permanent for an invalid spec, temporary with a delay while waiting or after a
    retryable API error), so kopf retries the handler. Anything else (a resume at
    startup, a child, a source, the resync) is queued in the background and the handler
    returns at once, freeing its event: a restart resumes every object at once, and
    1,500 resume handlers waiting for slots held 1,500 bodies (a resume still gets the
    first priority in :mod:`.slots`)."""
    if not namespace or not name:
        return
    runner = _runner(memo)
    if trigger not in IN_HANDLER_TRIGGERS:
        runner.submit(reconcile, namespace=namespace, name=name, trigger=trigger)
        return
    try:
        await runner.run(reconcile, namespace=namespace, name=name, trigger=trigger)
    except (InvalidSpecError, WaitingError, KubeError) as exc:
        # The background reconciles' retry policy (runner.retry_delay), carried out by kopf.
        delay = retry_delay(exc)
        if delay is None:
            raise kopf.PermanentError(str(exc)) from exc
        message = str(exc)
        if isinstance(exc, ForbiddenError):
            message += f"; retrying in {delay:g} s (check the operator's RBAC if this repeats)"
        raise kopf.TemporaryError(message, delay=delay) from exc


async def _reconcile_training_job(*, memo: kopf.Memo, namespace: str | None, name: str | None,
                                  trigger: Trigger) -> None:
    """Reconcile one TrainingJob and translate our errors into kopf's."""
    await _guarded(reconcile_training_job, memo=memo, namespace=namespace, name=name,
                   trigger=trigger)


def _pod_ended_or_disrupted(status: Mapping[str, Any], **_: Any) -> bool:
    """Pod events worth a reconcile: a pod finished, failed, or is being disrupted.
    (Start-up progress reaches us through the Job's own status.)"""
    if status.get("phase") in ("Succeeded", "Failed"):
        return True
    return any(c.get("type") == DISRUPTION_TARGET and c.get("status") == "True"
               for c in status.get("conditions") or [])


def _register_gang_children(*, registry: kopf.OperatorRegistry, kind: str, owner_label: str,
                            finished_index: str, reconcile: Reconcile) -> None:
    """The watches of a gang job's children, ids ``<kind>-job`` and ``<kind>-pod``: any
    event of a Job, and the end or disruption of a pod, carrying ``owner_label`` reconcile
    the owner; the startup listing of a finished owner's children does not (its resume
    reconcile covers them)."""
    for resource, child, when in ((("batch", "v1", "jobs"), Trigger.JOB, None),
                                  (("v1", "pods"), Trigger.POD, _pod_ended_or_disrupted)):
        kopf.on.event(*resource, labels={owner_label: kopf.PRESENT}, when=when,
                      id=f"{kind}-{child}", registry=registry)(
            _child_handler(owner_label=owner_label, finished_index=finished_index,
                           reconcile=reconcile, trigger=child))


def _child_handler(*, owner_label: str, finished_index: str, reconcile: Reconcile,
                   trigger: Trigger) -> Callable[..., Awaitable[None]]:
    async def child_changed(namespace: str | None, labels: Mapping[str, str],
                            memo: kopf.Memo, type: str | None, **kwargs: Any) -> None:
        owner = labels.get(owner_label)
        if listed_child_of_finished_job(event_type=type, namespace=namespace, owner=owner,
                                        finished=kwargs[finished_index]):
            return
        await _guarded(reconcile, memo=memo, namespace=namespace, name=owner, trigger=trigger)
    return child_changed


QUEUED_STATUS_CLIENT: Final = "queued_status_client"
"""memo key of the client the queued statuses are written with: connections of their own
(:data:`QUEUED_STATUS_CONNECTIONS`), so that 1,500 of them do not wait behind the
reconciles' requests for a connection (p99 3.8 s -> 14.6 s when they shared one pool)."""

QUEUED_STATUS_CONNECTIONS: Final = 24


def register_queued_status(*, registry: kopf.OperatorRegistry, kind: str,
                           resource: Resource) -> None:
    """``<kind>-queued``: an object seen without any status gets one at once
    (:func:`.status.queued_status`), before kopf's own bookkeeping and before its first
    reconcile waits for a slot. One request per new object, outside the reconcile
    slots: in a burst of new objects the first status is what users and Argo CD wait
    for, and the full reconciles (several requests each, children that set the cluster's
    controllers going) follow in order. Best effort: any failure, a conflict (someone
    wrote first) included, leaves the job to the first reconcile."""
    @kopf.on.event(resource.group, resource.version, resource.plural, id=f"{kind}-queued",
                   registry=registry)
    async def queued(body: Mapping[str, Any], type: str | None, memo: kopf.Memo,
                     **_: Any) -> None:
        meta = body.get("metadata") or {}
        if type == "DELETED" or body.get("status") or meta.get("deletionTimestamp"):
            return
        kube = memo.get(QUEUED_STATUS_CLIENT)
        if not isinstance(kube, KubeClient) or not meta.get("resourceVersion"):
            return
        try:
            await kube.merge_patch(
                resource=resource, namespace=meta.get("namespace"), name=meta.get("name", ""),
                subresource="status",
                patch={"metadata": {"resourceVersion": meta["resourceVersion"]},
                       "status": queued_status(now=datetime.now(UTC).replace(microsecond=0))})
        except KubeError as exc:
            logger.debug("no queued status for %s %s/%s: %s", resource.kind,
                         meta.get("namespace"), meta.get("name"), exc)


KOPF_CONNECTIONS: Final = 16
"""HTTP connections kopf keeps to the API server: its watches (one per watched kind)
and its own writes (finalizers, annotations, warning Events). kopf's own session has no
limit, and a burst of 1,500 new objects made it open hundreds of TLS connections at
once for their finalizers (each about half a MiB, and the API server answered many
with 429)."""


async def kopf_session(*, connections: int) -> kopf.AiohttpSession:
    """kopf's connection to the API server, built as our own client's
    (:func:`~modelloop_operator.kube.shared_session`; kopf's built-in logins need the
    sync ``kubernetes`` or ``pykube`` libraries), with at most ``connections``."""
    server, session = await shared_session(connections=connections)
    return kopf.AiohttpSession(server=server, aiohttp_session=session)


def _unfinished(status: Mapping[str, Any], **_: Any) -> bool:
    return not is_terminal_phase(status.get("phase"))


def build_registry(*, config: OperatorConfig) -> kopf.OperatorRegistry:
    """A registry with every handler of the operator.

    Handler ids are explicit: kopf stores progress under them in annotations
    (``modelloop.dev/trainingjob``), so they must stay stable and readable.
    """
    registry = kopf.OperatorRegistry()
    tj = (TRAINING_JOBS.group, TRAINING_JOBS.version, TRAINING_JOBS.plural)

    @kopf.on.startup(id="startup", registry=registry)
    async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
        apply_kopf_settings(settings=settings, config=config)
        metrics = OperatorMetrics()
        if config.metrics_port:
            metrics.serve(port=config.metrics_port)
        runtime = Runtime(config=config, metrics=metrics,
                          kube=await KubeClient.connect(connections=config.api_connections))
        memo["runtime"] = runtime
        memo[QUEUED_STATUS_CLIENT] = await KubeClient.connect(
            connections=QUEUED_STATUS_CONNECTIONS)
        memo[RECONCILE_RUNNER] = ReconcileRunner(
            runtime=runtime, slots=ReconcileSlots(config.max_concurrent_reconciles))

    @kopf.on.login(id="login", registry=registry)
    async def login(**_: Any) -> kopf.AiohttpSession:
        return await kopf_session(connections=KOPF_CONNECTIONS)

    @kopf.on.cleanup(id="cleanup", registry=registry)
    async def cleanup(memo: kopf.Memo, **_: Any) -> None:
        runner = memo.get(RECONCILE_RUNNER)
        if isinstance(runner, ReconcileRunner):
            await runner.close()
        for client in (memo.get(QUEUED_STATUS_CLIENT), getattr(memo.get("runtime"), "kube", None)):
            if isinstance(client, KubeClient):
                await client.close()

    @kopf.on.probe(id="now", registry=registry)
    def now(**_: Any) -> str:
        # Liveness means "the event loop still runs handlers", not "the API server is
        # up": an API outage must not make Kubernetes restart every operator replica.
        return datetime.now(UTC).isoformat()

    @kopf.on.resume(*tj, id="trainingjob-resume", registry=registry)
    @kopf.on.create(*tj, id="trainingjob-create", registry=registry)
    @kopf.on.update(*tj, id="trainingjob-update", registry=registry)
    async def training_job_changed(namespace: str | None, name: str | None, memo: kopf.Memo,
                                   reason: str, **_: Any) -> None:
        await _reconcile_training_job(memo=memo, namespace=namespace, name=name,
                                      trigger=Trigger.of_reason(reason))

    @kopf.timer(*tj, interval=config.resync_seconds, initial_delay=config.resync_seconds,
                when=_unfinished, id="trainingjob-resync", registry=registry)
    async def training_job_resync(namespace: str | None, name: str | None, memo: kopf.Memo,
                                  **_: Any) -> None:
        await _reconcile_training_job(memo=memo, namespace=namespace, name=name,
                                      trigger=Trigger.TIMER)

    kopf.index(*tj, id=FINISHED_TRAINING_JOBS, registry=registry)(_index_finished)
    register_queued_status(registry=registry, kind="trainingjob", resource=TRAINING_JOBS)

    _register_gang_children(registry=registry, kind="trainingjob", owner_label=TRAINING_JOB,
                            finished_index=FINISHED_TRAINING_JOBS,
                            reconcile=reconcile_training_job)

    register_optimization_jobs(registry=registry, config=config)
    register_model_deployments(registry=registry, config=config)
    return registry


# --- OptimizationJob and ModelDeployment ------------------------------------------------
# Same shape as the TrainingJob's: every trigger runs the same idempotent reconcile. Both
# kinds also listen to the objects they take their model from, so a source that finishes
# (or appears) is noticed at once rather than at the next resync.


def register_optimization_jobs(*, registry: kopf.OperatorRegistry,
                               config: OperatorConfig) -> None:
    """OptimizationJob: itself, its Job and pods, a timer while unfinished, and the
    TrainingJob it optimizes."""
    oj = (OPTIMIZATION_JOBS.group, OPTIMIZATION_JOBS.version, OPTIMIZATION_JOBS.plural)
    tj = (TRAINING_JOBS.group, TRAINING_JOBS.version, TRAINING_JOBS.plural)

    @kopf.on.resume(*oj, id="optimizationjob-resume", registry=registry)
    @kopf.on.create(*oj, id="optimizationjob-create", registry=registry)
    @kopf.on.update(*oj, id="optimizationjob-update", registry=registry)
    async def optimization_job_changed(namespace: str | None, name: str | None,
                                       memo: kopf.Memo, reason: str, **_: Any) -> None:
        await _guarded(reconcile_optimization_job, memo=memo, namespace=namespace, name=name,
                       trigger=Trigger.of_reason(reason))

    @kopf.timer(*oj, interval=config.resync_seconds, initial_delay=config.resync_seconds,
                when=_unfinished, id="optimizationjob-resync", registry=registry)
    async def optimization_job_resync(namespace: str | None, name: str | None,
                                      memo: kopf.Memo, **_: Any) -> None:
        await _guarded(reconcile_optimization_job, memo=memo, namespace=namespace, name=name,
                       trigger=Trigger.TIMER)

    kopf.index(*oj, id=FINISHED_OPTIMIZATION_JOBS, registry=registry)(_index_finished)
    register_queued_status(registry=registry, kind="optimizationjob",
                           resource=OPTIMIZATION_JOBS)

    _register_gang_children(registry=registry, kind="optimizationjob",
                            owner_label=OPTIMIZATION_JOB,
                            finished_index=FINISHED_OPTIMIZATION_JOBS,
                            reconcile=reconcile_optimization_job)

    @kopf.index(*oj, id=OPTIMIZATION_JOBS_BY_SOURCE, registry=registry)
    async def optimization_jobs_by_source(namespace: str | None, name: str | None,
                                          spec: Mapping[str, Any],
                                          **_: Any) -> dict[Any, str] | None:
        keys = optimization_job_source_keys(namespace=namespace, spec=spec)
        return dict.fromkeys(keys, name) if keys and name else None

    @kopf.on.event(*tj, id="optimizationjob-source", registry=registry)
    async def optimization_job_source(namespace: str | None, name: str | None,
                                      memo: kopf.Memo, **kwargs: Any) -> None:
        if not namespace or not name:
            return
        index: kopf.Index[SourceKey, str] = kwargs[OPTIMIZATION_JOBS_BY_SOURCE]
        for found in indexed(index, (namespace, "TrainingJob", name)):
            await _guarded(reconcile_optimization_job, memo=memo, namespace=namespace,
                           name=found, trigger=Trigger.SOURCE)


def register_model_deployments(*, registry: kopf.OperatorRegistry,
                               config: OperatorConfig) -> None:
    """ModelDeployment: itself, its Deployments, a resync timer (canary steps are timed),
    and the OptimizationJob or TrainingJob it serves."""
    md = (MODEL_DEPLOYMENTS.group, MODEL_DEPLOYMENTS.version, MODEL_DEPLOYMENTS.plural)

    @kopf.on.resume(*md, id="modeldeployment-resume", registry=registry)
    @kopf.on.create(*md, id="modeldeployment-create", registry=registry)
    @kopf.on.update(*md, id="modeldeployment-update", registry=registry)
    async def model_deployment_changed(namespace: str | None, name: str | None,
                                       memo: kopf.Memo, reason: str, **_: Any) -> None:
        await _guarded(reconcile_model_deployment, memo=memo, namespace=namespace, name=name,
                       trigger=Trigger.of_reason(reason))

    @kopf.timer(*md, interval=config.resync_seconds, initial_delay=config.resync_seconds,
                id="modeldeployment-resync", registry=registry)
    async def model_deployment_resync(namespace: str | None, name: str | None,
                                      memo: kopf.Memo, **_: Any) -> None:
        await _guarded(reconcile_model_deployment, memo=memo, namespace=namespace, name=name,
                       trigger=Trigger.TIMER)

    register_queued_status(registry=registry, kind="modeldeployment",
                           resource=MODEL_DEPLOYMENTS)

    @kopf.on.event(DEPLOYMENTS.group, DEPLOYMENTS.version, DEPLOYMENTS.plural,
                   labels={MODEL_DEPLOYMENT: kopf.PRESENT}, id="modeldeployment-deployment",
                   registry=registry)
    async def model_deployment_child(namespace: str | None, labels: Mapping[str, str],
                                     memo: kopf.Memo, **_: Any) -> None:
        await _guarded(reconcile_model_deployment, memo=memo, namespace=namespace,
                       name=labels.get(MODEL_DEPLOYMENT), trigger=Trigger.DEPLOYMENT)

    @kopf.index(*md, id=MODEL_DEPLOYMENTS_BY_SOURCE, registry=registry)
    async def model_deployments_by_source(namespace: str | None, name: str | None,
                                          spec: Mapping[str, Any],
                                          **_: Any) -> dict[Any, str] | None:
        keys = model_deployment_source_keys(namespace=namespace, spec=spec)
        return dict.fromkeys(keys, name) if keys and name else None

    for kind, resource in (("OptimizationJob", OPTIMIZATION_JOBS),
                           ("TrainingJob", TRAINING_JOBS)):
        _register_model_source(registry=registry, kind=kind,
                               resource=(resource.group, resource.version, resource.plural))


def _register_model_source(*, registry: kopf.OperatorRegistry, kind: str,
                           resource: tuple[str, str, str]) -> None:
    @kopf.on.event(*resource, id=f"modeldeployment-source-{kind.lower()}", registry=registry)
    async def model_deployment_source(namespace: str | None, name: str | None,
                                      labels: Mapping[str, str], memo: kopf.Memo,
                                      **kwargs: Any) -> None:
        if not namespace or not name:
            return
        index: kopf.Index[SourceKey, str] = kwargs[MODEL_DEPLOYMENTS_BY_SOURCE]
        found = indexed(index, (namespace, kind, name))
        # A retrain's jobs carry their ModelDeployment's label: its loop moves on at once
        # (optimize, promote) instead of at the next resync.
        retrained = labels.get(MODEL_DEPLOYMENT)
        for target in [*found, *([retrained] if retrained and retrained not in found else [])]:
            await _guarded(reconcile_model_deployment, memo=memo, namespace=namespace,
                           name=target, trigger=Trigger.SOURCE)
