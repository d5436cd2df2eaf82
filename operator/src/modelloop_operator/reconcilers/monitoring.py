"""The monitoring half of a ModelDeployment reconcile: evaluate the checks on Prometheus
when an interval has passed, drive the retrains, judge a canary's step, and fold all of it
into the status the serving half computed.

The ModelDeployment reconciler calls three things, in this order:

1. :func:`run_loop` before deciding the rollout: analysis (when due), retrains, and the
   model a promotion serves (``LoopOutcome.promoted``, used instead of ``spec.model``);
2. :func:`canary_verdict` for the rollout seam (:func:`.rollout.apply_verdict`): each
   canary step is held ``canary.interval``, then the canary pods' checks pass (advance),
   fail (roll back; stable keeps serving) or are inconclusive (hold and ask again);
3. :func:`loop_status` on the computed status: ``analysis``, ``retrain``,
   ``candidateModel``, and the ``Degraded`` / ``Retraining`` conditions.

Evaluations are paced by ``status.analysis.time`` (so a restart does not re-evaluate early)
and happen on the reconcile timer, so their real period is ``interval`` rounded up to the
operator's resync period.

An analysis judges one model, the one in ``status.activeModel``. Two rules keep it so:

* **a promotion starts the count over**: failures counted against the model on its way out
  say nothing about the promoted one, so its ``consecutiveFailures`` restart at 0, the
  deployment leaves ``Degraded`` at once (reason ``ModelPromoted``) and reads
  ``Progressing`` until the new model's first Healthy evaluation;
* **no verdict on a mix of models**: while pods of the stable track still serve another
  model (the rolling update after a promotion or a Git change, or a canary's promotion),
  their series would be judged as the new model's; the evaluation is Inconclusive instead
  (the count stays where it is) until the old pods are gone.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from ..api.common import ConditionStatus, parse_duration
from ..api.modeldeployment import (
    CanarySpec,
    ModelDeploymentPhase,
    ModelDeploymentSpec,
    ModelDeploymentStatus,
    ServedModel,
)
from ..api.monitoring import (
    AnalysisStatus,
    Bounds,
    CheckResult,
    CheckStatus,
    MonitoringSpec,
    RetrainOutcome,
)
from ..builders.job import Owner
from ..builders.serving import (
    MODEL_URI_ANNOTATION,
    Track,
    collector_pod_name,
    deployment_name,
    label_value,
    track_selector,
)
from ..kube import PODS, KubeClient
from ..monitor.analysis import (
    Observation,
    analysis_due,
    degraded_message,
    evaluate_checks,
    is_degraded,
    next_analysis,
    overall_result,
    summary,
    versus_stable,
)
from ..monitor.builtin_checks import (
    ACCURACY,
    ACCURACY_VS_STABLE,
    CheckQuery,
    builtin_query,
    check_queries,
    feedback_selector,
    labelled_count_query,
    pod_selector,
    render,
)
from ..prometheus import PrometheusClient, PrometheusError
from ..status import ConditionType, get_condition, set_condition
from .retrain import LoopEvent, RetrainProgress, drive_retrains
from .retrain_runs import serving_since
from .rollout import RolloutPhase, RolloutState, Verdict, same_model, step_due

RETRAINING: Final = "Retraining"
"""Condition type: a retrain is in flight (or waiting for approval)."""
logger = logging.getLogger(__name__)


class LoopReason:
    """Reasons of the conditions and Events this module writes."""

    ANALYSIS_FAILED: Final = "AnalysisFailed"
    ANALYSIS_RECOVERED: Final = "AnalysisRecovered"
    ANALYSIS_INCONCLUSIVE: Final = "AnalysisInconclusive"
    FAILURE_LIMIT_REACHED: Final = "FailureLimitReached"
    MODEL_PROMOTED: Final = "ModelPromoted"
    EVALUATING: Final = "EvaluatingPromotedModel"
    RETRAIN_RUNNING: Final = "RetrainRunning"
    AWAITING_PROMOTION: Final = "AwaitingPromotion"
    IDLE: Final = "Idle"


@dataclass(frozen=True)
class LoopOutcome:
    """What the monitoring loop decided in one pass."""

    analysis: AnalysisStatus | None
    retrain: RetrainProgress
    degraded: bool
    events: tuple[LoopEvent, ...] = field(default_factory=tuple)
    promotion: str = ""
    """Set on the pass that promotes a model other than the one served: what replaced what
    (the failure count was restarted for it)."""

    @property
    def promoted(self) -> ServedModel | None:
        """The model to serve instead of ``spec.model`` (after a promotion)."""
        return self.retrain.promoted


async def observe_checks(url: str, checks: Sequence[CheckQuery]) -> dict[str, Observation]:
    """Ask Prometheus every check's value and sample count. Once the server is found
    unreachable, the remaining checks get the same error instead of waiting on it again."""
    out: dict[str, Observation] = {}
    async with PrometheusClient.open(url) as prometheus:
        unreachable = ""
        for check in checks:
            if unreachable:
                out[check.name] = Observation(error=unreachable)
                continue
            try:
                out[check.name] = Observation(
                    value=await prometheus.value(check.query),
                    samples=await prometheus.value(check.samples_query))
            except PrometheusError as exc:
                out[check.name] = Observation(error=str(exc))
                if "unreachable" in str(exc):
                    unreachable = str(exc)
    return out


def model_feedback(owner: Owner, model: ServedModel | None) -> str:
    """``$feedback`` for the labelled predictions of ``model`` (its version's label value,
    as the servers report it)."""
    return feedback_selector(namespace=owner.namespace,
                             collector_pod=collector_pod_name(name=owner.name),
                             version=label_value(model.version or "unknown") if model is not None
                             else None)


async def evaluate(monitoring: MonitoringSpec, *, selector: str, feedback: str,
                   old: AnalysisStatus | None, now: datetime) -> AnalysisStatus:
    """One evaluation of every check over the pods ``selector`` picks (and the feedback
    on the model ``feedback`` picks)."""
    queries = check_queries(monitoring, selector=selector, feedback=feedback)
    observed = await observe_checks(str(monitoring.prometheus_url), queries)
    return next_analysis(old, checks=evaluate_checks(queries, observed, spec=monitoring),
                         now=now)


async def pods_serving_another_model(kube: KubeClient, *, owner: Owner,
                                     active: ServedModel | None) -> list[str]:
    """Names of the stable track's live pods whose model is not ``active`` (by the model
    annotation every serving pod carries): a rollout between two models is under way."""
    if active is None or active.archive_uri is None:
        return []
    pods = await kube.list(resource=PODS, namespace=owner.namespace,
                           labels=track_selector(owner, Track.STABLE))
    return sorted(p["metadata"]["name"] for p in pods
                  if (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
                  and (p["metadata"].get("annotations") or {}).get(MODEL_URI_ANNOTATION)
                  != active.archive_uri)


def held_analysis(monitoring: MonitoringSpec, *, old: AnalysisStatus | None,
                  pods: Sequence[str], active: ServedModel, now: datetime) -> AnalysisStatus:
    """The evaluation while ``pods`` still serve another model: every check Inconclusive,
    so the failure count stays where it is (pure)."""
    shown = ", ".join(pods[:3]) + (f" and {len(pods) - 3} more" if len(pods) > 3 else "")
    message = (f"not evaluated: {shown} still serve(s) another model than "
               f"{active.version}; waiting for the rollout")[:1024]
    checks = [CheckStatus(name=q.name, result=CheckResult.INCONCLUSIVE, min=q.bounds.min,
                          max=q.bounds.max, message=message)
              for q in check_queries(monitoring, selector="")]
    return next_analysis(old, checks=checks, now=now)


def promotion_replaces(promoted: ServedModel | None, active: ServedModel | None) -> str:
    """What a promotion replaces ("" when it serves what is already served)."""
    if promoted is None or (active is not None and same_model(promoted, active)):
        return ""
    was = active.version if active is not None else "nothing"
    return f"promoted {promoted.version} (replacing {was})"


def _analysis_events(old: AnalysisStatus | None, new: AnalysisStatus, *,
                     failure_limit: int) -> list[LoopEvent]:
    """Events when the result or the Degraded verdict changes (not every evaluation)."""
    events = []
    before = old.result if old is not None else None
    if new.result is not before:
        reason = {CheckResult.UNHEALTHY: LoopReason.ANALYSIS_FAILED,
                  CheckResult.HEALTHY: LoopReason.ANALYSIS_RECOVERED}.get(
            new.result or CheckResult.INCONCLUSIVE, LoopReason.ANALYSIS_INCONCLUSIVE)
        warning = new.result is not CheckResult.HEALTHY
        events.append(LoopEvent("Warning" if warning else "Normal", reason, summary(new)))
    was = is_degraded(old, failure_limit=failure_limit)
    now_degraded = is_degraded(new, failure_limit=failure_limit)
    if now_degraded and not was:
        events.append(LoopEvent("Warning", LoopReason.FAILURE_LIMIT_REACHED,
                                degraded_message(new)))
    return events


def git_rollout_pending(*, spec_model: ServedModel | None,
                        old: ModelDeploymentStatus) -> bool:
    """Whether the spec asks for a model other than the one serving, and the one serving
    is not a promoted retrain: a Git change of the model is on its way. Failures counted
    against the model on its way out say nothing about the new one, so the count starts
    over (and no retrain is triggered on the old model's account). With a rolling update
    ``activeModel`` names the new model from the next pass on, so this is a one-time
    restart; during a canary it holds until promotion, and the canary's own analysis
    judges the new model meanwhile."""
    active = old.active_model
    if spec_model is None or active is None or same_model(spec_model, active):
        return False
    history = old.retrain.history if old.retrain is not None else []
    return not any(r.outcome is RetrainOutcome.PROMOTED
                   and active.version in (r.training_job, r.optimization_job)
                   for r in history)


async def run_loop(*, kube: KubeClient, owner: Owner, spec: ModelDeploymentSpec,
                   old: ModelDeploymentStatus, annotations: Mapping[str, str],
                   spec_model: ServedModel | None, now: datetime) -> LoopOutcome:
    """Analysis (when due) and retrains, for one reconcile of a ModelDeployment.
    ``spec_model``: the model ``spec.model`` resolves to (None while not ready).

    A retrain needs fresh evidence: the deployment Degraded *and* the latest evaluation
    Unhealthy, so an Inconclusive stretch (a new pod's empty drift window, Prometheus
    down) never starts one on old failures, and its lineage always has values."""
    monitoring = spec.monitoring
    analysis: AnalysisStatus | None = None
    events: list[LoopEvent] = []
    degraded = False
    if monitoring is not None:
        analysis = old.analysis
        if analysis_due(analysis, interval=parse_duration(monitoring.interval), now=now):
            mixed = await pods_serving_another_model(kube, owner=owner, active=old.active_model)
            if mixed and old.active_model is not None:
                analysis = held_analysis(monitoring, old=old.analysis, pods=mixed,
                                         active=old.active_model, now=now)
            else:
                selector = pod_selector(namespace=owner.namespace,
                                        deployment=deployment_name(name=owner.name,
                                                                   track=Track.STABLE))
                analysis = await evaluate(
                    monitoring, selector=selector, old=old.analysis, now=now,
                    feedback=model_feedback(owner, old.active_model))
            events += _analysis_events(old.analysis, analysis,
                                       failure_limit=monitoring.failure_limit)
        if analysis is not None and git_rollout_pending(spec_model=spec_model, old=old):
            analysis = analysis.model_copy(update={"consecutive_failures": 0})
        degraded = is_degraded(analysis, failure_limit=monitoring.failure_limit)
    fresh = degraded and analysis is not None and analysis.result is CheckResult.UNHEALTHY
    labelled = (await labelled_rows(spec, owner=owner, old=old, now=now)
                if fresh else None)
    progress = await drive_retrains(kube=kube, owner=owner, spec=spec, old=old.retrain,
                                    analysis=analysis, degraded=fresh,
                                    annotations=annotations, active=old.active_model, now=now,
                                    labelled_rows=labelled)
    promotion = promotion_replaces(progress.promoted, old.active_model)
    if promotion and analysis is not None:
        # The failures were the replaced model's: the promoted one starts from zero.
        before = get_condition(old.conditions, ConditionType.DEGRADED)
        if analysis.consecutive_failures and (before is None
                                              or before.reason != LoopReason.MODEL_PROMOTED):
            events.append(LoopEvent("Normal", LoopReason.MODEL_PROMOTED,
                                    f"{promotion}: {analysis.consecutive_failures} failed "
                                    "evaluation(s) of the replaced model dropped"))
        analysis = analysis.model_copy(update={"consecutive_failures": 0})
        degraded = False
    return LoopOutcome(analysis=analysis, retrain=progress, degraded=degraded,
                       events=(*events, *progress.events), promotion=promotion)


async def labelled_rows(spec: ModelDeploymentSpec, *, owner: Owner,
                        old: ModelDeploymentStatus, now: datetime) -> float | None:
    """How many labelled requests the collector counted since the served model began
    serving (None: not asked for, or Prometheus did not say)."""
    if (spec.monitoring is None or spec.retrain is None
            or spec.retrain.data.labelled is None):
        return None
    since = serving_since(old.retrain.history if old.retrain else [], old.active_model)
    seconds = int((now - since).total_seconds()) if since is not None else None
    query = labelled_count_query(namespace=owner.namespace,
                                 collector_pod=collector_pod_name(name=owner.name),
                                 seconds=seconds)
    try:
        async with PrometheusClient.open(str(spec.monitoring.prometheus_url)) as prometheus:
            return await prometheus.value(query)
    except PrometheusError as exc:
        logger.warning("ModelDeployment %s/%s: labelled count unknown: %s",
                       owner.namespace, owner.name, exc)
        return None


async def canary_verdict(*, spec: ModelDeploymentSpec, state: RolloutState, owner: Owner,
                         now: datetime) -> tuple[Verdict | None, str]:
    """The analysis verdict on the canary's current step, once it has been held for
    ``canary.interval``; (None, "") while it is not due or analysis is off."""
    canary, monitoring = spec.rollout.canary, spec.monitoring
    if (canary is None or not canary.analysis or monitoring is None
            or state.phase is not RolloutPhase.PROGRESSING
            or not step_due(state, interval=parse_duration(canary.interval), now=now)):
        return None, ""
    selector = pod_selector(namespace=owner.namespace,
                            deployment=deployment_name(name=owner.name, track=Track.CANARY))
    checks = (await evaluate(monitoring, selector=selector, old=None, now=now,
                             feedback=model_feedback(owner, state.canary))).checks
    if monitoring.accuracy is not None:
        checks = [*checks, await canary_versus_stable(monitoring, canary=canary, owner=owner,
                                                      state=state)]
    result = overall_result(checks)
    if result is CheckResult.UNHEALTHY:
        failing = "; ".join(f"{c.name}: {c.message}" for c in checks
                            if c.result is CheckResult.UNHEALTHY)
        return Verdict.FAIL, f"canary checks failed: {failing}"
    if result is CheckResult.HEALTHY:
        return Verdict.PASS, ""
    return Verdict.INCONCLUSIVE, ""


async def canary_versus_stable(monitoring: MonitoringSpec, *, canary: CanarySpec,
                               owner: Owner, state: RolloutState) -> CheckStatus:
    """``accuracyVsStable``: both tracks' live accuracy from feedback, same window."""
    assert monitoring.accuracy is not None
    query, samples = builtin_query(ACCURACY)
    tracks = [CheckQuery(name=track, bounds=Bounds(min=0.0),
                         query=render(query, window=monitoring.window, selector="",
                                      feedback=model_feedback(owner, model)),
                         samples_query=render(samples, window=monitoring.window, selector="",
                                              feedback=model_feedback(owner, model)))
              for track, model in (("canary", state.canary), ("stable", state.stable))]
    observed = await observe_checks(str(monitoring.prometheus_url), tracks)
    return versus_stable(
        name=ACCURACY_VS_STABLE, canary=observed["canary"], stable=observed["stable"],
        min_samples=(monitoring.accuracy.min_samples if monitoring.accuracy.min_samples
                     is not None else monitoring.min_samples),
        max_drop=canary.max_accuracy_drop, on_missing=monitoring.on_missing_data)


def _keep_transition(conditions: list[Any], *, old: ModelDeploymentStatus, type_: str,
                     status: bool, reason: str, message: str, generation: int | None,
                     now: datetime) -> list[Any]:
    """Set a condition judged against the *previous* status, so its lastTransitionTime
    survives the serving half having recomputed it this pass."""
    decided = get_condition(set_condition(old.conditions, type_=type_, status=status,
                                          reason=reason, message=message,
                                          observed_generation=generation, now=now), type_)
    assert decided is not None
    return sorted([c for c in conditions if c.type != type_] + [decided], key=lambda c: c.type)


def _promoted_at(loop: LoopOutcome) -> datetime | None:
    """When the newest promotion happened (its run's finish time)."""
    retrain = loop.retrain.status
    for record in retrain.history if retrain is not None else []:
        if record.outcome is RetrainOutcome.PROMOTED:
            return record.finished_at
    return None


def promotion_under_evaluation(old: ModelDeploymentStatus, loop: LoopOutcome) -> str:
    """What was promoted, while the promoted model has had no Healthy evaluation of its
    own and is not Degraded either; "" otherwise. Carried from pass to pass by the
    ``Degraded`` condition's ``ModelPromoted`` reason (pure)."""
    analysis = loop.analysis
    if analysis is None or loop.degraded:
        return ""
    if loop.promotion:
        return loop.promotion
    before = get_condition(old.conditions, ConditionType.DEGRADED)
    if (before is None or before.reason != LoopReason.MODEL_PROMOTED
            or before.status is ConditionStatus.TRUE):
        return ""
    since = _promoted_at(loop)
    if analysis.result is CheckResult.HEALTHY and (
            since is None or analysis.time is None or analysis.time > since):
        return ""
    return before.message.partition("; ")[0]


def loop_status(new: ModelDeploymentStatus, *, old: ModelDeploymentStatus, loop: LoopOutcome,
                spec: ModelDeploymentSpec, generation: int | None,
                now: datetime) -> ModelDeploymentStatus:
    """The serving status with the loop's fields and conditions folded in (pure)."""
    conditions = list(new.conditions)
    phase, messages = new.phase, [new.message] if new.message else []
    serving_degraded = get_condition(new.conditions, ConditionType.DEGRADED)
    serving_ok = serving_degraded is None or serving_degraded.status is not ConditionStatus.TRUE
    promoted = promotion_under_evaluation(old, loop)
    if loop.degraded and loop.analysis is not None and serving_ok:
        message = degraded_message(loop.analysis)
        conditions = _keep_transition(conditions, old=old, type_=ConditionType.DEGRADED,
                                      status=True, reason=LoopReason.ANALYSIS_FAILED,
                                      message=message, generation=generation, now=now)
        if phase in (ModelDeploymentPhase.READY, ModelDeploymentPhase.PROGRESSING):
            phase = ModelDeploymentPhase.DEGRADED
        messages.append(message)
    elif promoted and loop.analysis is not None and serving_ok:
        # A fresh start for the promoted model: not Degraded on the replaced model's
        # account, and Progressing until its own analysis first comes out Healthy.
        conditions = _keep_transition(
            conditions, old=old, type_=ConditionType.DEGRADED, status=False,
            reason=LoopReason.MODEL_PROMOTED, generation=generation, now=now,
            message=f"{promoted}; failures of the replaced model dropped, it is judged "
                    "by its own analysis from now on")
        evaluating = (f"{promoted}: waiting for its first Healthy analysis (latest: "
                      f"{summary(loop.analysis)})")
        serving_progress = get_condition(conditions, ConditionType.PROGRESSING)
        if serving_progress is None or serving_progress.status is not ConditionStatus.TRUE:
            conditions = set_condition(conditions, type_=ConditionType.PROGRESSING,
                                       status=True, reason=LoopReason.EVALUATING,
                                       message=evaluating, observed_generation=generation,
                                       now=now)
        if phase is ModelDeploymentPhase.READY:
            phase = ModelDeploymentPhase.PROGRESSING
        messages.append(evaluating)
    retrain = loop.retrain.status
    if spec.retrain is not None or (retrain is not None and retrain.history):
        conditions = set_condition(conditions, type_=RETRAINING,
                                   observed_generation=generation, now=now,
                                   **_retraining(loop))
    return new.model_copy(update={
        "analysis": loop.analysis, "retrain": retrain, "candidate_model": loop.retrain.candidate,
        "conditions": conditions, "phase": phase, "message": "; ".join(messages)[:32768]})


def _retraining(loop: LoopOutcome) -> dict[str, Any]:
    retrain = loop.retrain.status
    history = retrain.history if retrain is not None else []
    awaiting = [r for r in history if r.outcome is RetrainOutcome.AWAITING_PROMOTION]
    running = [r for r in history if r.outcome is RetrainOutcome.RUNNING]
    if running:
        return {"status": True, "reason": LoopReason.RETRAIN_RUNNING,
                "message": "; ".join(f"{r.training_job}: {r.message}" for r in running)}
    if awaiting:
        return {"status": True, "reason": LoopReason.AWAITING_PROMOTION,
                "message": awaiting[0].message}
    refusal = loop.retrain.refusal
    if loop.degraded and refusal is not None:
        return {"status": False, "reason": refusal.reason, "message": refusal.message}
    last = history[0] if history else None
    return {"status": False, "reason": f"Retrain{last.outcome.value}" if last else LoopReason.IDLE,
            "message": f"{last.training_job}: {last.message}" if last else "no retrain yet"}


async def post_loop_events(kube: KubeClient, *, involved: Mapping[str, Any],
                           events: Sequence[LoopEvent]) -> None:
    """Post the loop's Events (after its status was written, so a retried pass whose
    write conflicted does not announce twice)."""
    for event in events:
        await kube.post_event(involved=involved,
                              type_="Warning" if event.type_ == "Warning" else "Normal",
                              reason=event.reason, message=event.message)
