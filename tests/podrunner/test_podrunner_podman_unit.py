"""`podman run` arguments built from a pod spec (no podman, no cluster)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tests.harness.podrunner.podman import Mount, kubelet_volume_modes, run_argv, write_env

POD = {"metadata": {"name": "p", "namespace": "ns", "uid": "0123456789"},
       "spec": {"securityContext": {"runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 2000}}}


def _argv(container: dict[str, Any], tmp_path: Path) -> list[str]:
    return run_argv(name="c", node="n", pod=POD, container=container,
                    mounts=[Mount("/h/models", "/mnt/pvc/models", False),
                            Mount("/h/cfg", "/etc/cfg", True)],
                    env_file=tmp_path / "env", inline_env={}, hostname="h")


def test_security_limits_mounts_and_command(tmp_path: Path) -> None:
    container = {"name": "main", "image": "img:1", "command": ["torchrun", "--nproc=1"],
                 "args": ["-m", "x"], "workingDir": "/work",
                 "resources": {"limits": {"memory": "1Gi", "cpu": "500m"}},
                 "securityContext": {"readOnlyRootFilesystem": True, "runAsUser": 7,
                                     "allowPrivilegeEscalation": False,
                                     "capabilities": {"drop": ["ALL"]}}}
    argv = _argv(container, tmp_path)
    assert "--user=7:1000" in argv and "--group-add=2000" in argv
    assert {"--read-only", "--read-only-tmpfs=false", "--cap-drop=all",
            "--security-opt=no-new-privileges", "--pull=never", "--network=host"} <= set(argv)
    assert f"--memory={2**30}" in argv and "--cpus=0.5" in argv
    assert "--volume=/h/models:/mnt/pvc/models" in argv and "--volume=/h/cfg:/etc/cfg:ro" in argv
    assert '--entrypoint=["torchrun"]' in argv
    assert argv[argv.index("img:1"):] == ["img:1", "--nproc=1", "-m", "x"]


def test_args_alone_keep_the_image_entrypoint(tmp_path: Path) -> None:
    argv = _argv({"name": "main", "image": "img:1", "args": ["--help"]}, tmp_path)
    assert not any(a.startswith("--entrypoint") for a in argv)
    assert argv[-2:] == ["img:1", "--help"]
    assert not any(a.startswith(("--memory", "--read-only")) for a in argv)


def test_env_file_is_private_and_multiline_values_stay_inline(tmp_path: Path) -> None:
    path = tmp_path / "c" / "env"
    inline = write_env({"KEY": "s3cret", "JSON": "a\nb"}, path)
    assert inline == {"JSON": "a\nb"}
    assert path.read_text() == "KEY=s3cret\n"
    assert path.stat().st_mode & 0o777 == 0o600


def test_volume_modes_as_the_kubelet_sets_them(tmp_path: Path) -> None:
    scratch, claim = tmp_path / "scratch", tmp_path / "claim"
    (claim / "sub").mkdir(parents=True)
    scratch.mkdir()
    (claim / "sub" / "f").write_text("x")
    pod = {"spec": {"securityContext": {"fsGroup": os.getgid()},
                    "volumes": [{"name": "s", "emptyDir": {}},
                                {"name": "c", "persistentVolumeClaim": {"claimName": "m"}}]}}
    kubelet_volume_modes(pod, {"s": scratch, "c": claim})
    assert scratch.stat().st_mode & 0o777 == 0o777
    assert (claim / "sub").stat().st_mode & 0o2070 == 0o2070
    assert (claim / "sub" / "f").stat().st_mode & 0o060 == 0o060
