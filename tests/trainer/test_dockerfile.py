"""The trainer Dockerfile: linted with hadolint, plus the rules we rely on checked directly."""

from __future__ import annotations

import re
from pathlib import Path

from tests.harness.images import hadolint

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "trainer-image" / "Dockerfile"


def test_hadolint_passes() -> None:
    result = hadolint(DOCKERFILE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_runs_as_non_root_from_a_pinned_base() -> None:
    text = DOCKERFILE.read_text()
    users = re.findall(r"^USER\s+(\S+)", text, flags=re.MULTILINE)
    assert users, "no USER instruction: the image would run as root"
    assert users[-1].split(":")[0] not in ("root", "0")
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)", text, flags=re.MULTILINE)
    assert base is not None
    image = base.group(1)
    assert "latest" not in image and re.search(r":\d+\.\d+\.\d+", image), image
    assert "latest" not in text.lower().replace("# ", "")


def test_pins_match_the_development_environment() -> None:
    """The image must run what the tests ran: every pin equals hack/requirements.txt's."""

    def pins(path: Path) -> dict[str, str]:
        found = {}
        for line in path.read_text().splitlines():
            match = re.match(r"^([A-Za-z0-9_.\-\[\]]+)==([^\s#]+)", line.strip())
            if match:
                found[match.group(1).lower()] = match.group(2)
        return found

    image = pins(ROOT / "trainer-image" / "requirements.txt")
    dev = pins(ROOT / "hack" / "requirements.txt")
    installed = {}
    from importlib.metadata import version

    for name in image:
        installed[name] = version(name)
    assert image == installed, "trainer-image/requirements.txt differs from the environment"
    for name, pinned in image.items():
        if name in dev:
            assert dev[name] == pinned, f"{name}: image {pinned}, hack/requirements.txt {dev[name]}"
    torch_arg = re.search(r"^ARG TORCH_VERSION=(\S+)", DOCKERFILE.read_text(), flags=re.MULTILINE)
    assert torch_arg is not None and torch_arg.group(1) == dev["torch"]
