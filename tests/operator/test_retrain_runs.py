"""Pure steps of one retrain run: the jobs it creates and how its record moves
(reconcilers/retrain_runs.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from modelloop_operator.api.common import (
    TRIGGERED_BY_ANNOTATION,
    RetrainTrigger,
    TriggerCheck,
    triggered_by,
)
from modelloop_operator.api.monitoring import (
    OptimizationJobTemplate,
    Promotion,
    RetrainOutcome,
    RetrainRecord,
    TrainingJobTemplate,
)
from modelloop_operator.builders.job import Owner
from modelloop_operator.reconcilers.retrain_runs import (
    SOURCE_ANNOTATION,
    advance_run,
    build_optimization_job,
    build_training_job,
    fingerprint_of,
)

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
OWNER = Owner(api_version="modelloop.dev/v1alpha1", kind="ModelDeployment", name="bbc",
              namespace="ml", uid="u-1")
TJ_TEMPLATE = TrainingJobTemplate.model_validate({
    "metadata": {"labels": {"team": "news", "modelloop.dev/modeldeployment": "spoofed"},
                 "annotations": {"note": "x"}},
    "spec": {"model": {"uri": "builtin://m"}, "dataset": {"uri": "builtin://d"},
             "output": {"uri": "file:///out/"}}})
OJ_TEMPLATE = OptimizationJobTemplate.model_validate({
    "spec": {"techniques": [{"type": "quantization"}], "output": {"uri": "s3://b/opt"}}})
TRIGGER = RetrainTrigger(model_deployment="bbc", at=NOW,
                         checks=[TriggerCheck(name="drift", value=0.31, threshold=0.2)])


def test_training_job_is_owned_labelled_and_carries_trigger_and_source() -> None:
    tj = build_training_job(owner=OWNER, template=TJ_TEMPLATE, name="bbc-rt-2",
                            trigger=TRIGGER, fingerprint="f00d")
    meta = tj["metadata"]
    assert (tj["kind"], meta["name"], meta["namespace"]) == ("TrainingJob", "bbc-rt-2", "ml")
    assert meta["ownerReferences"] == [{
        "apiVersion": "modelloop.dev/v1alpha1", "kind": "ModelDeployment", "name": "bbc",
        "uid": "u-1", "controller": True, "blockOwnerDeletion": True}]
    assert meta["labels"]["modelloop.dev/modeldeployment"] == "bbc"  # ours win
    assert meta["labels"]["team"] == "news"
    assert meta["annotations"]["note"] == "x"
    assert triggered_by(tj) == TRIGGER
    assert fingerprint_of(tj) == "f00d" == meta["annotations"][SOURCE_ANNOTATION]
    assert tj["spec"]["output"]["uri"] == "file:///out/bbc-rt-2"
    assert tj["spec"]["model"] == {"uri": "builtin://m"}


def test_optimization_job_is_sourced_from_the_run() -> None:
    oj = build_optimization_job(owner=OWNER, template=OJ_TEMPLATE, name="bbc-rt-2-o",
                                training_job="bbc-rt-2", fingerprint="f00d")
    assert oj["spec"]["source"] == {"trainingJobRef": {"name": "bbc-rt-2"}}
    assert oj["spec"]["output"]["uri"] == "s3://b/opt/bbc-rt-2-o"
    assert oj["metadata"]["ownerReferences"][0]["uid"] == "u-1"


def test_unreadable_trigger_is_none() -> None:
    assert triggered_by({"metadata": {"annotations": {TRIGGERED_BY_ANNOTATION: "{"}}}) is None
    assert triggered_by({"metadata": {}}) is None


RECORD = RetrainRecord(training_job="bbc-rt-1", triggered_at=NOW)


def tj(phase: str | None, uri: str | None = "file:///out/bbc-rt-1") -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase} if phase else {}
    if phase == "Succeeded" and uri:
        status["model"] = {"uri": uri}
    if phase == "Failed":
        status["message"] = "evaluation gate missed: accuracy 0.41 < 0.9"
    return {"metadata": {"name": "bbc-rt-1"}, "spec": {}, "status": status}


def oj(*, accepted: bool | None, phase: str = "Succeeded") -> dict[str, Any]:
    conditions = ([] if accepted is None else
                  [{"type": "Accepted", "status": "True" if accepted else "False"}])
    return {"metadata": {"name": "bbc-rt-1-o"}, "status": {
        "phase": phase, "conditions": conditions, "message": "accuracy dropped",
        "archiveUri": "s3://b/opt/bbc-rt-1-o/model.mar" if accepted else None}}


def advance(record: RetrainRecord = RECORD, *, training: dict[str, Any] | None,
            optimization: dict[str, Any] | None = None, optimize: bool = True,
            promotion: Promotion = Promotion.AUTO, approved: str | None = None,
            current: bool = True) -> Any:
    return advance_run(record, training_job=training, optimization_job=optimization,
                       optimize=optimize, promotion=promotion, approved=approved,
                       current=current, now=NOW)


class TestAdvance:
    @pytest.mark.parametrize("phase", [None, "Pending", "Running"])
    def test_training_still_running_waits(self, phase: str | None) -> None:
        step = advance(training=tj(phase))
        assert step.record == RECORD and not step.create_optimization

    def test_failed_training_fails_the_run_with_its_reason(self) -> None:
        step = advance(training=tj("Failed"))
        assert step.record.outcome is RetrainOutcome.FAILED
        assert "evaluation gate missed" in step.record.message
        assert step.record.finished_at == NOW

    def test_deleted_training_job_fails_the_run(self) -> None:
        assert advance(training=None).record.outcome is RetrainOutcome.FAILED

    def test_success_asks_for_the_optimization(self) -> None:
        assert advance(training=tj("Succeeded")).create_optimization

    def test_a_missing_optimization_job_is_asked_for_again(self) -> None:
        record = RECORD.model_copy(update={"optimization_job": "bbc-rt-1-o"})
        assert advance(record, training=tj("Succeeded"), optimization=None).create_optimization

    def test_accepted_optimization_is_promoted_automatically(self) -> None:
        record = RECORD.model_copy(update={"optimization_job": "bbc-rt-1-o"})
        step = advance(record, training=tj("Succeeded"), optimization=oj(accepted=True))
        assert step.record.outcome is RetrainOutcome.PROMOTED
        assert step.candidate is not None
        assert step.candidate.archive_uri == "s3://b/opt/bbc-rt-1-o/model.mar"

    def test_rejected_optimization_is_rejected_not_failed(self) -> None:
        record = RECORD.model_copy(update={"optimization_job": "bbc-rt-1-o"})
        step = advance(record, training=tj("Succeeded"),
                       optimization=oj(accepted=False, phase="Failed"))
        assert step.record.outcome is RetrainOutcome.REJECTED
        assert "accuracy dropped" in step.record.message

    def test_crashed_optimization_is_failed(self) -> None:
        record = RECORD.model_copy(update={"optimization_job": "bbc-rt-1-o"})
        step = advance(record, training=tj("Succeeded"),
                       optimization=oj(accepted=None, phase="Failed"))
        assert step.record.outcome is RetrainOutcome.FAILED

    def test_without_optimization_the_trained_model_is_the_candidate(self) -> None:
        step = advance(training=tj("Succeeded"), optimize=False)
        assert step.record.outcome is RetrainOutcome.PROMOTED
        assert step.candidate is not None
        assert step.candidate.archive_uri == "file:///out/bbc-rt-1"

    def test_manual_promotion_waits_then_takes_the_matching_approval_only(self) -> None:
        waiting = advance(training=tj("Succeeded"), optimize=False,
                          promotion=Promotion.MANUAL)
        assert waiting.record.outcome is RetrainOutcome.AWAITING_PROMOTION
        assert "modelloop.dev/approve-promotion: bbc-rt-1" in waiting.record.message
        wrong = advance(waiting.record, training=tj("Succeeded"), optimize=False,
                        promotion=Promotion.MANUAL, approved="bbc-rt-9")
        assert wrong.record.outcome is RetrainOutcome.AWAITING_PROMOTION
        right = advance(waiting.record, training=tj("Succeeded"), optimize=False,
                        promotion=Promotion.MANUAL, approved="bbc-rt-1")
        assert right.record.outcome is RetrainOutcome.PROMOTED

    def test_a_git_change_of_the_model_rejects_the_run(self) -> None:
        step = advance(training=tj("Running"), current=False)
        assert step.record.outcome is RetrainOutcome.REJECTED
        assert "spec.model changed" in step.record.message

    @pytest.mark.parametrize("outcome", [RetrainOutcome.PROMOTED, RetrainOutcome.FAILED,
                                         RetrainOutcome.REJECTED])
    def test_finished_runs_never_move_again(self, outcome: RetrainOutcome) -> None:
        record = RECORD.model_copy(update={"outcome": outcome})
        assert advance(record, training=tj("Failed"), current=False).record == record
