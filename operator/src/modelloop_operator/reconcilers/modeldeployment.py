"""The ModelDeployment reconciler: resolve the model, decide the rollout, apply the
children, write status. One level-based pass, safe to repeat:

1. **snapshot** - the object, the OptimizationJob or TrainingJob it names, both Deployments;
2. **decide** - source (:mod:`.sources`) and rollout state (:mod:`.rollout`), pure;
3. **children** - server-side apply of ConfigMap(s), Deployment(s), the two Services and
   the HPA; the canary's pair and a dropped HPA are deleted. A child that status says
   was there and is missing was deleted by hand: it is recreated, with a Warning Event
   ``ChildrenDeleted`` (docs/operator.md, "Children deleted by hand");
4. **status** - computed by :mod:`.deployment_status`, patched only when it changed, with
   an Event when the phase or the rollout phase changes.

The spec is never written (GitOps): what the operator decided (the model served, the
canary's step) lives in status. Time-based canary steps advance on the resync timer, so
a step is held for ``canary.interval`` plus at most one resync interval.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from pydantic import ValidationError

from ..api import describe_validation_error
from ..api.capture import CaptureStatus
from ..api.meta import API_VERSION, GROUP, VERSION
from ..api.modeldeployment import (
    MODELDEPLOYMENT_KIND,
    ModelDeploymentSpec,
    ModelDeploymentStatus,
    ServedModel,
)
from ..api.optimizationjob import OPTIMIZATIONJOB_KIND
from ..api.trainingjob import TRAININGJOB_KIND
from ..builders.collector import build_service as build_feedback_service
from ..builders.collector import build_statefulset as build_collector
from ..builders.collector import feedback_url
from ..builders.job import Owner
from ..builders.serving import (
    ModelRef,
    ServingContext,
    Track,
    build_autoscaler,
    build_config_map,
    build_deployment,
    build_inference_service,
    build_metrics_service,
    collector_name,
    config_map_name,
    deployment_name,
    feedback_service_name,
    service_url,
    split_replicas,
)
from ..errors import ConflictError, UnprocessableError, WaitingError
from ..kube import SERVICES, KubeClient, Object, Resource
from ..status import Reason, merge_patch
from .deployment_status import (
    ServingObservation,
    invalid_spec_status,
    observe_deployment,
    serving_status,
)
from .gangjob import controlled_by
from .monitoring import canary_verdict, loop_status, post_loop_events, run_loop
from .rollout import (
    RolloutInputs,
    RolloutPhase,
    RolloutState,
    approved_step,
    decide_rollout,
    finish_promotion,
    from_status,
    step_weight,
    to_status,
)
from .runtime import Runtime
from .sources import resolve_served_model

logger = logging.getLogger(__name__)

MODEL_DEPLOYMENTS: Final = Resource(GROUP, VERSION, MODELDEPLOYMENT_KIND.plural,
                                    MODELDEPLOYMENT_KIND.kind)
OPTIMIZATION_JOBS: Final = Resource(GROUP, VERSION, OPTIMIZATIONJOB_KIND.plural,
                                    OPTIMIZATIONJOB_KIND.kind)
TRAINING_JOBS: Final = Resource(GROUP, VERSION, TRAININGJOB_KIND.plural, TRAININGJOB_KIND.kind)
DEPLOYMENTS: Final = Resource("apps", "v1", "deployments", "Deployment")
STATEFULSETS: Final = Resource("apps", "v1", "statefulsets", "StatefulSet")
CONFIG_MAPS: Final = Resource("", "v1", "configmaps", "ConfigMap")
AUTOSCALERS: Final = Resource("autoscaling", "v2", "horizontalpodautoscalers",
                              "HorizontalPodAutoscaler")
KIND: Final = MODELDEPLOYMENT_KIND.kind
STATUS_WRITE_ATTEMPTS: Final = 5
"""Status patches per pass when only metadata moved under it (see ``_write_status``)."""


def _utcnow() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _read_status(raw: object) -> ModelDeploymentStatus:
    try:
        return ModelDeploymentStatus.model_validate(raw or {})
    except ValidationError as exc:
        logger.warning("unreadable ModelDeployment status, starting afresh: %s", exc)
        return ModelDeploymentStatus()


def model_ref(model: ServedModel) -> ModelRef:
    """What the builders need of a served model."""
    assert model.archive_uri is not None  # every resolved model has one
    return ModelRef(uri=model.archive_uri, version=model.version or "unknown",
                    checksum=model.checksum)


def references(obj: Mapping[str, Any], *, kind: str, name: str) -> bool:
    """Whether a ModelDeployment (raw) serves from ``kind``/``name``: who to wake up when
    an OptimizationJob or TrainingJob changes."""
    model = (obj.get("spec") or {}).get("model") or {}
    key = {"OptimizationJob": "optimizationJobRef", "TrainingJob": "trainingJobRef"}[kind]
    return bool((model.get(key) or {}).get("name") == name)


async def reconcile_model_deployment(*, runtime: Runtime, namespace: str, name: str,
                                     trigger: str) -> str | None:
    """One pass over a ModelDeployment. Returns its phase (None when it is gone)."""
    key = f"{KIND}/{namespace}/{name}"
    async with runtime.locks.hold(key):
        with runtime.metrics.reconciling(kind=KIND, trigger=trigger):
            obj = await runtime.kube.get(resource=MODEL_DEPLOYMENTS, namespace=namespace,
                                         name=name)
            if obj is None or obj["metadata"].get("deletionTimestamp"):
                runtime.metrics.set_phase(kind=KIND, key=key, phase=None)
                return None
            phase = await _reconcile(runtime=runtime, obj=obj, now=_utcnow())
            runtime.metrics.set_phase(kind=KIND, key=key, phase=phase)
            return phase


async def _referenced(kube: KubeClient, *, spec: ModelDeploymentSpec,
                      namespace: str) -> Object | None:
    source = spec.model
    if source.optimization_job_ref is not None:
        return await kube.get(resource=OPTIMIZATION_JOBS, namespace=namespace,
                              name=source.optimization_job_ref.name)
    if source.training_job_ref is not None:
        return await kube.get(resource=TRAINING_JOBS, namespace=namespace,
                              name=source.training_job_ref.name)
    return None


async def _reconcile(*, runtime: Runtime, obj: dict[str, Any], now: datetime) -> str:
    kube = runtime.kube
    meta = obj["metadata"]
    namespace, name, generation = meta["namespace"], meta["name"], meta.get("generation")
    old = _read_status(obj.get("status"))
    try:
        spec = ModelDeploymentSpec.model_validate(obj.get("spec") or {})
    except ValidationError as exc:
        problem = describe_validation_error(exc, prefix="spec")
        new = invalid_spec_status(old=old, problem=problem, generation=generation, now=now)
        await _write_status(kube=kube, obj=obj, old=old, new=new)
        return new.phase.value if new.phase else "Failed"

    owner = Owner(api_version=API_VERSION, kind=KIND, name=name, namespace=namespace,
                  uid=meta["uid"])
    ctx = ServingContext(owner=owner, spec=spec, default_image=runtime.config.server_image,
                         init_image=runtime.config.trainer_image,
                         default_cpu=runtime.config.default_cpu,
                         default_memory=runtime.config.default_memory)
    source = resolve_served_model(source=spec.model,
                                  referenced=await _referenced(kube, spec=spec,
                                                               namespace=namespace))
    stable_obj = await kube.get(resource=DEPLOYMENTS, namespace=namespace,
                                name=deployment_name(name=name, track=Track.STABLE))
    canary_obj = await kube.get(resource=DEPLOYMENTS, namespace=namespace,
                                name=deployment_name(name=name, track=Track.CANARY))
    stable_seen, canary_seen = observe_deployment(stable_obj), observe_deployment(canary_obj)
    # Monitoring and retraining (reconcilers/monitoring.py): a promoted retrain is served
    # instead of spec.model until the spec's model changes.
    loop = await run_loop(kube=kube, owner=owner, spec=spec, old=old,
                          annotations=meta.get("annotations") or {},
                          spec_model=source.served, now=now)
    for reason in loop.retrain.started:  # counted here, the pass that created them
        runtime.metrics.retrain_started(namespace=namespace, reason=reason)

    steps = spec.rollout.canary.steps if spec.rollout.canary is not None else []
    state = from_status(active=old.active_model, rollout=old.rollout, steps=steps)
    verdict, verdict_reason = await canary_verdict(spec=spec, state=state, owner=owner, now=now)
    analysis = bool(spec.rollout.canary is not None and spec.rollout.canary.analysis
                    and spec.monitoring is not None)
    inputs = RolloutInputs(desired=loop.promoted or source.served,
                           strategy=spec.rollout.strategy,
                           canary=spec.rollout.canary, analysis=analysis,
                           approved=approved_step(meta.get("annotations") or {}),
                           verdict=verdict, verdict_reason=verdict_reason)
    if state.phase is RolloutPhase.PROMOTING and state.canary is not None:
        promoted = (stable_seen.model_uri == state.canary.archive_uri
                    and stable_seen.rolled_out)
        state = finish_promotion(state, stable_rolled_out=promoted)
    state = decide_rollout(state, inputs=inputs, now=now)

    collector: Object | None = None
    if state.stable is not None:
        try:
            recreated, collector = await _apply_children(
                kube=kube, ctx=ctx, state=state, stable_seen=stable_obj, uid=meta["uid"],
                seen=children_seen(old=old, generation=generation),
                reads={(DEPLOYMENTS.plural, deployment_name(name=name, track=track)): read
                       for track, read in ((Track.STABLE, stable_obj),
                                           (Track.CANARY, canary_obj))})
        except UnprocessableError as exc:
            # A validation the schema cannot express, or an admission policy: only a
            # change of the spec (or the policy) helps, and status must say so. The
            # next pass (spec change or resync) applies again.
            new = invalid_spec_status(
                old=old, problem=f"the API server refused a child of this deployment: {exc}",
                generation=generation, now=now)
            await _write_status(kube=kube, obj=obj, old=old, new=new)
            return new.phase.value if new.phase else "Failed"
        await _report_recreated(kube, involved=obj, recreated=recreated)
    obs = ServingObservation(
        source=source, state=state, strategy=spec.rollout.strategy,
        stable=stable_seen, canary=canary_seen if state.canary is not None else
        observe_deployment(None),
        url=service_url(name=name, namespace=namespace),
        rollout=to_status(state, strategy=spec.rollout.strategy, steps=steps))
    new = serving_status(old=old, obs=obs, generation=generation, now=now)
    new = loop_status(new, old=old, loop=loop, spec=spec, generation=generation, now=now)
    new = new.model_copy(update={"capture": capture_status(
        spec=spec, name=name, namespace=namespace, collector=collector,
        old=old.capture if state.stable is None else None)})
    await _write_status(kube=kube, obj=obj, old=old, new=new)
    await post_loop_events(kube, involved=obj, events=loop.events)
    return new.phase.value if new.phase else "Pending"


def _replicas(*, spec: ModelDeploymentSpec, state: RolloutState,
              stable_obj: Mapping[str, Any] | None) -> tuple[int | None, int]:
    """(stable replicas or None when the autoscaler owns them, canary replicas)."""
    autoscaled = spec.autoscaling is not None
    if autoscaled:
        assert spec.autoscaling is not None
        current = (stable_obj or {}).get("spec", {}).get("replicas")
        total = current if isinstance(current, int) and current > 0 else \
            spec.autoscaling.min_replicas
    else:
        total = spec.replicas
    steps = spec.rollout.canary.steps if spec.rollout.canary is not None else []
    if state.phase is RolloutPhase.PROGRESSING:
        stable, canary = split_replicas(total=total, weight=step_weight(steps, state.step))
    elif state.phase is RolloutPhase.PROMOTING:
        last = steps[-1].weight if steps else 100
        stable, canary = total, split_replicas(total=total, weight=last)[1]
    else:
        stable, canary = total, 0
    return (None if autoscaled else stable), canary


Reads = Mapping[tuple[str, str], Object | None]
"""Children this reconcile has already read, by (plural, name): not read twice."""


async def _read(kube: KubeClient, *, resource: Resource, namespace: str, name: str,
                reads: Reads) -> Object | None:
    if (resource.plural, name) in reads:
        return reads[(resource.plural, name)]
    return await kube.get(resource=resource, namespace=namespace, name=name)


async def _apply_owned(*, kube: KubeClient, resource: Resource, manifest: Mapping[str, Any],
                       uid: str, reads: Reads) -> tuple[bool, Object]:
    """Apply a child, refusing to take over an object someone else created. Returns
    whether the child was missing (so this apply created it), and the object applied."""
    meta = manifest["metadata"]
    existing = await _read(kube, resource=resource, namespace=meta["namespace"],
                           name=meta["name"], reads=reads)
    if existing is not None and not controlled_by(existing, uid):
        raise WaitingError(
            f"{resource.kind} {meta['namespace']}/{meta['name']} exists and is not owned by "
            f"this ModelDeployment; rename or delete it", delay=30)
    applied = await kube.apply(resource=resource, manifest=manifest)
    return existing is None, applied


async def _delete_owned(*, kube: KubeClient, resource: Resource, namespace: str, name: str,
                        uid: str, reads: Reads) -> None:
    existing = await _read(kube, resource=resource, namespace=namespace, name=name,
                           reads=reads)
    if existing is not None and controlled_by(existing, uid):
        await kube.delete(resource=resource, namespace=namespace, name=name)


@dataclass(frozen=True)
class ChildrenSeen:
    """What the last recorded status says about the children: which ones must exist
    already, so that a missing one was deleted behind our back rather than never made."""

    serving: bool
    """Status records a served model: the stable ConfigMap and Deployment and both
    Services were applied before it was written."""
    autoscaler: bool
    """...and the autoscaler too (the spec asking for one was already observed)."""
    capture: bool = False
    """...and the capture collector (status records it)."""


def children_seen(*, old: ModelDeploymentStatus, generation: int | None) -> ChildrenSeen:
    """Children status vouches for (pure): status is written only after they were
    applied, so what it records was there at the last reconcile."""
    serving = old.active_model is not None
    return ChildrenSeen(serving=serving,
                        autoscaler=serving and old.observed_generation == generation,
                        capture=serving and old.capture is not None)


def capture_status(*, spec: ModelDeploymentSpec, name: str, namespace: str,
                   collector: Object | None, old: CaptureStatus | None) -> CaptureStatus | None:
    """``status.capture`` (pure): where feedback goes and whether the collector is ready;
    ``old`` is kept while nothing was applied this pass."""
    if spec.capture is None:
        return None
    if collector is None:
        return old
    ready = int(((collector.get("status") or {}).get("readyReplicas")) or 0) >= 1
    return CaptureStatus(feedback_url=feedback_url(name=name, namespace=namespace),
                         sink=spec.capture.sink, ready=ready)


async def _apply_children(*, kube: KubeClient, ctx: ServingContext, state: RolloutState,
                          stable_seen: Mapping[str, Any] | None, uid: str,
                          seen: ChildrenSeen, reads: Reads) -> tuple[list[str], Object | None]:
    """Apply every child; returns the ones that had been there and were missing (deleted
    by hand: recreated now, and worth an Event), and the collector as applied. The
    canary's come and go with the rollout, so only the always-present children are
    counted."""
    assert state.stable is not None
    spec, name, ns = ctx.spec, ctx.owner.name, ctx.owner.namespace
    promoting = state.phase is RolloutPhase.PROMOTING and state.canary is not None
    stable_model = model_ref(state.canary if promoting and state.canary else state.stable)
    stable_replicas, canary_replicas = _replicas(spec=spec, state=state, stable_obj=stable_seen)
    recreated: list[str] = []

    async def apply(resource: Resource, manifest: Mapping[str, Any], *,
                    expected: bool) -> Object:
        created, applied = await _apply_owned(kube=kube, resource=resource, uid=uid,
                                              manifest=manifest, reads=reads)
        if created and expected:
            recreated.append(f"{resource.kind} {manifest['metadata']['name']}")
        return applied

    await apply(CONFIG_MAPS, build_config_map(ctx=ctx, track=Track.STABLE, model=stable_model),
                expected=seen.serving)
    await apply(DEPLOYMENTS, build_deployment(ctx=ctx, track=Track.STABLE, model=stable_model,
                                              replicas=stable_replicas),
                expected=seen.serving)
    if state.canary is not None and state.phase in (RolloutPhase.PROGRESSING,
                                                    RolloutPhase.PROMOTING):
        canary_model = model_ref(state.canary)
        await apply(CONFIG_MAPS, build_config_map(ctx=ctx, track=Track.CANARY,
                                                  model=canary_model), expected=False)
        await apply(DEPLOYMENTS, build_deployment(ctx=ctx, track=Track.CANARY,
                                                  model=canary_model,
                                                  replicas=canary_replicas), expected=False)
    else:
        await _delete_owned(kube=kube, resource=DEPLOYMENTS, namespace=ns, uid=uid,
                            name=deployment_name(name=name, track=Track.CANARY), reads=reads)
        await _delete_owned(kube=kube, resource=CONFIG_MAPS, namespace=ns, uid=uid,
                            name=config_map_name(name=name, track=Track.CANARY), reads=reads)
    await apply(SERVICES, build_inference_service(ctx=ctx), expected=seen.serving)
    await apply(SERVICES, build_metrics_service(ctx=ctx), expected=seen.serving)
    autoscaler = build_autoscaler(ctx=ctx)
    if autoscaler is not None:
        await apply(AUTOSCALERS, autoscaler, expected=seen.autoscaler)
    else:
        await _delete_owned(kube=kube, resource=AUTOSCALERS, namespace=ns, name=name, uid=uid,
                            reads=reads)
    collector: Object | None = None
    if spec.capture is not None:
        await apply(SERVICES, build_feedback_service(ctx=ctx), expected=seen.capture)
        collector = await apply(STATEFULSETS, build_collector(ctx=ctx, capture=spec.capture),
                                expected=seen.capture)
    elif seen.capture:  # capture was switched off: the sink keeps what was written
        await _delete_owned(kube=kube, resource=STATEFULSETS, namespace=ns, uid=uid,
                            name=collector_name(name=name), reads=reads)
        await _delete_owned(kube=kube, resource=SERVICES, namespace=ns, uid=uid,
                            name=feedback_service_name(name=name), reads=reads)
    return recreated, collector


async def _report_recreated(kube: KubeClient, *, involved: Mapping[str, Any],
                            recreated: list[str]) -> None:
    """A Warning Event naming the children that were deleted by hand and recreated."""
    if not recreated:
        return
    meta = involved["metadata"]
    message = (f"recreated {', '.join(recreated)}: deleted behind the operator's back "
               f"(children follow the ModelDeployment; change its spec instead)")
    logger.warning("%s/%s: %s", meta["namespace"], meta["name"], message)
    await kube.post_event(involved=involved, type_="Warning", reason=Reason.CHILDREN_DELETED,
                          message=message)


def _rollout_phase(status: ModelDeploymentStatus) -> str | None:
    return status.rollout.message if status.rollout is not None else None


async def _write_status(*, kube: KubeClient, obj: Mapping[str, Any],
                        old: ModelDeploymentStatus, new: ModelDeploymentStatus) -> None:
    """Patch status when it changed (guarded by resourceVersion); an Event when the phase
    or the rollout changed, so ``kubectl describe`` tells the story."""
    before = obj.get("status") or {}
    after = new.model_dump(mode="json", exclude_none=True)
    patch = merge_patch(before, after)
    if not patch:
        return
    meta = obj["metadata"]
    version = meta["resourceVersion"]
    for attempt in range(STATUS_WRITE_ATTEMPTS):
        try:
            await kube.merge_patch(
                resource=MODEL_DEPLOYMENTS, namespace=meta["namespace"], name=meta["name"],
                subresource="status",
                patch={"metadata": {"resourceVersion": version}, "status": patch})
            break
        except ConflictError:
            # Only a new spec or someone else's status makes this pass stale. Labels and
            # annotations written by others (Argo CD, kubectl label) move resourceVersion
            # too, and a pass takes several requests: redoing it lost every race while
            # such a writer kept going (tests/cluster/test_faults_controlplane.py). Send
            # the same patch against the new version instead.
            current = await kube.get(resource=MODEL_DEPLOYMENTS, namespace=meta["namespace"],
                                     name=meta["name"])
            if (attempt == STATUS_WRITE_ATTEMPTS - 1 or current is None
                    or current["metadata"].get("generation") != meta.get("generation")
                    or (current.get("status") or {}) != before):
                raise
            version = current["metadata"]["resourceVersion"]
    if old.phase != new.phase or _rollout_phase(old) != _rollout_phase(new):
        warning = new.phase is not None and new.phase.value in ("Degraded", "Failed")
        reason = new.phase.value if new.phase is not None else "Pending"
        message = (new.rollout.message if new.rollout is not None and new.rollout.message
                   else new.message) or reason
        await kube.post_event(involved=obj, type_="Warning" if warning else "Normal",
                              reason=reason, message=message)



async def model_deployments_using(kube: KubeClient, *, namespace: str, kind: str,
                                  name: str) -> list[str]:
    """Names of the ModelDeployments in ``namespace`` serving from ``kind``/``name``."""
    found = await kube.list(resource=MODEL_DEPLOYMENTS, namespace=namespace, labels={})
    return [o["metadata"]["name"] for o in found if references(o, kind=kind, name=name)]
