"""The handler's settings, read once per worker from the environment.

TorchServe starts workers with the server's environment, so these are set on the container
(by the operator's Deployment builder, or by hand). Every variable is optional.

| variable | default | meaning |
|---|---|---|
| `MODELLOOP_MAX_TEXTS` | 64 | texts per request (more -> 413) |
| `MODELLOOP_MAX_CHARS` | 20000 | characters per text (more -> 413) |
| `MODELLOOP_INFERENCE_BATCH` | 32 | texts per forward pass (a TorchServe batch is split) |
| `MODELLOOP_DRIFT_WINDOW_SAMPLES` | 1000 | predictions kept in the drift window |
| `MODELLOOP_DRIFT_WINDOW_SECONDS` | 3600 | oldest prediction kept in the drift window |
| `MODELLOOP_STATE_DIR` | the model's directory | where the shared drift window lives |
| `MODELLOOP_CAPTURE_URL` | unset (capture off) | the collector's `/v1/capture` URL |
| `MODELLOOP_CAPTURE_SAMPLE_RATE` | 1 | fraction of requests captured, 0-1 |
| `MODELLOOP_MODEL_VERSION` | the model name | version written into capture records |
| `MODELLOOP_MODEL_DIGEST` | sha256 of the artifact manifest | digest written into capture records |
| `POD_NAME` | the host name | pod written into capture records |
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from modelloop_server.protocol import DEFAULT_MAX_CHARS, DEFAULT_MAX_TEXTS, InputLimits
from modelloop_server.window import DEFAULT_MAX_AGE_S, DEFAULT_MAX_SAMPLES


class SettingsError(ValueError):
    """An environment variable with a value the handler cannot use."""


@dataclass(frozen=True)
class HandlerSettings:
    limits: InputLimits = field(default_factory=InputLimits)
    inference_batch: int = 32
    window_samples: int = DEFAULT_MAX_SAMPLES
    window_seconds: float = DEFAULT_MAX_AGE_S
    state_dir: Path | None = None
    capture_url: str | None = None
    capture_sample_rate: float = 1.0
    model_version: str = ""
    model_digest: str = ""
    pod_name: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> HandlerSettings:
        env = os.environ if env is None else env
        state_dir = env.get("MODELLOOP_STATE_DIR", "").strip()
        return cls(
            limits=InputLimits(
                max_texts=_positive_int(env, "MODELLOOP_MAX_TEXTS", DEFAULT_MAX_TEXTS),
                max_chars=_positive_int(env, "MODELLOOP_MAX_CHARS", DEFAULT_MAX_CHARS),
            ),
            inference_batch=_positive_int(env, "MODELLOOP_INFERENCE_BATCH", 32),
            window_samples=_positive_int(
                env, "MODELLOOP_DRIFT_WINDOW_SAMPLES", DEFAULT_MAX_SAMPLES
            ),
            window_seconds=float(
                _positive_int(env, "MODELLOOP_DRIFT_WINDOW_SECONDS", int(DEFAULT_MAX_AGE_S))
            ),
            state_dir=Path(state_dir) if state_dir else None,
            capture_url=env.get("MODELLOOP_CAPTURE_URL", "").strip() or None,
            capture_sample_rate=_fraction(env, "MODELLOOP_CAPTURE_SAMPLE_RATE", 1.0),
            model_version=env.get("MODELLOOP_MODEL_VERSION", "").strip(),
            model_digest=env.get("MODELLOOP_MODEL_DIGEST", "").strip(),
            pod_name=env.get("POD_NAME", "").strip() or socket.gethostname(),
        )


def _fraction(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise SettingsError(f"{name}={value} must be between 0 and 1")
    return value


def _positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not an integer") from None
    if value < 1:
        raise SettingsError(f"{name}={value} must be >= 1")
    return value
