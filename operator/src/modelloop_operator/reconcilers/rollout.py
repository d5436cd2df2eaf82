"""How a ModelDeployment moves from one model to the next, as pure decisions on a
:class:`RolloutState` (kept in status, so it survives operator restarts).

Phases:

* ``Idle`` - one model (``stable``) serves everything;
* ``Progressing`` - a canary Deployment serves ``canary`` to a share of the traffic given
  by the current step's weight; the step advances when it is due (see below);
* ``Promoting`` - every step passed: the stable Deployment rolls to the canary's model;
  once it has, the canary goes away and the state is ``Idle`` again;
* ``RolledBack`` - the canary failed its analysis; the stable model serves everything and
  the same model is not tried again until the spec names another one.

When a step is due: with analysis (``canary.analysis`` and ``spec.monitoring`` set) only a
verdict advances or rolls back (:func:`apply_verdict`, the seam the monitoring loop calls);
without, a step advances once ``canary.interval`` has passed. Either way a person may
approve steps early with the annotation ``modelloop.dev/canary-approved-step: "<n>"``
(steps up to n are approved), which changes no spec field, so Argo CD does not mind.

``RollingUpdate`` needs no state machine: the stable Deployment's own rolling update is
the rollout, and its progress is read from the Deployment.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Final

from ..api.common import parse_duration
from ..api.modeldeployment import (
    CanarySpec,
    CanaryStep,
    RolloutStatus,
    RolloutStrategy,
    ServedModel,
)

# The phases are API (status.rollout.phase); the state machine's users import them here.
from ..api.modeldeployment import RolloutPhase as RolloutPhase

APPROVED_STEP_ANNOTATION: Final = "modelloop.dev/canary-approved-step"


class Verdict(StrEnum):
    """An analysis result about the canary (from the monitoring loop)."""

    PASS = "Pass"
    FAIL = "Fail"
    INCONCLUSIVE = "Inconclusive"


@dataclass(frozen=True)
class RolloutState:
    """The models and the canary's progress."""

    stable: ServedModel | None = None
    canary: ServedModel | None = None
    phase: RolloutPhase = RolloutPhase.IDLE
    step: int | None = None
    last_step_time: datetime | None = None
    message: str = ""


def same_model(a: ServedModel | None, b: ServedModel | None) -> bool:
    """Whether two served models are the same artifact (URI and checksum)."""
    if a is None or b is None:
        return a is b
    return (a.archive_uri, a.checksum) == (b.archive_uri, b.checksum)


def step_weight(steps: Sequence[CanaryStep], step: int | None) -> int:
    """Canary weight at ``step``; 100 past the last step."""
    if step is None:
        return 0
    return 100 if step >= len(steps) else steps[step].weight


def _start(state: RolloutState, *, target: ServedModel, steps: Sequence[CanaryStep],
           now: datetime) -> RolloutState:
    return RolloutState(stable=state.stable, canary=target, phase=RolloutPhase.PROGRESSING,
                        step=0, last_step_time=now,
                        message=f"canary {target.version} at step 1 of {len(steps)} "
                                f"({steps[0].weight}%)")


def advance(state: RolloutState, *, steps: Sequence[CanaryStep], now: datetime) -> RolloutState:
    """The next step, or ``Promoting`` after the last one."""
    if state.phase is not RolloutPhase.PROGRESSING or state.canary is None:
        return state
    nxt = (state.step or 0) + 1
    version = state.canary.version
    if nxt >= len(steps):
        return replace(state, phase=RolloutPhase.PROMOTING, step=len(steps),
                       last_step_time=now,
                       message=f"canary {version} passed every step; promoting it to stable")
    return replace(state, step=nxt, last_step_time=now,
                   message=f"canary {version} at step {nxt + 1} of {len(steps)} "
                           f"({steps[nxt].weight}%)")


def rollback(state: RolloutState, *, reason: str, now: datetime) -> RolloutState:
    """Drop the canary; stable serves everything; remember what failed and why."""
    if state.canary is None:
        return state
    return replace(state, phase=RolloutPhase.ROLLED_BACK, step=None, last_step_time=now,
                   message=f"canary {state.canary.version} rolled back: {reason}")


def apply_verdict(state: RolloutState, *, verdict: Verdict | None, steps: Sequence[CanaryStep],
                  now: datetime, reason: str = "") -> RolloutState:
    """The seam for canary analysis: a passing verdict advances a step, a failing one rolls
    back, anything else waits."""
    if state.phase is not RolloutPhase.PROGRESSING or verdict is None:
        return state
    if verdict is Verdict.FAIL:
        return rollback(state, reason=reason or "analysis failed", now=now)
    if verdict is Verdict.PASS:
        return advance(state, steps=steps, now=now)
    return state


def step_due(state: RolloutState, *, interval: timedelta, now: datetime) -> bool:
    """Whether the current step has been held for ``interval``."""
    if state.last_step_time is None:
        return True
    return now >= state.last_step_time + interval


def approved_step(annotations: Mapping[str, str]) -> int | None:
    """The step index a person approved with the annotation (1-based in the annotation,
    as shown in messages); None when absent or not a number."""
    raw = annotations.get(APPROVED_STEP_ANNOTATION, "").strip()
    if not raw.isdigit():
        return None
    return int(raw) - 1


