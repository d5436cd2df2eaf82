"""What a ModelDeployment's status says, as pure functions of what was observed and
decided: the Deployments' progress, the source, and the rollout state.

Conditions, and why each is set the way it is:

* ``Ready`` - a server answers: at least one ready replica of the model in ``activeModel``.
  While nothing has been served yet and the source is missing, unfinished or failed, it is
  False with ``SourceNotReady`` / ``SourceFailed``. Once a model serves, a bad *new* source
  does not make it False: the old model keeps serving, which is what users need.
* ``Progressing`` - a rollout is under way (canary steps, promotion, a rolling update, pods
  starting). False with the source's reason while the spec's model cannot be used yet.
* ``Degraded`` - something needs a person: a canary was rolled back, or the spec's source
  failed while the old model serves.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from ..api.common import Condition
from ..api.modeldeployment import (
    ModelDeploymentPhase,
    ModelDeploymentStatus,
    RolloutStatus,
    RolloutStrategy,
)
from ..builders.serving import MODEL_URI_ANNOTATION
from ..status import ConditionType, Reason, set_condition
from .rollout import RolloutPhase, RolloutState
from .sources import Resolution, SourceState


class ServingReason:
    """Reasons of a ModelDeployment's conditions (with :class:`.sources.SourceReason`)."""

    SERVING: Final = "Serving"
    NO_READY_REPLICAS: Final = "NoReadyReplicas"
    SCALED_TO_ZERO: Final = "ScaledToZero"
    ROLLING_UPDATE: Final = "RollingUpdate"
    CANARY: Final = "CanaryProgressing"
    PROMOTING: Final = "Promoting"
    ROLLED_BACK: Final = "RolledBack"
    STABLE: Final = "Stable"
    AS_EXPECTED: Final = "AsExpected"


@dataclass(frozen=True)
class DeploymentObservation:
    """One Deployment's progress, reduced to what status needs."""

    exists: bool = False
    desired: int = 0
    replicas: int = 0
    ready: int = 0
    updated: int = 0
    available: int = 0
    current: bool = False
    """The Deployment controller has seen the latest spec (observedGeneration)."""
    model_uri: str | None = None

    @property
    def rolled_out(self) -> bool:
        """Every replica runs the latest template and is available."""
        return (self.exists and self.current and self.updated >= self.desired
                and self.available >= self.desired and self.replicas == self.desired)


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def observe_deployment(obj: Mapping[str, Any] | None) -> DeploymentObservation:
    """Reduce a Deployment (None when absent)."""
    if obj is None:
        return DeploymentObservation()
    meta, spec, status = obj.get("metadata", {}), obj.get("spec", {}), obj.get("status", {})
    template_meta = (spec.get("template") or {}).get("metadata") or {}
    return DeploymentObservation(
        exists=True,
        desired=_int(spec.get("replicas", 1)),
        replicas=_int(status.get("replicas")),
        ready=_int(status.get("readyReplicas")),
        updated=_int(status.get("updatedReplicas")),
        available=_int(status.get("availableReplicas")),
        current=_int(status.get("observedGeneration")) >= _int(meta.get("generation")),
        model_uri=(template_meta.get("annotations") or {}).get(MODEL_URI_ANNOTATION),
    )


@dataclass(frozen=True)
class ServingObservation:
    """Everything status is computed from."""

    source: Resolution
    state: RolloutState
    strategy: RolloutStrategy
    stable: DeploymentObservation
    canary: DeploymentObservation
    url: str | None
    rollout: RolloutStatus | None


