"""The operator Dockerfile: linted with hadolint, and consistent with what runs it (the
chart's user and ports) and with what the tests ran (the pins)."""

from __future__ import annotations

import re
from importlib.metadata import version
from pathlib import Path

import yaml

from tests.harness.images import hadolint

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "operator" / "Dockerfile"
TEXT = DOCKERFILE.read_text()
VALUES = yaml.safe_load((ROOT / "charts" / "modelloop" / "values.yaml").read_text())


def test_hadolint_passes() -> None:
    result = hadolint(DOCKERFILE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_it_runs_as_the_charts_user_on_the_charts_ports() -> None:
    (user,) = re.findall(r"^USER\s+(\d+):(\d+)$", TEXT, flags=re.MULTILINE)
    chart = VALUES["podSecurityContext"]
    assert user == (str(chart["runAsUser"]), str(chart["runAsGroup"]))
    (exposed,) = re.findall(r"^EXPOSE\s+(.+)$", TEXT, flags=re.MULTILINE)
    assert set(exposed.split()) == {str(VALUES["metrics"]["port"]),
                                    str(VALUES["livenessProbe"]["port"])}
    assert re.search(r'^ENTRYPOINT \["modelloop-operator"\]$', TEXT, flags=re.MULTILINE)
    assert "torch" not in (ROOT / "operator" / "requirements.txt").read_text()


def test_pins_are_what_the_tests_ran() -> None:
    pins = {}
    for line in (ROOT / "operator" / "requirements.txt").read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-]+)==(\S+)", line.strip())
        if match:
            pins[match.group(1)] = match.group(2)
    assert {"kopf", "pydantic", "aiohttp"} <= set(pins)
    assert pins == {name: version(name) for name in pins}
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)", TEXT, flags=re.MULTILINE)
    assert base is not None and re.search(r":\d+\.\d+\.\d+", base.group(1))
