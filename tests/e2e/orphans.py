"""Find processes that still belong to a finished run, by what points into its work dir.

Every process of the stack (control plane components, pod processes, TorchServe's Java
and its Python workers) either runs inside the work dir or names it on its command line
or in its environment (pods get TMPDIR and their container root there). A process whose
cwd, command line or environment mentions the work dir after teardown is an orphan.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def _ancestors() -> set[int]:
    """Our pid and those of the processes that started us (a wrapper such as `timeout`
    may name the work dir on its command line; it is not an orphan of the run)."""
    pids, pid = set(), os.getpid()
    while pid > 1 and pid not in pids:
        pids.add(pid)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            break
        pid = int(stat.rpartition(")")[2].split()[1])  # field 4, after "(comm)"
    return pids


def processes_using(workdir: Path) -> list[str]:
    """`pid: command line` of every live process (other than us and our ancestors) tied
    to `workdir`."""
    needle = str(workdir.resolve())
    found: list[str] = []
    ours = _ancestors()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in ours:
            continue
        with contextlib.suppress(OSError):
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(
                errors="replace").strip()
            if not cmdline:  # kernel thread or zombie: holds nothing
                continue
            cwd = ""
            with contextlib.suppress(OSError):
                cwd = str((entry / "cwd").readlink())
            environ = b""
            with contextlib.suppress(OSError):
                environ = (entry / "environ").read_bytes()
            if (needle in cmdline or cwd.startswith(needle)
                    or needle.encode() in environ):
                found.append(f"{entry.name}: {cmdline[:200]}")
    return found
