"""Runs an Argo CD resource health script the way Argo CD does.

Argo CD (util/lua in argo-cd) evaluates ``health.lua`` with gopher-lua, a Lua 5.1 VM in
which only the base, package and table libraries and a safe subset of ``os`` are loaded
(``resource.customizations.useOpenLibs`` is off by default), sets the live object as the
global table ``obj``, runs the script as one chunk and reads the table it returns: its
``status`` must be one of the health codes below, and a ``message`` is optional. Here the
same script runs in real Lua 5.1 (lupa) with the same libraries removed, so a script that
calls ``string.format`` or reads a file fails here as it would in Argo CD.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lupa.lua51 as lua51  # type: ignore[import-untyped]  # lupa ships no type hints
import yaml

HEALTH_CODES = frozenset({"Healthy", "Progressing", "Degraded", "Suspended", "Missing",
                          "Unknown"})
# Argo CD's safe os: only the clock functions.
_SAFE_OS = ("time", "date", "clock", "difftime")
_REMOVED_GLOBALS = ("string", "math", "io", "debug", "coroutine", "dofile", "loadfile",
                    "python")


class HealthScriptError(RuntimeError):
    """The script failed or returned something Argo CD would not accept."""


@dataclass(frozen=True)
class Health:
    status: str
    message: str


class _JsonLikeLoader(yaml.SafeLoader):
    """YAML as Kubernetes reads it: timestamps stay strings (no datetime objects)."""


_JsonLikeLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def load_object(path: Path) -> dict[str, Any]:
    """A Kubernetes object from a YAML file, with JSON types only."""
    data = yaml.load(path.read_text(), Loader=_JsonLikeLoader)  # a SafeLoader subclass
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a YAML mapping")
    _reject_non_json(data, str(path))
    return data


def _reject_non_json(value: Any, where: str) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _reject_non_json(item, f"{where}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _reject_non_json(item, f"{where}[{i}]")
    elif isinstance(value, dt.date | bytes):
        raise ValueError(f"{where}: {type(value).__name__} is not a JSON value")


def _sandboxed_runtime() -> Any:
    runtime = lua51.LuaRuntime(register_eval=False, register_builtins=False,
                               unpack_returned_tuples=False)
    keep = ", ".join(f"{name} = os.{name}" for name in _SAFE_OS)
    removals = "\n".join(f"{name} = nil" for name in _REMOVED_GLOBALS)
    # Without the string library strings have no methods either (s:sub() fails in Argo CD).
    runtime.execute(f"""
        debug.setmetatable("", nil)
        os = {{ {keep} }}
        package.loaded.string, package.loaded.math, package.loaded.io = nil, nil, nil
        package.loaded.debug, package.loaded.coroutine = nil, nil
        {removals}
    """)
    return runtime


def run_health(script: str, obj: dict[str, Any]) -> Health:
    """Evaluate ``script`` against ``obj`` and return what Argo CD would show."""
    runtime = _sandboxed_runtime()
    runtime.globals()["obj"] = runtime.table_from(obj, recursive=True)
    try:
        result = runtime.execute(script)
    except lua51.LuaError as err:
        raise HealthScriptError(f"the script failed: {err}") from err
    if lupa_type(result) != "table":
        raise HealthScriptError(f"the script returned {lupa_type(result)}, not a table")
    status, message = result["status"], result["message"]
    if not isinstance(status, str) or status not in HEALTH_CODES:
        # Argo CD turns an invalid status into Unknown; a check of ours must never do that.
        raise HealthScriptError(f"invalid health status {status!r}")
    if message is not None and not isinstance(message, str):
        raise HealthScriptError(f"message is {type(message).__name__}, not a string")
    return Health(status=status, message=message or "")


def lupa_type(value: Any) -> str:
    """Lua's type() of a value returned by lupa ("nil" for None)."""
    if value is None:
        return "nil"
    return str(lua51.lua_type(value) or type(value).__name__)
