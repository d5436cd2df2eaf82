"""Fixtures for the chart tests: a helm binary (the tests are skipped, with the reason, only
when none can be found; with MODELLOOP_REQUIRE_CLUSTER=1, as in CI, that is an error)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.chart.helm import Helm, HelmNotFoundError, find_helm


@pytest.fixture(scope="session")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    try:
        binary = find_helm()
    except HelmNotFoundError as err:
        if os.environ.get("MODELLOOP_REQUIRE_CLUSTER") == "1":
            pytest.fail(f"MODELLOOP_REQUIRE_CLUSTER=1 but {err}", pytrace=False)
        pytest.skip(str(err))
    return Helm(binary=binary, home=tmp_path_factory.mktemp("helm-home"))


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path
