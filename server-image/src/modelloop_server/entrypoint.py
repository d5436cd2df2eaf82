"""`modelloop-serve`: run TorchServe in the foreground for one model, and watch it.

    modelloop-serve [--config /etc/modelloop/config.properties] [--model-store DIR]
                    [--health-address 0.0.0.0] [--health-port 8090] [--work-dir DIR]
                    [--startup-timeout 600] [--unready-timeout 60] [--max-load-attempts 3]

Every flag has an environment variable (`MODELLOOP_TS_CONFIG`, `MODELLOOP_MODEL_STORE`,
`MODELLOOP_HEALTH_ADDRESS`, `MODELLOOP_HEALTH_PORT`, `MODELLOOP_WORK_DIR`,
`MODELLOOP_STARTUP_TIMEOUT`, `MODELLOOP_UNREADY_TIMEOUT`, `MODELLOOP_MAX_LOAD_ATTEMPTS`);
the flag wins. The config is what the operator renders with
`modelloop_operator.builders.torchserve_config`.

It starts TorchServe's JVM as a child, serves `/readyz` and `/livez` (see `health`), polls
the loopback management API every second (see `supervisor`) and:
- forwards SIGTERM/SIGINT to TorchServe and exits 0 once it has stopped;
- exits 1 with a message when the model cannot be loaded or stops being served (TorchServe
  itself would keep retrying forever), or with TorchServe's own status if it dies;
- exits 2 when the configuration is unusable (bad file, model archive missing, management
  API not on loopback, metric definitions missing), before starting anything.

Before starting TorchServe it makes the config's per-model settings (the ModelDeployment's
`server`) the ones served, over the archive's own model-config.yaml (see `model_config`);
an archive whose manifest or model config cannot be read exits 1.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

import yaml

from modelloop_server.health import DEFAULT_HEALTH_PORT, HealthState, start_health_server
from modelloop_server.metrics import undeclared_metrics
from modelloop_server.model_config import ArchiveError, enforce_deployment_settings
from modelloop_server.supervisor import (
    DEFAULT_MAX_LOAD_ATTEMPTS,
    DEFAULT_STARTUP_TIMEOUT_S,
    DEFAULT_UNREADY_TIMEOUT_S,
    Phase,
    Supervisor,
)
from modelloop_server.torchserve import (
    ConfigError,
    ManagementError,
    ModelState,
    ServerConfig,
    describe_model,
    java_command,
    load_server_config,
)

logger = logging.getLogger("modelloop-serve")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_CONFIG = 2
POLL_INTERVAL_S = 1.0
STOP_GRACE_S = 25.0  # below Kubernetes' default 30 s termination grace period


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    env = os.environ
    p = argparse.ArgumentParser(prog="modelloop-serve", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--config",
        type=Path,
        default=Path(env.get("MODELLOOP_TS_CONFIG", "/etc/modelloop/config.properties")),
    )
    p.add_argument(
        "--model-store",
        type=Path,
        default=Path(env["MODELLOOP_MODEL_STORE"]) if env.get("MODELLOOP_MODEL_STORE") else None,
        help="overrides model_store in the config",
    )
    p.add_argument("--health-address", default=env.get("MODELLOOP_HEALTH_ADDRESS", "0.0.0.0"))
    p.add_argument(
        "--health-port",
        type=int,
        default=int(env.get("MODELLOOP_HEALTH_PORT", DEFAULT_HEALTH_PORT)),
    )
    p.add_argument(
        "--work-dir",
        type=Path,
        default=Path(env["MODELLOOP_WORK_DIR"]) if env.get("MODELLOOP_WORK_DIR") else None,
        help="TorchServe's working directory and logs (default: a new temporary directory)",
    )
    p.add_argument(
        "--startup-timeout",
        type=float,
        default=float(env.get("MODELLOOP_STARTUP_TIMEOUT", DEFAULT_STARTUP_TIMEOUT_S)),
    )
    p.add_argument(
        "--unready-timeout",
        type=float,
        default=float(env.get("MODELLOOP_UNREADY_TIMEOUT", DEFAULT_UNREADY_TIMEOUT_S)),
    )
    p.add_argument(
        "--max-load-attempts",
        type=int,
        default=int(env.get("MODELLOOP_MAX_LOAD_ATTEMPTS", DEFAULT_MAX_LOAD_ATTEMPTS)),
    )
    return p.parse_args(argv)


def check_metrics_config(config: ServerConfig) -> None:
    """Refuse to start when our metrics would be silently dropped by TorchServe."""
    if config.metrics_config is None:
        raise ConfigError(f"{config.path}: metrics_config is not set (see docs/metrics.md)")
    try:
        parsed = yaml.safe_load(config.metrics_config.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read metrics config {config.metrics_config}: {exc}") from exc
    missing = undeclared_metrics(parsed if isinstance(parsed, dict) else {})
    if missing:
        raise ConfigError(
            f"metrics config {config.metrics_config} does not declare {', '.join(missing)}; "
            "TorchServe would drop them"
        )


def child_environment(config: ServerConfig, work_dir: Path) -> dict[str, str]:
    """TorchServe's environment: logs under the work dir, a fresh drift window per start."""
    env = dict(os.environ)
    logs = work_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    env.setdefault("LOG_LOCATION", str(logs))
    env.setdefault("METRICS_LOCATION", str(logs))
    if not env.get("MODELLOOP_STATE_DIR"):
        state = work_dir / "state"
        state.mkdir(exist_ok=True)
        env["MODELLOOP_STATE_DIR"] = str(state)
    if config.temp_dir is not None:
        config.temp_dir.mkdir(parents=True, exist_ok=True)
        env.setdefault("TEMP", str(config.temp_dir))
    return env


