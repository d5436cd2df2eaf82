"""Retraining on labelled traffic and the champion/challenger gate, the pure pieces: flags,
manifests, validation and run decisions (the reconcile is in test_retrain_loop)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from modelloop_operator.api.common import Lineage, ServedModel
from modelloop_operator.api.modeldeployment import ModelDeploymentSpec
from modelloop_operator.api.monitoring import (
    Promotion,
    PromotionGate,
    RetrainOutcome,
    RetrainRecord,
    RetrainSpec,
)
from modelloop_operator.api.optimizationjob import (
    ComparisonReport,
    OptimizationJobSpec,
    comparison_message,
    parse_comparison,
)
from modelloop_operator.api.trainingjob import TrainingJobSpec
from modelloop_operator.builders.optimization import comparison_flags
from modelloop_operator.builders.training import build_trainer_flags
from modelloop_operator.monitor.builtin_checks import labelled_count_query
from modelloop_operator.reconcilers.retrain_runs import (
    advance_run,
    enough_labels,
    gate_comparison,
    gate_of,
    serving_since,
)
from modelloop_operator.reconcilers.trainingjob import parse_snapshot
from pydantic import ValidationError

from .test_retrain_loop import V1, deployment, retrain_spec

SINK = "pvc://captures/bbc"
T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def comparison(*, passed: bool) -> dict[str, Any]:
    """A comparison section as modelloop-optimize writes it."""
    return {
        "champion": {"name": "uri-1", "original": {"accuracy": 0.94, "samples": 100},
                     "holdout": {"accuracy": 0.62, "samples": 80,
                                 "perClassRecall": {"tech": 0.2}}},
        "candidate": {"original": {"accuracy": 0.935, "macroF1": 0.93, "samples": 100},
                      "holdout": {"accuracy": 0.88 if passed else 0.5, "samples": 80}},
        "rules": {"minImprovement": 0.0, "maxOriginalDrop": 0.01},
        "passed": passed,
        "reasons": [] if passed else ["holdout accuracy 0.500 < champion 0.620 + "
                                      "minImprovement 0.000 (n=80)"]}


# --- pure ---------------------------------------------------------------------------------

def test_captured_data_and_the_comparison_become_flags() -> None:
    spec = TrainingJobSpec.model_validate({
        "model": {"uri": "builtin://all-minilm-l6-v2"},
        "dataset": {"uri": "builtin://bbc-news", "captured": {
            "uri": f"{SINK}/labelled", "since": "2026-05-01T12:00:00Z", "maxRows": 500,
            "holdoutFraction": 0.25}},
        "output": {"uri": "pvc://models/x"}})
    flags = build_trainer_flags(spec=spec)
    assert [f for f in flags if "captured" in f or "holdout" in f] == [
        f"--captured-uri={SINK}/labelled", "--captured-since=2026-05-01T12:00:00Z",
        "--captured-max-rows=500", "--captured-min-rows=1", "--holdout-fraction=0.25"]
    oj = OptimizationJobSpec.model_validate({
        "source": {"trainingJobRef": {"name": "bbc-rt-1"}},
        "techniques": [{"type": "quantization"}], "output": {"uri": "pvc://models/o"},
        "comparison": {"champion": {"uri": V1, "name": "v1"},
                       "holdout": {"uri": f"{SINK}/labelled", "fraction": 0.25}}})
    assert comparison_flags(oj) == [
        f"--champion-uri={V1}", "--champion-name=v1", f"--holdout-uri={SINK}/labelled",
        "--holdout-fraction=0.25", "--min-holdout-rows=20", "--min-improvement=0.0",
        "--max-original-drop=0.01"]


@pytest.mark.parametrize("since", ["2026-05-01", "yesterday", "2026-05-01T12:00:00"])
def test_a_since_without_a_full_time_and_zone_is_refused(since: str) -> None:
    with pytest.raises(ValidationError, match=r"RFC 3339|time zone"):
        TrainingJobSpec.model_validate({
            "model": {"uri": "builtin://all-minilm-l6-v2"},
            "dataset": {"uri": "builtin://bbc-news",
                        "captured": {"uri": f"{SINK}/labelled", "since": since}},
            "output": {"uri": "pvc://models/x"}})


def test_labelled_retraining_needs_capture_and_an_optimization_step() -> None:
    base = deployment("http://prometheus:9090",
                      retrain=retrain_spec(data={"labelled": {"minRows": 10}}))["spec"]
    with pytest.raises(ValidationError, match=r"needs spec\.capture"):
        ModelDeploymentSpec.model_validate(base)
    retrain = retrain_spec(data={"labelled": {}})
    del retrain["optimizationJobTemplate"]
    with pytest.raises(ValidationError, match="needs an optimizationJobTemplate"):
        RetrainSpec.model_validate(retrain)
    ModelDeploymentSpec.model_validate({**base, "capture": {"sink": SINK}})


def test_the_gate_compares_with_the_served_model_on_the_runs_own_holdout() -> None:
    champion = ServedModel(archive_uri=V1, version="v1")
    tj = {"spec": {"dataset": {"uri": "builtin://bbc-news", "captured": {
        "uri": f"{SINK}/labelled", "since": "2026-05-01T12:00:00Z",
        "holdoutFraction": 0.3}}}}
    gate = gate_comparison(gate=PromotionGate(min_improvement=0.02, min_holdout_rows=50),
                           champion=champion, training_job=tj)
    assert gate is not None and gate.holdout is not None
    assert (gate.champion.uri, gate.champion.name) == (V1, "v1")
    assert (gate.holdout.uri, gate.holdout.fraction, gate.holdout.min_rows) == (
        f"{SINK}/labelled", 0.3, 50)
    assert gate.holdout.since == datetime(2026, 5, 1, 12, tzinfo=UTC)
    assert gate.min_improvement == 0.02
    assert gate_comparison(gate=PromotionGate(), champion=champion,
                           training_job={"spec": {"dataset": {"uri": "x"}}}) is None
    assert gate_comparison(gate=PromotionGate(), champion=None, training_job=tj) is None


def test_a_rejected_gate_ends_the_run_with_its_figures_and_digest() -> None:
    record = RetrainRecord(training_job="bbc-rt-1", optimization_job="bbc-rt-1-o")
    tj = {"metadata": {"name": "bbc-rt-1"}, "status": {
        "phase": "Succeeded", "model": {"uri": "file:///m/bbc-rt-1"},
        "dataset": {"digest": "sha256:abc", "rows": {"capturedTrain": 120}}}}
    oj = {"metadata": {"name": "bbc-rt-1-o"}, "status": {
        "phase": "Failed", "message": "rejected",
        "conditions": [{"type": "Accepted", "status": "False",
                        "reason": "OptimizationRejected",
                        "message": "vs uri-1 failed: holdout accuracy 0.500 vs 0.620"}],
        "report": {"comparison": comparison(passed=False)}}}
    step = advance_run(record, training_job=tj, optimization_job=oj, optimize=True,
                       promotion=Promotion.AUTO, approved=None, current=True, now=T0)
    assert step.record.outcome is RetrainOutcome.REJECTED
    assert step.candidate is None
    assert step.record.dataset_digest == "sha256:abc"
    gate = step.record.gate
    assert gate is not None and gate.passed is False
    assert gate.champion is not None and gate.champion.holdout is not None
    assert gate.champion.holdout.per_class_recall == {"tech": 0.2}
    assert gate.reasons[0].startswith("holdout accuracy 0.500 < champion 0.620")


def test_a_passed_gate_promotes_and_says_by_how_much() -> None:
    record = RetrainRecord(training_job="bbc-rt-1", optimization_job="bbc-rt-1-o")
    tj = {"metadata": {"name": "bbc-rt-1"}, "status": {"phase": "Succeeded",
                                                      "model": {"uri": "file:///m/t"}}}
    oj = {"metadata": {"name": "bbc-rt-1-o"}, "status": {
        "phase": "Succeeded", "archiveUri": "file:///m/o/model.mar",
        "model": {"checksum": "sha256:bb"},
        "conditions": [{"type": "Accepted", "status": "True", "reason": "WithinBudget"}],
        "report": {"comparison": comparison(passed=True)}}}
    step = advance_run(record, training_job=tj, optimization_job=oj, optimize=True,
                       promotion=Promotion.AUTO, approved=None, current=True, now=T0)
    assert step.record.outcome is RetrainOutcome.PROMOTED
    assert ("gate vs uri-1 passed: holdout accuracy 0.880 vs 0.620 (n=80), original "
            "accuracy 0.935 vs 0.940 (n=100)") in step.record.message
    manual = advance_run(record, training_job=tj, optimization_job=oj, optimize=True,
                         promotion=Promotion.MANUAL, approved=None, current=True, now=T0)
    assert manual.record.outcome is RetrainOutcome.AWAITING_PROMOTION
    assert "holdout accuracy 0.880 vs 0.620" in manual.record.message


def test_malformed_reports_are_left_out_not_fatal() -> None:
    assert parse_comparison({"passed": "perhaps", "reasons": 3}) is None
    assert parse_comparison("x") is None
    assert gate_of({"status": {"report": {"comparison": []}}}) is None
    snapshot = parse_snapshot({"digest": 7, "rows": {"a": True, "b": 3}}, output="pvc://m/x")
    assert snapshot is not None
    assert snapshot.model_dump(exclude_none=True) == {"uri": "pvc://m/x/dataset",
                                                      "rows": {"b": 3}}
    assert parse_snapshot(None, output=None) is None
    message = comparison_message(ComparisonReport.model_validate(comparison(passed=False)))
    assert message.startswith("vs uri-1 failed: holdout accuracy 0.500 vs 0.620 (n=80)")


def test_labels_are_counted_since_the_served_model_began_serving() -> None:
    promoted = RetrainRecord(training_job="bbc-rt-1", optimization_job="bbc-rt-1-o",
                             outcome=RetrainOutcome.PROMOTED, finished_at=T0)
    active = ServedModel(version="bbc-rt-1-o", lineage=Lineage(training_job="bbc-rt-1"))
    assert serving_since([promoted], active) == T0
    assert serving_since([promoted], ServedModel(version="uri-1")) is None
    spec = RetrainSpec.model_validate(retrain_spec(data={"labelled": {"minRows": 150}}))
    waiting = enough_labels(spec, labelled=149.6, since=T0)
    assert (waiting.allowed, waiting.reason) == (False, "RetrainWaitingForLabels")
    assert "149 labelled requests since 2026-05-01T12:00:00+00:00" in waiting.message
    assert not enough_labels(spec, labelled=None, since=None).allowed
    assert enough_labels(spec, labelled=150, since=None).allowed
    assert enough_labels(RetrainSpec.model_validate(retrain_spec()), labelled=None,
                         since=None).allowed
    assert labelled_count_query(namespace="ml", collector_pod="c-0", seconds=30) == (
        'sum(increase(modelloop_feedback_total{namespace="ml",pod="c-0"}[60s]))')
