"""Container paths are rewritten to host paths only at path boundaries."""

from __future__ import annotations

import pytest

from tests.harness.podrunner.paths import PathMap


@pytest.fixture
def path_map() -> PathMap:
    mapping = PathMap()
    mapping.add("/mnt/pvc/models", "/host/pv-models")
    mapping.add("/mnt/pvc/models/cache", "/host/cache")
    mapping.add("/data", "/host/data")
    mapping.add("/dev/termination-log", "/host/pod/c/termination-log")
    return mapping


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("/mnt/pvc/models", "/host/pv-models"),
        ("--out=/mnt/pvc/models/run1", "--out=/host/pv-models/run1"),
        ("file:///mnt/pvc/models/x", "file:///host/pv-models/x"),
        ("/mnt/pvc/models/cache/a", "/host/cache/a"),  # the longer, nested mount wins
        ("/database", "/database"),
        ("/x/data", "/x/data"),
        ("/data.csv", "/data.csv"),
        ("echo hi > /dev/termination-log", "echo hi > /host/pod/c/termination-log"),
        ("'/data' \"/data/a\" a:/data", "'/host/data' \"/host/data/a\" a:/host/data"),
        ("pvc://models/run1", "pvc://models/run1"),
    ],
)
def test_rewrite(path_map: PathMap, text: str, expected: str) -> None:
    assert path_map.rewrite(text) == expected


def test_host_path_lookup(path_map: PathMap) -> None:
    assert path_map.host_path("/data/sub/") == "/host/data/sub"
    assert path_map.host_path("/mnt/pvc/models/cache/x") == "/host/cache/x"
    assert path_map.host_path("/etc/passwd") is None


def test_root_mount_is_refused() -> None:
    with pytest.raises(ValueError, match="mounting over /"):
        PathMap().add("/", "/host")


def test_whole_values_naming_a_parent_of_mounts_go_to_the_mirror_root() -> None:
    mapping = PathMap(mirror_root="/pod/root")
    mapping.add("/mnt/pvc/models", "/host/pv")
    mapping.add("/etc/app", "/host/cfg")
    assert mapping.rewrite("/mnt/pvc") == "/pod/root/mnt/pvc"
    assert mapping.rewrite("/mnt/pvc/") == "/pod/root/mnt/pvc"
    assert mapping.rewrite("--pvc-root=/mnt/pvc") == "--pvc-root=/pod/root/mnt/pvc"
    assert mapping.rewrite("/mnt/pvc/other") == "/mnt/pvc/other"  # not a prefix rule
    assert mapping.rewrite("/etc/ssl/certs") == "/etc/ssl/certs"
    assert mapping.rewrite("cd /mnt/pvc") == "cd /mnt/pvc"  # whole values only
    assert mapping.rewrite("/") == "/"


def test_env_values_are_rewritten_but_names_are_not(path_map: PathMap) -> None:
    assert path_map.rewrite_env({"DATA": "/data/x", "PATH_LIKE": "/a:/data"}) == {
        "DATA": "/host/data/x", "PATH_LIKE": "/a:/host/data"}
