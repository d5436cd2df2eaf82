"""Init of one local "container": `python -I _shim.py <runner pid> <executable> <argv0> <args>`.

Started by the runner as the leader of a new session/process group, it
- asks the kernel to signal it when the runner's thread dies (PR_SET_PDEATHSIG), so a
  killed runner (even SIGKILL) leaves no processes behind;
- becomes a child subreaper, so descendants that daemonize re-parent to it, not to init;
- runs the command in its own process group (the shim's) and waits for it;
- when the command exits, kills whatever is left of the group and of its re-parented
  descendants (a container's processes die with its main process), then exits with the
  command's code, or 128+N when it was killed by signal N (as container runtimes report).
Graceful stop: the runner signals the whole group; this process ignores SIGTERM/SIGINT
(through a handler, so the command still gets the default disposition) and simply waits.
Standard library only, and no imports from the runner: it starts in milliseconds.
"""

import contextlib
import ctypes
import os
import signal
import sys
import time
from pathlib import Path

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
RUNNER_GONE = signal.SIGUSR2


def _group_members(pgid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            fields = (entry / "stat").read_bytes().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        # fields[1] is ppid, fields[2] is pgid (after the "comm)" part).
        if int(fields[2]) == pgid or int(fields[1]) == os.getpid():
            members.append(int(entry.name))
    return members


def _kill_everything() -> None:
    """SIGKILLs the group and adopted orphans until none are left (re-parenting takes turns)."""
    pgid = os.getpgid(0)
    for _ in range(50):
        members = _group_members(pgid)
        if not members:
            break
        for pid in members:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        try:
            while os.waitpid(-1, os.WNOHANG)[0] > 0:
                pass
        except ChildProcessError:
            pass
        time.sleep(0.02)


def _on_runner_gone(signum: int, frame: object) -> None:
    _kill_everything()
    os._exit(137)


def main() -> int:
    runner_pid = int(sys.argv[1])
    executable, argv = sys.argv[2], sys.argv[3:]
    libc = ctypes.CDLL(None, use_errno=True)
    signal.signal(RUNNER_GONE, _on_runner_gone)
    libc.prctl(PR_SET_PDEATHSIG, int(RUNNER_GONE), 0, 0, 0)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    if os.getppid() != runner_pid:  # the runner died before prctl took effect
        return 137
    for graceful in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(graceful, lambda signum, frame: None)
    try:
        child = os.posix_spawn(executable, argv, dict(os.environ))
    except OSError as error:
        sys.stderr.write(f"modelloop pod runner: cannot start {executable}: {error}\n")
        return 128
    while True:
        pid, status = os.waitpid(child, 0)
        if pid == child:
            break
    _kill_everything()
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


if __name__ == "__main__":
    sys.exit(main())
