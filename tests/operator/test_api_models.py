"""The three kinds as pydantic models: defaults, whole objects, examples, invalid specs."""

from __future__ import annotations

from typing import Any

import pytest
from modelloop_operator.api import (
    KINDS,
    Autoscaling,
    Bounds,
    CanarySpec,
    EvaluationMetric,
    Hyperparameters,
    JobPhase,
    ModelDeployment,
    ModelDeploymentSpec,
    MonitoringSpec,
    OnMissingData,
    OptimizationJob,
    OptimizationJobSpec,
    OptimizationJobStatus,
    OptimizationTechnique,
    Packaging,
    Promotion,
    RetrainSpec,
    RolloutSpec,
    RolloutStrategy,
    ServerSpec,
    Task,
    TrainingJob,
    TrainingJobPhase,
    TrainingJobSpec,
    TrainingJobStatus,
    describe_validation_error,
)
from pydantic import BaseModel, ValidationError

from .api_cases import CASES, Case, load_examples

MODELS: dict[str, type[BaseModel]] = {
    "TrainingJob": TrainingJob, "OptimizationJob": OptimizationJob,
    "ModelDeployment": ModelDeployment,
}


@pytest.mark.parametrize("name", sorted(load_examples()))
def test_every_example_is_a_valid_object(name: str) -> None:
    doc = load_examples()[name]
    obj = MODELS[doc["kind"]].model_validate(doc)
    assert obj.metadata.name == doc["metadata"]["name"]  # type: ignore[attr-defined]


def test_examples_cover_every_kind() -> None:
    kinds = {doc["kind"] for doc in load_examples().values()}
    assert kinds == {k.kind for k in KINDS}


@pytest.mark.parametrize("case", [c for c in CASES if c.python], ids=lambda c: c.id)
def test_invalid_spec_rejected_with_readable_message(case: Case) -> None:
    doc = case.manifest()
    with pytest.raises(ValidationError) as err:
        MODELS[doc["kind"]].model_validate(doc)
    message = describe_validation_error(err.value)
    assert case.python is not None and case.python in message, message


def test_trainingjob_spec_defaults() -> None:
    spec = TrainingJobSpec.model_validate({
        "model": {"uri": "builtin://all-minilm-l6-v2"},
        "dataset": {"uri": "builtin://bbc-news"},
        "output": {"uri": "pvc://models/x"},
    })
    assert spec.task is Task.TEXT_CLASSIFICATION
    assert spec.num_nodes == 1
    assert spec.hyperparameters == Hyperparameters(
        epochs=3, batch_size=16, learning_rate=None, weight_decay=0.0, warmup_ratio=0.0,
        gradient_accumulation_steps=1, max_length=128, image_size=None, seed=42,
        checkpoint_every=500)
    assert spec.learning_rate == 5e-5
    assert spec.evaluation.metric is EvaluationMetric.ACCURACY
    assert spec.evaluation.min_score is None
    assert spec.resources.gpus == 0 and spec.image is None
    assert spec.run_policy.backoff_limit == 2 and not spec.run_policy.suspend
    assert spec.pod_template.metadata.labels == {}
    assert spec.storage.secret_name is None


def test_trainingjob_whole_object_round_trip() -> None:
    doc = load_examples()["trainingjob-rotten-tomatoes-gpu.yaml"]
    tj = TrainingJob.model_validate(doc)
    assert tj.spec.num_nodes == 2 and tj.spec.resources.gpus == 4
    assert tj.spec.scheduling.queue_name == "gpu"
    assert tj.spec.pod_template.metadata.annotations == {"cost-center": "ml-platform"}
    dumped = tj.model_dump(mode="json", exclude_none=True)
    assert dumped["apiVersion"] == "modelloop.dev/v1alpha1"
    assert dumped["spec"]["runPolicy"]["ttlSecondsAfterFinished"] == 86400
    assert TrainingJob.model_validate(dumped) == tj


def test_trainingjob_status_reads_what_the_operator_writes() -> None:
    status = TrainingJobStatus.model_validate({
        "phase": "Succeeded", "observedGeneration": 2, "attempts": 2, "failedAttempts": 1,
        "disruptions": 0, "startTime": "2026-11-28T12:00:00Z",
        "conditions": [{"type": "Succeeded", "status": "True", "reason": "GatePassed",
                        "lastTransitionTime": "2026-11-28T12:10:00Z"}],
        "metrics": {"accuracy": 0.97, "f1_macro": 0.96},
        "model": {"uri": "pvc://models/bbc-minilm", "checksum": "sha256:ab"},
        "labels": ["business", "tech"],
        "lineage": {"baseModel": "builtin://all-minilm-l6-v2", "dataset": "builtin://bbc-news",
                    "triggeredBy": {"modelDeployment": "bbc-news",
                                    "checks": [{"name": "drift", "value": 0.3,
                                                "threshold": 0.2}]}},
    })
    assert status.phase is TrainingJobPhase.SUCCEEDED and status.phase.is_terminal
    assert status.lineage is not None and status.lineage.triggered_by is not None
    assert status.lineage.triggered_by.checks[0].value == 0.3
    dumped = status.model_dump(mode="json", exclude_none=True)
    assert dumped["startTime"] == "2026-11-28T12:00:00Z"
    assert dumped["conditions"][0]["lastTransitionTime"] == "2026-11-28T12:10:00Z"


