"""Pod status from container records: container states, phase and conditions.

Pure functions so that the kubelet's rules are unit-tested without processes or a cluster.
The phase follows the kubelet's `getPhase`: init containers gate everything; a waiting
container that has run before counts as stopped (it is restarting); with restartPolicy
Always a fully stopped pod is still Running (it is restarting), with OnFailure it is
Succeeded only when every container exited 0, with Never any failure makes it Failed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

Json = dict[str, Any]

# The kubelet's limits for termination messages.
MAX_MESSAGE_BYTES = 4096
FALLBACK_LOG_LINES = 80
FALLBACK_LOG_BYTES = 2048


def now_rfc3339() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Terminated:
    exit_code: int
    reason: str
    message: str
    started_at: str | None
    finished_at: str
    container_id: str

    def to_json(self) -> Json:
        state: Json = {
            "exitCode": self.exit_code,
            "reason": self.reason,
            "finishedAt": self.finished_at,
            "containerID": self.container_id,
        }
        if self.message:
            state["message"] = self.message
        if self.started_at:
            state["startedAt"] = self.started_at
        return state


@dataclass
class ContainerRecord:
    """What the runner knows about one container of one pod."""

    name: str
    image: str
    waiting_reason: str = "ContainerCreating"
    waiting_message: str = ""
    running_since: str | None = None
    terminated: Terminated | None = None
    last_terminated: Terminated | None = None
    restart_count: int = 0
    ready: bool = False
    started: bool = False
    container_id: str = ""

    def set_running(self, container_id: str, at: str) -> None:
        self.container_id = container_id
        self.running_since = at
        self.terminated = None
        self.waiting_reason = ""
        self.waiting_message = ""

    def set_terminated(self, state: Terminated) -> None:
        self.terminated = state
        self.running_since = None
        self.ready = False
        self.started = False

    def set_waiting(self, reason: str, message: str = "") -> None:
        """Waiting again after a run (restart back-off): the run becomes lastState."""
        if self.terminated is not None:
            self.last_terminated = self.terminated
            self.terminated = None
        self.running_since = None
        self.ready = False
        self.started = False
        self.waiting_reason = reason
        self.waiting_message = message

    @property
    def is_running(self) -> bool:
        return self.running_since is not None

    @property
    def has_run(self) -> bool:
        return self.terminated is not None or self.last_terminated is not None

    def to_json(self) -> Json:
        state: Json
        if self.running_since is not None:
            state = {"running": {"startedAt": self.running_since}}
        elif self.terminated is not None:
            state = {"terminated": self.terminated.to_json()}
        else:
            waiting: Json = {"reason": self.waiting_reason or "ContainerCreating"}
            if self.waiting_message:
                waiting["message"] = self.waiting_message
            state = {"waiting": waiting}
        status: Json = {
            "name": self.name,
            "image": self.image,
            "imageID": f"local://{self.image}",
            "ready": self.ready,
            "started": self.started,
            "restartCount": self.restart_count,
            "state": state,
            "lastState": (
                {"terminated": self.last_terminated.to_json()} if self.last_terminated else {}
            ),
        }
        if self.container_id:
            status["containerID"] = self.container_id
        return status


def init_failed(init: Sequence[ContainerRecord]) -> bool:
    """An init container's latest run failed."""
    for record in init:
        latest = record.terminated or (None if record.is_running else record.last_terminated)
        if latest is not None and latest.exit_code != 0:
            return True
    return False


def init_done(init: Sequence[ContainerRecord]) -> bool:
    return all(r.terminated is not None and r.terminated.exit_code == 0 for r in init)


def compute_phase(
    restart_policy: str, init: Sequence[ContainerRecord], main: Sequence[ContainerRecord]
) -> str:
    if init_failed(init) and restart_policy == "Never":
        return "Failed"
    if not init_done(init):
        return "Pending"
    running = waiting = stopped = succeeded = 0
    for record in main:
        if record.is_running:
            running += 1
        elif record.terminated is not None:
            stopped += 1
            succeeded += record.terminated.exit_code == 0
        elif record.has_run:
            stopped += 1  # waiting to restart
        else:
            waiting += 1
    if waiting:
        return "Pending"
    if running:
        return "Running"
    if stopped == len(main):
        if restart_policy == "Always":
            return "Running"
        if succeeded == stopped:
            return "Succeeded"
        if restart_policy == "Never":
            return "Failed"
        return "Running"
    return "Pending"


