"""The operator image on its own: its entry point, its user, its read-only root filesystem.
Built (or reused) by ``hack/images.sh``; the cluster tier runs it against the control plane
(tests/cluster/test_operator_image.py)."""

from __future__ import annotations

import yaml

from tests.harness.binaries import REPO_ROOT
from tests.harness.images import podman

LOCKED_DOWN = ("--rm", "--read-only", "--tmpfs=/tmp", "--cap-drop=ALL",
               "--security-opt=no-new-privileges")


def test_it_is_tagged_by_the_charts_app_version_as_the_chart_runs_it(
        operator_image: str) -> None:
    chart = yaml.safe_load((REPO_ROOT / "charts/modelloop/Chart.yaml").read_text())
    values = yaml.safe_load((REPO_ROOT / "charts/modelloop/values.yaml").read_text())
    assert operator_image == f"{values['image']['repository']}:{chart['appVersion']}"


def test_the_entry_point_answers_help_as_the_non_root_user(operator_image: str) -> None:
    helped = podman("run", *LOCKED_DOWN, operator_image, "--help")
    assert helped.stdout.startswith("usage: modelloop-operator")
    assert "--all-namespaces" in helped.stdout
    who = podman("run", *LOCKED_DOWN, "--entrypoint=id", operator_image).stdout.split()
    assert who[:2] == ["uid=65532(modelloop)", "gid=65532(modelloop)"]


def test_it_carries_no_ml_stack_and_writes_nothing_to_its_root(operator_image: str) -> None:
    probe = ("import importlib.util as u, modelloop_operator, kopf; "
             "print([m for m in ('torch', 'transformers') if u.find_spec(m)])")
    result = podman("run", *LOCKED_DOWN, "--entrypoint=python3", operator_image, "-c", probe)
    assert result.stdout.strip() == "[]"
    refused = podman("run", *LOCKED_DOWN, "--entrypoint=touch", operator_image, "/opt/x",
                     check=False)
    assert refused.returncode != 0 and "Read-only file system" in refused.stderr
