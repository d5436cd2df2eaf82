"""examples/argocd: the Applications point at things that exist and render."""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path
from typing import Any

import yaml

from tests.argocd.argo_lua import run_health
from tests.chart.helm import Helm

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
CHECKS = REPO / "argocd" / "resource_customizations"


def docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def by_kind(path: Path, kind: str) -> list[dict[str, Any]]:
    return [d for d in docs(path) if d["kind"] == kind]


def expand_braces(pattern: str) -> list[str]:
    """Argo CD's directory.include globs allow {a,b} alternatives; fnmatch does not."""
    match = re.search(r"\{([^{}]*)\}", pattern)
    if not match:
        return [pattern]
    head, tail = pattern[:match.start()], pattern[match.end():]
    return [p for alt in match.group(1).split(",") for p in expand_braces(head + alt + tail)]


def test_operator_application_installs_this_chart_with_valid_values(helm: Helm,
                                                                    workdir: Path) -> None:
    (app,) = by_kind(EXAMPLES / "argocd/modelloop-operator.yaml", "Application")
    source = app["spec"]["source"]
    assert (REPO / source["path"] / "Chart.yaml").is_file()
    objects = helm.template(source["helm"]["valuesObject"], workdir=workdir,
                            release=source["helm"]["releaseName"],
                            namespace=app["spec"]["destination"]["namespace"])
    kinds = {o["kind"] for o in objects}
    assert {"Deployment", "ServiceMonitor", "PrometheusRule", "ConfigMap"} <= kinds
    assert "ServerSideApply=true" in app["spec"]["syncPolicy"]["syncOptions"]


def test_model_team_application_syncs_only_what_its_project_allows() -> None:
    path = EXAMPLES / "argocd/model-team.yaml"
    (project,) = by_kind(path, "AppProject")
    (app,) = by_kind(path, "Application")
    assert app["spec"]["project"] == project["metadata"]["name"]
    assert project["spec"]["clusterResourceWhitelist"] == []
    allowed = {(w["group"], w["kind"]) for w in project["spec"]["namespaceResourceWhitelist"]}
    assert allowed == {("modelloop.dev", k)
                       for k in ("TrainingJob", "OptimizationJob", "ModelDeployment")}
    destination = app["spec"]["destination"]["namespace"]
    assert [d["namespace"] for d in project["spec"]["destinations"]] == [destination]

    directory = app["spec"]["source"]["directory"]
    assert directory["recurse"] is False
    patterns = expand_braces(directory["include"])
    top_level = sorted((REPO / app["spec"]["source"]["path"]).glob("*.yaml"))
    selected = [p for p in top_level if any(fnmatch.fnmatch(p.name, pat) for pat in patterns)]
    assert selected, "the include pattern selects nothing"
    modelloop_files = [p for p in top_level
                       if any(d.get("apiVersion", "").startswith("modelloop.dev/")
                              for d in docs(p))]
    assert selected == modelloop_files  # everything the team wrote, nothing else
    for file in selected:
        for doc in docs(file):
            assert (doc["apiVersion"].split("/")[0], doc["kind"]) in allowed, file
            assert "namespace" not in doc["metadata"], f"{file}: the Application decides it"


def test_fresh_examples_show_as_waiting_for_the_operator_in_argo_cd() -> None:
    for file in sorted(EXAMPLES.glob("*.yaml")):
        for doc in docs(file):
            if not doc.get("apiVersion", "").startswith("modelloop.dev/"):
                continue
            doc["metadata"]["generation"] = 1
            script = (CHECKS / "modelloop.dev" / doc["kind"] / "health.lua").read_text()
            health = run_health(script, doc)
            assert health.status == "Progressing", file
            assert health.message.startswith("Waiting for the modelloop operator"), file
