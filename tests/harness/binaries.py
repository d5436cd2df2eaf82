"""Where the control-plane binaries are: asks hack/build-cluster-binaries.sh, never guesses.

The build script is the one place that knows the pinned versions and the cache layout
(``$MODELLOOP_CACHE/bin/<name>-<version>/<name>``); ``--paths`` answers without building.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "hack" / "build-cluster-binaries.sh"
NAMES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok",
         "kubectl", "helm")


class MissingBinariesError(RuntimeError):
    """The binaries are not built (or are stale); the message says what to run."""


@dataclass(frozen=True)
class Binaries:
    etcd: Path
    kube_apiserver: Path
    kube_controller_manager: Path
    kube_scheduler: Path
    kwok: Path
    kubectl: Path
    helm: Path

    @property
    def bin_dirs(self) -> list[Path]:
        """Directories to put first on PATH (kubectl and helm for tests and Helm itself)."""
        return [self.kubectl.parent, self.helm.parent]


def locate() -> Binaries:
    """Paths of the cached binaries, or MissingBinariesError naming the missing ones."""
    if not BUILD_SCRIPT.is_file():
        raise MissingBinariesError(f"{BUILD_SCRIPT} is missing")
    bash = shutil.which("bash") or "/bin/bash"
    # Only the control plane's names: Prometheus (also built by the script) is found by
    # tests/harness/prometheus.py, and its absence must not hide a ready control plane.
    result = subprocess.run([bash, str(BUILD_SCRIPT), "--paths", *NAMES], capture_output=True,
                            text=True, check=False, timeout=120)
    paths: dict[str, Path] = {}
    for line in result.stdout.splitlines():
        name, sep, value = line.partition("=")
        if sep and name in NAMES:
            paths[name] = Path(value)
    missing = [n for n in NAMES if n not in paths or not paths[n].is_file()]
    if result.returncode != 0 or missing:
        go = shutil.which("go") or ("/usr/local/go/bin/go"
                                    if Path("/usr/local/go/bin/go").is_file() else None)
        hint = ("run `make cluster-binaries` (cold build: tens of minutes on 2 cores)"
                if go else "no Go toolchain found to build them: install Go 1.26 and run "
                "`make cluster-binaries`")
        detail = result.stderr.strip().splitlines()[-1:] if result.stderr.strip() else []
        raise MissingBinariesError(
            f"control-plane binaries not available (missing or stale: "
            f"{', '.join(missing) or 'see below'}); {hint}"
            + (f" [{detail[0]}]" if detail else "")
        )
    return Binaries(
        etcd=paths["etcd"],
        kube_apiserver=paths["kube-apiserver"],
        kube_controller_manager=paths["kube-controller-manager"],
        kube_scheduler=paths["kube-scheduler"],
        kwok=paths["kwok"],
        kubectl=paths["kubectl"],
        helm=paths["helm"],
    )
