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
"""

from __future__ import annotations

import os
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
        )


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
