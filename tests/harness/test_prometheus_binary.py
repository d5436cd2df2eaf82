"""Where the harness's Prometheus comes from, and that a missing one fails (never skips).

Unit tier: asks hack/build-cluster-binaries.sh (``--paths``, builds nothing), with an empty
cache for the failure case. A skip here would let the Prometheus tests pass by not running.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.harness import prometheus as harness
from tests.harness.binaries import BUILD_SCRIPT


def _no_prometheus_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    real_which = shutil.which

    def which(name: str, *args: object, **kwargs: object) -> str | None:
        return None if name == "prometheus" else real_which(name)

    monkeypatch.setattr(shutil, "which", which)


def test_a_missing_binary_fails_naming_the_build_step(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELLOOP_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.delenv("MODELLOOP_PROMETHEUS", raising=False)
    _no_prometheus_on_path(monkeypatch)
    assert harness.prometheus_binary() is None
    with pytest.raises(pytest.fail.Exception) as failed:
        harness.require_prometheus()
    assert "bash hack/build-cluster-binaries.sh prometheus" in str(failed.value)


def test_a_missing_override_fails_naming_it(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELLOOP_PROMETHEUS", str(tmp_path / "nothing-here"))
    assert harness.prometheus_binary() is None
    with pytest.raises(pytest.fail.Exception) as failed:
        harness.require_prometheus()
    assert "MODELLOOP_PROMETHEUS" in str(failed.value)


def test_the_cached_build_is_found_and_reports_the_pinned_release(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MODELLOOP_PROMETHEUS", raising=False)
    _no_prometheus_on_path(monkeypatch)
    binary = harness.require_prometheus()
    paths = subprocess.run(["bash", str(BUILD_SCRIPT), "--paths", "prometheus"],
                           capture_output=True, text=True, check=True).stdout
    assert paths.strip() == f"prometheus={binary}"
    # go.mod pins github.com/prometheus/prometheus v0.3XX.Y, which is Prometheus 3.XX.Y.
    go_mod = (BUILD_SCRIPT.parent / "go" / "prometheus" / "go.mod").read_text()
    pinned = re.search(r"^\s*(?:require\s+)?github\.com/prometheus/prometheus\s+(v\S+)",
                       go_mod, re.MULTILINE)
    assert pinned is not None, "hack/go/prometheus/go.mod pins no prometheus version"
    minor, patch = pinned.group(1).removeprefix("v0.").split(".")
    version = subprocess.run([binary, "--version"], capture_output=True, text=True,
                             check=True, timeout=30).stdout
    assert f"version {int(minor) // 100}.{int(minor) % 100}.{patch} " in version, version
