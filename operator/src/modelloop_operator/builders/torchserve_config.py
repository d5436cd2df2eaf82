"""Build TorchServe's `config.properties` from typed settings.

The ModelDeployment reconciler maps its spec onto `TorchServeSettings` and stores the result of
`build_torchserve_config` in a ConfigMap that the server image's `modelloop-serve` reads.

Only the knobs a ModelDeployment may turn are fields; everything that keeps the server safe
is fixed here and cannot be switched off from a spec:

- the management API (and the gRPC management API) listen on 127.0.0.1 only: nothing outside
  the pod can register, scale or delete models. `modelloop-serve` needs it there to watch the
  workers, which is why it is pinned to loopback rather than disabled;
- `enable_model_api=false`: even on loopback, models cannot be registered or deleted at run
  time; the server serves exactly the archive named in `load_models`;
- `allowed_urls` only matches `.mar` files directly inside the model store (no http(s));
- `install_py_dep_per_model=false`: an archive cannot make the server pip-install anything;
- `enable_envvars_config=false`: `TS_*` variables in the pod cannot override this file;
- `disable_token_authorization=true`: TorchServe 0.12's tokens would also be demanded on the
  inference API, which Kubernetes clients and probes cannot present; the management API's
  protection is its loopback address plus the disabled model API instead. Access control
  to inference belongs to the Service, NetworkPolicy or mesh in front of the pod;
- `metrics_mode=prometheus`: the default `log` mode exports nothing on `/metrics`; the metric
  definitions (ours and TorchServe's) come from `metrics_config` (see docs/metrics.md).

The gRPC inference endpoint cannot be turned off in TorchServe 0.12, so it is bound to
loopback too: the only remote ways in are the HTTP inference and metrics ports.

Precedence: TorchServe 0.12 itself prefers an archive's own `model-config.yaml` (minWorkers,
maxWorkers, batchSize, maxBatchDelay, responseTimeout, startupTimeout, jobQueueSize) over
the `models` entry and `job_queue_size` written here, and archives from `modelloop-optimize`
carry those keys (the OptimizationJob's `packaging`, defaults for the archive served on its
own). The ModelDeployment owns serving, so `modelloop-serve` makes this file win: before
TorchServe starts it serves a copy of the archive whose model config says what this file
says (server-image `modelloop_server.model_config`; tested against the real server).
"""

from __future__ import annotations

import json
import re
from ipaddress import IPv4Address
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

# Where the server image installs the metric definitions (server-image/Dockerfile).
DEFAULT_METRICS_CONFIG = "/opt/modelloop/metrics.yaml"
DEFAULT_MODEL_STORE = "/mnt/models"
# The pod's own emptyDir mounted at /tmp, never a directory shared with other servers.
DEFAULT_TEMP_DIR = "/tmp/torchserve"

LOOPBACK = "127.0.0.1"

Port = Annotated[int, Field(ge=1, le=65535)]
# Absolute POSIX path without characters that would need quoting in a properties file or a
# regular expression beyond what `_allowed_urls` escapes.
AbsPath = Annotated[str, Field(pattern=r"^/[A-Za-z0-9._/-]*$", max_length=512)]
ModelName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")]
MarFile = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,250}\.mar$")]
ModelVersion = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")]


