"""The operations and security docs stay true: every condition reason the operator can
write is explained in docs/operations.md, every alert in docs/observability.md, and the
ValidatingAdmissionPolicy in docs/security.md really allows and denies what it says."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import celpy
import pytest
import yaml
from celpy.adapter import json_to_cel
from modelloop_operator.config import OperatorConfig
from modelloop_operator.reconcilers.optimizationjob import AcceptedReason
from modelloop_operator.reconcilers.sources import SourceReason
from modelloop_operator.status import ConditionType, Reason

from tests.chart.helm import Helm, one

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"


def constants(cls: type) -> set[str]:
    return {v for k, v in vars(cls).items() if k.isupper() and isinstance(v, str)}


def test_every_condition_reason_is_explained_in_operations_md() -> None:
    text = (DOCS / "operations.md").read_text()
    documented = set(re.findall(r"^\| `([A-Za-z]+)` \|", text, flags=re.MULTILINE))
    reasons = constants(Reason) | constants(SourceReason) | constants(AcceptedReason)
    assert reasons - documented == set()


def test_every_condition_type_is_explained_in_operations_md() -> None:
    text = (DOCS / "operations.md").read_text()
    assert {t for t in constants(ConditionType) if f"`{t}`" not in text} == set()


def test_every_operator_setting_is_listed_in_operations_md() -> None:
    text = (DOCS / "operations.md").read_text()
    settings = {f"MODELLOOP_{name.upper()}" for name in OperatorConfig.model_fields}
    assert {s for s in settings if f"`{s}`" not in text} == set()


def test_every_alert_is_explained_in_observability_md(helm: Helm, workdir: Path) -> None:
    objects = helm.template({"metrics": {"prometheusRule": {"enabled": True}}}, workdir=workdir)
    alerts = {r["alert"] for g in one(objects, "PrometheusRule")["spec"]["groups"]
              for r in g["rules"]}
    text = (DOCS / "observability.md").read_text()
    assert {a for a in alerts if f"`{a}`" not in text} == set()


def _admission_policy() -> dict[str, Any]:
    blocks = re.findall(r"```yaml\n(.*?)```", (DOCS / "security.md").read_text(), re.DOTALL)
    for block in blocks:
        for doc in yaml.safe_load_all(_dedent(block)):
            if doc and doc.get("kind") == "ValidatingAdmissionPolicy":
                return dict(doc)
    raise AssertionError("no ValidatingAdmissionPolicy in docs/security.md")


def _dedent(block: str) -> str:
    lines = block.splitlines()
    indent = min((len(x) - len(x.lstrip()) for x in lines if x.strip()), default=0)
    return "\n".join(x[indent:] for x in lines)


def _cel_map(values: dict[str, Any]) -> Any:
    return celpy.celtypes.MapType({celpy.celtypes.StringType(k): v for k, v in values.items()})


def admit(obj: dict[str, Any]) -> list[str]:
    """Messages of the policy's failed validations for ``obj`` (empty: admitted), evaluated
    as the API server does: variables in order (each sees the earlier ones), then rules."""
    policy = _admission_policy()["spec"]
    env = celpy.Environment()
    variables: dict[str, Any] = {}
    for variable in policy["variables"]:
        program = env.program(env.compile(variable["expression"]))
        variables[variable["name"]] = program.evaluate(
            {"object": json_to_cel(obj), "variables": _cel_map(variables)})
    activation = {"object": json_to_cel(obj), "variables": _cel_map(variables)}
    failed = []
    for validation in policy["validations"]:
        result = env.program(env.compile(validation["expression"])).evaluate(activation)
        if not bool(result):
            failed.append(validation["message"])
    return failed


def tj(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "modelloop.dev/v1alpha1", "kind": "TrainingJob",
            "metadata": {"name": "news", "namespace": "team-a"},
            "spec": {"model": {"uri": "builtin://all-minilm-l6-v2"}, **spec}}


def mdep(retrain: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "modelloop.dev/v1alpha1", "kind": "ModelDeployment",
            "metadata": {"name": "news", "namespace": "team-a"},
            "spec": {"model": {"optimizationJobRef": {"name": "news-int8"}},
                     "image": "registry.example.com/ml/server:1", "retrain": retrain}}


@pytest.mark.parametrize(("obj", "denied"), [
    (tj(), 0),
    (tj(image="registry.example.com/ml/trainer:1.2"), 0),
    (tj(image="docker.io/someone/miner:latest"), 1),
    (tj(image="registry.example.com/mlx/trainer:1"), 1),
    (tj(storage={"serviceAccountName": "model-storage"}), 0),
    (tj(storage={"serviceAccountName": "cluster-admin-ish"}), 1),
    (tj(storage={"secretName": "s3"}), 0),
    (mdep({"enabled": True, "trainingJobTemplate": {"spec": {"image": "evil.io/x:1"}}}), 1),
    (mdep({"enabled": True, "trainingJobTemplate": {"spec": {}},
           "optimizationJobTemplate": {"spec": {"image": "registry.example.com/ml/t:1",
                                                "storage": {"serviceAccountName": "x"}}}}),
     1),
    (mdep({"enabled": False}), 0),
], ids=["default-image", "approved", "foreign", "prefix-lookalike", "approved-sa", "other-sa",
        "secret-only", "retrain-template-image", "optimize-template-sa", "no-templates"])
def test_admission_policy_example_allows_and_denies(obj: dict[str, Any], denied: int) -> None:
    assert len(admit(obj)) == denied
