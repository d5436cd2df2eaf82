"""A model that cannot load makes `modelloop-serve` exit 1 with a clear message, instead of
leaving TorchServe retrying forever behind a healthy-looking `/ping`. One TorchServe start."""

from __future__ import annotations

import contextlib
import shutil
import time
from pathlib import Path

import pytest

from .conftest import package_mar
from .serving import Served, http

pytestmark = pytest.mark.torchserve


def test_unloadable_model_exits_1_and_is_never_ready(
    tiny_artifact: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(tiny_artifact, broken)
    (broken / "model.safetensors").write_bytes(b"truncated by a bad copy")
    package_mar(broken, tmp_path / "store", name="broken")
    server = Served(tmp_path, tmp_path / "store", model="broken", mar="broken.mar",
                    args=("--max-load-attempts", "2"))
    try:
        readiness = set()
        deadline = time.monotonic() + 240
        while server.process.poll() is None and time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                readiness.add(http(server.url(server.health, "/readyz"), timeout=2).status)
            time.sleep(0.5)
        assert server.process.returncode == 1, server.output()
        assert 200 not in readiness
        output = server.output()
        assert "model 'broken' failed to load" in output
        assert "does not match the checksum" in output  # the handler's own reason is logged
    finally:
        server.stop()
