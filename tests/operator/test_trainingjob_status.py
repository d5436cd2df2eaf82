"""TrainingJob status from a run decision: results from the termination message,
lineage, counters (reconcilers/trainingjob.py, pure part)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from modelloop_operator.api.common import RetrainTrigger
from modelloop_operator.api.jobs import JobPhase
from modelloop_operator.api.trainingjob import TrainingJobStatus
from modelloop_operator.reconcilers.observe import AttemptObservation, observe_attempt
from modelloop_operator.reconcilers.runpolicy import RunDecision
from modelloop_operator.reconcilers.trainingjob import training_status
from modelloop_operator.status import Reason, get_condition

from .conftest import training_spec
from .k8s_objects import job, pod

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
SUMMARY = json.dumps({"v": 1, "kind": "train", "status": "Succeeded", "exitCode": 0,
                      "metrics": {"accuracy": 0.97, "loss": 0.1},
                      "outputUri": "pvc://models/bbc/run1", "checksum": "sha256:ab",
                      "labels": ["business", "sport"]})


def succeeded(message: str | None) -> tuple[RunDecision, AttemptObservation]:
    decision = RunDecision(phase=JobPhase.SUCCEEDED, reason=Reason.SUCCEEDED,
                           message="attempt 2 completed", attempt=2, failed_attempts=1,
                           disruptions=0, start_time=NOW, completion_time=NOW)
    observed = observe_attempt(job=job(complete=True), pods=[
        pod(index=0, phase="Succeeded", exit_code=0, message=message),
        pod(index=1, phase="Succeeded", exit_code=0)])
    return decision, observed


def status_for(decision: RunDecision, observed: AttemptObservation,
               old: TrainingJobStatus | None = None,
               trigger: RetrainTrigger | None = None) -> TrainingJobStatus:
    return training_status(old=old or TrainingJobStatus(), decision=decision,
                           observed=observed, spec=training_spec(), name="bbc",
                           generation=1, triggered_by=trigger, now=NOW)


def test_success_records_metrics_model_and_labels_from_rank_zero() -> None:
    status = status_for(*succeeded(SUMMARY))
    assert status.phase is JobPhase.SUCCEEDED
    assert status.metrics == {"accuracy": 0.97, "loss": 0.1}
    assert status.model is not None
    assert (status.model.uri, status.model.checksum) == ("pvc://models/bbc/run1", "sha256:ab")
    assert status.labels == ["business", "sport"]
    assert (status.attempts, status.failed_attempts) == (2, 1)
    assert status.completion_time == NOW


def test_garbage_message_still_succeeds_but_says_results_are_unknown() -> None:
    status = status_for(*succeeded("Segmentation fault"))
    assert status.phase is JobPhase.SUCCEEDED
    assert status.metrics == {}
    assert status.model is not None and status.model.uri == "pvc://models/bbc/run1"
    assert Reason.TERMINATION_MESSAGE_UNREADABLE in status.message
    assert "not JSON" in status.message
    ready = get_condition(status.conditions, "Ready")
    assert ready is not None and "not JSON" in ready.message


def test_lineage_names_base_model_dataset_and_trigger() -> None:
    trigger = RetrainTrigger(model_deployment="bbc-serving")
    status = status_for(*succeeded(SUMMARY), trigger=trigger)
    assert status.lineage is not None
    assert status.lineage.base_model == "builtin://all-minilm-l6-v2"
    assert status.lineage.dataset == "builtin://bbc-news"
    assert status.lineage.training_job == "bbc"
    assert status.lineage.triggered_by == trigger


def test_a_sticky_terminal_status_is_kept_as_is_except_the_generation() -> None:
    old = status_for(*succeeded(SUMMARY))
    decision = RunDecision(phase=JobPhase.SUCCEEDED, reason=Reason.PENDING, message="",
                           attempt=2, failed_attempts=1, disruptions=0, start_time=NOW,
                           completion_time=NOW, sticky=True)
    new = training_status(old=old, decision=decision,
                          observed=observe_attempt(job=None, pods=[]), spec=training_spec(),
                          name="bbc", generation=5, triggered_by=None, now=NOW)
    assert new.model_copy(update={"observed_generation": 1}) == old
    assert new.observed_generation == 5


def test_status_serialises_to_camel_case_json() -> None:
    dumped = status_for(*succeeded(SUMMARY)).model_dump(mode="json", exclude_none=True)
    assert dumped["failedAttempts"] == 1
    assert dumped["completionTime"] == "2026-11-28T12:00:00Z"
    assert {c["type"] for c in dumped["conditions"]} == {
        "Ready", "Progressing", "Succeeded", "Failed", "Suspended"}
