"""The CRDs' CEL rules, evaluated with cel-python on the examples and the invalid table.

The real API server runs them in tests/cluster/test_admission.py; this tier catches a
wrong rule (a typo, a rule that never fires, one that rejects a valid example) in
seconds, and checks that pydantic and CEL reject the same manifests.
"""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("celpy", reason="cel-python is pinned in hack/requirements.txt")

from modelloop_operator.api import KINDS
from modelloop_operator.crdgen import root_schema

from .api_cases import ALLOWED_UPDATES, CASES, Case, example, load_examples
from .cel_admission import admit, apply_defaults, violations

SCHEMAS: dict[str, dict[str, Any]] = {k.kind: root_schema(k) for k in KINDS}


@pytest.mark.parametrize("name", sorted(load_examples()))
def test_examples_pass_every_rule(name: str) -> None:
    doc = load_examples()[name]
    assert admit(SCHEMAS[doc["kind"]], doc) == []


@pytest.mark.parametrize("name", sorted(load_examples()))
def test_examples_updated_to_themselves_pass_transition_rules(name: str) -> None:
    doc = load_examples()[name]
    assert admit(SCHEMAS[doc["kind"]], doc, old=example(name)) == []


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_cel_rejects_exactly_the_cases_attributed_to_cel(case: Case) -> None:
    doc = case.manifest()
    old = example(case.base) if case.update else None
    found = admit(SCHEMAS[doc["kind"]], doc, old)
    hits = [v for v in found if case.server in v]
    if case.via == "cel":
        assert hits, found
    else:
        # rejected by the OpenAPI schema, not by a rule: no CEL message may claim it
        assert hits == []


@pytest.mark.parametrize("case_id,base,change", ALLOWED_UPDATES,
                         ids=[u[0] for u in ALLOWED_UPDATES])
def test_allowed_updates_pass_transition_rules(case_id: str, base: str, change: Any) -> None:
    old = example(base)
    new = example(base)
    change(new)
    assert admit(SCHEMAS[new["kind"]], new, old) == []


def test_defaults_fill_nested_objects_like_the_api_server() -> None:
    doc = example("trainingjob-bbc.yaml")
    del doc["spec"]["runPolicy"]
    defaulted = apply_defaults(SCHEMAS["TrainingJob"], doc)
    assert defaulted["spec"]["runPolicy"] == {"backoffLimit": 2, "suspend": False}
    assert defaulted["spec"]["hyperparameters"]["seed"] == 42


def test_explicit_null_is_pruned_so_has_means_set() -> None:
    doc = example("modeldeployment-archive.yaml")
    doc["spec"]["model"]["trainingJobRef"] = None
    assert admit(SCHEMAS["ModelDeployment"], doc) == []


@pytest.mark.parametrize("uri,ok", [
    ("pvc://models/run1", True), ("pvc://models", True), ("s3://b/k", True),
    ("file:///x", True), ("builtin://bbc-news", True), ("pvc://Models/x", False),
    ("http://x", False), ("s3://b/with space", False), ("s3://", False),
])
def test_uri_rule_agrees_with_python(uri: str, ok: bool) -> None:
    from modelloop_operator.api import check_uri
    from modelloop_operator.api.common import SOURCE_URI_SCHEMES

    doc = example("trainingjob-bbc.yaml")
    doc["spec"]["dataset"]["uri"] = uri
    assert (admit(SCHEMAS["TrainingJob"], doc) == []) is ok
    try:
        check_uri(uri, SOURCE_URI_SCHEMES)
        python_ok = True
    except ValueError:
        python_ok = False
    assert python_ok is ok


@pytest.mark.parametrize("duration,ok", [
    ("30s", True), ("1h30m", True), ("250ms", True), ("0s", False), ("0m0s", False),
    ("5", False), ("5 m", False), ("1d", False),
])
def test_duration_rule_agrees_with_python(duration: str, ok: bool) -> None:
    from modelloop_operator.api import MonitoringSpec

    doc = example("modeldeployment.yaml")
    doc["spec"]["monitoring"]["window"] = duration
    assert (admit(SCHEMAS["ModelDeployment"], doc) == []) is ok
    try:
        MonitoringSpec.model_validate({**doc["spec"]["monitoring"]})
        python_ok = True
    except ValueError:
        python_ok = False
    assert python_ok is ok


def _without_empty(value: Any) -> Any:
    if isinstance(value, dict):
        pruned = {k: _without_empty(v) for k, v in value.items()}
        return {k: v for k, v in pruned.items() if v not in ({}, [])}
    if isinstance(value, list):
        return [_without_empty(v) for v in value]
    return value


@pytest.mark.parametrize("name", sorted(load_examples()))
def test_schema_defaults_equal_model_defaults(name: str) -> None:
    from modelloop_operator.api import ModelDeployment, OptimizationJob, TrainingJob

    models: dict[str, Any] = {"TrainingJob": TrainingJob, "OptimizationJob": OptimizationJob,
                              "ModelDeployment": ModelDeployment}
    doc = load_examples()[name]
    by_schema = apply_defaults(SCHEMAS[doc["kind"]], doc)["spec"]
    by_model = models[doc["kind"]].model_validate(doc).model_dump(
        mode="json", exclude_none=True)["spec"]
    assert _without_empty(by_schema) == _without_empty(by_model)


def _nodes_with_defaults(node: dict[str, Any], path: str = ""):  # type: ignore[no-untyped-def]
    if "default" in node:
        yield path, node
    for name, sub in node.get("properties", {}).items():
        yield from _nodes_with_defaults(sub, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from _nodes_with_defaults(node["items"], f"{path}[]")


@pytest.mark.parametrize("kind", sorted(SCHEMAS))
def test_every_default_passes_the_rules_of_its_node(kind: str) -> None:
    # The API server validates each default as written, before nested defaults are
    # filled in, and refuses the CRD otherwise (found on a real server: rollout's
    # `default: {}` broke a rule reading self.strategy).
    broken = [f"{path}: {v}" for path, node in _nodes_with_defaults(SCHEMAS[kind])
              for v in violations(node, node["default"])]
    assert broken == []
