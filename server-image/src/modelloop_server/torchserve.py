"""Everything `modelloop-serve` knows about TorchServe: its config file, its command line and
its management API. Another serving runtime would replace this module, not the supervisor.

The Java frontend is started directly rather than through the `torchserve` launcher script:
the script keeps a pid file in the shared temp directory (so a second server on the same
machine refuses to start), returns before the server is up unless `--foreground`, and does
not forward signals. Started directly, the JVM is our child: its pid is known, SIGTERM
reaches it, and its exit status is ours to report.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shlex
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit


class ConfigError(ValueError):
    """A config.properties that modelloop-serve cannot run safely."""


@dataclass(frozen=True)
class ServerConfig:
    """What the supervisor needs from config.properties."""

    path: Path
    model_name: str
    mar_file: str
    model_store: Path
    management_url: str
    inference_url: str
    metrics_url: str
    metrics_config: Path | None
    vmargs: tuple[str, ...]
    # The config's per-model settings for this model (`models` JSON), by archive version,
    # and its `job_queue_size`: what the ModelDeployment decided (see `model_config`).
    model_settings: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    job_queue_size: int | None = None

    @property
    def temp_dir(self) -> Path | None:
        for arg in self.vmargs:
            if arg.startswith("-Djava.io.tmpdir="):
                return Path(arg.split("=", 1)[1])
        return None


def read_properties(text: str) -> dict[str, str]:
    """Parse the java.util.Properties subset config.properties uses (key=value lines,
    `#`/`!` comments, backslash escapes; no line continuations)."""
    props: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#!":
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise ConfigError(f"config line without '=': {raw!r}")
        props[key.strip()] = re.sub(r"\\(.)", r"\1", value.strip())
    return props


def load_server_config(path: Path, *, model_store: Path | None = None) -> ServerConfig:
    """Read and check config.properties; `model_store` overrides the file's `model_store`."""
    try:
        props = read_properties(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read TorchServe config {path}: {exc.strerror}") from exc
    management = props.get("management_address", "")
    if not management:
        raise ConfigError(
            f"{path}: management_address is not set; modelloop-serve watches the workers "
            "through it and needs it on 127.0.0.1"
        )
    host = urlsplit(management).hostname or ""
    if not _is_loopback(host):
        raise ConfigError(
            f"{path}: management_address {management} must listen on loopback (127.0.0.1): "
            "the management API must not be reachable from outside the pod"
        )
    models = [m.strip() for m in props.get("load_models", "").split(",") if m.strip()]
    if len(models) != 1 or "=" not in models[0] or not models[0].endswith(".mar"):
        raise ConfigError(
            f"{path}: load_models must name exactly one archive as <name>=<file>.mar, "
            f"got {props.get('load_models')!r}"
        )
    name, mar = models[0].split("=", 1)
    store = model_store or Path(props.get("model_store", ""))
    if not str(store) or not store.is_dir():
        raise ConfigError(f"model store {str(store) or '(unset)'} is not a directory")
    if not (store / mar).is_file():
        raise ConfigError(f"model archive {store / mar} does not exist")
    metrics_config = props.get("metrics_config")
    return ServerConfig(
        path=path,
        model_name=name,
        mar_file=mar,
        model_store=store,
        management_url=management.rstrip("/"),
        inference_url=props.get("inference_address", "http://127.0.0.1:8080").rstrip("/"),
        metrics_url=props.get("metrics_address", "http://127.0.0.1:8082").rstrip("/"),
        metrics_config=Path(metrics_config) if metrics_config else None,
        vmargs=tuple(shlex.split(props.get("vmargs", ""))),
        model_settings=_model_settings(path, props.get("models"), name),
        job_queue_size=_optional_int(path, props, "job_queue_size"),
    )


def _model_settings(path: Path, raw: str | None, name: str) -> dict[str, dict[str, Any]]:
    """The `models` JSON's entries for `name`, by version ({} when it has none)."""
    if not raw:
        return {}
    try:
        models = json.loads(raw)
    except ValueError as exc:
        raise ConfigError(f"{path}: models is not valid JSON: {exc}") from exc
    versions = models.get(name, {}) if isinstance(models, dict) else None
    if not isinstance(versions, dict) or not all(
        isinstance(v, dict) for v in versions.values()
    ):
        raise ConfigError(
            f"{path}: models must map model name -> version -> settings, got {raw[:200]!r}"
        )
    return {str(version): dict(entry) for version, entry in versions.items()}


def _optional_int(path: Path, props: Mapping[str, str], key: str) -> int | None:
    raw = props.get(key, "").strip()
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{path}: {key}={raw!r} is not an integer") from None


def java_command(config: ServerConfig, *, java: str | None = None) -> list[str]:
    """The JVM command line the `torchserve --start --foreground --ncs` launcher would run."""
    import ts  # type: ignore[import-untyped]

    ts_home = Path(ts.__file__).resolve().parent.parent
    java_bin = java or (
        str(Path(os.environ["JAVA_HOME"]) / "bin" / "java") if "JAVA_HOME" in os.environ
        else "java"
    )
    return [
        java_bin,
        f"-Dmodel_server_home={ts_home}",
        *config.vmargs,
        "-cp",
        str(ts_home / "ts" / "frontend" / "*"),
        "org.pytorch.serve.ModelServer",
        "--python",
        sys.executable,
        "-f",
        str(config.path),
        "-s",
        str(config.model_store),
        "-ncs",
    ]


@dataclass(frozen=True)
class Worker:
    """One TorchServe worker as the management API describes it."""

    id: str
    pid: int
    status: str

    @property
    def ready(self) -> bool:
        return self.status == "READY"


@dataclass(frozen=True)
class ModelState:
    """The answer of `GET /models/<name>`: None workers means the model is not registered."""

    workers: tuple[Worker, ...] | None


class ManagementError(Exception):
    """The management API did not answer (yet)."""


def describe_model(management_url: str, model_name: str, *, timeout_s: float = 2.0) -> ModelState:
    """Ask the (loopback) management API about `model_name`'s workers."""
    url = f"{management_url}/models/{model_name}"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            body = json.load(response)
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return ModelState(workers=None)
        raise ManagementError(f"{url} answered {exc.code}") from exc
    except (OSError, ValueError) as exc:
        raise ManagementError(f"{url}: {exc}") from exc
    return parse_model_description(body)


def parse_model_description(body: Any) -> ModelState:
    """Workers of every version of the model in a describe-model answer."""
    if not isinstance(body, list):
        raise ManagementError(f"unexpected describe-model answer: {str(body)[:200]}")
    workers: list[Worker] = []
    for version in body:
        for w in version.get("workers", []) if isinstance(version, Mapping) else []:
            workers.append(
                Worker(id=str(w.get("id")), pid=int(w.get("pid", -1)), status=str(w.get("status")))
            )
    return ModelState(workers=tuple(workers))


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
