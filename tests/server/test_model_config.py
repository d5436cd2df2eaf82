"""The ModelDeployment's per-model settings replace the archive's model-config.yaml before
TorchServe loads it (server-image/src/modelloop_server/model_config.py). The real server's
side of it is in test_torchserve_serving.py; here the rules, on real zip archives."""

from __future__ import annotations

import json
import zipfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from modelloop_operator.builders.torchserve_config import (
    TorchServeSettings,
    build_torchserve_config,
)
from modelloop_server.entrypoint import EXIT_FAILED, main
from modelloop_server.metrics import metrics_config_path
from modelloop_server.model_config import (
    ArchiveError,
    deployment_settings,
    enforce_deployment_settings,
    overridden,
    read_archive_config,
)
from modelloop_server.torchserve import ServerConfig, load_server_config

WEIGHTS = bytes(range(256)) * 4096  # 1 MiB that must come through the copy unchanged
DEPLOYMENT = {"minWorkers": 1, "maxWorkers": 1, "batchSize": 4, "maxBatchDelay": 50,
              "responseTimeout": 90, "startupTimeout": 300, "jobQueueSize": 100}


def write_mar(path: Path, *, model_config: dict[str, Any] | None, version: str = "1.0") -> Path:
    """A .mar as torch-model-archiver lays it out (deflated, manifest first)."""
    model: dict[str, Any] = {"modelName": path.stem, "handler": "handler.py",
                             "modelVersion": version}
    if model_config is not None:
        model["configFile"] = "model-config.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as mar:
        mar.writestr("MAR-INF/MANIFEST.json", json.dumps({"runtime": "python", "model": model}))
        mar.writestr("handler.py", "print('hi')\n")
        mar.writestr("model.safetensors", WEIGHTS)
        if model_config is not None:
            mar.writestr("model-config.yaml", yaml.safe_dump(model_config))
    return path


def server_config(tmp_path: Path, *, archive_config: dict[str, Any] | None,
                  version: str = "1.0", **settings: Any) -> ServerConfig:
    store = tmp_path / "store"
    write_mar(store / "news.mar", model_config=archive_config, version=version)
    fields: dict[str, Any] = {
        "model_name": "news", "mar_file": "news.mar", "model_store": str(store),
        "metrics_config": str(metrics_config_path()), "temp_dir": str(tmp_path / "tmp"),
        "batch_size": 4, "max_batch_delay_ms": 50, "response_timeout_s": 90, **settings,
    }
    path = tmp_path / "config.properties"
    path.write_text(build_torchserve_config(TorchServeSettings.model_validate(fields)))
    return load_server_config(path)


PACKAGED = {"minWorkers": 2, "maxWorkers": 2, "batchSize": 2, "maxBatchDelay": 7,
            "responseTimeout": 33, "handler": {"artifact_dir": "."}}


class TestSettings:
    def test_the_config_sets_every_tuning_key_the_operator_renders(self, tmp_path: Path) -> None:
        config = server_config(tmp_path, archive_config=None)
        assert deployment_settings(config, "1.0") == DEPLOYMENT

    def test_another_archive_version_still_gets_the_deployments_settings(
        self, tmp_path: Path
    ) -> None:
        # TorchServe itself would silently ignore a `models` entry of another version
        config = server_config(tmp_path, archive_config=None)
        assert deployment_settings(config, "2.5") == DEPLOYMENT
        assert deployment_settings(config, None) == DEPLOYMENT

    def test_a_config_without_models_only_sets_the_queue(self, tmp_path: Path) -> None:
        config = server_config(tmp_path, archive_config=None)
        bare = replace(config, model_settings={})
        assert deployment_settings(bare, "1.0") == {"jobQueueSize": 100}

    def test_overridden_lists_only_what_differs(self) -> None:
        assert overridden(PACKAGED, {"batchSize": 2, "maxBatchDelay": 50}) == {
            "maxBatchDelay": 7}
        assert overridden(PACKAGED, {"startupTimeout": 300}) == {"startupTimeout": None}
        assert overridden(PACKAGED, {"batchSize": 2}) == {}


