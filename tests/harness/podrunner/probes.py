"""Probe settings and the kubelet's counting rules, without any I/O.

A probe runs `initialDelaySeconds` after the container starts, then every `periodSeconds`.
Its verdict flips only after `successThreshold` consecutive successes or
`failureThreshold` consecutive failures. Readiness starts "not ready" and a startup probe
"not started yet"; a liveness probe starts "passing" (the kubelet gives the container the
benefit of the doubt until the threshold is reached). Liveness and readiness do not run
until a startup probe, if any, has succeeded.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

Json = dict[str, Any]


class ProbeKind(Enum):
    STARTUP = "startup"
    LIVENESS = "liveness"
    READINESS = "readiness"


@dataclass(frozen=True)
class ProbeSpec:
    """One probe of one container, with the API defaults filled in."""

    kind: ProbeKind
    handler: Json  # {"httpGet": ...} | {"tcpSocket": ...} | {"exec": ...} | {"grpc": ...}
    initial_delay: float
    period: float
    timeout: float
    success_threshold: int
    failure_threshold: int
    termination_grace: float | None

    @classmethod
    def from_container(cls, container: Json, kind: ProbeKind) -> ProbeSpec | None:
        probe = container.get(f"{kind.value}Probe")
        if not probe:
            return None
        handler = {
            key: probe[key] for key in ("httpGet", "tcpSocket", "exec", "grpc") if key in probe
        }
        success = int(probe.get("successThreshold", 1))
        if kind is not ProbeKind.READINESS:
            success = 1  # the API server enforces 1 for liveness and startup probes
        grace = probe.get("terminationGracePeriodSeconds")
        return cls(
            kind=kind,
            handler=handler,
            initial_delay=float(probe.get("initialDelaySeconds", 0)),
            period=float(probe.get("periodSeconds", 10)),
            timeout=float(probe.get("timeoutSeconds", 1)),
            success_threshold=max(1, success),
            failure_threshold=max(1, int(probe.get("failureThreshold", 3))),
            termination_grace=None if grace is None else float(grace),
        )


@dataclass
class ProbeTracker:
    """Counts consecutive results and holds the current verdict of one probe."""

    spec: ProbeSpec
    started_at: float
    passing: bool = False
    consecutive_successes: int = 0
    consecutive_failures: int = 0
    last_run: float | None = None

    def __post_init__(self) -> None:
        self.passing = self.spec.kind is ProbeKind.LIVENESS

    def next_due(self) -> float:
        """Monotonic time at which the probe should run next."""
        if self.last_run is None:
            return self.started_at + self.spec.initial_delay
        return self.last_run + self.spec.period

    def record(self, success: bool, at: float) -> bool:
        """Adds one result; returns True when the verdict changed."""
        self.last_run = at
        before = self.passing
        if success:
            self.consecutive_successes += 1
            self.consecutive_failures = 0
            if self.consecutive_successes >= self.spec.success_threshold:
                self.passing = True
        else:
            self.consecutive_failures += 1
            self.consecutive_successes = 0
            if self.consecutive_failures >= self.spec.failure_threshold:
                self.passing = False
        return before != self.passing

    @property
    def failed(self) -> bool:
        """For liveness/startup: the threshold of failures is reached, kill the container."""
        return self.consecutive_failures >= self.spec.failure_threshold
