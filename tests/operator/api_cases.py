"""Example manifests and a table of invalid ones, shared by the unit tier (pydantic and a
CEL evaluator) and the cluster tier (the real API server), so both judge the same input.

Each case starts from a valid example in ``examples/``, changes one thing, and names the
words a person must see: ``server`` in the API server's answer, ``python`` in
``describe_validation_error`` (None where only the API server can tell, e.g. a change
made on update or a name length).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLES_DIR = REPO_ROOT / "examples"
API_VERSION = "modelloop.dev/v1alpha1"

Manifest = dict[str, Any]


def load_examples() -> dict[str, Manifest]:
    """Every modelloop object in examples/*.yaml, keyed by file name."""
    out: dict[str, Manifest] = {}
    for path in sorted(EXAMPLES_DIR.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if isinstance(doc, dict) and doc.get("apiVersion") == API_VERSION:
                out[path.name] = doc
    return out


def example(name: str) -> Manifest:
    """A deep copy of one example, safe to change."""
    return copy.deepcopy(load_examples()[name])


@dataclass(frozen=True)
class Case:
    """One invalid manifest: ``change`` applied to a copy of ``base``."""

    id: str
    base: str
    change: Callable[[Manifest], None]
    server: str
    python: str | None
    #: "cel": the API server rejects it through an x-kubernetes-validations rule (so the
    #: unit tier's CEL evaluator must too); "schema": through the OpenAPI schema.
    via: Literal["cel", "schema"]
    #: Create ``base`` first, then apply the changed object as an update.
    update: bool = False
    strict: bool = field(default=False)

    def manifest(self) -> Manifest:
        doc = example(self.base)
        self.change(doc)
        return doc


def _set(path: str, value: Any) -> Callable[[Manifest], None]:
    """A change that sets a dotted path (creating maps on the way)."""
    def change(doc: Manifest) -> None:
        *parents, last = path.split(".")
        node = doc
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    return change


def _delete(path: str) -> Callable[[Manifest], None]:
    def change(doc: Manifest) -> None:
        *parents, last = path.split(".")
        node = doc
        for key in parents:
            node = node[key]
        del node[last]
    return change


def _both(*changes: Callable[[Manifest], None]) -> Callable[[Manifest], None]:
    def change(doc: Manifest) -> None:
        for c in changes:
            c(doc)
    return change


TJ = "trainingjob-bbc.yaml"
TJ_GPU = "trainingjob-rotten-tomatoes-gpu.yaml"
TJ_IMAGES = "trainingjob-digits.yaml"
OJ = "optimizationjob-int8.yaml"
OJ_URI = "optimizationjob-prune-distill.yaml"
MDEP = "modeldeployment.yaml"
MDEP_MIN = "modeldeployment-archive.yaml"

CASES: tuple[Case, ...] = (
    # --- TrainingJob ---
    Case("tj-negative-gpus", TJ, _set("spec.resources.gpus", -1),
         server="spec.resources.gpus in body should be greater than or equal to 0",
         python="spec.resources.gpus: should be greater than or equal to 0", via="schema"),
    Case("tj-unknown-task", TJ, _set("spec.task", "image-generation"),
         server='Unsupported value: "image-generation"',
         python="spec.task: should be 'text-classification' or 'image-classification'",
         via="schema"),
    Case("tj-image-size-for-text", TJ, _set("spec.hyperparameters.imageSize", 64),
         server="hyperparameters.imageSize is for task image-classification only",
         python="hyperparameters.imageSize is for task image-classification only", via="cel"),
    Case("tj-image-model-for-text", TJ, _set("spec.model.uri", "builtin://efficientnet-lite0"),
         server="model.uri is a builtin model of another task",
         python="model.uri is a builtin model of another task", via="cel"),
    Case("tj-captured-images", TJ_IMAGES,
         _set("spec.dataset.captured", {"uri": "pvc://captures/digits/labelled"}),
         server="dataset.captured (labelled traffic) is for task text-classification only",
         python="dataset.captured (labelled traffic) is for task text-classification only",
         via="cel"),
    Case("tj-text-data-for-images", TJ_IMAGES, _set("spec.dataset.uri", "builtin://bbc-news"),
         server="dataset.uri is a builtin dataset of another task",
         python="dataset.uri is a builtin dataset of another task", via="cel"),
    Case("tj-missing-dataset", TJ, _delete("spec.dataset"),
         server="spec.dataset: Required value", python="spec.dataset: required", via="schema"),
    Case("tj-bad-dataset-scheme", TJ, _set("spec.dataset.uri", "http://example.com/d.csv"),
         server="must be a URI with scheme builtin://, file://, pvc://, s3://",
         python="spec.dataset.uri: must be a URI with scheme", via="cel"),
    Case("tj-output-to-builtin", TJ, _set("spec.output.uri", "builtin://bbc-news"),
         server="must be a URI with scheme file://, pvc://, s3://",
         python="spec.output.uri: must be a URI with scheme file://", via="cel"),
    Case("tj-zero-nodes", TJ, _set("spec.numNodes", 0),
         server="spec.numNodes in body should be greater than or equal to 1",
         python="spec.numNodes: should be greater than or equal to 1", via="schema"),
    Case("tj-bad-quantity", TJ, _set("spec.resources.memory", "4 GB"),
         server="spec.resources.memory in body should match",
         python="spec.resources.memory: must be a Kubernetes quantity", via="schema"),
    Case("tj-min-score-above-one", TJ, _set("spec.evaluation.minScore", 97),
         server="spec.evaluation.minScore in body should be less than or equal to 1",
         python="spec.evaluation.minScore: should be less than or equal to 1", via="schema"),
    Case("tj-toleration-exists-with-value", TJ_GPU,
         _set("spec.scheduling.tolerations", [{"key": "k", "operator": "Exists",
                                               "value": "v"}]),
         server="value must be empty when operator is Exists",
         python="value must be empty when operator is Exists", via="cel"),
    Case("tj-name-too-long", TJ, _set("metadata.name", "a" * 51),
         server="metadata.name must be at most 50 characters",
         python="metadata.name must be at most 50 characters", via="cel"),
    Case("tj-name-starts-with-digit", TJ, _set("metadata.name", "1bbc"),
         server="metadata.name must start with a letter",
         python="metadata.name must start with a letter", via="cel"),
    Case("tj-unknown-field", TJ, _set("spec.epochs", 3),
         server=".spec.epochs: field not declared in schema", python="spec.epochs: unknown field",
         via="schema", strict=True),
    Case("tj-immutable-num-nodes", TJ, _set("spec.numNodes", 2),
         server="numNodes is immutable", python=None, via="cel", update=True),
    Case("tj-immutable-dataset", TJ, _set("spec.dataset.uri", "builtin://rotten-tomatoes"),
         server="dataset is immutable", python=None, via="cel", update=True),
    Case("tj-immutable-image-added", TJ, _set("spec.image", "example.com/trainer:2"),
         server="image is immutable: it cannot be added or removed", python=None, via="cel",
         update=True),
    Case("tj-immutable-backoff-limit", TJ, _set("spec.runPolicy.backoffLimit", 5),
         server="backoffLimit is immutable", python=None, via="cel", update=True),
    # --- OptimizationJob ---
    Case("oj-two-sources", OJ, _set("spec.source.modelUri", "pvc://models/x"),
         server="exactly one of trainingJobRef or modelUri must be set",
         python="exactly one of trainingJobRef or modelUri must be set", via="cel"),
    Case("oj-no-source", OJ, _set("spec.source", {}),
         server="exactly one of trainingJobRef or modelUri must be set",
         python="exactly one of trainingJobRef or modelUri must be set", via="cel"),
    Case("oj-accuracy-drop-above-one", OJ, _set("spec.acceptance.maxAccuracyDrop", 1.5),
         server="spec.acceptance.maxAccuracyDrop in body should be less than or equal to 1",
         python="spec.acceptance.maxAccuracyDrop: should be less than or equal to 1",
         via="schema"),
    Case("oj-unknown-technique", OJ, _set("spec.techniques", [{"type": "sparsify"}]),
         server='Unsupported value: "sparsify"', python="should be 'quantization'",
         via="schema"),
    Case("oj-parameter-of-other-technique", OJ,
         _set("spec.techniques", [{"type": "quantization", "amount": 0.5}]),
         server="amount, structured apply only to type pruning",
         python="amount, structured apply only to type pruning", via="cel"),
    Case("oj-no-techniques", OJ, _set("spec.techniques", []),
         server="spec.techniques in body should have at least 1 items",
         python="spec.techniques: List should have at least 1 item", via="schema"),
    Case("oj-builtin-model-uri", OJ_URI, _set("spec.source.modelUri", "builtin://all-minilm-l6-v2"),
         server="must be a URI with scheme file://, pvc://, s3://",
         python="spec.source.modelUri: must be a URI with scheme file://", via="cel"),
    Case("oj-uri-source-without-dataset", OJ_URI, _delete("spec.evaluation"),
         server="evaluation.dataset is required when the source is a modelUri",
         python="evaluation.dataset is required when the source is a modelUri", via="cel"),
    Case("oj-immutable-techniques", OJ,
         _set("spec.techniques", [{"type": "quantization", "embeddings": False}]),
         server="techniques is immutable", python=None, via="cel", update=True),
    # --- ModelDeployment ---
    Case("mdep-retrain-images", MDEP,
         _both(_set("spec.retrain.trainingJobTemplate.spec.task", "image-classification"),
               _set("spec.retrain.trainingJobTemplate.spec.model.uri",
                    "builtin://efficientnet-lite0")),
         server="retraining takes task text-classification only",
         python="retraining takes task text-classification only", via="cel"),
    Case("mdep-two-model-sources", MDEP, _set("spec.model.archiveUri", "pvc://models/m.mar"),
         server="exactly one of optimizationJobRef, trainingJobRef or archiveUri must be set",
         python="exactly one of optimizationJobRef, trainingJobRef or archiveUri", via="cel"),
    Case("mdep-canary-weight-above-100", MDEP,
         _set("spec.rollout.canary.steps", [{"weight": 50}, {"weight": 150}]),
         server="should be less than or equal to 100",
         python="spec.rollout.canary.steps[1].weight: should be less than or equal to 100",
         via="schema"),
    Case("mdep-canary-steps-with-rolling-update", MDEP,
         _set("spec.rollout.strategy", "RollingUpdate"),
         server="canary is only allowed with strategy Canary",
         python="canary is only allowed with strategy Canary", via="cel"),
    Case("mdep-canary-without-steps", MDEP, _delete("spec.rollout.canary"),
         server="strategy Canary needs canary.steps",
         python="strategy Canary needs canary.steps", via="cel"),
    Case("mdep-check-without-bounds", MDEP,
         _set("spec.monitoring.checks", [{"name": "latency", "query": "up"}]),
         server="set min, max or both", python="set min, max or both", via="cel"),
    Case("mdep-check-min-above-max", MDEP, _set("spec.monitoring.confidence", {"min": 0.9,
                                                                               "max": 0.5}),
         server="min must not be greater than max",
         python="min must not be greater than max", via="cel"),
    Case("mdep-duplicate-check-names", MDEP,
         _set("spec.monitoring.checks", [{"name": "a", "query": "up", "max": 1},
                                         {"name": "a", "query": "up", "min": 0}]),
         server='.spec.monitoring.checks: duplicate entries for key [name="a"]',
         python="check names must be unique", via="schema"),
    Case("mdep-retrain-without-template", MDEP, _delete("spec.retrain.trainingJobTemplate"),
         server="retrain.enabled needs a trainingJobTemplate",
         python="retrain.enabled needs a trainingJobTemplate", via="cel"),
    Case("mdep-retrain-without-monitoring", MDEP, _delete("spec.monitoring"),
         server="retrain.enabled needs monitoring",
         python="retrain.enabled needs monitoring", via="cel"),
    Case("mdep-bad-duration", MDEP, _set("spec.monitoring.interval", "5 minutes"),
         server="must be a positive duration such as 30s, 5m or 1h",
         python="spec.monitoring.interval: must be a duration such as 30s, 5m or 1h",
         via="cel"),
    Case("mdep-zero-cooldown", MDEP, _set("spec.retrain.cooldown", "0s"),
         server="must be a positive duration such as 30s, 5m or 1h",
         python="spec.retrain.cooldown: must be longer than zero", via="cel"),
    Case("mdep-bad-prometheus-url", MDEP, _set("spec.monitoring.prometheusUrl",
                                               "prometheus:9090"),
         server="must be an http:// or https:// URL",
         python="spec.monitoring.prometheusUrl: must be an http:// or https:// URL", via="cel"),
    Case("mdep-unknown-promotion", MDEP, _set("spec.retrain.promotion", "Auto"),
         server='Unsupported value: "Auto"', python="should be 'auto' or 'manual'",
         via="schema"),
    Case("mdep-autoscaling-min-above-max", MDEP_MIN,
         _set("spec.autoscaling", {"minReplicas": 5, "maxReplicas": 2}),
         server="minReplicas must not be greater than maxReplicas",
         python="minReplicas must not be greater than maxReplicas", via="cel"),
    Case("mdep-name-too-long", MDEP_MIN, _set("metadata.name", "m" * 41),
         server="metadata.name must be at most 40 characters",
         python="metadata.name must be at most 40 characters", via="cel"),
    Case("mdep-template-unknown-field", MDEP,
         _set("spec.retrain.trainingJobTemplate.spec.gpus", 1),
         server=".spec.retrain.trainingJobTemplate.spec.gpus: field not declared in schema",
         python="spec.retrain.trainingJobTemplate.spec.gpus: unknown field", via="schema",
         strict=True),
    Case("mdep-template-bad-uri", MDEP_MIN, _both(
        _set("spec.monitoring", {"prometheusUrl": "http://p:9090", "drift": {"max": 0.2}}),
        _set("spec.retrain", {"enabled": True, "trainingJobTemplate": {"spec": {
            "model": {"uri": "ftp://x"}, "dataset": {"uri": "builtin://bbc-news"},
            "output": {"uri": "pvc://models/r"}}}})),
         server="must be a URI with scheme builtin://", python="must be a URI with scheme",
         via="cel"),
    # --- References stay in their namespace (docs/security.md) ---
    # A reference is a bare name: no namespace field to fill in, and a name cannot smuggle
    # one in ("other-ns/foo", "system:serviceaccount:..."), so it resolves in the
    # referrer's own namespace or not at all.
    Case("oj-ref-with-namespace", OJ, _set("spec.source.trainingJobRef.namespace", "team-b"),
         server=".spec.source.trainingJobRef.namespace: field not declared in schema",
         python="spec.source.trainingJobRef.namespace: unknown field", via="schema",
         strict=True),
    Case("oj-ref-name-with-namespace", OJ,
         _set("spec.source.trainingJobRef.name", "team-b/bbc-minilm"),
         server="spec.source.trainingJobRef.name in body should match",
         python="spec.source.trainingJobRef.name: must be a Kubernetes object name",
         via="schema"),
    Case("mdep-ref-with-namespace", MDEP,
         _set("spec.model.optimizationJobRef.namespace", "team-b"),
         server=".spec.model.optimizationJobRef.namespace: field not declared in schema",
         python="spec.model.optimizationJobRef.namespace: unknown field", via="schema",
         strict=True),
    Case("mdep-ref-name-with-namespace", MDEP_MIN,
         _set("spec.model", {"trainingJobRef": {"name": "team-b/bbc-minilm"}}),
         server="spec.model.trainingJobRef.name in body should match",
         python="spec.model.trainingJobRef.name: must be a Kubernetes object name",
         via="schema"),
    Case("tj-secret-in-other-namespace", TJ_GPU, _set("spec.storage.secretName", "team-b/s3"),
         server="spec.storage.secretName in body should match",
         python="spec.storage.secretName: must be a Kubernetes object name", via="schema"),
    Case("tj-storage-namespace-field", TJ_GPU, _set("spec.storage.namespace", "team-b"),
         server=".spec.storage.namespace: field not declared in schema",
         python="spec.storage.namespace: unknown field", via="schema", strict=True),
    Case("oj-service-account-of-other-namespace", OJ,
         _set("spec.storage.serviceAccountName", "system:serviceaccount:kube-system:default"),
         server="spec.storage.serviceAccountName in body should match",
         python="spec.storage.serviceAccountName: must be a Kubernetes object name",
         via="schema"),
    Case("mdep-template-in-other-namespace", MDEP,
         _set("spec.retrain.trainingJobTemplate.metadata.namespace", "team-b"),
         server=".spec.retrain.trainingJobTemplate.metadata.namespace: field not declared",
         python="spec.retrain.trainingJobTemplate.metadata.namespace: unknown field",
         via="schema", strict=True),
    Case("tj-pvc-uri-with-namespace", TJ, _set("spec.output.uri", "pvc://team-b:models/run"),
         server="must be a URI with scheme file://, pvc://, s3://",
         python="spec.output.uri: must be a URI with scheme", via="cel"),
    Case("mdep-archive-pvc-uri-with-namespace", MDEP_MIN,
         _set("spec.model.archiveUri", "pvc://models@team-b/bbc.mar"),
         server="must be a URI with scheme file://, pvc://, s3://",
         python="spec.model.archiveUri: must be a URI with scheme", via="cel"),
)

#: Updates the API server must accept: fields a TrainingJob may change after creation.
ALLOWED_UPDATES: tuple[tuple[str, str, Callable[[Manifest], None]], ...] = (
    ("tj-suspend", TJ, _set("spec.runPolicy.suspend", True)),
    ("tj-ttl-added", TJ, _set("spec.runPolicy.ttlSecondsAfterFinished", 600)),
    ("oj-suspend", OJ, _set("spec.runPolicy.suspend", True)),
    ("mdep-retrain-template-changed", MDEP,
     _set("spec.retrain.trainingJobTemplate.spec.numNodes", 2)),
    ("mdep-model-changed", MDEP, _set("spec.model", {"archiveUri": "pvc://models/x.mar"})),
)