@dataclass
class PodView:
    """Everything the pod status is computed from."""

    phase: str
    pod_ip: str
    host_ip: str
    start_time: str
    sandbox_ready: bool
    init: list[ContainerRecord]
    main: list[ContainerRecord]
    readiness_gates: list[str] = field(default_factory=list)
    reason: str = ""
    message: str = ""


def _condition(
    previous: dict[str, Json], type_: str, ok: bool, reason: str = "", message: str = ""
) -> Json:
    status = "True" if ok else "False"
    old = previous.get(type_)
    since = old.get("lastTransitionTime") if old and old.get("status") == status else None
    # Explicit nulls: conditions are merged by type, so an omitted reason would survive
    # from the previous patch (Ready=True with reason ContainersNotReady).
    return {
        "type": type_,
        "status": status,
        "reason": reason if not ok and reason else None,
        "message": message if not ok and reason and message else None,
        "lastProbeTime": None,
        "lastTransitionTime": since or now_rfc3339(),
    }


def compute_conditions(view: PodView, previous_conditions: Sequence[Json]) -> list[Json]:
    """The conditions the kubelet owns; PodScheduled and others are left to their owners."""
    previous = {c.get("type", ""): c for c in previous_conditions}
    terminal = view.phase in ("Succeeded", "Failed")
    pending_init = [r.name for r in view.init if not init_done([r])]
    unready = [r.name for r in view.main if not r.ready]
    gates_missing = [g for g in view.readiness_gates if previous.get(g, {}).get("status") != "True"]
    containers_ready = not unready and not terminal
    if terminal:
        unready_reason, unready_message = "PodCompleted", ""
    else:
        unready_reason = "ContainersNotReady"
        unready_message = f"containers with unready status: [{' '.join(unready)}]"
    if containers_ready and gates_missing:
        ready_reason = "ReadinessGatesNotReady"
        ready_message = f"the status of pod readiness gate {gates_missing[0]!r} is not True"
    else:
        ready_reason, ready_message = unready_reason, unready_message
    init_ok = not pending_init
    return [
        _condition(previous, "PodReadyToStartContainers", view.sandbox_ready and not terminal),
        _condition(
            previous,
            "Initialized",
            init_ok,
            "ContainersNotInitialized",
            f"containers with incomplete status: [{' '.join(pending_init)}]",
        ),
        _condition(previous, "Ready", containers_ready and not gates_missing, ready_reason,
                   ready_message),
        _condition(previous, "ContainersReady", containers_ready, unready_reason,
                   unready_message),
    ]


def build_status(view: PodView, previous_conditions: Sequence[Json]) -> Json:
    """The status body the runner sends (strategic merge: conditions merge by type)."""
    status: Json = {
        "phase": view.phase,
        "hostIP": view.host_ip,
        "hostIPs": [{"ip": view.host_ip}],
        "startTime": view.start_time,
        "conditions": compute_conditions(view, previous_conditions),
        "containerStatuses": [r.to_json() for r in view.main],
    }
    if view.init:
        status["initContainerStatuses"] = [r.to_json() for r in view.init]
    if view.pod_ip:
        status["podIP"] = view.pod_ip
        status["podIPs"] = [{"ip": view.pod_ip}]
    if view.reason:
        status["reason"] = view.reason
    if view.message:
        status["message"] = view.message
    return status


def termination_message(file_content: bytes, policy: str, exit_code: int, log_tail: bytes) -> str:
    """The message of a terminated state per `terminationMessagePolicy`."""
    message = file_content[:MAX_MESSAGE_BYTES].decode("utf-8", "replace")
    if not message and policy == "FallbackToLogsOnError" and exit_code != 0:
        lines = log_tail.splitlines()[-FALLBACK_LOG_LINES:]
        tail = b"\n".join(lines)[-FALLBACK_LOG_BYTES:]
        message = tail.decode("utf-8", "replace")
    return message


def should_restart(restart_policy: str, exit_code: int) -> bool:
    if restart_policy == "Always":
        return True
    if restart_policy == "OnFailure":
        return exit_code != 0
    return False


@dataclass
class Backoff:
    """The kubelet's crash-loop back-off: doubles per restart, capped, reset after a long run."""

    initial: float = 10.0
    maximum: float = 300.0
    reset_after: float = 600.0
    current: float = 0.0

    def next_delay(self, ran_for: float) -> float:
        if ran_for >= self.reset_after or self.current == 0.0:
            self.current = self.initial
        else:
            self.current = min(self.current * 2, self.maximum)
        return self.current
