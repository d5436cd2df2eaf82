"""Run `modelloop-serve` (and so a real TorchServe) on loopback for the torchserve tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from modelloop_operator.builders.torchserve_config import (
    TorchServeSettings,
    build_torchserve_config,
)
from modelloop_server.metrics import metrics_config_path

from .conftest import free_ports


@dataclass
class Response:
    status: int
    body: bytes
    reason: str = ""

    def json(self) -> Any:
        return json.loads(self.body)


def http(url: str, *, data: bytes | None = None, content_type: str | None = "application/json",
         method: str | None = None, timeout: float = 30.0) -> Response:
    request = urllib.request.Request(
        url, data=data, method=method or ("POST" if data is not None else "GET")
    )
    if data is not None and content_type is not None:
        request.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            return Response(r.status, r.read(), r.reason)
    except urllib.error.HTTPError as exc:
        return Response(exc.code, exc.read(), str(exc.reason))


class Served:
    """A `modelloop-serve` child process serving one archive from `store`."""

    def __init__(self, workdir: Path, store: Path, *, model: str, mar: str,
                 env: dict[str, str] | None = None, args: tuple[str, ...] = (),
                 **settings: Any) -> None:
        (self.inference, self.management, self.metrics, grpc_i, grpc_m, self.health) = (
            free_ports(6)
        )
        self.settings = TorchServeSettings(
            model_name=model, mar_file=mar, model_store=str(store),
            metrics_config=str(metrics_config_path()), temp_dir=str(workdir / "tmp"),
            listen_address=IPv4Address("127.0.0.1"), inference_port=self.inference,
            management_port=self.management, metrics_port=self.metrics,
            grpc_inference_port=grpc_i, grpc_management_port=grpc_m, **settings,
        )
        self.config = workdir / "config.properties"
        self.config.write_text(build_torchserve_config(self.settings))
        self.log = workdir / "serve.log"
        self.model = model
        child_env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                     "OMP_NUM_THREADS": "1", **(env or {})}
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "modelloop_server.entrypoint", "--config", str(self.config),
                 "--health-address", "127.0.0.1", "--health-port", str(self.health),
                 "--work-dir", str(workdir / "work"), *args],
                stdout=log, stderr=subprocess.STDOUT, env=child_env,
            )

    def url(self, port: int, path: str) -> str:
        return f"http://127.0.0.1:{port}{path}"

    def predict(self, body: Any, *, content_type: str | None = "application/json") -> Response:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        return http(self.url(self.inference, f"/predictions/{self.model}"), data=data,
                    content_type=content_type)

    def wait_ready(self, timeout_s: float = 240.0) -> float:
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            if self.process.poll() is not None:
                raise AssertionError(f"modelloop-serve exited {self.process.returncode}:\n"
                                     + self.output())
            try:
                if http(self.url(self.health, "/readyz"), timeout=2).status == 200:
                    return time.monotonic() - started
            except OSError:
                pass
            time.sleep(0.5)
        raise AssertionError(f"not ready after {timeout_s} s:\n{self.output()}")

    def stop(self, timeout_s: float = 40.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-20_000:]
