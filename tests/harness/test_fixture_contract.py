"""The cluster fixture's promises when binaries are missing, and the binary cache's reuse.

These run without a control plane (pytest in a subprocess, with an empty cache), so they
belong to the unit tier: a broken skip/fail contract would let CI pass by skipping.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness.binaries import BUILD_SCRIPT, REPO_ROOT

CLUSTER_TEST = ("tests/cluster/test_controlplane.py"
                "::test_server_reports_the_pinned_kubernetes_version")


def _pytest_with_cache(cache: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "MODELLOOP_REQUIRE_CLUSTER"}
    return subprocess.run(
        [sys.executable, "-m", "pytest", CLUSTER_TEST, "-rs", "-p", "no:cacheprovider",
         "-o", "addopts=", "--no-header"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, check=False,
        env={**env, "MODELLOOP_CACHE": str(cache), **extra},
    )


def test_cluster_tests_skip_with_the_reason_when_binaries_are_missing(tmp_path: Path) -> None:
    result = _pytest_with_cache(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 skipped" in result.stdout
    assert "control-plane binaries not available" in result.stdout
    assert "make cluster-binaries" in result.stdout


def test_required_cluster_turns_missing_binaries_into_an_error(tmp_path: Path) -> None:
    result = _pytest_with_cache(tmp_path, MODELLOOP_REQUIRE_CLUSTER="1")
    assert result.returncode != 0
    assert "MODELLOOP_REQUIRE_CLUSTER=1 but control-plane binaries not available" in (
        result.stdout)
    assert "skipped" not in result.stdout


def test_a_clone_in_another_folder_reuses_the_cached_binaries(tmp_path: Path) -> None:
    here = subprocess.run(["bash", str(BUILD_SCRIPT), "--paths"], capture_output=True,
                          text=True, check=False)
    if here.returncode != 0:
        pytest.skip("binaries not built here; nothing to reuse")
    # The build inputs only: what a fresh clone (CI) has, in a different folder.
    clone = tmp_path / "clone"
    shutil.copytree(REPO_ROOT / "hack", clone / "hack",
                    ignore=shutil.ignore_patterns("__pycache__"))
    there = subprocess.run(["bash", str(clone / "hack" / BUILD_SCRIPT.name), "--paths"],
                           capture_output=True, text=True, check=False)
    assert there.returncode == 0, there.stderr
    assert there.stdout == here.stdout
