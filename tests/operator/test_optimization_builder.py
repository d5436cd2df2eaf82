"""The OptimizationJob's command line and gang Job (builders/optimization.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from modelloop_operator.api.common import DatasetSpec
from modelloop_operator.api.optimizationjob import OptimizationJobSpec
from modelloop_operator.builders.job import Owner, build_job
from modelloop_operator.builders.labels import OPTIMIZATION_JOB
from modelloop_operator.builders.optimization import (
    OptimizationInputs,
    build_optimization_template,
    build_optimize_flags,
    expected_archive_uri,
)


def optimization_spec(**changes: Any) -> OptimizationJobSpec:
    raw: dict[str, Any] = {
        "source": {"trainingJobRef": {"name": "bbc"}},
        "techniques": [{"type": "quantization", "embeddings": True},
                       {"type": "pruning", "amount": 0.2}],
        "output": {"uri": "pvc://models/bbc/opt1"},
    }
    raw.update(changes)
    return OptimizationJobSpec.model_validate(raw)


INPUTS = OptimizationInputs(model_uri="pvc://models/bbc/run1",
                            dataset=DatasetSpec(uri="builtin://bbc-news", max_samples=300))
OWNER = Owner(api_version="modelloop.dev/v1alpha1", kind="OptimizationJob", name="bbc-int8",
              namespace="team-a", uid="u-1")


def _flags(spec: OptimizationJobSpec, inputs: OptimizationInputs = INPUTS) -> dict[str, str]:
    out: dict[str, str] = {}
    for flag in build_optimize_flags(spec=spec, inputs=inputs):
        key, _, value = flag.partition("=")
        out[key] = value
    return out


class TestFlags:
    def test_model_and_data_come_from_the_resolved_inputs(self) -> None:
        flags = _flags(optimization_spec())
        assert flags["--model-uri"] == "pvc://models/bbc/run1"
        assert flags["--dataset-uri"] == "builtin://bbc-news"
        assert flags["--max-samples"] == "300"
        assert flags["--validation-split"] == "0.1"

    def test_techniques_are_json_in_order_with_defaults_filled_in(self) -> None:
        techniques = json.loads(_flags(optimization_spec())["--techniques"])
        assert techniques == [
            {"type": "quantization", "dtype": "int8", "embeddings": True},
            {"type": "pruning", "amount": 0.2, "structured": False},
        ]

    def test_acceptance_budget_and_optional_speedup(self) -> None:
        flags = _flags(optimization_spec())
        assert flags["--max-accuracy-drop"] == "0.01"
        assert "--min-speedup" not in flags
        flags = _flags(optimization_spec(acceptance={"maxAccuracyDrop": 0.02,
                                                     "minSpeedup": 1.2}))
        assert flags["--max-accuracy-drop"] == "0.02"
        assert flags["--min-speedup"] == "1.2"

    def test_packaging_and_output(self) -> None:
        flags = _flags(optimization_spec(packaging={"archiveName": "bbc", "batchSize": 16,
                                                    "workers": 2, "maxBatchDelayMs": 20,
                                                    "responseTimeoutSeconds": 60}))
        assert flags["--output-uri"] == "pvc://models/bbc/opt1"
        assert flags["--archive-name"] == "bbc"
        assert flags["--batch-size"] == "16"
        assert flags["--workers"] == "2"
        assert flags["--max-batch-delay-ms"] == "20"
        assert flags["--response-timeout-s"] == "60"
        assert flags["--termination-log"] == "/dev/termination-log"

    def test_a_validation_file_replaces_the_split(self) -> None:
        inputs = OptimizationInputs(model_uri="file:///m", dataset=DatasetSpec(
            uri="file:///d.jsonl", validation_uri="file:///v.jsonl", text_field="body"))
        flags = _flags(optimization_spec(), inputs)
        assert flags["--validation-uri"] == "file:///v.jsonl"
        assert "--validation-split" not in flags
        assert flags["--text-field"] == "body"

    def test_expected_archive_is_named_after_the_archive_name(self) -> None:
        spec = optimization_spec(packaging={"archiveName": "bbc"},
                                 output={"uri": "s3://bucket/opt/"})
        assert expected_archive_uri(spec) == "s3://bucket/opt/bbc.mar"


class TestGangJob:
    @pytest.fixture
    def job(self) -> dict[str, Any]:
        template = build_optimization_template(
            owner=OWNER, spec=optimization_spec(storage={"secretName": "s3-creds"}),
            inputs=INPUTS, default_image="registry.example/trainer:1", default_cpu="2",
            default_memory="8Gi", rendezvous_port=29500)
        return build_job(template=template, attempt=1, suspend=False)

    def test_one_node_running_modelloop_optimize(self, job: dict[str, Any]) -> None:
        assert job["spec"]["completions"] == job["spec"]["parallelism"] == 1
        container = job["spec"]["template"]["spec"]["containers"][0]
        assert container["name"] == "optimizer"
        assert container["command"][0] == "modelloop-optimize"
        assert container["image"] == "registry.example/trainer:1"

    def test_children_carry_the_optimizationjob_label(self, job: dict[str, Any]) -> None:
        assert job["metadata"]["labels"][OPTIMIZATION_JOB] == "bbc-int8"
        assert job["spec"]["template"]["metadata"]["labels"][OPTIMIZATION_JOB] == "bbc-int8"
        assert job["metadata"]["name"] == "bbc-int8-a1"

    def test_the_model_and_output_claim_is_mounted_once(self, job: dict[str, Any]) -> None:
        claims = [v["persistentVolumeClaim"]["claimName"]
                  for v in job["spec"]["template"]["spec"]["volumes"]
                  if "persistentVolumeClaim" in v]
        assert claims == ["models"]

    def test_storage_secret_is_referenced_never_copied(self, job: dict[str, Any]) -> None:
        container = job["spec"]["template"]["spec"]["containers"][0]
        assert container["envFrom"] == [{"secretRef": {"name": "s3-creds"}}]
