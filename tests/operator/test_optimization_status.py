"""OptimizationJob decisions: source resolution, the Accepted verdict and status
(reconcilers/sources.py, reconcilers/optimizationjob.py), from snapshots, no cluster."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from modelloop_operator.api.jobs import JobPhase
from modelloop_operator.api.optimizationjob import (
    Acceptance,
    OptimizationJobStatus,
    OptimizationReport,
)
from modelloop_operator.reconcilers.observe import observe_attempt
from modelloop_operator.reconcilers.optimizationjob import (
    OPTIMIZATION,
    accepted_message,
    inputs_for,
    lost_source,
    optimization_status,
    parse_report,
    references_training_job,
    source_decision,
    waiting_status,
)
from modelloop_operator.reconcilers.runpolicy import RunRecord, decide_run
from modelloop_operator.reconcilers.sources import (
    SourceReason,
    SourceState,
    resolve_optimization_source,
)
from modelloop_operator.status import get_condition

from .k8s_objects import job, pod
from .test_optimization_builder import optimization_spec

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def training_job(*, phase: str | None, model_uri: str | None = "pvc://models/bbc/run1",
                 message: str = "") -> dict[str, Any]:
    status: dict[str, Any] = {"message": message}
    if phase is not None:
        status["phase"] = phase
    if phase == "Succeeded" and model_uri:
        status["model"] = {"uri": model_uri, "checksum": "sha256:abc"}
        status["lineage"] = {"baseModel": "builtin://all-minilm-l6-v2",
                             "dataset": "builtin://bbc-news", "trainingJob": "bbc"}
    return {
        "apiVersion": "modelloop.dev/v1alpha1", "kind": "TrainingJob",
        "metadata": {"name": "bbc", "namespace": "team-a"},
        "spec": {"model": {"uri": "builtin://all-minilm-l6-v2"},
                 "dataset": {"uri": "builtin://bbc-news", "maxSamples": 300},
                 "output": {"uri": "pvc://models/bbc/run1"}},
        "status": status,
    }


REPORT = {"baseline": {"sizeBytes": 90_000_000, "latencyP50Ms": 20.0, "latencyP99Ms": 30.0,
                       "throughput": 77.0, "accuracy": 0.97, "f1_macro": 0.96},
          "optimized": {"sizeBytes": 58_000_000, "latencyP50Ms": 14.0, "latencyP99Ms": 22.0,
                        "throughput": 109.3, "accuracy": 0.966, "f1_macro": 0.955},
          "sizeRatio": 0.64, "speedup": 1.42, "accuracyDrop": 0.004}


def summary(*, accepted: bool, exit_code: int) -> str:
    return json.dumps({
        "v": 1, "kind": "optimize", "status": "Succeeded" if accepted else "Rejected",
        "exitCode": exit_code, "accepted": accepted,
        "message": "optimization accepted" if accepted else "accuracy dropped 2 points",
        "outputUri": "pvc://models/bbc/opt1", "checksum": "sha256:def",
        "archiveUri": "pvc://models/bbc/opt1/model.mar" if accepted else None,
        "report": REPORT if accepted else {**REPORT, "accuracyDrop": 0.021},
    })


class TestSourceResolution:
    def test_missing_training_job_waits_with_source_not_found(self) -> None:
        found = resolve_optimization_source(spec=optimization_spec(), training_job=None)
        assert found.state is SourceState.WAITING
        assert found.reason == SourceReason.NOT_FOUND
        assert "TrainingJob bbc" in found.message

    def test_running_training_job_waits_naming_its_phase(self) -> None:
        found = resolve_optimization_source(spec=optimization_spec(),
                                            training_job=training_job(phase="Running"))
        assert found.state is SourceState.WAITING
        assert found.reason == SourceReason.WAITING
        assert "TrainingJob bbc" in found.message and "Running" in found.message

    def test_failed_training_job_fails_with_its_reason(self) -> None:
        found = resolve_optimization_source(
            spec=optimization_spec(),
            training_job=training_job(phase="Failed", message="evaluation gate missed"))
        assert found.state is SourceState.FAILED
        assert found.reason == SourceReason.FAILED
        assert "evaluation gate missed" in found.message

    def test_succeeded_training_job_gives_model_dataset_and_lineage(self) -> None:
        found = resolve_optimization_source(spec=optimization_spec(),
                                            training_job=training_job(phase="Succeeded"))
        assert found.ready and found.trained is not None
        assert found.trained.uri == "pvc://models/bbc/run1"
        assert found.trained.dataset is not None
        assert found.trained.dataset.uri == "builtin://bbc-news"
        assert found.trained.lineage.training_job == "bbc"
        assert found.trained.lineage.base_model == "builtin://all-minilm-l6-v2"

    def test_an_image_model_is_refused_naming_its_task(self) -> None:
        images = training_job(phase="Succeeded")
        images["spec"].update(task="image-classification",
                              model={"uri": "builtin://efficientnet-lite0"},
                              dataset={"uri": "builtin://digits"})
        found = resolve_optimization_source(spec=optimization_spec(), training_job=images)
        assert found.state is SourceState.FAILED
        assert found.reason == SourceReason.UNSUPPORTED_TASK
        assert "image-classification" in found.message and "TrainingJob bbc" in found.message

    def test_succeeded_without_a_model_uri_is_a_failed_source(self) -> None:
        found = resolve_optimization_source(
            spec=optimization_spec(), training_job=training_job(phase="Succeeded",
                                                                model_uri=None))
        assert found.state is SourceState.FAILED

    def test_a_model_uri_source_is_ready_at_once(self) -> None:
        spec = optimization_spec(source={"modelUri": "s3://b/m"},
                                 evaluation={"dataset": {"uri": "s3://b/d.csv"}})
        found = resolve_optimization_source(spec=spec, training_job=None)
        assert found.ready and found.trained is not None
        inputs = inputs_for(spec=spec, source=found)
        assert inputs is not None and inputs.dataset.uri == "s3://b/d.csv"

    def test_evaluation_data_defaults_to_the_training_jobs(self) -> None:
        spec = optimization_spec()
        found = resolve_optimization_source(spec=spec, training_job=training_job(
            phase="Succeeded"))
        inputs = inputs_for(spec=spec, source=found)
        assert inputs is not None
        assert (inputs.model_uri, inputs.dataset.max_samples) == ("pvc://models/bbc/run1", 300)

    def test_who_references_a_training_job(self) -> None:
        obj = {"spec": {"source": {"trainingJobRef": {"name": "bbc"}}}}
        assert references_training_job(obj, "bbc")
        assert not references_training_job(obj, "other")
        assert not references_training_job({"spec": {"source": {"modelUri": "s3://x"}}}, "bbc")


class TestAcceptedMessage:
    def test_within_budget_says_the_numbers(self) -> None:
        report = parse_report(REPORT)
        text = accepted_message(report=report, acceptance=Acceptance())
        assert text.startswith("accuracy drop 0.40 pts <= 1.00 budget, speedup 1.42x")

    def test_over_budget_and_below_minimum_speedup(self) -> None:
        report = OptimizationReport(accuracy_drop=0.021, speedup=1.1)
        text = accepted_message(report=report, acceptance=Acceptance(max_accuracy_drop=0.01,
                                                                     min_speedup=1.2))
        assert "accuracy drop 2.10 pts > 1.00 budget" in text
        assert "speedup 1.10x < 1.20x minimum" in text

    def test_report_fields_that_are_not_numbers_are_dropped(self) -> None:
        report = parse_report({"speedup": "fast", "baseline": {"accuracy": True,
                                                              "sizeBytes": -1}})
        assert report is not None and report.speedup is None
        assert report.baseline is not None
        assert report.baseline.accuracy is None and report.baseline.size_bytes is None


def _decide(observed_job: dict[str, Any], pods: list[dict[str, Any]]) -> Any:
    observed = observe_attempt(job=observed_job, pods=pods, container="optimizer")
    record = RunRecord(phase=JobPhase.RUNNING, attempt=1, start_time=NOW)
    decision = decide_run(policy=optimization_spec().run_policy, record=record,
                          observed=observed, now=NOW, num_nodes=1, queued=False,
                          permanent_exit_codes=OPTIMIZATION.permanent_exit_codes)
    return decision, observed


class TestStatus:
    def _status(self, decision: Any, observed: Any) -> OptimizationJobStatus:
        spec = optimization_spec()
        source = resolve_optimization_source(spec=spec,
                                             training_job=training_job(phase="Succeeded"))
        return optimization_status(old=OptimizationJobStatus(), decision=decision,
                                   observed=observed, spec=spec, name="bbc-int8",
                                   generation=1, source=source, now=NOW)

    def test_accepted_run_exposes_report_archive_and_lineage(self) -> None:
        decision, observed = _decide(
            job(name="bbc-int8-a1", complete=True),
            [pod(index=0, phase="Succeeded", exit_code=0, container="optimizer",
                 message=summary(accepted=True, exit_code=0), job_name="bbc-int8-a1")])
        status = self._status(decision, observed)
        assert status.phase is JobPhase.SUCCEEDED
        accepted = get_condition(status.conditions, "Accepted")
        assert accepted is not None and accepted.status.value == "True"
        assert "accuracy drop 0.40 pts <= 1.00 budget, speedup 1.42x" in accepted.message
        assert status.archive_uri == "pvc://models/bbc/opt1/model.mar"
        assert status.report is not None and status.report.speedup == 1.42
        assert status.report.optimized is not None
        assert status.report.optimized.f1_macro == 0.955
        assert status.model is not None and status.model.checksum == "sha256:def"
        assert status.lineage is not None
        assert (status.lineage.training_job, status.lineage.optimization_job,
                status.lineage.dataset) == ("bbc", "bbc-int8", "builtin://bbc-news")

    def test_exit_code_4_is_a_final_rejection_with_the_report(self) -> None:
        decision, observed = _decide(
            job(name="bbc-int8-a1", failed="BackoffLimitExceeded"),
            [pod(index=0, phase="Failed", exit_code=4, reason="Error", container="optimizer",
                 message=summary(accepted=False, exit_code=4), job_name="bbc-int8-a1")])
        assert decision.phase is JobPhase.FAILED and decision.attempt == 1  # no retry
        status = self._status(decision, observed)
        accepted = get_condition(status.conditions, "Accepted")
        assert accepted is not None and accepted.status.value == "False"
        assert accepted.reason == "OptimizationRejected"
        assert "2.10 pts > 1.00 budget" in accepted.message
        assert status.archive_uri is None
        assert status.report is not None and status.report.accuracy_drop == 0.021
        assert status.message.startswith("rejected:")

    def test_accepted_run_without_a_message_still_names_the_archive(self) -> None:
        decision, observed = _decide(
            job(name="bbc-int8-a1", complete=True),
            [pod(index=0, phase="Succeeded", exit_code=0, container="optimizer",
                 job_name="bbc-int8-a1")])
        status = self._status(decision, observed)
        assert status.archive_uri == "pvc://models/bbc/opt1/model.mar"
        assert "TerminationMessageUnreadable" in status.message

    def test_a_crash_is_retried_and_accepted_stays_unknown(self) -> None:
        decision, observed = _decide(
            job(name="bbc-int8-a1", failed="BackoffLimitExceeded"),
            [pod(index=0, phase="Failed", exit_code=1, reason="Error", container="optimizer",
                 job_name="bbc-int8-a1")])
        assert decision.attempt == 2
        status = self._status(decision, observed)
        accepted = get_condition(status.conditions, "Accepted")
        assert accepted is not None and accepted.status.value == "Unknown"

    def test_waiting_for_source_is_not_progressing(self) -> None:
        spec = optimization_spec()
        source = resolve_optimization_source(spec=spec,
                                             training_job=training_job(phase="Running"))
        decision = source_decision(record=RunRecord(), source=source, now=NOW)
        status = waiting_status(old=OptimizationJobStatus(), decision=decision, spec=spec,
                                name="bbc-int8", generation=1, now=NOW)
        assert status.phase is JobPhase.PENDING
        progressing = get_condition(status.conditions, "Progressing")
        assert progressing is not None and progressing.status.value == "False"
        assert progressing.reason == "WaitingForSource"
        assert "TrainingJob bbc" in progressing.message
        assert status.lineage is not None and status.lineage.training_job == "bbc"

    def test_failed_source_is_a_terminal_failure_without_a_job(self) -> None:
        spec = optimization_spec()
        source = resolve_optimization_source(spec=spec, training_job=training_job(
            phase="Failed", message="gate missed"))
        decision = source_decision(record=RunRecord(), source=source, now=NOW)
        assert decision.terminal and not decision.stop_job
        status = waiting_status(old=OptimizationJobStatus(), decision=decision, spec=spec,
                                name="bbc-int8", generation=1, now=NOW)
        failed = get_condition(status.conditions, "Failed")
        assert failed is not None and failed.status.value == "True"
        assert failed.reason == "SourceFailed"
        accepted = get_condition(status.conditions, "Accepted")
        assert accepted is not None and accepted.status.value == "False"


class TestLostSource:
    def test_a_source_deleted_after_the_start_fails_and_stops_the_job(self) -> None:
        missing = resolve_optimization_source(spec=optimization_spec(), training_job=None)
        record = RunRecord(phase=JobPhase.RUNNING, attempt=2, start_time=NOW)
        lost = lost_source(missing, record=record)
        assert (lost.state, lost.reason) == (SourceState.FAILED, SourceReason.FAILED)
        assert "attempt 2" in lost.message
        decision = source_decision(record=record, source=lost, now=NOW)
        assert decision.terminal and decision.stop_job

    def test_before_the_start_a_missing_source_is_only_waited_for(self) -> None:
        missing = resolve_optimization_source(spec=optimization_spec(), training_job=None)
        assert lost_source(missing, record=RunRecord()) is missing
