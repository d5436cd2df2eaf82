"""The pod's inline programs (builders/serving.py: the init containers' fetch and package,
the server's start script) run for real, against the trainer package installed in the
project environment as it is in the trainer image: a wrong import, argument order or sed
expression would otherwise show up only in a cluster."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import yaml
from modelloop_operator.builders.serving import (
    CONFIG_DIR,
    FETCH_SCRIPT,
    PACKAGE_SCRIPT,
    RENDERED_CONFIG,
    START_SCRIPT,
    ModelRef,
    ServingContext,
    Track,
    build_deployment,
    render_config,
)
from modelloop_server.model_config import enforce_deployment_settings
from modelloop_server.torchserve import load_server_config, read_properties

from .test_serving_builder import OWNER, deployment_spec


def run(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", script, *args], capture_output=True,
                          text=True, cwd=cwd, timeout=120, check=False)


def test_fetch_copies_the_archive_into_the_store(tmp_path: Path) -> None:
    source = tmp_path / "remote" / "bbc.mar"
    source.parent.mkdir()
    source.write_bytes(b"archive bytes")
    store = tmp_path / "store"
    store.mkdir()
    result = run(FETCH_SCRIPT, source.as_uri(), str(store / "bbc.mar"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (store / "bbc.mar").read_bytes() == b"archive bytes"


def test_fetch_of_a_missing_archive_fails_naming_it(tmp_path: Path) -> None:
    result = run(FETCH_SCRIPT, "file:///nowhere/bbc.mar", str(tmp_path / "x.mar"),
                 cwd=tmp_path)
    assert result.returncode != 0
    assert "file:///nowhere/bbc.mar" in result.stderr


def test_package_builds_an_archive_with_the_spec_tuning(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    store = tmp_path / "store"
    result = run(PACKAGE_SCRIPT, model.as_uri(), str(store), "model", "4", "2", "10", "30",
                 "300", "100", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    with zipfile.ZipFile(store / "model.mar") as archive:
        names = set(archive.namelist())
        config = yaml.safe_load(archive.read("model-config.yaml"))
    assert {"config.json", "handler.py", "MAR-INF/MANIFEST.json"} <= names
    assert config == {"minWorkers": 2, "maxWorkers": 2, "batchSize": 4, "maxBatchDelay": 10,
                      "responseTimeout": 30, "startupTimeout": 300, "jobQueueSize": 100}


def test_a_packaged_model_directory_agrees_with_the_config_so_the_server_copies_nothing(
    tmp_path: Path,
) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    ctx = ServingContext(owner=OWNER, spec=deployment_spec(server={"batchSize": 4}),
                         default_image="s", init_image="t", default_cpu="1",
                         default_memory="1Gi")
    ref = ModelRef(uri=model.as_uri(), version="run1")
    init = build_deployment(ctx=ctx, track=Track.STABLE, model=ref,
                            replicas=1)["spec"]["template"]["spec"]["initContainers"][0]
    store = tmp_path / "store"
    script, uri, _, name, *tuning = init["args"]
    result = run(script, uri, str(store), name, *tuning, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    config_path = tmp_path / "config.properties"
    config_path.write_text(render_config(ctx=ctx, model=ref))
    config = load_server_config(config_path, model_store=store)
    assert enforce_deployment_settings(config, tmp_path / "private") is config


def _render(tmp_path: Path, pod_ip: str) -> dict[str, str]:
    """Run the server container's start script with its paths moved under tmp_path and
    ``cat`` in place of the server, and return the config it rendered."""
    ctx = ServingContext(owner=OWNER, spec=deployment_spec(), default_image="s", init_image="t",
                         default_cpu="1", default_memory="1Gi")
    config_dir = tmp_path / "etc"
    config_dir.mkdir()
    (config_dir / "config.properties").write_text(
        render_config(ctx=ctx, model=ModelRef(uri="s3://b/bbc.mar", version="v")))
    rendered = tmp_path / "run" / "config.properties"
    script = (START_SCRIPT.replace(CONFIG_DIR, str(config_dir))
              .replace(RENDERED_CONFIG, str(rendered))
              .replace("/tmp/modelloop", str(rendered.parent))
              .replace("exec modelloop-serve", f"exec cat {rendered}"))
    result = subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True,
                            env={"POD_IP": pod_ip, "PATH": "/usr/bin:/bin"}, timeout=30,
                            check=False)
    assert result.returncode == 0, result.stderr
    return read_properties(result.stdout)


def test_start_script_binds_inference_and_metrics_to_the_pod_ip(tmp_path: Path) -> None:
    props = _render(tmp_path, "127.0.3.7")
    assert props["inference_address"] == "http://127.0.3.7:8080"
    assert props["metrics_address"] == "http://127.0.3.7:8082"
    assert props["management_address"] == "http://127.0.0.1:8081"  # stays on loopback


def test_start_script_brackets_an_ipv6_pod_ip(tmp_path: Path) -> None:
    props = _render(tmp_path, "fd00::12")
    assert props["inference_address"] == "http://[fd00::12]:8080"