class Server:
    """The running TorchServe child, its supervisor and its health endpoints."""

    def __init__(self, config: ServerConfig, args: argparse.Namespace, work_dir: Path) -> None:
        self.config = config
        self.args = args
        self.work_dir = work_dir
        self.stop_requested = threading.Event()
        self.process: subprocess.Popen[bytes] | None = None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def request_stop(self, signum: int, _frame: FrameType | None) -> None:
        logger.info("received %s, stopping TorchServe", signal.Signals(signum).name)
        self.stop_requested.set()
        if self.alive():
            assert self.process is not None
            self.process.send_signal(signal.SIGTERM)

    def run(self) -> int:
        state = HealthState(process_alive=self.alive)
        health = start_health_server(
            state, host=self.args.health_address, port=self.args.health_port
        )
        try:
            command = java_command(self.config)
            logger.info("starting TorchServe for model %r: %s", self.config.model_name,
                        " ".join(command))
            self.process = subprocess.Popen(
                command, cwd=self.work_dir, env=child_environment(self.config, self.work_dir)
            )
            return self._supervise(state)
        finally:
            health.shutdown()
            self._terminate()

    def _supervise(self, state: HealthState) -> int:
        assert self.process is not None
        supervisor = Supervisor(
            model_name=self.config.model_name,
            started_at=time.monotonic(),
            startup_timeout_s=self.args.startup_timeout,
            unready_timeout_s=self.args.unready_timeout,
            max_load_attempts=self.args.max_load_attempts,
        )
        phase = None
        while True:
            code = self.process.poll()
            if code is not None:
                if self.stop_requested.is_set():
                    logger.info("TorchServe stopped (exit status %d)", code)
                    return EXIT_OK
                logger.error("TorchServe exited unexpectedly with status %d", code)
                return code if code > 0 else EXIT_FAILED
            if self.stop_requested.is_set():
                time.sleep(0.2)
                continue
            model: ModelState | None
            try:
                model = describe_model(self.config.management_url, self.config.model_name)
            except ManagementError:
                model = None
            verdict = supervisor.observe(time.monotonic(), model)
            state.update(verdict, answered=model is not None)
            if verdict.phase is not phase:
                log = logger.error if verdict.phase is Phase.FAILED else logger.info
                log("model %r: %s (%s)", self.config.model_name, verdict.phase.value,
                    verdict.message)
                phase = verdict.phase
            if verdict.phase is Phase.FAILED:
                return EXIT_FAILED
            self.stop_requested.wait(POLL_INTERVAL_S)

    def _terminate(self) -> None:
        if not self.alive():
            return
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            logger.warning("TorchServe did not stop within %.0f s, killing it", STOP_GRACE_S)
            self.process.kill()
            self.process.wait()


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s [modelloop-serve] %(levelname)s %(message)s"
    )
    args = parse_args(argv)
    try:
        config = load_server_config(args.config, model_store=args.model_store)
        check_metrics_config(config)
    except ConfigError as exc:
        logger.error("%s", exc)
        return EXIT_BAD_CONFIG
    work_dir = args.work_dir or Path(tempfile.mkdtemp(prefix="modelloop-serve-"))
    work_dir.mkdir(parents=True, exist_ok=True)
    try:
        config = enforce_deployment_settings(config, work_dir / "model-store")
    except (ArchiveError, OSError) as exc:
        logger.error("%s", exc)
        return EXIT_FAILED
    server = Server(config, args, work_dir)
    signal.signal(signal.SIGTERM, server.request_stop)
    signal.signal(signal.SIGINT, server.request_stop)
    return server.run()


if __name__ == "__main__":
    sys.exit(main())
