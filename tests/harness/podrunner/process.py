"""Local processes standing in for containers, never orphaned.

Each container runs under `_shim.py` as the leader of its own session and process group:
stopping it signals the whole group (SIGTERM, grace period, SIGKILL), which also reaches
the grandchildren (torchrun workers, TorchServe's Java frontend). If the runner itself dies,
the kernel tells each shim (parent-death signal) and the shim kills its group. The runner
also keeps a registry of live groups and kills them at interpreter exit.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import shutil
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

_SHIM = str(Path(__file__).with_name("_shim.py"))
_LIVE_GROUPS: set[int] = set()


def _kill_live_groups() -> None:
    for pgid in list(_LIVE_GROUPS):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
    _LIVE_GROUPS.clear()


atexit.register(_kill_live_groups)


class ExecutableNotFoundError(Exception):
    """The runtime's StartError: the command does not resolve to an executable."""


def resolve_executable(name: str, path: str, cwd: str) -> str:
    """Resolves argv[0] as runc does: a name with '/' is a path, else searched in PATH."""
    if "/" in name:
        candidate = Path(cwd, name)  # an absolute name stays absolute
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
        raise ExecutableNotFoundError(f'exec: "{name}": stat {name}: no such file or directory')
    found = shutil.which(name, path=path)
    if found is None:
        raise ExecutableNotFoundError(f'exec: "{name}": executable file not found in $PATH')
    return found


def group_alive(pgid: int) -> bool:
    """Whether any process of the group still exists (zombies included)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class LocalProcess:
    """One running container command."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self._proc = proc
        self.pid = proc.pid
        _LIVE_GROUPS.add(self.pid)

    @classmethod
    async def start(
        cls,
        argv: Sequence[str],
        *,
        executable: str,
        env: Mapping[str, str],
        cwd: str,
        log_path: Path,
    ) -> LocalProcess:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-I", _SHIM, str(os.getpid()), executable, *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                env=dict(env),
                cwd=cwd,
                start_new_session=True,
            )
        return cls(proc)

    async def wait(self) -> int:
        """The container's exit code (128+N when killed by signal N)."""
        code = await self._proc.wait()
        _LIVE_GROUPS.discard(self.pid)
        return 128 - code if code < 0 else code

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode

    def signal_group(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signum)

    async def stop(self, grace: float) -> int:
        """SIGTERM to the group, SIGKILL after `grace` seconds; returns the exit code."""
        if self._proc.returncode is None:
            self.signal_group(signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._proc.wait()), timeout=max(grace, 0))
        # Leftovers (or a wedged shim) die with the group either way.
        self.signal_group(signal.SIGKILL)
        return await self.wait()


async def run_to_completion(
    argv: Sequence[str],
    *,
    executable: str,
    env: Mapping[str, str],
    cwd: str,
    log_path: Path,
    limit_s: float,
) -> int | None:
    """Runs a command (exec probe) under the same guarantees; None when it timed out."""
    proc = await LocalProcess.start(
        argv, executable=executable, env=env, cwd=cwd, log_path=log_path
    )
    try:
        return await asyncio.wait_for(asyncio.shield(proc.wait()), timeout=limit_s)
    except TimeoutError:
        await proc.stop(0)
        return None
    finally:
        if proc.returncode is None:
            await proc.stop(0)
