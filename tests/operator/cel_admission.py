"""A small stand-in for the API server's CEL admission, for the unit tier.

It does what the API server does with a CRD schema before validation rules run (prune
nulls, apply defaults), then evaluates every ``x-kubernetes-validations`` rule with
cel-python, ``oldSelf`` included on updates. It does not check the OpenAPI part (types,
bounds, enums): pydantic enforces the same bounds, and the cluster tier runs the real
thing. Its purpose is to catch a wrong CEL rule in seconds, without a cluster.
"""

from __future__ import annotations

import copy
from typing import Any

import celpy
from celpy.adapter import json_to_cel
from celpy.evaluation import CELEvalError

Schema = dict[str, Any]
_ENV = celpy.Environment()
_PROGRAMS: dict[str, Any] = {}


def _program(rule: str) -> Any:
    if rule not in _PROGRAMS:
        _PROGRAMS[rule] = _ENV.program(_ENV.compile(rule))
    return _PROGRAMS[rule]


def apply_defaults(schema: Schema, value: Any) -> Any:
    """``value`` with nulls pruned and schema defaults filled in, recursively."""
    if isinstance(value, dict) and schema.get("type") == "object":
        out = {}
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for key, sub in value.items():
            if sub is None:
                continue
            if key in props:
                out[key] = apply_defaults(props[key], sub)
            elif isinstance(extra, dict):
                out[key] = apply_defaults(extra, sub)
            else:
                out[key] = sub  # unknown: field validation reports it, not us
        for key, sub in props.items():
            if key not in out and "default" in sub:
                out[key] = apply_defaults(sub, copy.deepcopy(sub["default"]))
        return out
    if isinstance(value, list) and schema.get("type") == "array":
        return [apply_defaults(schema["items"], v) for v in value]
    if schema.get("type") == "number" and isinstance(value, int):
        return float(value)  # the API server hands CEL a double for `type: number`
    return value


def _to_cel(value: Any) -> Any:
    return json_to_cel(value)


def violations(schema: Schema, new: Any, old: Any = None, path: str = "") -> list[str]:
    """``"<path>: <message>"`` for each rule that does not hold. Transition rules
    (those using oldSelf) run only where an old value exists, as in Kubernetes."""
    found: list[str] = []
    for rule in schema.get("x-kubernetes-validations", []):
        uses_old = "oldSelf" in rule["rule"]
        if uses_old and old is None:
            continue
        activation = {"self": _to_cel(new)}
        if uses_old:
            activation["oldSelf"] = _to_cel(old)
        try:
            result = _program(rule["rule"]).evaluate(activation)
        except CELEvalError as err:  # e.g. "no such key": the API server rejects too
            found.append(f"{path or '<root>'}: {rule['message']} (error: {err.args[0]})")
            continue
        if isinstance(result, CELEvalError) or not bool(result):
            found.append(f"{path or '<root>'}: {rule['message']}")
    if isinstance(new, dict) and schema.get("type") == "object":
        for key, sub in schema.get("properties", {}).items():
            if key in new:
                old_sub = old.get(key) if isinstance(old, dict) else None
                found += violations(sub, new[key], old_sub, f"{path}.{key}")
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key, sub_value in new.items():
                found += violations(extra, sub_value, None, f"{path}.{key}")
    elif isinstance(new, list) and schema.get("type") == "array":
        for i, item in enumerate(new):
            found += violations(schema["items"], item, None, f"{path}[{i}]")
    return found


def admit(schema: Schema, new: dict[str, Any], old: dict[str, Any] | None = None) -> list[str]:
    """Default then validate an object (and its old version on update), as on admission."""
    new = apply_defaults(schema, new)
    if old is not None:
        old = apply_defaults(schema, old)
    return violations(schema, new, old)
