"""Local processes: exit codes like a container runtime's, and nothing left behind."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.harness.podrunner.process import (
    ExecutableNotFoundError,
    LocalProcess,
    resolve_executable,
    run_to_completion,
)

SH = "/bin/sh"


def alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_gone(pids: list[int], seconds: float = 5.0) -> list[int]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        left = [p for p in pids if alive(p)]
        if not left:
            return []
        time.sleep(0.05)
    return [p for p in pids if alive(p)]


async def start_sh(script: str, tmp_path: Path) -> LocalProcess:
    return await LocalProcess.start(["sh", "-c", script], executable=SH,
                                    env={"PATH": os.environ["PATH"]}, cwd=str(tmp_path),
                                    log_path=tmp_path / "c.log")


async def test_exit_code_and_log(tmp_path: Path) -> None:
    proc = await start_sh("echo out; echo err >&2; exit 7", tmp_path)
    assert await proc.wait() == 7
    assert (tmp_path / "c.log").read_text() == "out\nerr\n"


async def test_sigterm_stop_reports_143_and_sigkill_137(tmp_path: Path) -> None:
    proc = await start_sh("exec sleep 30", tmp_path)
    await asyncio.sleep(0.3)
    assert await proc.stop(grace=5) == 128 + signal.SIGTERM
    stubborn = await start_sh("trap '' TERM; touch ready; while :; do sleep 0.1; done",
                              tmp_path)
    for _ in range(200):  # the trap must be in place before SIGTERM (slow under load)
        if (tmp_path / "ready").exists():
            break
        await asyncio.sleep(0.05)
    started = time.monotonic()
    assert await stubborn.stop(grace=0.5) == 128 + signal.SIGKILL
    assert time.monotonic() - started < 10


async def test_stop_kills_grandchildren(tmp_path: Path) -> None:
    proc = await start_sh("sleep 60 & echo $! > kid; sleep 60", tmp_path)
    for _ in range(50):
        if (tmp_path / "kid").exists() and (tmp_path / "kid").read_text().strip():
            break
        await asyncio.sleep(0.05)
    kid = int((tmp_path / "kid").read_text())
    assert alive(kid)
    await proc.stop(grace=2)
    assert wait_gone([kid, proc.pid]) == []


async def test_background_processes_die_with_the_main_process(tmp_path: Path) -> None:
    # As in a container: when the main process exits, whatever it left running is killed,
    # including a process that left the process group with setsid.
    proc = await start_sh("sleep 60 & echo $! > kid; setsid sleep 60 & echo $! > escaped; exit 0",
                          tmp_path)
    assert await proc.wait() == 0
    pids = [int((tmp_path / name).read_text()) for name in ("kid", "escaped")]
    assert wait_gone(pids) == []


def test_killed_runner_leaves_no_processes(tmp_path: Path) -> None:
    """SIGKILL the process that started a container: the parent-death signal cleans up."""
    script = textwrap.dedent(f"""
        import asyncio, os, sys
        sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
        from pathlib import Path
        from tests.harness.podrunner.process import LocalProcess
        async def main():
            proc = await LocalProcess.start(
                ["sh", "-c", "sleep 60 & echo $! > kid; exec sleep 60"], executable="/bin/sh",
                env={{"PATH": os.environ["PATH"]}}, cwd={str(tmp_path)!r},
                log_path=Path({str(tmp_path)!r}) / "c.log")
            print(proc.pid, flush=True)
            await asyncio.sleep(60)
        asyncio.run(main())
    """)
    runner = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert runner.stdout is not None
    shim = int(runner.stdout.readline())
    for _ in range(100):
        if (tmp_path / "kid").exists() and (tmp_path / "kid").read_text().strip():
            break
        time.sleep(0.05)
    kid = int((tmp_path / "kid").read_text())
    assert alive(kid) and alive(shim)
    runner.kill()
    runner.wait()
    assert wait_gone([kid, shim]) == []


async def test_exec_probe_times_out_and_is_killed(tmp_path: Path) -> None:
    started = time.monotonic()
    code = await run_to_completion(["sleep", "30"], executable="/bin/sleep", env={},
                                   cwd=str(tmp_path), log_path=tmp_path / "p.log", limit_s=0.5)
    assert code is None
    assert time.monotonic() - started < 3
    assert await run_to_completion(["true"], executable="/bin/true", env={}, cwd=str(tmp_path),
                                   log_path=tmp_path / "p.log", limit_s=5) == 0


def test_resolve_executable(tmp_path: Path) -> None:
    assert resolve_executable("sh", "/nonexistent:/bin", "/") == "/bin/sh"
    script = tmp_path / "run.sh"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    assert resolve_executable("./run.sh", "", str(tmp_path)) == str(script)
    with pytest.raises(ExecutableNotFoundError, match="executable file not found in \\$PATH"):
        resolve_executable("no-such-command-xyz", "/bin", "/")
