"""The server Dockerfile: linted with hadolint, and consistent with the code it packages
(pins, the metrics config path and the ports the operator's config builder uses)."""

from __future__ import annotations

import re
from importlib.metadata import version
from pathlib import Path

from modelloop_operator.builders.torchserve_config import (
    DEFAULT_METRICS_CONFIG,
    TorchServeSettings,
)
from modelloop_server.health import DEFAULT_HEALTH_PORT

from tests.harness.images import hadolint

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "server-image" / "Dockerfile"
TEXT = DOCKERFILE.read_text()


def pins(path: Path) -> dict[str, str]:
    found = {}
    for line in path.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-\[\]]+)==([^\s#]+)", line.strip())
        if match:
            found[match.group(1).lower()] = match.group(2)
    return found


def test_hadolint_passes() -> None:
    result = hadolint(DOCKERFILE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_runs_as_non_root_from_a_pinned_base() -> None:
    users = re.findall(r"^USER\s+(\S+)", TEXT, flags=re.MULTILINE)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)", TEXT, flags=re.MULTILINE)
    assert base is not None and re.search(r":\d+\.\d+\.\d+-", base.group(1))
    assert "latest" not in TEXT.lower()
    jre = re.search(r"^ARG JRE_VERSION=(\S+)", TEXT, flags=re.MULTILINE)
    assert jre is not None and jre.group(1).startswith("17.")
    assert '"openjdk-17-jre-headless=${JRE_VERSION}"' in TEXT


def test_pins_match_the_development_environment() -> None:
    image = pins(ROOT / "server-image" / "requirements.txt")
    dev = pins(ROOT / "hack" / "requirements.txt")
    assert {name: version(name) for name in image} == image
    for name, pinned in image.items():
        if name in dev:
            assert dev[name] == pinned, f"{name}: image {pinned}, hack/requirements.txt {dev[name]}"
    torch_arg = re.search(r"^ARG TORCH_VERSION=(\S+)", TEXT, flags=re.MULTILINE)
    assert torch_arg is not None and torch_arg.group(1) == dev["torch"]


def test_installs_the_trainer_package_for_the_artifact_loader() -> None:
    assert re.search(r"pip install .*--no-deps \./trainer-image \./server-image", TEXT)


def test_metrics_config_lands_where_the_operator_points() -> None:
    assert f"metrics.yaml {DEFAULT_METRICS_CONFIG}" in TEXT


def test_exposes_inference_metrics_and_health_but_not_management() -> None:
    defaults = TorchServeSettings(model_name="m", mar_file="m.mar")
    exposed = {int(p) for p in re.findall(r"^EXPOSE\s+(.+)$", TEXT, re.M)[0].split()}
    assert exposed == {defaults.inference_port, defaults.metrics_port, DEFAULT_HEALTH_PORT}
    assert defaults.management_port not in exposed
    assert re.search(r'^ENTRYPOINT \["modelloop-serve"\]', TEXT, re.M)
