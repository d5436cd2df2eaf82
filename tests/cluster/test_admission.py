"""The real API server enforces the generated CRDs: every invalid manifest in
tests/operator/api_cases.py is rejected on ``kubectl apply`` with words a person can act
on, every example is accepted, defaults match the pydantic models, and the status
subresource, printer columns, short names and category work.

Runs on the local control plane (tests/harness); skipped with its reason when the
binaries are not built.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from modelloop_operator.api import (
    KINDS,
    ModelDeployment,
    OptimizationJob,
    TrainingJob,
)

from tests.harness.controlplane import ControlPlane
from tests.operator.api_cases import (
    ALLOWED_UPDATES,
    CASES,
    REPO_ROOT,
    Case,
    Manifest,
    example,
    load_examples,
)

pytestmark = pytest.mark.cluster

MODELS: dict[str, Any] = {
    "TrainingJob": TrainingJob, "OptimizationJob": OptimizationJob,
    "ModelDeployment": ModelDeployment,
}


@pytest.fixture(scope="module")
def crds(cluster: ControlPlane) -> None:
    """The generated CRDs, applied and Established. A CRD the API server refuses (e.g. a
    CEL rule over the cost budget) fails here with the server's reason."""
    cluster.kubectl("apply", "--server-side", "--force-conflicts",
                    "--field-manager=modelloop-tests", "-f", str(REPO_ROOT / "crds"))
    for kind in KINDS:
        cluster.kubectl("wait", "--for=condition=Established", f"crd/{kind.crd_name}",
                        "--timeout=60s")


@pytest.fixture(scope="module")
def admission_ns(cluster: ControlPlane, crds: None) -> Iterator[str]:
    """One namespace for the whole table: no pods run here, only admission."""
    name = f"admission-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", name)
    try:
        yield name
    finally:
        cluster.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found",
                        check=False)


def _apply(cluster: ControlPlane, ns: str, doc: Manifest, *, dry_run: bool
           ) -> subprocess.CompletedProcess[str]:
    args = ["apply", "--server-side", "--field-manager=modelloop-tests", "--validate=strict",
            "-n", ns, "-o", "json", "-f", "-"]
    if dry_run:
        args.insert(1, "--dry-run=server")
    return cluster.kubectl(*args, input=json.dumps(doc), check=False)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_invalid_manifest_rejected_by_the_api_server(
        cluster: ControlPlane, admission_ns: str, case: Case) -> None:
    if case.update:
        created = _apply(cluster, admission_ns, example(case.base), dry_run=False)
        assert created.returncode == 0, created.stderr
    result = _apply(cluster, admission_ns, case.manifest(), dry_run=True)
    assert result.returncode != 0, f"accepted: {result.stdout[:500]}"
    assert case.server in result.stderr, result.stderr


def test_client_side_strict_apply_names_the_unknown_field(
        cluster: ControlPlane, admission_ns: str) -> None:
    # Plain `kubectl apply` (not server-side) reports unknown fields in its own words.
    doc = example("trainingjob-bbc.yaml")
    doc["spec"]["dataset"]["textfield"] = "body"
    result = cluster.kubectl("apply", "--dry-run=server", "--validate=strict", "-n",
                             admission_ns, "-f", "-", input=json.dumps(doc), check=False)
    assert result.returncode != 0
    assert 'unknown field "spec.dataset.textfield"' in result.stderr, result.stderr


def test_namespace_in_a_reference_is_refused_by_server_side_apply_however_validated(
        cluster: ControlPlane, admission_ns: str) -> None:
    # Server-side apply (what Argo CD's ServerSideApply and the operator use) builds a
    # typed patch: an undeclared field fails even with field validation off.
    doc = example("optimizationjob-int8.yaml")
    doc["spec"]["source"]["trainingJobRef"]["namespace"] = "kube-system"
    result = cluster.kubectl("apply", "--server-side", "--field-manager=modelloop-tests",
                             "--validate=false", "--dry-run=server", "-n", admission_ns,
                             "-f", "-", input=json.dumps(doc), check=False)
    assert result.returncode != 0
    assert ".spec.source.trainingJobRef.namespace: field not declared in schema" in (
        result.stderr), result.stderr


