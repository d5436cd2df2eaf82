"""Errors that map to the exit codes in docs/contracts.md.

The operator reads a pod's exit code to decide whether retrying can help: bad input (2) will
fail the same way again, a missed gate (3) or a rejected optimization (4) is a verdict on the
model, anything else (1) may be transient. Raising one of these is how code deep inside the
trainer chooses the code; `cli.run_command` turns it into the exit status and the termination
message.
"""

from __future__ import annotations

from typing import Any

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2
EXIT_GATE_MISSED = 3
EXIT_REJECTED = 4


class ModelloopError(Exception):
    """Base class: an error whose message is meant for the person reading the job's status.

    `summary` carries what is known despite the failure (the metrics of a model that missed
    its gate, an optimization report) into the termination message.
    """

    exit_code = EXIT_FAILURE

    def __init__(self, message: str, *, summary: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.summary: dict[str, Any] = summary or {}


class InputError(ModelloopError):
    """Bad flags, URIs, datasets or artifacts: retrying with the same input cannot help."""

    exit_code = EXIT_BAD_INPUT


class ArtifactError(InputError):
    """A model artifact directory that is missing, incomplete, corrupt or of another format."""


class StorageError(InputError):
    """A storage URI that is malformed, of an unknown scheme, or unreachable."""


class GateMissedError(ModelloopError):
    """Training finished but the evaluation gate (`--metric`/`--min-score`) was not met."""

    exit_code = EXIT_GATE_MISSED


class RejectedError(ModelloopError):
    """Optimization finished but the result is outside the acceptance budget."""

    exit_code = EXIT_REJECTED
