"""The config.properties builder: every setting lands where TorchServe reads it, and the safe
defaults cannot be turned off from a spec."""

from __future__ import annotations

import json
import re
from ipaddress import IPv4Address
from typing import Any

import pytest
from modelloop_operator.builders.torchserve_config import (
    DEFAULT_METRICS_CONFIG,
    TorchServeSettings,
    build_torchserve_config,
    torchserve_properties,
)
from pydantic import ValidationError


def parse_properties(text: str) -> dict[str, str]:
    """Parse the subset of the java.util.Properties format the builder writes."""
    props: dict[str, str] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition("=")
        assert key not in props, f"duplicate key {key}"
        props[key] = re.sub(r"\\(.)", r"\1", value)
    return props


def props_of(**overrides: Any) -> dict[str, str]:
    settings = TorchServeSettings(model_name="news", mar_file="news.mar", **overrides)
    return parse_properties(build_torchserve_config(settings))


def model_entry(props: dict[str, str], name: str = "news", version: str = "1.0") -> Any:
    return json.loads(props["models"])[name][version]


class TestSafeDefaults:
    def test_management_listens_on_loopback_only(self) -> None:
        props = props_of(listen_address=IPv4Address("0.0.0.0"))
        assert props["management_address"] == "http://127.0.0.1:8081"
        assert props["grpc_management_address"] == "127.0.0.1"

    def test_grpc_inference_is_loopback_because_it_cannot_be_disabled(self) -> None:
        assert props_of()["grpc_inference_address"] == "127.0.0.1"

    def test_model_api_disabled_and_no_dependency_install(self) -> None:
        props = props_of()
        assert props["enable_model_api"] == "false"
        assert props["install_py_dep_per_model"] == "false"
        assert props["enable_envvars_config"] == "false"

    def test_prometheus_metrics_with_our_definitions(self) -> None:
        props = props_of()
        assert props["metrics_mode"] == "prometheus"
        assert props["metrics_config"] == DEFAULT_METRICS_CONFIG

    def test_token_authorization_disabled_so_probes_and_clients_work(self) -> None:
        assert props_of()["disable_token_authorization"] == "true"

    def test_system_metrics_off_by_default(self) -> None:
        assert props_of()["disable_system_metrics"] == "true"
        assert props_of(system_metrics=True)["disable_system_metrics"] == "false"

    def test_allowed_urls_match_only_mars_in_the_store(self) -> None:
        pattern = re.compile(props_of(model_store="/mnt/pvc/models-1/v.2")["allowed_urls"])
        assert pattern.fullmatch("file:///mnt/pvc/models-1/v.2/news.mar")
        assert not pattern.fullmatch("file:///mnt/pvc/models-1/vX2/news.mar")
        assert not pattern.fullmatch("file:///mnt/pvc/models-1/v.2/sub/news.mar")
        assert not pattern.fullmatch("file:///etc/passwd")
        assert not pattern.fullmatch("https://example.com/news.mar")

    def test_trailing_slash_in_store_is_not_doubled(self) -> None:
        assert props_of(model_store="/models/")["allowed_urls"] == r"file:///models/[^/]+\.mar"

    def test_defaults_suit_a_pod(self) -> None:
        props = props_of()
        assert props["inference_address"] == "http://0.0.0.0:8080"
        assert props["metrics_address"] == "http://0.0.0.0:8082"
        assert props["model_store"] == "/mnt/models"
        assert props["vmargs"] == "-Djava.io.tmpdir=/tmp/torchserve"