def _phase_and_conditions(
    obs: ServingObservation, *, old: Sequence[Condition], generation: int | None, now: datetime,
) -> tuple[ModelDeploymentPhase, list[Condition], str]:
    state, source = obs.state, obs.source
    serving = state.stable is not None
    ready_replicas = obs.stable.ready + obs.canary.ready
    messages: list[str] = []

    # Ready
    if not serving:
        ready, ready_reason = False, source.reason
        ready_message = source.message
    elif ready_replicas > 0:
        assert state.stable is not None
        ready, ready_reason = True, ServingReason.SERVING
        ready_message = f"{ready_replicas} replica(s) ready, serving {state.stable.version}"
    elif obs.stable.exists and obs.stable.desired == 0 and not obs.canary.desired:
        ready, ready_reason = False, ServingReason.SCALED_TO_ZERO
        ready_message = "replicas is 0"
    else:
        ready, ready_reason = False, ServingReason.NO_READY_REPLICAS
        ready_message = "no server has a ready worker yet"
    messages.append(ready_message)

    # Progressing
    source_blocked = not source.ready
    if source_blocked:
        progressing, prog_reason, prog_message = False, source.reason, source.message
    elif state.phase is RolloutPhase.PROGRESSING:
        progressing, prog_reason, prog_message = True, ServingReason.CANARY, state.message
    elif state.phase is RolloutPhase.PROMOTING:
        progressing, prog_reason, prog_message = True, ServingReason.PROMOTING, state.message
    elif serving and not obs.stable.rolled_out:
        progressing, prog_reason = True, ServingReason.ROLLING_UPDATE
        prog_message = (f"{obs.stable.updated} of {obs.stable.desired} replicas updated, "
                        f"{obs.stable.available} available")
    else:
        progressing, prog_reason = False, ServingReason.STABLE
        prog_message = state.message or "no rollout in progress"
    if source_blocked and serving:
        messages.append(f"spec model not used yet: {source.message}")

    # Degraded
    if state.phase is RolloutPhase.ROLLED_BACK:
        degraded, deg_reason, deg_message = True, ServingReason.ROLLED_BACK, state.message
    elif serving and source.state is SourceState.FAILED:
        degraded, deg_reason, deg_message = True, source.reason, source.message
    else:
        degraded, deg_reason, deg_message = False, ServingReason.AS_EXPECTED, ""
    if degraded:
        messages.append(deg_message)

    conditions = list(old)
    for type_, status, reason, message in (
        (ConditionType.READY, ready, ready_reason, ready_message),
        (ConditionType.PROGRESSING, progressing, prog_reason, prog_message),
        (ConditionType.DEGRADED, degraded, deg_reason, deg_message),
    ):
        conditions = set_condition(conditions, type_=type_, status=status, reason=reason,
                                   message=message, observed_generation=generation, now=now)

    if not serving:
        phase = (ModelDeploymentPhase.FAILED if source.state is SourceState.FAILED
                 else ModelDeploymentPhase.PENDING)
    elif degraded:
        phase = ModelDeploymentPhase.DEGRADED
    elif progressing or not ready:
        phase = ModelDeploymentPhase.PROGRESSING
    else:
        phase = ModelDeploymentPhase.READY
    return phase, conditions, "; ".join(m for m in messages if m)


def serving_status(*, old: ModelDeploymentStatus, obs: ServingObservation,
                   generation: int | None, now: datetime) -> ModelDeploymentStatus:
    """The complete new status (pure); monitoring and retrain fields are kept as they
    are (they belong to the monitoring loop)."""
    phase, conditions, message = _phase_and_conditions(
        obs, old=old.conditions, generation=generation, now=now)
    return old.model_copy(update={
        "phase": phase,
        "observed_generation": generation,
        "conditions": conditions,
        "url": obs.url if obs.state.stable is not None else None,
        "replicas": obs.stable.replicas + obs.canary.replicas,
        "ready_replicas": obs.stable.ready + obs.canary.ready,
        "active_model": obs.state.stable,
        "rollout": obs.rollout,
        "message": message,
    })


def invalid_spec_status(*, old: ModelDeploymentStatus, problem: str, generation: int | None,
                        now: datetime) -> ModelDeploymentStatus:
    """Status for a spec the operator cannot use (it slipped past admission). Children
    already running are left alone: the last good model keeps serving."""
    conditions = list(old.conditions)
    serving = old.active_model is not None
    for type_, status in ((ConditionType.READY, serving and old.ready_replicas > 0),
                          (ConditionType.PROGRESSING, False), (ConditionType.DEGRADED, True)):
        conditions = set_condition(conditions, type_=type_, status=status,
                                   reason=Reason.INVALID_SPEC, message=problem,
                                   observed_generation=generation, now=now)
    return old.model_copy(update={"phase": ModelDeploymentPhase.FAILED,
                                  "observed_generation": generation,
                                  "conditions": conditions, "message": problem})