@pytest.mark.parametrize("phase,terminal", [
    (JobPhase.PENDING, False), (JobPhase.RUNNING, False), (JobPhase.SUSPENDED, False),
    (JobPhase.SUCCEEDED, True), (JobPhase.FAILED, True),
])
def test_only_succeeded_and_failed_are_terminal(phase: JobPhase, terminal: bool) -> None:
    assert phase.is_terminal is terminal


def test_optimizationjob_defaults() -> None:
    spec = OptimizationJobSpec.model_validate({
        "source": {"trainingJobRef": {"name": "bbc"}},
        "techniques": [{"type": "quantization"}],
        "output": {"uri": "pvc://models/q"},
    })
    assert spec.acceptance.max_accuracy_drop == 0.01 and spec.acceptance.min_speedup is None
    assert spec.packaging == Packaging(archive_name="model", batch_size=8, workers=1,
                                       max_batch_delay_ms=50, response_timeout_seconds=120)
    assert spec.evaluation.dataset is None
    assert OptimizationJobStatus().archive_uri is None


@pytest.mark.parametrize("technique,expected", [
    ({"type": "quantization"}, {"type": "quantization", "dtype": "int8", "embeddings": False}),
    ({"type": "quantization", "embeddings": True},
     {"type": "quantization", "dtype": "int8", "embeddings": True}),
    ({"type": "pruning", "amount": 0.5},
     {"type": "pruning", "amount": 0.5, "structured": False}),
    ({"type": "distillation", "studentLayers": 2},
     {"type": "distillation", "studentLayers": 2, "epochs": 1, "temperature": 2.0}),
])
def test_technique_becomes_the_trainers_techniques_json(
        technique: dict[str, Any], expected: dict[str, Any]) -> None:
    assert OptimizationTechnique.model_validate(technique).to_trainer_json() == expected


def test_modeldeployment_defaults() -> None:
    spec = ModelDeploymentSpec.model_validate({"model": {"archiveUri": "pvc://m/a.mar"}})
    assert spec.replicas == 1 and spec.autoscaling is None
    assert spec.rollout == RolloutSpec(strategy=RolloutStrategy.ROLLING_UPDATE, canary=None)
    assert spec.server == ServerSpec(workers=1, batch_size=8, max_batch_delay_ms=50,
                                     response_timeout_seconds=120, job_queue_size=100)
    assert spec.monitoring is None and spec.retrain is None
    monitoring = MonitoringSpec.model_validate({"prometheusUrl": "http://p:9090",
                                                "drift": {"max": 0.2}})
    assert (monitoring.interval, monitoring.window, monitoring.failure_limit,
            monitoring.min_samples) == ("1m", "5m", 3, 300)
    assert monitoring.on_missing_data is OnMissingData.INCONCLUSIVE
    retrain = RetrainSpec()
    assert (retrain.enabled, retrain.cooldown, retrain.max_in_flight, retrain.max_per_day,
            retrain.promotion) == (False, "1h", 1, 3, Promotion.MANUAL)
    assert CanarySpec.model_validate({"steps": [{"weight": 10}]}).interval == "5m"
    assert Autoscaling(max_replicas=3).target_cpu_utilization_percentage == 80


def test_autoscaling_uses_the_kubernetes_spelling_of_cpu() -> None:
    scaling = Autoscaling.model_validate({"maxReplicas": 4,
                                          "targetCPUUtilizationPercentage": 60})
    assert scaling.model_dump()["targetCPUUtilizationPercentage"] == 60


def test_modeldeployment_example_reads_completely() -> None:
    mdep = ModelDeployment.model_validate(load_examples()["modeldeployment.yaml"])
    spec = mdep.spec
    assert spec.model.optimization_job_ref is not None
    assert spec.rollout.canary is not None and [s.weight for s in spec.rollout.canary.steps] == [
        25, 50]
    assert spec.monitoring is not None and spec.monitoring.checks[0].name == "p99-latency"
    assert spec.retrain is not None and spec.retrain.promotion is Promotion.AUTO
    template = spec.retrain.training_job_template
    assert template is not None and template.spec.hyperparameters.epochs == 1
    assert spec.retrain.optimization_job_template is not None


@pytest.mark.parametrize("bounds,value,healthy", [
    ({"max": 0.2}, 0.1, True), ({"max": 0.2}, 0.2, True), ({"max": 0.2}, 0.3, False),
    ({"min": 0.6}, 0.5, False), ({"min": 0.6, "max": 0.9}, 0.95, False),
])
def test_bounds_contains(bounds: dict[str, float], value: float, healthy: bool) -> None:
    assert Bounds.model_validate(bounds).contains(value) is healthy


def test_trainingjob_phase_is_the_shared_job_phase() -> None:
    assert TrainingJobPhase is JobPhase