@dataclass(frozen=True)
class RolloutInputs:
    """What a rollout decision looks at besides the state."""

    desired: ServedModel | None
    """The model the spec asks for, None while its source is not ready."""
    strategy: RolloutStrategy
    canary: CanarySpec | None
    analysis: bool
    """Whether analysis gates the steps (canary.analysis and spec.monitoring set)."""
    approved: int | None = None
    verdict: Verdict | None = None
    verdict_reason: str = ""
    """Why a failing verdict failed (the rollback message)."""


def decide_rollout(state: RolloutState, *, inputs: RolloutInputs, now: datetime
                   ) -> RolloutState:
    """The next rollout state (pure). Finishing a promotion needs the stable Deployment's
    progress, so it is a separate step: :func:`finish_promotion`."""
    desired = inputs.desired
    if desired is None:
        return state  # the source is not ready: whatever serves keeps serving
    if state.stable is None:
        return RolloutState(stable=desired, message=f"serving {desired.version}")
    if same_model(desired, state.stable):
        if state.canary is not None and not same_model(state.canary, desired):
            return RolloutState(stable=state.stable,
                                message=f"spec points at the stable model {desired.version} "
                                        f"again; canary {state.canary.version} dropped")
        return state if state.phase is RolloutPhase.IDLE else RolloutState(
            stable=state.stable, message=state.message)
    if inputs.strategy is RolloutStrategy.ROLLING_UPDATE or inputs.canary is None:
        return RolloutState(stable=desired,
                            message=f"rolling update from {state.stable.version} to "
                                    f"{desired.version}")
    steps = inputs.canary.steps
    if not same_model(state.canary, desired) or state.phase is RolloutPhase.IDLE:
        return _start(state, target=desired, steps=steps, now=now)
    if state.phase is not RolloutPhase.PROGRESSING:
        return state  # Promoting finishes on its own; RolledBack waits for a new model
    if inputs.verdict is not None:
        decided = apply_verdict(state, verdict=inputs.verdict, steps=steps, now=now,
                                reason=inputs.verdict_reason)
        if decided is not state:
            return decided
    if inputs.approved is not None and inputs.approved >= (state.step or 0):
        return advance(state, steps=steps, now=now)
    interval = parse_duration(inputs.canary.interval)
    if not inputs.analysis and step_due(state, interval=interval, now=now):
        return advance(state, steps=steps, now=now)
    return state


def finish_promotion(state: RolloutState, *, stable_rolled_out: bool) -> RolloutState:
    """After ``Promoting``: once the stable Deployment serves the canary's model on every
    replica, that model is the stable one and the canary goes."""
    if state.phase is not RolloutPhase.PROMOTING or state.canary is None:
        return state
    if not stable_rolled_out:
        return state
    return RolloutState(stable=state.canary,
                        message=f"canary {state.canary.version} promoted to stable")


# --- persistence in status ----------------------------------------------------------------

def to_status(state: RolloutState, *, strategy: RolloutStrategy,
              steps: Sequence[CanaryStep]) -> RolloutStatus | None:
    """``status.rollout`` for a state (None when Idle: ``activeModel`` says it all). The
    other fields still follow the encoding older operators read the phase from (RolledBack
    = a target with weight 0 and no step; Promoting = the step past the last one), so a
    downgrade reads the same state."""
    if state.phase is RolloutPhase.IDLE or state.canary is None:
        return None
    weight = 0 if state.phase is RolloutPhase.ROLLED_BACK else step_weight(steps, state.step)
    return RolloutStatus(phase=state.phase, stable_model=state.stable,
                         strategy=strategy.value, step=state.step, canary_weight=weight,
                         target=state.canary, step_started_at=state.last_step_time,
                         message=state.message)


def _encoded_phase(rollout: RolloutStatus, *, steps: Sequence[CanaryStep]) -> RolloutPhase:
    """The phase of a ``status.rollout`` written before it had ``phase`` (an object
    created by an older operator and not reconciled since)."""
    if rollout.step is None and not rollout.canary_weight:
        return RolloutPhase.ROLLED_BACK
    if rollout.step is not None and rollout.step >= len(steps):
        return RolloutPhase.PROMOTING
    return RolloutPhase.PROGRESSING


def from_status(*, active: ServedModel | None, rollout: RolloutStatus | None,
                steps: Sequence[CanaryStep]) -> RolloutState:
    """The state kept in status (see :func:`to_status`). The stable model is
    ``rollout.stableModel``, or ``activeModel`` where an older operator wrote none."""
    if rollout is None or rollout.target is None or rollout.phase is RolloutPhase.IDLE:
        stable = rollout.stable_model if rollout and rollout.stable_model else active
        return RolloutState(stable=stable, message=rollout.message if rollout else "")
    phase = rollout.phase or _encoded_phase(rollout, steps=steps)
    stable = rollout.stable_model or active
    return RolloutState(stable=stable, canary=rollout.target, phase=phase, step=rollout.step,
                        last_step_time=rollout.step_started_at, message=rollout.message)
