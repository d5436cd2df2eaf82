"""Container paths -> host paths.

A local process cannot see `/mnt/pvc/models` or `/dev/termination-log`: there is no mount
namespace. Each container therefore gets a map from its mount paths (and its termination
message path) to host paths, and the runner rewrites every *occurrence* of a mapped path
in the container's command, args and env values before starting it:

    --output-uri=pvc://models/run1        unchanged (resolved via MODELLOOP_PVC_ROOT)
    --output-dir=/mnt/pvc/models/run1  -> --output-dir=<pv dir>/run1
    file:///mnt/pvc/models/run1        -> file://<pv dir>/run1
    sh -c 'echo hi > /dev/termination-log' -> ... > <pod dir>/<container>/termination-log

A mapped path matches only at a path boundary: preceded by the start, by `://`, or by a
character that cannot be part of a path name (space, `=`, quote, ...), and followed by the
end, `/` or such a character; so `/data` does not match inside `/database` or `/x/data`.
Longer (nested) mount paths win.

A value that names a *parent* of mount paths, such as `MODELLOOP_PVC_ROOT=/mnt/pvc` when
claims are mounted at `/mnt/pvc/<claim>`, is rewritten to that directory inside the
mirror root (a directory of symlinks laid out like the container's mounts), but only as a
whole value (an env value, an argument, or the value of `--flag=value`): a general prefix
rule would also rewrite `/etc/ssl` because a ConfigMap is mounted at `/etc/app`.
Paths a program *computes* from hard-coded prefixes cannot be rewritten.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field


def _normalise(container_path: str) -> str:
    path = posixpath.normpath(container_path)
    return path if path != "//" else "/"


@dataclass
class PathMap:
    """An ordered map of container paths to host paths."""

    entries: dict[str, str] = field(default_factory=dict)
    mirror_root: str | None = None

    @staticmethod
    def normalised(container_path: str) -> str:
        return _normalise(container_path)

    def add(self, container_path: str, host_path: str) -> None:
        path = _normalise(container_path)
        if path == "/":
            raise ValueError("mounting over / cannot be mapped to a host directory")
        self.entries[path] = host_path

    def host_path(self, container_path: str) -> str | None:
        """The host path for a container path under a mapped prefix, else None."""
        path = _normalise(container_path)
        for prefix in sorted(self.entries, key=len, reverse=True):
            if path == prefix:
                return self.entries[prefix]
            if path.startswith(prefix + "/"):
                return self.entries[prefix] + path[len(prefix) :]
        return None

    def _pattern(self) -> re.Pattern[str] | None:
        if not self.entries:
            return None
        prefixes = sorted(self.entries, key=len, reverse=True)
        alternatives = "|".join(re.escape(p) for p in prefixes)
        # Boundary before: not preceded by a path-name char or '/', unless it is a URI's '://'.
        # Boundary after: end, '/', or a char that cannot continue a path component.
        return re.compile(rf"(?:(?<![\w.\-/~])|(?<=://))({alternatives})(?=$|[^\w.\-~])")

    def _mirrored_parent(self, value: str) -> str | None:
        """`<mirror root><value>` when value is exactly a strict parent of a mount path."""
        if self.mirror_root is None or not value.startswith("/"):
            return None
        path = _normalise(value)
        if path == "/" or path in self.entries:
            return None
        if any(entry.startswith(path + "/") for entry in self.entries):
            return self.mirror_root + path
        return None

    def rewrite_occurrences(self, text: str) -> str:
        """Only the boundary-matched occurrences (for file contents, not single values)."""
        pattern = self._pattern()
        if pattern is None:
            return text
        return pattern.sub(lambda m: self.entries[m.group(1)], text)

    def rewrite(self, text: str) -> str:
        mirrored = self._mirrored_parent(text)
        if mirrored is not None:
            return mirrored
        flag, equals, value = text.partition("=")
        if equals and flag.startswith("-"):
            mirrored = self._mirrored_parent(value)
            if mirrored is not None:
                return f"{flag}={mirrored}"
        return self.rewrite_occurrences(text)

    def rewrite_all(self, texts: Iterable[str]) -> list[str]:
        return [self.rewrite(text) for text in texts]

    def rewrite_env(self, env: Mapping[str, str]) -> dict[str, str]:
        return {name: self.rewrite(value) for name, value in env.items()}
