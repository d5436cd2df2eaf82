"""Readable one-line messages from pydantic validation errors.

When an invalid spec slips past admission (an older CRD, a disabled webhook, a direct
etcd write), the operator reports it in status and in an Event, where a person reads one
line: ``spec.numNodes: must be >= 1; spec.dataset: required``.
"""

from __future__ import annotations

from pydantic import ValidationError
from pydantic_core import ErrorDetails

_PLAIN = {
    "missing": "required",
    "extra_forbidden": "unknown field",
}


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not out:
            out = part
        elif part.startswith(("function-", "function_")) or "[" in part:
            continue  # validator names pydantic adds to the location of union branches
        else:
            out += f".{part}"
    return out


def _message(error: ErrorDetails) -> str:
    kind = error["type"]
    if kind in _PLAIN:
        return _PLAIN[kind]
    msg = error["msg"]
    # "Value error, must be ..." -> "must be ..."; "Input should be ..." -> "should be ..."
    msg = msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if msg.startswith("Input should"):
        msg = msg.removeprefix("Input ")
    return msg


def describe_validation_error(exc: ValidationError, *, prefix: str = "") -> str:
    """One line naming every invalid field by its YAML path, e.g.
    ``spec.numNodes: should be greater than or equal to 1; spec.dataset: required``.

    ``prefix`` is prepended to each path (``"spec"`` when the spec alone was validated).
    Duplicate messages (one per union branch) are reported once.
    """
    parts: list[str] = []
    for error in exc.errors(include_url=False):
        path = _path(error["loc"])
        if prefix:
            path = f"{prefix}.{path}" if path else prefix
        # An error of the whole object (e.g. its name) already names what it is about.
        line = f"{path}: {_message(error)}" if path else _message(error)
        if line not in parts:
            parts.append(line)
    return "; ".join(parts)
