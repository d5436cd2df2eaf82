"""Decide, from what TorchServe's management API says, whether the model is serving, still
starting, or lost. Pure: `modelloop-serve` feeds it one probe per second and acts on it.

Why this exists: TorchServe never gives up on a model whose handler fails to load. It keeps
restarting the worker with back-off forever (the describe-model API shows the worker as
`UNLOADING` with a new pid after each attempt), and its `/ping` says `Healthy` meanwhile. A
pod in that state would look alive forever. The supervisor turns it into a clear failure:
the container exits 1 and Kubernetes shows the restart and our message.

Rules:
- the model is not registered (the archive could not be read) -> failed at once;
- one worker slot has gone through `max_load_attempts` processes without ever being READY
  -> failed (the handler cannot load the model);
- no worker READY within `startup_timeout_s` of the start -> failed;
- after having served, no worker READY for `unready_timeout_s` -> failed (a worker that
  crashes and comes back within that time is TorchServe's business, not ours);
- the management API silent for `unready_timeout_s` after having answered -> failed.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from enum import Enum

from modelloop_server.torchserve import ModelState

DEFAULT_STARTUP_TIMEOUT_S = 600.0
DEFAULT_UNREADY_TIMEOUT_S = 60.0
DEFAULT_MAX_LOAD_ATTEMPTS = 3


class Phase(Enum):
    STARTING = "starting"
    READY = "ready"
    UNREADY = "unready"  # has served before, no worker READY right now
    FAILED = "failed"


@dataclass(frozen=True)
class Verdict:
    phase: Phase
    message: str

    @property
    def ready(self) -> bool:
        return self.phase is Phase.READY


@dataclass
class Supervisor:
    """Feed `observe` one probe at a time (time in seconds, any monotonic clock)."""

    model_name: str
    started_at: float
    startup_timeout_s: float = DEFAULT_STARTUP_TIMEOUT_S
    unready_timeout_s: float = DEFAULT_UNREADY_TIMEOUT_S
    max_load_attempts: int = DEFAULT_MAX_LOAD_ATTEMPTS
    _pids: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))
    _ever_ready: bool = False
    _last_ready_at: float | None = None
    _last_answer_at: float | None = None
    verdict: Verdict = field(default_factory=lambda: Verdict(Phase.STARTING, "starting"))

    def observe(self, now: float, state: ModelState | None) -> Verdict:
        """`state` is the management API's answer, or None when it did not answer."""
        if self.verdict.phase is Phase.FAILED:
            return self.verdict  # sticky: the caller is shutting down
        self.verdict = self._decide(now, state)
        return self.verdict

    @property
    def answering(self) -> bool:
        """Whether the management API has answered at least once."""
        return self._last_answer_at is not None

    def last_answer_age(self, now: float) -> float | None:
        return None if self._last_answer_at is None else now - self._last_answer_at

    def _decide(self, now: float, state: ModelState | None) -> Verdict:
        if state is None:
            return self._silent(now)
        self._last_answer_at = now
        if state.workers is None:
            return Verdict(
                Phase.FAILED,
                f"model {self.model_name!r} is not registered: TorchServe could not load its "
                "archive (see the log above for the reason)",
            )
        if any(w.ready for w in state.workers):
            self._ever_ready = True
            self._last_ready_at = now
            ready = sum(w.ready for w in state.workers)
            return Verdict(Phase.READY, f"{ready}/{len(state.workers)} workers READY")
        if not self._ever_ready:
            for worker in state.workers:
                if worker.pid > 0:
                    self._pids[worker.id].add(worker.pid)
            attempts = max((len(p) for p in self._pids.values()), default=0)
            if attempts >= self.max_load_attempts:
                return Verdict(
                    Phase.FAILED,
                    f"model {self.model_name!r} failed to load: a worker was started "
                    f"{attempts} times without becoming READY (the handler's error is in the "
                    "log above)",
                )
            return self._starting(now, f"waiting for a READY worker ({attempts} load attempts)")
        return self._unready(now)

    def _silent(self, now: float) -> Verdict:
        if self._last_answer_at is None:
            return self._starting(now, "waiting for TorchServe's management API")
        silent_for = now - self._last_answer_at
        if silent_for > self.unready_timeout_s:
            return Verdict(
                Phase.FAILED,
                f"TorchServe's management API has not answered for {silent_for:.0f} s",
            )
        if self.verdict.phase is Phase.READY:
            return Verdict(Phase.READY, self.verdict.message)  # one missed probe is not news
        return Verdict(self.verdict.phase, f"management API silent for {silent_for:.0f} s")

    def _starting(self, now: float, message: str) -> Verdict:
        if now - self.started_at > self.startup_timeout_s:
            return Verdict(
                Phase.FAILED,
                f"model {self.model_name!r} has no READY worker {self.startup_timeout_s:.0f} s "
                "after start",
            )
        return Verdict(Phase.STARTING, message)

    def _unready(self, now: float) -> Verdict:
        assert self._last_ready_at is not None
        unready_for = now - self._last_ready_at
        if unready_for > self.unready_timeout_s:
            return Verdict(
                Phase.FAILED,
                f"model {self.model_name!r} has had no READY worker for {unready_for:.0f} s",
            )
        return Verdict(Phase.UNREADY, f"no READY worker for {unready_for:.0f} s")