@pytest.mark.parametrize("validate", ["warn", "ignore"])
def test_namespace_in_a_reference_never_reaches_another_namespace(
        cluster: ControlPlane, admission_ns: str, validate: str) -> None:
    # Strict field validation (kubectl's default) rejects `namespace:` in a reference (the
    # ref cases in api_cases). A create or update that does not ask for it (Warn is the
    # API server's default, Ignore is `--validate=false`) gets the field pruned: the
    # stored reference is a bare name, resolved in the object's own namespace.
    doc = example("optimizationjob-int8.yaml")
    doc["metadata"]["name"] = f"ref-pruned-{validate}"
    doc["spec"]["source"]["trainingJobRef"]["namespace"] = "kube-system"
    result = cluster.kubectl("create", f"--validate={validate}", "-n", admission_ns,
                             "-f", "-", input=json.dumps(doc), check=False)
    assert result.returncode == 0, result.stderr
    if validate == "warn":
        assert 'unknown field "spec.source.trainingJobRef.namespace"' in result.stderr, (
            result.stderr)
    stored = json.loads(cluster.kubectl("get", "oj", doc["metadata"]["name"], "-n",
                                        admission_ns, "-o", "json").stdout)
    assert stored["spec"]["source"]["trainingJobRef"] == {"name": "bbc-minilm"}


@pytest.mark.parametrize("name", sorted(load_examples()))
def test_example_accepted_and_defaulted_like_the_models(
        cluster: ControlPlane, admission_ns: str, name: str) -> None:
    doc = load_examples()[name]
    result = _apply(cluster, admission_ns, doc, dry_run=True)
    assert result.returncode == 0, result.stderr
    served = json.loads(result.stdout)["spec"]
    modelled = MODELS[doc["kind"]].model_validate(doc).model_dump(
        mode="json", exclude_none=True)["spec"]
    assert _without_empty(served) == _without_empty(modelled)


@pytest.mark.parametrize("case_id,base,change", ALLOWED_UPDATES,
                         ids=[u[0] for u in ALLOWED_UPDATES])
def test_allowed_update_accepted(cluster: ControlPlane, admission_ns: str, case_id: str,
                                 base: str, change: Callable[[Manifest], None]) -> None:
    created = _apply(cluster, admission_ns, example(base), dry_run=False)
    assert created.returncode == 0, created.stderr
    updated = example(base)
    change(updated)
    result = _apply(cluster, admission_ns, updated, dry_run=True)
    assert result.returncode == 0, result.stderr


def test_status_subresource_feeds_the_printer_columns(
        cluster: ControlPlane, admission_ns: str) -> None:
    doc = example("trainingjob-bbc.yaml")
    doc["metadata"]["name"] = "columns"
    assert _apply(cluster, admission_ns, doc, dry_run=False).returncode == 0
    status = {"status": {"phase": "Succeeded", "attempts": 1, "observedGeneration": 1,
                         "metrics": {"accuracy": 0.97},
                         "conditions": [{"type": "Ready", "status": "True",
                                         "reason": "Succeeded",
                                         "lastTransitionTime": "2026-11-28T12:00:00Z"}]}}
    cluster.kubectl("patch", "trainingjob", "columns", "-n", admission_ns,
                    "--subresource=status", "--type=merge", "-p", json.dumps(status))
    table = cluster.kubectl("get", "tj", "columns", "-n", admission_ns).stdout.split("\n")
    assert table[0].split() == ["NAME", "PHASE", "ACCURACY", "ATTEMPTS", "AGE"]
    assert table[1].split()[:4] == ["columns", "Succeeded", "0.97", "1"]
    # a status written through the main resource is ignored (status is a subresource)
    cluster.kubectl("patch", "trainingjob", "columns", "-n", admission_ns, "--type=merge",
                    "-p", json.dumps({"status": {"phase": "Failed"}}))
    got = json.loads(cluster.kubectl("get", "tj", "columns", "-n", admission_ns,
                                     "-o", "json").stdout)
    assert got["status"]["phase"] == "Succeeded"
    assert TrainingJob.model_validate(got).status.metrics == {"accuracy": 0.97}


def test_category_and_short_names_list_every_kind(
        cluster: ControlPlane, admission_ns: str) -> None:
    for name in ("trainingjob-bbc.yaml", "optimizationjob-int8.yaml", "modeldeployment.yaml"):
        doc = example(name)
        doc["metadata"]["name"] = f"listed-{doc['kind'].lower()}"
        assert _apply(cluster, admission_ns, doc, dry_run=False).returncode == 0
    listed = cluster.kubectl("get", "modelloop", "-n", admission_ns, "-o", "name").stdout
    for kind in KINDS:  # `-o name` prints <kind>.<group>/<name>
        assert f"{kind.singular}.modelloop.dev/listed-{kind.singular}" in listed, listed
    short = cluster.kubectl("get", "tj,oj,mdep", "-n", admission_ns, "-o", "name").stdout
    assert short.count("listed-") == 3, short


def _without_empty(value: Any) -> Any:
    """Drop empty maps and lists, which the API server does not store unless sent."""
    if isinstance(value, dict):
        pruned = {k: _without_empty(v) for k, v in value.items()}
        return {k: v for k, v in pruned.items() if v not in ({}, [])}
    if isinstance(value, list):
        return [_without_empty(v) for v in value]
    return value
