"""Pod phase, conditions, container states and termination messages."""

from __future__ import annotations

import pytest

from tests.harness.podrunner.status import (
    Backoff,
    ContainerRecord,
    PodView,
    Terminated,
    build_status,
    compute_phase,
    should_restart,
    termination_message,
)


def running(name: str = "c") -> ContainerRecord:
    record = ContainerRecord(name, "img")
    record.set_running("local://1", "2026-01-01T00:00:00Z")
    return record


def exited(code: int, name: str = "c") -> ContainerRecord:
    record = ContainerRecord(name, "img")
    record.set_terminated(Terminated(code, "Completed" if code == 0 else "Error", "",
                                     "2026-01-01T00:00:00Z", "2026-01-01T00:00:01Z", "local://1"))
    return record


def restarting(code: int) -> ContainerRecord:
    record = exited(code)
    record.set_waiting("CrashLoopBackOff", "back-off")
    return record


@pytest.mark.parametrize(
    ("policy", "init", "main", "phase"),
    [
        ("Always", [], [ContainerRecord("c", "i")], "Pending"),
        ("Always", [], [running()], "Running"),
        ("Never", [], [exited(0), exited(0, "d")], "Succeeded"),
        ("Never", [], [exited(0), exited(1, "d")], "Failed"),
        ("Never", [], [running(), exited(1, "d")], "Running"),
        ("OnFailure", [], [exited(0), exited(1, "d")], "Running"),  # d restarts
        ("OnFailure", [], [restarting(1)], "Running"),
        ("OnFailure", [], [exited(0)], "Succeeded"),
        ("Always", [], [exited(0)], "Running"),  # about to restart
        ("Never", [exited(1, "i")], [ContainerRecord("c", "i")], "Failed"),
        ("OnFailure", [exited(1, "i")], [ContainerRecord("c", "i")], "Pending"),
        ("Always", [running("i")], [ContainerRecord("c", "i")], "Pending"),
        ("Never", [exited(0, "i")], [running()], "Running"),
    ],
)
def test_phase(policy: str, init: list[ContainerRecord], main: list[ContainerRecord],
               phase: str) -> None:
    assert compute_phase(policy, init, main) == phase


def view(**overrides: object) -> PodView:
    base = PodView(phase="Running", pod_ip="127.9.0.2", host_ip="127.0.0.1",
                   start_time="2026-01-01T00:00:00Z", sandbox_ready=True, init=[],
                   main=[running()])
    for key, value in overrides.items():
        setattr(base, key, value)
    return base


def conditions(status: dict[str, object]) -> dict[str, dict[str, object]]:
    return {c["type"]: c for c in status["conditions"]}  # type: ignore[attr-defined]


def test_ready_conditions_follow_containers_and_keep_transition_times() -> None:
    unready = build_status(view(), [])
    assert conditions(unready)["Ready"]["status"] == "False"
    assert conditions(unready)["ContainersReady"]["message"] == \
        "containers with unready status: [c]"
    assert unready["podIPs"] == [{"ip": "127.9.0.2"}]
    record = running()
    record.ready = True
    old = [dict(c, lastTransitionTime="2020-01-01T00:00:00Z") for c in unready["conditions"]]
    ready = build_status(view(main=[record]), old)
    assert conditions(ready)["Ready"]["status"] == "True"
    assert conditions(ready)["Ready"]["lastTransitionTime"] != "2020-01-01T00:00:00Z"
    assert conditions(ready)["Initialized"]["lastTransitionTime"] == "2020-01-01T00:00:00Z"


def test_readiness_gates_hold_ready_back() -> None:
    record = running()
    record.ready = True
    status = build_status(view(main=[record], readiness_gates=["example.com/gate"]), [])
    assert conditions(status)["ContainersReady"]["status"] == "True"
    assert conditions(status)["Ready"]["reason"] == "ReadinessGatesNotReady"
    gate = {"type": "example.com/gate", "status": "True"}
    status = build_status(view(main=[record], readiness_gates=["example.com/gate"]), [gate])
    assert conditions(status)["Ready"]["status"] == "True"


def test_terminal_pod_reports_pod_completed() -> None:
    status = build_status(view(phase="Succeeded", main=[exited(0)]), [])
    assert conditions(status)["Ready"]["reason"] == "PodCompleted"
    assert status["containerStatuses"][0]["state"]["terminated"]["reason"] == "Completed"


def test_restart_moves_the_run_to_last_state() -> None:
    record = restarting(2)
    record.restart_count = 1
    status = record.to_json()
    assert status["state"] == {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off"}}
    assert status["lastState"]["terminated"]["exitCode"] == 2
    assert status["restartCount"] == 1


def test_init_containers_gate_initialized() -> None:
    status = build_status(view(phase="Pending", init=[running("setup")],
                               main=[ContainerRecord("c", "i", "PodInitializing")]), [])
    assert conditions(status)["Initialized"]["message"] == \
        "containers with incomplete status: [setup]"
    assert status["initContainerStatuses"][0]["name"] == "setup"


def test_termination_message_policies() -> None:
    logs = b"".join(b"line %d\n" % i for i in range(200))
    assert termination_message(b'{"v":1}', "File", 1, logs) == '{"v":1}'
    assert termination_message(b"", "File", 1, logs) == ""
    tail = termination_message(b"", "FallbackToLogsOnError", 1, logs)
    assert tail.startswith("line 120") and tail.endswith("line 199")
    assert termination_message(b"", "FallbackToLogsOnError", 0, logs) == ""
    assert len(termination_message(b"x" * 10000, "File", 0, b"")) == 4096


def test_restart_policy_and_backoff() -> None:
    assert should_restart("Always", 0) and should_restart("OnFailure", 1)
    assert not should_restart("OnFailure", 0) and not should_restart("Never", 1)
    backoff = Backoff(initial=1, maximum=5, reset_after=60)
    assert [backoff.next_delay(1) for _ in range(5)] == [1, 2, 4, 5, 5]
    assert backoff.next_delay(120) == 1  # a long healthy run resets it
