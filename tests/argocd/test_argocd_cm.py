"""The argocd-cm snippets under examples/argocd are generated from the health.lua files
(argocd/generate_argocd_cm.py) and must stay in sync with them."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
GENERATOR = REPO / "argocd" / "generate_argocd_cm.py"
CHECKS = REPO / "argocd" / "resource_customizations"


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("generate_argocd_cm", GENERATOR)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def lua_by_key() -> dict[str, str]:
    return {f"resource.customizations.health.{p.parent.parent.name}_{p.parent.name}":
            p.read_text() for p in CHECKS.glob("*/*/health.lua")}


def test_committed_snippets_are_in_sync() -> None:
    result = subprocess.run([sys.executable, str(GENERATOR), "--check"], capture_output=True,
                            text=True, check=False)
    assert result.returncode == 0, result.stderr


def test_configmap_carries_each_script_verbatim() -> None:
    cm = yaml.safe_load((REPO / "examples/argocd/argocd-cm-health.yaml").read_text())
    assert (cm["apiVersion"], cm["kind"], cm["metadata"]["name"]) == ("v1", "ConfigMap",
                                                                      "argocd-cm")
    assert cm["data"] == lua_by_key()
    assert set(cm["data"]) == {f"resource.customizations.health.modelloop.dev_{kind}"
                               for kind in ("TrainingJob", "OptimizationJob",
                                            "ModelDeployment")}


def test_helm_values_carry_each_script_verbatim() -> None:
    values = yaml.safe_load((REPO / "examples/argocd/argo-cd-helm-values.yaml").read_text())
    assert values["configs"]["cm"] == lua_by_key()


def test_check_fails_when_a_snippet_is_stale(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    module = generator()
    monkeypatch.setattr(module, "OUT_DIR", tmp_path)
    assert module.main([]) == 0
    assert module.main(["--check"]) == 0
    stale = tmp_path / "argocd-cm-health.yaml"
    stale.write_text(stale.read_text().replace("Degraded", "Healthy", 1))
    assert module.main(["--check"]) == 1
