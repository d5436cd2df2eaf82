"""Configuration from MODELLOOP_* variables and the command line."""

from __future__ import annotations

import pytest
from modelloop_operator.cli import load_config, parse_args
from modelloop_operator.config import OperatorConfig


def test_defaults_serve_the_whole_cluster_standalone(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("MODELLOOP_NAMESPACES", "MODELLOOP_PEERING_NAME"):
        monkeypatch.delenv(var, raising=False)
    config = OperatorConfig()
    assert config.clusterwide and config.standalone
    assert (config.metrics_port, config.health_port, config.master_port) == (8080, 8081, 29500)


def test_environment_is_read_with_the_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELLOOP_NAMESPACES", "team-a, team-b,")
    monkeypatch.setenv("MODELLOOP_TRAINER_IMAGE", "registry/trainer:9")
    monkeypatch.setenv("MODELLOOP_PEERING_NAME", "modelloop")
    monkeypatch.setenv("MODELLOOP_LOG_FORMAT", "json")
    monkeypatch.setenv("MODELLOOP_API_CONNECTIONS", "8")
    config = OperatorConfig()
    assert config.api_connections == 8 and OperatorConfig.model_fields[
        "api_connections"].default == 32
    assert config.namespaces == ("team-a", "team-b") and not config.clusterwide
    assert config.trainer_image == "registry/trainer:9"
    assert config.peering_name == "modelloop" and not config.standalone
    assert config.log_format == "json"


def test_invalid_values_are_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELLOOP_METRICS_PORT", "70000")
    with pytest.raises(ValueError, match="metrics_port"):
        OperatorConfig()


def test_command_line_overrides_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELLOOP_NAMESPACES", "team-a")
    monkeypatch.setenv("MODELLOOP_PEERING_NAME", "modelloop")
    config = load_config(parse_args(["--all-namespaces", "--standalone"]))
    assert config.clusterwide and config.standalone
    config = load_config(parse_args(["-n", "x", "-n", "y", "--peering", "ha"]))
    assert config.namespaces == ("x", "y") and config.peering_name == "ha"


def test_namespace_and_all_namespaces_exclude_each_other() -> None:
    with pytest.raises(SystemExit):
        parse_args(["-n", "x", "-A"])
