"""Child processes of the local control plane: start, watch, stop, and explain failures.

Each component runs in its own session (hence its own process group), so that stopping it
also stops anything it forked, and so that a Ctrl-C in the developer's terminal reaches
only us, letting teardown stop the components in order. State is kept in a small JSON file
in the work directory so that ``controlplane down`` can stop a cluster that an earlier
``controlplane up`` (another process) started.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

_PR_SET_PDEATHSIG = 1


class ComponentError(RuntimeError):
    """A component could not start or died; the message names it and shows its log."""


def log_tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return "(no log written)"
    tail = text.splitlines()[-lines:]
    return "\n".join("    " + line for line in tail) or "(log is empty)"


def free_port() -> int:
    """A port that is free on loopback now (the kernel picks it; a race is reported clearly)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ensure_port_free(port: int, owner: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as err:
            raise ComponentError(
                f"{owner}: port 127.0.0.1:{port} is already in use ({err.strerror}); "
                "stop whatever holds it or choose another port"
            ) from err


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: if the test process is killed outright
    # (SIGKILL, OOM), the kernel kills the component too instead of leaving an orphan.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


@dataclass
class Component:
    """One running (or stopped) component process."""

    name: str
    argv: list[str]
    log: Path
    pid: int = 0
    process: subprocess.Popen[bytes] | None = None

    def start(self, *, env: dict[str, str] | None = None, tie_to_parent: bool) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            out.write(f"\n=== {time.strftime('%H:%M:%S')} starting: {' '.join(self.argv)}\n"
                      .encode())
            out.flush()
            try:
                self.process = subprocess.Popen(
                    self.argv,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    env=env,
                    preexec_fn=_die_with_parent if tie_to_parent else None,
                )
            except OSError as err:
                raise ComponentError(f"{self.name}: cannot run {self.argv[0]}: {err}") from err
        self.pid = self.process.pid

    def exit_code(self) -> int | None:
        """None while running; the exit status once it exited (-1 if not our child)."""
        if self.process is not None:
            return self.process.poll()
        return None if _alive(self.pid, self.argv[0]) else -1

    def running(self) -> bool:
        return self.pid > 0 and self.exit_code() is None

    def failure(self, what: str) -> ComponentError:
        return ComponentError(
            f"{self.name} {what}; last lines of {self.log}:\n{log_tail(self.log)}"
        )

    def check_running(self) -> None:
        code = self.exit_code()
        if code is not None:
            raise self.failure(f"exited with code {code}")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the component's process group, then SIGKILL what is left of the group."""
        if not self.pid:
            return
        if self.process is None and not self.running():
            # Attached from state.json and gone: the pid may belong to someone else by now.
            return
        if self.running():
            _signal_group(self.pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while self.running() and time.monotonic() < deadline:
                time.sleep(0.05)
        # Even after the leader exited, children it forked may still hold the group.
        _signal_group(self.pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while self.running():
            if time.monotonic() > deadline:
                raise self.failure(f"(pid {self.pid}) survived SIGKILL for 5s")
            time.sleep(0.02)

    def to_state(self) -> dict[str, object]:
        return {"name": self.name, "argv": self.argv, "log": str(self.log), "pid": self.pid}

    @classmethod
    def from_state(cls, data: dict[str, object]) -> Component:
        argv = data["argv"]
        pid = data["pid"]
        assert isinstance(argv, list) and isinstance(pid, int)
        return cls(name=str(data["name"]), argv=[str(a) for a in argv],
                   log=Path(str(data["log"])), pid=pid)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _alive(pid: int, executable: str) -> bool:
    """Whether pid runs `executable` (guards against a recycled pid after a reboot or crash)."""
    if pid <= 0:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    # A zombie is dead for our purposes; it only waits for its parent to reap it.
    if stat.rsplit(")", 1)[-1].split()[0] == "Z":
        return False
    return cmdline.split(b"\0", 1)[0].decode(errors="replace") == executable
