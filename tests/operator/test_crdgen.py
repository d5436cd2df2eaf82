"""The CRD generator: structural schemas, rules, names, columns, files and --check."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from modelloop_operator.api import KINDS, KindInfo, TrainingJobSpec
from modelloop_operator.api.markers import k8s
from modelloop_operator.crdgen import SchemaError, build_crd, generated_files, model_schema
from modelloop_operator.crdgen.__main__ import main
from modelloop_operator.crdgen.structural import structural_errors
from pydantic import BaseModel

from .api_cases import REPO_ROOT

KIND_IDS = [k.kind for k in KINDS]


def _schema(kind: KindInfo) -> dict[str, Any]:
    crd = build_crd(kind)
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def _walk(node: dict[str, Any], path: str = ""):  # type: ignore[no-untyped-def]
    yield path, node
    for name, sub in node.get("properties", {}).items():
        yield from _walk(sub, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from _walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _walk(node["additionalProperties"], f"{path}.*")


def _at(schema: dict[str, Any], path: str) -> dict[str, Any]:
    node = schema
    for part in path.split("."):
        node = node["items"] if part == "[]" else node["properties"][part]
    return node


def _rules(node: dict[str, Any]) -> list[str]:
    return [r["rule"] for r in node.get("x-kubernetes-validations", [])]


@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS)
def test_generated_schema_is_structural(kind: KindInfo) -> None:
    assert structural_errors(_schema(kind)) == []


@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS)
def test_no_json_schema_leftovers(kind: KindInfo) -> None:
    text = yaml.safe_dump(build_crd(kind))
    for leftover in ("$ref", "$defs", "title:", "x-modelloop-", "nullable", "oneOf", "const:"):
        assert leftover not in text


@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS)
def test_every_string_and_list_is_bounded_for_the_cel_cost_budget(kind: KindInfo) -> None:
    # Unbounded strings and lists make the API server estimate CEL costs from the largest
    # possible request, and rules on them get rejected as too expensive.
    unbounded = []
    for path, node in _walk(_schema(kind)["properties"]["spec"], "spec"):
        if node.get("type") == "string" and "maxLength" not in node and "enum" not in node:
            unbounded.append(path)
        if node.get("type") == "array" and "maxItems" not in node:
            unbounded.append(path)
    assert unbounded == []


def test_structural_checker_catches_what_the_api_server_rejects() -> None:
    bad = {"type": "object", "properties": {
        "a": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        "b": {"type": "object", "properties": {}, "additionalProperties": {"type": "string"}},
        "c": {"type": "array"},
        "d": {"$ref": "#/$defs/X"},
        "e": {"type": "array", "items": {"type": "object", "properties": {
            "k": {"type": "string"}}}, "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["k"]},
        "f": {"type": "object", "x-kubernetes-validations": [
            {"rule": "true", "message": "m", "fieldPath": ".metadata.name"}]},
    }}
    errors = "\n".join(structural_errors(bad))
    assert "<root>.a: keys not allowed" not in errors
    for expected in ("<root>.a: every node needs a type", "<root>.a: anyOf outside",
                     "<root>.b: properties and additionalProperties",
                     "<root>.c: an array needs an items schema",
                     "<root>.d: keys not allowed in a CRD schema: $ref",
                     "<root>.e: list-map key 'k' must be required or defaulted",
                     "<root>.f: x-kubernetes-validations[0].fieldPath '.metadata.name' does "
                     "not name a property"):
        assert expected in errors


def test_generator_refuses_a_union_without_structural_form() -> None:
    class Either(BaseModel):
        value: int | list[int]

    with pytest.raises(SchemaError, match=r"Either\.value: a union of 2 types"):
        model_schema(Either)


def test_quantities_are_int_or_string() -> None:
    cpu = _at(_schema(KINDS[0]), "spec.resources.cpu")
    assert cpu["x-kubernetes-int-or-string"] is True
    assert cpu["anyOf"] == [{"type": "integer"}, {"type": "string"}]
    assert "pattern" in cpu and "type" not in cpu


def test_optional_fields_lose_the_null_branch_and_null_default() -> None:
    image = _at(_schema(KINDS[0]), "spec.image")
    assert image["type"] == "string" and "default" not in image and "nullable" not in image


def test_nested_objects_default_to_empty_so_inner_defaults_apply() -> None:
    spec = _schema(KINDS[0])["properties"]["spec"]
    for name in ("hyperparameters", "runPolicy", "resources", "evaluation", "scheduling"):
        assert spec["properties"][name]["default"] == {}
    assert spec["properties"]["hyperparameters"]["properties"]["seed"]["default"] == 42
    assert spec["required"] == ["model", "dataset", "output"]


def test_trainingjob_spec_is_immutable_except_suspend_and_ttl() -> None:
    spec = _schema(KINDS[0])["properties"]["spec"]
    for name, node in spec["properties"].items():
        if name == "runPolicy":
            assert "self == oldSelf" not in _rules(node)
            policy = node["properties"]
            assert "self == oldSelf" in _rules(policy["backoffLimit"])
            assert "self == oldSelf" in _rules(policy["activeDeadlineSeconds"])
            assert "self == oldSelf" not in _rules(policy["suspend"])
            assert "self == oldSelf" not in _rules(policy["ttlSecondsAfterFinished"])
        else:
            assert "self == oldSelf" in _rules(node), name
    # optional immutable fields cannot be added or removed either
    assert "has(self.image) == has(oldSelf.image)" in _rules(spec)
    assert "has(self.podTemplate) == has(oldSelf.podTemplate)" in _rules(spec)


def test_optimizationjob_spec_is_immutable_except_run_policy() -> None:
    spec = _schema(KINDS[1])["properties"]["spec"]
    mutable = {name for name, node in spec["properties"].items()
               if "self == oldSelf" not in _rules(node)}
    assert mutable == {"runPolicy"}


def test_templates_inside_a_modeldeployment_are_mutable() -> None:
    schema = _schema(KINDS[2])
    text = yaml.safe_dump(schema["properties"]["spec"])
    assert "oldSelf" not in text
    template = _at(schema, "spec.retrain.trainingJobTemplate.spec")
    assert "numNodes" in template["properties"]


def test_ref_rules_and_field_rules_are_both_kept() -> None:
    source = _at(_schema(KINDS[1]), "spec.source")
    rules = _rules(source)
    assert "self == oldSelf" in rules
    assert any("exists_one" in r for r in rules)


@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS)
def test_conditions_are_a_map_keyed_by_type(kind: KindInfo) -> None:
    conditions = _at(_schema(kind), "status.conditions")
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    assert conditions["items"]["required"] == ["type", "status"]
    assert _at(_schema(kind), "status.conditions.[].lastTransitionTime")["format"] == "date-time"


@pytest.mark.parametrize("kind,short,columns", [
    (KINDS[0], "tj", ["Phase", "Accuracy", "Attempts", "Age"]),
    (KINDS[1], "oj", ["Phase", "Accepted", "Speedup", "Age"]),
    (KINDS[2], "mdep", ["Phase", "Model", "Rollout", "Ready", "URL", "Age"]),
], ids=KIND_IDS)
def test_names_columns_and_subresources(kind: KindInfo, short: str, columns: list[str]) -> None:
    crd = build_crd(kind)
    assert crd["metadata"]["name"] == f"{kind.plural}.modelloop.dev"
    names = crd["spec"]["names"]
    assert names["shortNames"] == [short] and names["categories"] == ["modelloop"]
    assert crd["spec"]["scope"] == "Namespaced"
    (version,) = crd["spec"]["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"] == {"status": {}}
    assert [c["name"] for c in version["additionalPrinterColumns"]] == columns
    for column in version["additionalPrinterColumns"]:
        path = column["jsonPath"].split("[")[0].lstrip(".").split(".")
        if path[0] == "status":  # every column reads a field the schema has
            node = version["schema"]["openAPIV3Schema"]
            for part in path:
                node = node["properties"][part] if "properties" in node else node[
                    "additionalProperties"]


@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS)
def test_name_length_rule_on_the_root(kind: KindInfo) -> None:
    rules = _rules(_schema(kind))
    assert f"self.metadata.name.size() <= {kind.max_name_length}" in rules


def test_marker_helper_writes_rules_and_list_semantics() -> None:
    from modelloop_operator.api.markers import Rule

    extra = k8s(Rule("self > 0", "must be positive", field_path=".x", reason="FieldValueInvalid"),
                list_type="map", list_map_keys=("name",), max_properties=3)
    assert extra == {
        "x-kubernetes-validations": [{"rule": "self > 0", "message": "must be positive",
                                      "fieldPath": ".x", "reason": "FieldValueInvalid"}],
        "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
        "maxProperties": 3,
    }


def test_descriptions_come_from_docstrings() -> None:
    spec = _schema(KINDS[0])["properties"]["spec"]
    assert spec["properties"]["numNodes"]["description"].startswith("Nodes (pods) in the gang")
    assert "\n" not in spec["properties"]["dataset"]["properties"]["uri"]["description"]
    assert "TrainingJobSpec" not in yaml.safe_dump(spec)  # no titles
    assert TrainingJobSpec.__doc__ is not None


def test_generation_is_deterministic() -> None:
    assert generated_files() == generated_files()


def test_chart_templates_are_gated_and_keepable() -> None:
    files = generated_files()
    for kind in KINDS:
        text = files[Path("charts/modelloop/templates/crds") / f"{kind.crd_name}.yaml"]
        lines = text.splitlines()
        body = [ln for ln in lines if not ln.startswith("#")]
        assert body[0] == "{{- if .Values.crds.enabled }}" and body[-1] == "{{- end }}"
        assert "  {{- if .Values.crds.keep }}" in lines
        assert "    helm.sh/resource-policy: keep" in lines
        # Rendered with both switches on, it is the plain CRD plus the annotation.
        rendered = "\n".join(ln for ln in body if "{{" not in ln)
        plain = yaml.safe_load(files[Path("crds") / f"{kind.crd_name}.yaml"])
        plain["metadata"]["annotations"] = {
            "helm.sh/resource-policy": "keep",
            "argocd.argoproj.io/sync-options": "Prune=false",
        }
        assert yaml.safe_load(rendered) == plain


def test_reference_docs_list_every_spec_field_and_name_the_research_datasets() -> None:
    files = generated_files()
    page = files[Path("docs/reference/trainingjob.md")]
    for path in ("`spec.numNodes`", "`spec.dataset.uri`", "`spec.runPolicy.suspend`",
                 "`spec.hyperparameters.learningRate`", "`status.conditions[].type`"):
        assert path in page
    assert "research datasets" in page
    assert "| `spec.numNodes` | integer | `1` | minimum 1; maximum 256; **immutable** |" in page
    mdep = files[Path("docs/reference/modeldeployment.md")]
    assert "`spec.monitoring.checks[].max`" in mdep
    assert "pvc://&lt;claim&gt;/&lt;path&gt;" in files[Path("docs/reference/optimizationjob.md")]


def test_committed_files_are_up_to_date() -> None:
    # The same check as `make crds-check`, so a stale CRD fails the unit tier too.
    assert main(["--check", "--root", str(REPO_ROOT)]) == 0


def test_check_reports_drift_and_stale_files(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--root", str(tmp_path)]) == 0
    assert main(["--check", "--root", str(tmp_path)]) == 0
    crd = tmp_path / "crds" / "trainingjobs.modelloop.dev.yaml"
    crd.write_text(crd.read_text().replace("minimum: 1\n", "minimum: 0\n", 1))
    (tmp_path / "crds" / "old.modelloop.dev.yaml").write_text("kind: Old\n")
    capsys.readouterr()
    assert main(["--check", "--root", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    removed = [ln for ln in out.splitlines() if ln.startswith("-") and "minimum: 0" in ln]
    added = [ln for ln in out.splitlines() if ln.startswith("+") and "minimum: 1" in ln]
    assert len(removed) == 1 and len(added) == 1
    assert "+++ b/crds/trainingjobs.modelloop.dev.yaml (generated)" in out
    assert "crds/old.modelloop.dev.yaml: not generated by any model" in out


def test_cli_runs_as_a_module(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "modelloop_operator.crdgen", "--check", "--root", str(tmp_path)],
        capture_output=True, text=True, check=False, timeout=120)
    assert result.returncode == 1
    assert "stale: run `make crds`" in result.stderr
