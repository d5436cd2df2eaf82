"""The rollout state machine (reconcilers/rollout.py): pure decisions, no cluster."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from modelloop_operator.api.modeldeployment import (
    CanarySpec,
    CanaryStep,
    ModelDeploymentStatus,
    RolloutStrategy,
    ServedModel,
)
from modelloop_operator.reconcilers.rollout import (
    RolloutInputs,
    RolloutPhase,
    RolloutState,
    Verdict,
    apply_verdict,
    approved_step,
    decide_rollout,
    finish_promotion,
    from_status,
    to_status,
)

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
V1 = ServedModel(archive_uri="pvc://m/v1/model.mar", version="v1", checksum="sha256:1")
V2 = ServedModel(archive_uri="pvc://m/v2/model.mar", version="v2", checksum="sha256:2")
V3 = ServedModel(archive_uri="pvc://m/v3/model.mar", version="v3", checksum="sha256:3")
CANARY = CanarySpec(steps=[CanaryStep(weight=20), CanaryStep(weight=50)], interval="1m",
                    analysis=False)
STEPS = CANARY.steps


def canary_inputs(desired: ServedModel | None, *, analysis: bool = False,
                  approved: int | None = None, verdict: Verdict | None = None
                  ) -> RolloutInputs:
    return RolloutInputs(desired=desired, strategy=RolloutStrategy.CANARY, canary=CANARY,
                         analysis=analysis, approved=approved, verdict=verdict)


def rolling_inputs(desired: ServedModel | None) -> RolloutInputs:
    return RolloutInputs(desired=desired, strategy=RolloutStrategy.ROLLING_UPDATE, canary=None,
                         analysis=False)


STABLE_V1 = RolloutState(stable=V1)


class TestFirstModelAndRollingUpdate:
    def test_first_model_is_served_at_once_without_a_canary(self) -> None:
        state = decide_rollout(RolloutState(), inputs=canary_inputs(V1), now=T0)
        assert (state.stable, state.canary, state.phase) == (V1, None, RolloutPhase.IDLE)

    def test_nothing_ready_serves_nothing(self) -> None:
        assert decide_rollout(RolloutState(), inputs=canary_inputs(None), now=T0) == \
            RolloutState()

    def test_source_not_ready_keeps_the_current_model(self) -> None:
        assert decide_rollout(STABLE_V1, inputs=canary_inputs(None), now=T0) is STABLE_V1

    def test_rolling_update_switches_stable_directly(self) -> None:
        state = decide_rollout(STABLE_V1, inputs=rolling_inputs(V2), now=T0)
        assert (state.stable, state.canary, state.phase) == (V2, None, RolloutPhase.IDLE)

    def test_same_model_is_a_no_op(self) -> None:
        assert decide_rollout(STABLE_V1, inputs=canary_inputs(V1), now=T0) is STABLE_V1


class TestCanarySteps:
    def test_a_new_model_starts_the_canary_at_the_first_step(self) -> None:
        state = decide_rollout(STABLE_V1, inputs=canary_inputs(V2), now=T0)
        assert state.phase is RolloutPhase.PROGRESSING
        assert (state.stable, state.canary, state.step) == (V1, V2, 0)
        assert state.last_step_time == T0

    def test_a_step_is_held_for_the_interval_then_advances(self) -> None:
        state = decide_rollout(STABLE_V1, inputs=canary_inputs(V2), now=T0)
        held = decide_rollout(state, inputs=canary_inputs(V2), now=T0 + timedelta(seconds=59))
        assert held.step == 0
        later = T0 + timedelta(minutes=1)
        advanced = decide_rollout(held, inputs=canary_inputs(V2), now=later)
        assert (advanced.step, advanced.last_step_time) == (1, later)

    def test_after_the_last_step_it_promotes_then_finishes(self) -> None:
        state = RolloutState(stable=V1, canary=V2, phase=RolloutPhase.PROGRESSING, step=1,
                             last_step_time=T0)
        promoting = decide_rollout(state, inputs=canary_inputs(V2),
                                   now=T0 + timedelta(minutes=1))
        assert promoting.phase is RolloutPhase.PROMOTING
        assert finish_promotion(promoting, stable_rolled_out=False) is promoting
        done = finish_promotion(promoting, stable_rolled_out=True)
        assert (done.stable, done.canary, done.phase) == (V2, None, RolloutPhase.IDLE)

    def test_with_analysis_time_alone_does_not_advance(self) -> None:
        state = decide_rollout(STABLE_V1, inputs=canary_inputs(V2, analysis=True), now=T0)
        held = decide_rollout(state, inputs=canary_inputs(V2, analysis=True),
                              now=T0 + timedelta(hours=1))
        assert held.step == 0

    def test_a_person_can_approve_a_step(self) -> None:
        state = decide_rollout(STABLE_V1, inputs=canary_inputs(V2, analysis=True), now=T0)
        approved = decide_rollout(state, inputs=canary_inputs(V2, analysis=True, approved=0),
                                  now=T0 + timedelta(seconds=1))
        assert approved.step == 1
        again = decide_rollout(approved, inputs=canary_inputs(V2, analysis=True, approved=0),
                               now=T0 + timedelta(seconds=2))
        assert again.step == 1  # an approval covers steps up to its number only

    def test_the_annotation_is_one_based(self) -> None:
        assert approved_step({"modelloop.dev/canary-approved-step": "2"}) == 1
        assert approved_step({"modelloop.dev/canary-approved-step": "x"}) is None
        assert approved_step({}) is None

    def test_a_newer_model_restarts_the_canary(self) -> None:
        state = RolloutState(stable=V1, canary=V2, phase=RolloutPhase.PROGRESSING, step=1,
                             last_step_time=T0)
        restarted = decide_rollout(state, inputs=canary_inputs(V3), now=T0)
        assert (restarted.canary, restarted.step, restarted.stable) == (V3, 0, V1)

    def test_pointing_back_at_stable_drops_the_canary(self) -> None:
        state = RolloutState(stable=V1, canary=V2, phase=RolloutPhase.PROGRESSING, step=0,
                             last_step_time=T0)
        back = decide_rollout(state, inputs=canary_inputs(V1), now=T0)
        assert (back.stable, back.canary, back.phase) == (V1, None, RolloutPhase.IDLE)


class TestVerdictSeam:
    def _progressing(self) -> RolloutState:
        return RolloutState(stable=V1, canary=V2, phase=RolloutPhase.PROGRESSING, step=0,
                            last_step_time=T0)

    def test_fail_rolls_back_and_stable_keeps_serving(self) -> None:
        state = apply_verdict(self._progressing(), verdict=Verdict.FAIL, steps=STEPS, now=T0,
                              reason="error rate 7% > 5%")
        assert state.phase is RolloutPhase.ROLLED_BACK
        assert state.stable == V1
        assert "error rate 7% > 5%" in state.message

    def test_pass_advances_and_inconclusive_waits(self) -> None:
        assert apply_verdict(self._progressing(), verdict=Verdict.PASS, steps=STEPS,
                             now=T0).step == 1
        state = self._progressing()
        assert apply_verdict(state, verdict=Verdict.INCONCLUSIVE, steps=STEPS,
                             now=T0) is state

    def test_a_rolled_back_model_is_not_tried_again(self) -> None:
        state = apply_verdict(self._progressing(), verdict=Verdict.FAIL, steps=STEPS, now=T0)
        again = decide_rollout(state, inputs=canary_inputs(V2), now=T0 + timedelta(hours=1))
        assert again.phase is RolloutPhase.ROLLED_BACK
        fresh = decide_rollout(state, inputs=canary_inputs(V3), now=T0)
        assert (fresh.phase, fresh.canary) == (RolloutPhase.PROGRESSING, V3)

    def test_verdicts_reach_decide_rollout(self) -> None:
        state = self._progressing()
        failed = decide_rollout(state, inputs=canary_inputs(V2, analysis=True,
                                                            verdict=Verdict.FAIL), now=T0)
        assert failed.phase is RolloutPhase.ROLLED_BACK


class TestPersistence:
    def test_every_phase_survives_a_round_trip_through_status(self) -> None:
        states = [
            RolloutState(stable=V1, message="serving v1"),
            RolloutState(stable=V1, canary=V2, phase=RolloutPhase.PROGRESSING, step=1,
                         last_step_time=T0, message="step 2"),
            RolloutState(stable=V1, canary=V2, phase=RolloutPhase.PROMOTING, step=2,
                         last_step_time=T0, message="promoting"),
            RolloutState(stable=V1, canary=V2, phase=RolloutPhase.ROLLED_BACK, step=None,
                         last_step_time=T0, message="rolled back"),
        ]
        for state in states:
            status = to_status(state, strategy=RolloutStrategy.CANARY, steps=STEPS)
            back = from_status(active=state.stable, rollout=status, steps=STEPS)
            assert (back.phase, back.stable, back.canary, back.step) == \
                (state.phase, state.stable, state.canary, state.step)

    def test_status_shows_the_weight_of_the_step(self) -> None:
        state = RolloutState(stable=V1, canary=V2, phase=RolloutPhase.PROGRESSING, step=1,
                             last_step_time=T0)
        status = to_status(state, strategy=RolloutStrategy.CANARY, steps=STEPS)
        assert status is not None
        assert (status.canary_weight, status.target, status.step_started_at) == (50, V2, T0)

    def test_status_names_the_phase_and_the_stable_model(self) -> None:
        for phase, step in ((RolloutPhase.PROGRESSING, 0), (RolloutPhase.PROMOTING, 2),
                            (RolloutPhase.ROLLED_BACK, None)):
            state = RolloutState(stable=V1, canary=V2, phase=phase, step=step,
                                 last_step_time=T0)
            status = to_status(state, strategy=RolloutStrategy.CANARY, steps=STEPS)
            assert status is not None
            written = status.model_dump(mode="json", exclude_none=True)
            assert (written["phase"], written["stableModel"]["archiveUri"]) == \
                (phase.value, V1.archive_uri)

    def test_idle_writes_no_rollout(self) -> None:
        assert to_status(STABLE_V1, strategy=RolloutStrategy.CANARY, steps=STEPS) is None

    def test_the_stable_model_is_read_from_the_rollout(self) -> None:
        status = to_status(RolloutState(stable=V1, canary=V2, phase=RolloutPhase.PROGRESSING,
                                        step=0, last_step_time=T0),
                           strategy=RolloutStrategy.CANARY, steps=STEPS)
        back = from_status(active=V3, rollout=status, steps=STEPS)
        assert back.stable == V1

    def test_the_explicit_phase_wins_over_the_old_encoding(self) -> None:
        # Promoting after both steps; then a third step is added to the spec. The old rule
        # (step >= number of steps) would read Progressing again; the decided promotion
        # goes on.
        status = to_status(RolloutState(stable=V1, canary=V2, phase=RolloutPhase.PROMOTING,
                                        step=2, last_step_time=T0),
                           strategy=RolloutStrategy.CANARY, steps=STEPS)
        back = from_status(active=V1, rollout=status, steps=[*STEPS, CanaryStep(weight=80)])
        assert back.phase is RolloutPhase.PROMOTING


class TestStatusFromAnOlderOperator:
    """``status.rollout`` written before ``phase`` and ``stableModel`` existed (an object
    created before the upgrade) is read with the old encoding, and ``activeModel`` as the
    stable model."""

    @staticmethod
    def _old(rollout: dict[str, object]) -> ModelDeploymentStatus:
        return ModelDeploymentStatus.model_validate({
            "activeModel": V1.model_dump(mode="json", exclude_none=True),
            "rollout": {"strategy": "Canary",
                        "target": V2.model_dump(mode="json", exclude_none=True),
                        "stepStartedAt": "2026-01-01T12:00:00Z", "message": "m",
                        **rollout}})

    def _read(self, rollout: dict[str, object]) -> RolloutState:
        old = self._old(rollout)
        assert old.rollout is not None and old.rollout.phase is None
        return from_status(active=old.active_model, rollout=old.rollout, steps=STEPS)

    def test_a_step_with_weight_is_progressing(self) -> None:
        state = self._read({"step": 1, "canaryWeight": 50})
        assert (state.phase, state.stable, state.canary, state.step, state.last_step_time) \
            == (RolloutPhase.PROGRESSING, V1, V2, 1, T0)

    def test_the_step_past_the_last_is_promoting(self) -> None:
        assert self._read({"step": 2, "canaryWeight": 100}).phase is RolloutPhase.PROMOTING

    def test_a_target_with_weight_zero_and_no_step_is_rolled_back(self) -> None:
        state = self._read({"canaryWeight": 0})
        assert (state.phase, state.stable, state.canary) == (RolloutPhase.ROLLED_BACK, V1, V2)

    def test_the_next_write_adds_the_explicit_fields(self) -> None:
        state = self._read({"canaryWeight": 0})
        status = to_status(state, strategy=RolloutStrategy.CANARY, steps=STEPS)
        assert status is not None
        assert (status.phase, status.stable_model) == (RolloutPhase.ROLLED_BACK, V1)