class TestEverySetting:
    def test_model_loaded_at_startup_by_name(self) -> None:
        assert props_of()["load_models"] == "news=news.mar"

    def test_per_model_settings_keyed_by_name_and_version(self) -> None:
        props = props_of(
            model_version="2.1",
            workers=3,
            batch_size=16,
            max_batch_delay_ms=25,
            response_timeout_s=30,
            startup_timeout_s=90,
        )
        assert model_entry(props, version="2.1") == {
            "defaultVersion": True,
            "marName": "news.mar",
            "minWorkers": 3,
            "maxWorkers": 3,
            "batchSize": 16,
            "maxBatchDelay": 25,
            "responseTimeout": 30,
            "startupTimeout": 90,
        }
        assert props["default_workers_per_model"] == "3"
        assert props["default_response_timeout"] == "30"
        assert props["default_startup_timeout"] == "90"

    def test_ports_and_listen_address(self) -> None:
        props = props_of(
            listen_address=IPv4Address("127.0.0.1"),
            inference_port=18080,
            management_port=18081,
            metrics_port=18082,
            grpc_inference_port=17070,
            grpc_management_port=17071,
            initial_worker_port=19000,
        )
        assert props["inference_address"] == "http://127.0.0.1:18080"
        assert props["management_address"] == "http://127.0.0.1:18081"
        assert props["metrics_address"] == "http://127.0.0.1:18082"
        assert props["grpc_inference_port"] == "17070"
        assert props["grpc_management_port"] == "17071"
        assert props["initial_worker_port"] == "19000"

    def test_queue_and_size_limits(self) -> None:
        props = props_of(
            job_queue_size=7, max_request_size_bytes=2048, max_response_size_bytes=4096
        )
        assert props["job_queue_size"] == "7"
        assert props["max_request_size"] == "2048"
        assert props["max_response_size"] == "4096"

    def test_paths(self) -> None:
        props = props_of(
            model_store="/store", metrics_config="/etc/m.yaml", temp_dir="/scratch/ts"
        )
        assert props["model_store"] == "/store"
        assert props["metrics_config"] == "/etc/m.yaml"
        assert props["vmargs"] == "-Djava.io.tmpdir=/scratch/ts"

    def test_jvm_heap(self) -> None:
        assert props_of(jvm_max_heap_mib=512)["vmargs"].split() == [
            "-Djava.io.tmpdir=/tmp/torchserve",
            "-Xmx512m",
        ]


class TestRendering:
    def test_regex_backslashes_survive_properties_unescaping(self) -> None:
        text = build_torchserve_config(TorchServeSettings(model_name="m", mar_file="m.mar"))
        assert r"allowed_urls=file:///mnt/models/[^/]+\\.mar" in text.splitlines()

    def test_output_is_deterministic_and_one_line_per_key(self) -> None:
        settings = TorchServeSettings(model_name="m", mar_file="m.mar")
        text = build_torchserve_config(settings)
        assert text == build_torchserve_config(settings)
        assert text.endswith("\n")
        assert len(text.splitlines()) == len(torchserve_properties(settings))


class TestValidation:
    @pytest.mark.parametrize(
        "overrides",
        [
            {"model_name": "bad name"},
            {"model_name": "../etc"},
            {"mar_file": "sub/news.mar"},
            {"mar_file": "news.tar"},
            {"model_store": "relative/path"},
            {"model_store": "/with space"},
            {"metrics_config": "/x\ny"},
            {"workers": 0},
            {"batch_size": 0},
            {"max_batch_delay_ms": -1},
            {"inference_port": 0},
            {"metrics_port": 70000},
            {"listen_address": "not-an-ip"},
            {"unknown_field": 1},
        ],
    )
    def test_rejects_unsafe_or_invalid_values(self, overrides: dict[str, Any]) -> None:
        fields: dict[str, Any] = {"model_name": "news", "mar_file": "news.mar", **overrides}
        with pytest.raises(ValidationError):
            TorchServeSettings(**fields)

    def test_ports_must_differ(self) -> None:
        with pytest.raises(ValidationError, match="metrics_port and inference_port"):
            TorchServeSettings(
                model_name="news", mar_file="news.mar", inference_port=9, metrics_port=9
            )

    def test_settings_are_immutable(self) -> None:
        settings = TorchServeSettings(model_name="news", mar_file="news.mar")
        with pytest.raises(ValidationError):
            settings.workers = 4  # type: ignore[misc]
