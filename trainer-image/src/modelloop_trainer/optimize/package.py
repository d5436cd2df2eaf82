"""TorchServe packaging: the artifact, the server image's handler and a model config in a .mar.

We run torch-model-archiver's own CLI in a subprocess with a private TMPDIR: the archiver
stages files in `$TMPDIR/<model name>` and deletes that directory first, so two packagings
of the same name sharing /tmp would clobber each other. The artifact's files go to the root
of the archive (docs/artifact-format.md), next to the handler and `MAR-INF/MANIFEST.json`;
the handler loads them with `load_artifact(model_dir)`.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from modelloop_trainer.errors import InputError

MODEL_CONFIG_FILE = "model-config.yaml"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-.]*$")


@dataclass(frozen=True)
class ServingConfig:
    """The archive's own serving settings: defaults for the archive served on its own
    (`torchserve --models x.mar`). Under a ModelDeployment, `modelloop-serve` replaces each
    one the ModelDeployment sets (server-image `modelloop_server.model_config`)."""

    batch_size: int = 8
    workers: int = 1
    max_batch_delay_ms: int = 50
    response_timeout_s: int = 120
    # Written only when set: the package-model init container passes the ModelDeployment's
    # values, so that modelloop-serve finds the archive already in agreement and serves it
    # without making a copy. Left out, TorchServe uses its own defaults.
    startup_timeout_s: int | None = None
    job_queue_size: int | None = None

    def to_yaml(self) -> str:
        """TorchServe's per-model config (the keys TorchServe reads from --config-file)."""
        text = (
            f"minWorkers: {self.workers}\n"
            f"maxWorkers: {self.workers}\n"
            f"batchSize: {self.batch_size}\n"
            f"maxBatchDelay: {self.max_batch_delay_ms}\n"
            f"responseTimeout: {self.response_timeout_s}\n"
        )
        if self.startup_timeout_s is not None:
            text += f"startupTimeout: {self.startup_timeout_s}\n"
        if self.job_queue_size is not None:
            text += f"jobQueueSize: {self.job_queue_size}\n"
        return text


def default_handler_path() -> Path | None:
    """The server image's handler file, when modelloop_server is installed."""
    spec = importlib.util.find_spec("modelloop_server")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "handler.py"
    return path if path.is_file() else None


def validate_archive_name(name: str) -> None:
    if not _NAME.match(name):
        raise InputError(
            f"--archive-name {name!r}: use letters, digits, '-', '_' and '.', starting with a "
            "letter or digit"
        )


def build_archive(
    *,
    artifact_dir: Path,
    handler: Path,
    name: str,
    version: str,
    serving: ServingConfig,
    export_dir: Path,
) -> Path:
    """Write `<export_dir>/<name>.mar` and return its path."""
    validate_archive_name(name)
    if not handler.is_file():
        raise InputError(f"handler {handler}: file not found (pass --handler)")
    export_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="modelloop-mar-") as tmp:
        config_file = Path(tmp) / MODEL_CONFIG_FILE
        config_file.write_text(serving.to_yaml())
        private_tmp = Path(tmp) / "tmp"
        private_tmp.mkdir()
        command = [
            sys.executable,
            "-m",
            "model_archiver.model_packaging",
            "--model-name",
            name,
            "--version",
            version,
            "--handler",
            str(handler),
            "--extra-files",
            str(artifact_dir),
            "--config-file",
            str(config_file),
            "--export-path",
            str(export_dir),
            "--force",
        ]
        result = subprocess.run(
            command,
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "TMPDIR": str(private_tmp)},
        )
    if result.returncode != 0:
        raise RuntimeError(
            f"torch-model-archiver failed ({result.returncode}): {result.stderr[-2000:]}"
        )
    archive = export_dir / f"{name}.mar"
    if not archive.is_file():
        raise RuntimeError(f"torch-model-archiver reported success but wrote no {archive}")
    return archive