class TorchServeSettings(BaseModel):
    """Everything a ModelDeployment decides about one TorchServe process serving one model.

    Times are in the unit their name says; sizes in bytes. Defaults suit a CPU pod.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    model_name: ModelName
    mar_file: MarFile
    # The archive's own version (torch-model-archiver `--version`); TorchServe looks up the
    # per-model settings in `models` by name *and* this version, so a mismatch silently falls
    # back to defaults. The trainer packages with "1.0".
    model_version: ModelVersion = "1.0"
    model_store: AbsPath = DEFAULT_MODEL_STORE
    metrics_config: AbsPath = DEFAULT_METRICS_CONFIG
    temp_dir: AbsPath = DEFAULT_TEMP_DIR

    # Address the inference and metrics ports listen on: all interfaces in a pod, loopback in
    # tests. The management ports always listen on loopback (see the module docstring).
    listen_address: IPv4Address = IPv4Address("0.0.0.0")
    inference_port: Port = 8080
    management_port: Port = 8081
    metrics_port: Port = 8082
    grpc_inference_port: Port = 7070
    grpc_management_port: Port = 7071
    # First port of the range TorchServe numbers its worker sockets with (Unix sockets under
    # temp_dir, so only two servers sharing one temp_dir could collide).
    initial_worker_port: Port = 9000

    workers: int = Field(default=1, ge=1, le=64)
    batch_size: int = Field(default=8, ge=1, le=1024)
    max_batch_delay_ms: int = Field(default=50, ge=0, le=60_000)
    response_timeout_s: int = Field(default=120, ge=1, le=3600)
    # How long a worker may take to load the model before TorchServe gives up on it.
    startup_timeout_s: int = Field(default=300, ge=1, le=3600)
    job_queue_size: int = Field(default=100, ge=1, le=100_000)
    max_request_size_bytes: int = Field(default=1_048_576, ge=1024, le=1 << 30)
    max_response_size_bytes: int = Field(default=1_048_576, ge=1024, le=1 << 30)
    # None leaves the JVM's default (a quarter of the container's memory limit).
    jvm_max_heap_mib: int | None = Field(default=None, ge=64, le=1 << 20)
    # Host and system metrics (CPU, memory, disk): useful on a VM, duplicates of the kubelet's
    # cAdvisor metrics in a pod, and each collection forks a Python process.
    system_metrics: bool = False

    @model_validator(mode="after")
    def _ports_distinct(self) -> TorchServeSettings:
        ports = {
            "inference_port": self.inference_port,
            "management_port": self.management_port,
            "metrics_port": self.metrics_port,
            "grpc_inference_port": self.grpc_inference_port,
            "grpc_management_port": self.grpc_management_port,
        }
        seen: dict[int, str] = {}
        for name, port in ports.items():
            if port in seen:
                raise ValueError(f"{name} and {seen[port]} are both {port}; each needs its own")
            seen[port] = name
        return self


def build_torchserve_config(settings: TorchServeSettings) -> str:
    """Render `settings` as a `config.properties` text (stable key order, trailing newline)."""
    return "".join(f"{key}={_escape(value)}\n" for key, value in torchserve_properties(settings))


def torchserve_properties(settings: TorchServeSettings) -> list[tuple[str, str]]:
    """The same content as ordered key/value pairs, unescaped (for tests and other renderers)."""
    s = settings
    per_model = {
        s.model_name: {
            s.model_version: {
                "defaultVersion": True,
                "marName": s.mar_file,
                "minWorkers": s.workers,
                "maxWorkers": s.workers,
                "batchSize": s.batch_size,
                "maxBatchDelay": s.max_batch_delay_ms,
                "responseTimeout": s.response_timeout_s,
                "startupTimeout": s.startup_timeout_s,
            }
        }
    }
    vmargs = [f"-Djava.io.tmpdir={s.temp_dir}"]
    if s.jvm_max_heap_mib is not None:
        vmargs.append(f"-Xmx{s.jvm_max_heap_mib}m")
    return [
        ("inference_address", f"http://{s.listen_address}:{s.inference_port}"),
        ("management_address", f"http://{LOOPBACK}:{s.management_port}"),
        ("metrics_address", f"http://{s.listen_address}:{s.metrics_port}"),
        ("grpc_inference_address", LOOPBACK),
        ("grpc_inference_port", str(s.grpc_inference_port)),
        ("grpc_management_address", LOOPBACK),
        ("grpc_management_port", str(s.grpc_management_port)),
        ("initial_worker_port", str(s.initial_worker_port)),
        ("model_store", s.model_store),
        ("load_models", f"{s.model_name}={s.mar_file}"),
        ("models", json.dumps(per_model, sort_keys=True, separators=(",", ":"))),
        ("default_workers_per_model", str(s.workers)),
        ("default_response_timeout", str(s.response_timeout_s)),
        ("default_startup_timeout", str(s.startup_timeout_s)),
        ("job_queue_size", str(s.job_queue_size)),
        ("max_request_size", str(s.max_request_size_bytes)),
        ("max_response_size", str(s.max_response_size_bytes)),
        ("vmargs", " ".join(vmargs)),
        ("metrics_mode", "prometheus"),
        ("metrics_config", s.metrics_config),
        ("disable_system_metrics", _bool(not s.system_metrics)),
        ("enable_model_api", "false"),
        ("disable_token_authorization", "true"),
        ("install_py_dep_per_model", "false"),
        ("enable_envvars_config", "false"),
        ("allowed_urls", _allowed_urls(s.model_store)),
    ]


def _allowed_urls(model_store: str) -> str:
    """A Java regex matching only `.mar` files directly inside the model store."""
    return "file://" + re.escape(model_store.rstrip("/")) + r"/[^/]+\.mar"


def _bool(value: bool) -> str:
    return "true" if value else "false"


def _escape(value: str) -> str:
    r"""Escape a value for java.util.Properties.load, which treats `\` as an escape character.

    Values are single-line by construction (validated fields), so only backslashes need it.
    """
    if "\n" in value or "\r" in value:
        raise ValueError(f"property value must be a single line: {value!r}")
    return value.replace("\\", "\\\\")