class TestArchive:
    def test_a_packaged_archive_is_served_from_a_copy_saying_what_the_deployment_says(
        self, tmp_path: Path
    ) -> None:
        config = server_config(tmp_path, archive_config=PACKAGED)
        original = (tmp_path / "store" / "news.mar").read_bytes()
        served = enforce_deployment_settings(config, tmp_path / "private")
        assert served.model_store == tmp_path / "private"
        assert (served.model_name, served.mar_file) == ("news", "news.mar")
        copy = served.model_store / "news.mar"
        found = read_archive_config(copy)
        assert found.model_config == {**DEPLOYMENT, "handler": {"artifact_dir": "."}}
        assert found.version == "1.0"
        with zipfile.ZipFile(copy) as mar:
            assert mar.read("model.safetensors") == WEIGHTS
            assert mar.read("handler.py") == b"print('hi')\n"
            assert mar.testzip() is None
        assert (tmp_path / "store" / "news.mar").read_bytes() == original
        assert not list((tmp_path / "private").glob("*.partial"))

    def test_an_archive_that_agrees_is_served_as_it_is(self, tmp_path: Path) -> None:
        config = server_config(tmp_path, archive_config={**DEPLOYMENT, "handler": {}})
        assert enforce_deployment_settings(config, tmp_path / "private") is config
        assert not (tmp_path / "private").exists()

    def test_keys_the_archive_leaves_out_are_written_too(self, tmp_path: Path) -> None:
        # what the package-model init container writes: the five keys of spec.server; with a
        # model config present TorchServe would use its own startupTimeout, not the config's
        packaged = {k: DEPLOYMENT[k] for k in ("minWorkers", "maxWorkers", "batchSize",
                                               "maxBatchDelay", "responseTimeout")}
        config = server_config(tmp_path, archive_config=packaged)
        served = enforce_deployment_settings(config, tmp_path / "private")
        assert read_archive_config(served.model_store / "news.mar").model_config == DEPLOYMENT

    def test_another_version_without_the_keys_gets_a_copy(self, tmp_path: Path) -> None:
        # TorchServe would not apply the `models` entry of version 1.0 to a 2.0 archive
        config = server_config(tmp_path, archive_config={"handler": {}}, version="2.0")
        served = enforce_deployment_settings(config, tmp_path / "private")
        found = read_archive_config(served.model_store / "news.mar").model_config
        assert found == {"handler": {}, **DEPLOYMENT}

    def test_an_archive_without_model_config_gets_one(self, tmp_path: Path) -> None:
        config = server_config(tmp_path, archive_config=None, version="3")
        served = enforce_deployment_settings(config, tmp_path / "private")
        found = read_archive_config(served.model_store / "news.mar")
        assert found.config_file == "model-config.yaml"
        assert found.model_config == DEPLOYMENT

    def test_the_archives_own_keys_the_config_does_not_set_are_kept(
        self, tmp_path: Path
    ) -> None:
        config = server_config(tmp_path, archive_config={**PACKAGED, "deviceType": "cpu",
                                                         "maxRetryTimeoutInSec": 60})
        served = enforce_deployment_settings(config, tmp_path / "private")
        found = read_archive_config(served.model_store / "news.mar").model_config
        assert (found["deviceType"], found["maxRetryTimeoutInSec"]) == ("cpu", 60)
        assert found["batchSize"] == 4

    @pytest.mark.parametrize(
        ("content", "message"),
        [
            (b"not a zip", "cannot read model archive"),
            (None, "not a model archive"),
        ],
    )
    def test_an_unreadable_archive_is_a_clear_error(
        self, tmp_path: Path, content: bytes | None, message: str
    ) -> None:
        path = tmp_path / "bad.mar"
        if content is None:
            with zipfile.ZipFile(path, "w") as mar:
                mar.writestr("handler.py", "")
        else:
            path.write_bytes(content)
        with pytest.raises(ArchiveError, match=message):
            read_archive_config(path)

    def test_entrypoint_exits_1_naming_an_unreadable_archive(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        config = server_config(tmp_path, archive_config=None)
        (config.model_store / config.mar_file).write_bytes(b"truncated download")
        code = main(["--config", str(config.path), "--work-dir", str(tmp_path / "work")])
        assert code == EXIT_FAILED
        assert "cannot read model archive" in caplog.text and "news.mar" in caplog.text
