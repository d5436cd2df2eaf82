"""Argo CD health checks for the modelloop.dev kinds, run in a real Lua 5.1 VM sandboxed
like Argo CD's (see argo_lua.py), against the cases listed in each kind's health_test.yaml
(the file layout and format of argo-cd's resource_customizations)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.argocd.argo_lua import HealthScriptError, load_object, run_health

REPO = Path(__file__).resolve().parents[2]
CHECKS = REPO / "argocd" / "resource_customizations" / "modelloop.dev"
KINDS = ("TrainingJob", "OptimizationJob", "ModelDeployment")
JOB_KINDS = ("TrainingJob", "OptimizationJob")


def _cases() -> list[Any]:
    params = []
    for kind in KINDS:
        spec = yaml.safe_load((CHECKS / kind / "health_test.yaml").read_text())
        for case in spec["tests"]:
            params.append(pytest.param(kind, case["inputPath"], case["healthStatus"],
                                       id=f"{kind}/{Path(case['inputPath']).stem}"))
    return params


def _script(kind: str) -> str:
    return (CHECKS / kind / "health.lua").read_text()


@pytest.mark.parametrize(("kind", "input_path", "expected"), _cases())
def test_health_matches_health_test_yaml(kind: str, input_path: str,
                                         expected: dict[str, str]) -> None:
    obj = load_object(CHECKS / kind / input_path)
    assert obj["kind"] == kind and obj["apiVersion"].startswith("modelloop.dev/")
    health = run_health(_script(kind), obj)
    assert (health.status, health.message) == (expected["status"], expected.get("message", ""))


def test_every_kind_has_a_check_and_nothing_else_is_there() -> None:
    assert sorted(p.name for p in CHECKS.iterdir() if p.is_dir()) == sorted(KINDS)
    for kind in KINDS:
        assert (CHECKS / kind / "health.lua").is_file()
        assert (CHECKS / kind / "health_test.yaml").is_file()


@pytest.mark.parametrize("kind", KINDS)
def test_every_fixture_is_used_and_every_reference_exists(kind: str) -> None:
    spec = yaml.safe_load((CHECKS / kind / "health_test.yaml").read_text())
    referenced = {case["inputPath"] for case in spec["tests"]}
    on_disk = {f"testdata/{p.name}" for p in (CHECKS / kind / "testdata").glob("*.yaml")}
    assert referenced == on_disk


@pytest.mark.parametrize("kind", KINDS)
def test_cases_cover_the_states_a_user_sees(kind: str) -> None:
    """Each check is exercised for every health it can give, not only the happy path."""
    spec = yaml.safe_load((CHECKS / kind / "health_test.yaml").read_text())
    seen = {case["healthStatus"]["status"] for case in spec["tests"]}
    needed = {"Healthy", "Progressing", "Degraded"}
    if kind == "TrainingJob":
        needed |= {"Suspended", "Unknown"}
    assert needed <= seen


@pytest.mark.parametrize("kind", KINDS)
def test_status_without_observed_generation_waits_for_the_operator(kind: str) -> None:
    obj = {"apiVersion": "modelloop.dev/v1alpha1", "kind": kind,
           "metadata": {"name": "x", "generation": 1},
           "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "X"}]}}
    health = run_health(_script(kind), obj)
    assert health.status == "Progressing"
    assert "Waiting for the modelloop operator" in health.message


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("observed", "expected"), [(6, "Progressing"), (7, "Healthy"),
                                                    (8, "Healthy")])
def test_only_an_older_observed_generation_is_stale(kind: str, observed: int,
                                                    expected: str) -> None:
    conditions = [{"type": "Ready", "status": "True", "reason": "Done", "message": ""}]
    if kind in JOB_KINDS:
        conditions.append({"type": "Succeeded", "status": "True", "reason": "Done"})
    obj = {"apiVersion": "modelloop.dev/v1alpha1", "kind": kind,
           "metadata": {"name": "x", "generation": 7},
           "status": {"observedGeneration": observed, "conditions": conditions}}
    assert run_health(_script(kind), obj).status == expected


@pytest.mark.parametrize("kind", JOB_KINDS)
def test_failed_wins_over_a_stale_ready(kind: str) -> None:
    obj = {"apiVersion": "modelloop.dev/v1alpha1", "kind": kind,
           "metadata": {"name": "x", "generation": 1},
           "status": {"observedGeneration": 1, "conditions": [
               {"type": "Ready", "status": "True", "reason": "Running"},
               {"type": "Failed", "status": "True", "reason": "DeadlineExceeded",
                "message": "activeDeadlineSeconds 3600 passed"}]}}
    health = run_health(_script(kind), obj)
    assert health == type(health)("Degraded", "DeadlineExceeded: activeDeadlineSeconds 3600 passed")


def test_shared_helpers_are_identical_in_every_script() -> None:
    pattern = re.compile(r"-- BEGIN shared helpers.*?-- END shared helpers", re.DOTALL)
    blocks = {kind: pattern.findall(_script(kind)) for kind in KINDS}
    assert all(len(found) == 1 for found in blocks.values()), blocks
    assert len({found[0] for found in blocks.values()}) == 1


def test_the_sandbox_rejects_what_argo_cd_rejects() -> None:
    """The harness is only worth something if it fails where Argo CD fails."""
    with pytest.raises(HealthScriptError, match="string"):
        run_health('return {status = string.lower("HEALTHY")}', {})
    with pytest.raises(HealthScriptError):
        run_health('local s = "Healthy"; return {status = s:sub(1)}', {})
    with pytest.raises(HealthScriptError, match="io"):
        run_health('io.open("/etc/passwd"); return {status = "Healthy"}', {})
    with pytest.raises(HealthScriptError, match="invalid health status"):
        run_health('return {status = "Fine"}', {})
    with pytest.raises(HealthScriptError, match="not a table"):
        run_health('return "Healthy"', {})
    assert run_health('return {status = "Healthy", message = obj.a.b[2]}',
                      {"a": {"b": ["x", "y"]}}).message == "y"
