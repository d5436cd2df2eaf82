"""Turn a pydantic model's JSON Schema into a Kubernetes structural schema.

pydantic writes JSON Schema 2020-12; the API server wants the OpenAPI v3 subset described
in "Specifying a structural schema": every node typed, no ``$ref``, no ``anyOf`` except
the int-or-string form, boolean ``exclusiveMinimum``, no ``const``, no
``additionalProperties: false`` next to ``properties``. The model markers
(:mod:`modelloop_operator.api.markers`) become ``x-kubernetes-*`` extensions here.

Optional fields lose their ``null`` branch rather than gaining ``nullable: true``: the API
server then prunes an explicit ``null`` as if the field were absent, which is what a
Python ``None`` means, and CEL ``has()`` keeps meaning "set".
"""

from __future__ import annotations

import inspect
import re
from typing import Any

from pydantic import BaseModel

from modelloop_operator.api.markers import IMMUTABLE_KEY, TEMPLATE_KEY

Schema = dict[str, Any]

_DROPPED = ("title", "discriminator", "examples")


class SchemaError(ValueError):
    """A model uses a construct that has no structural-schema form."""


def model_schema(model: type[BaseModel]) -> Schema:
    """The structural schema of ``model`` (camelCase names, inlined definitions)."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    return _convert(raw, defs, path=model.__name__, in_template=False)


def normalize_description(text: str) -> str:
    """Docstrings as descriptions: dedented, lines of a paragraph joined with spaces,
    paragraphs separated by one blank line."""
    paragraphs = re.split(r"\n\s*\n", inspect.cleandoc(text).replace("``", "`"))
    return "\n\n".join(" ".join(p.split()) for p in paragraphs if p.strip())


def _resolve(node: Schema, defs: dict[str, Schema]) -> Schema:
    while "$ref" in node:
        name = node["$ref"].removeprefix("#/$defs/")
        if name not in defs:
            raise SchemaError(f"unresolvable $ref {node['$ref']}")
        siblings = {k: v for k, v in node.items() if k != "$ref"}
        target = dict(defs[name])
        # Rules of the referenced model and of the referring field both apply.
        rules = target.get("x-kubernetes-validations", []) + siblings.pop(
            "x-kubernetes-validations", [])
        node = {**target, **siblings}
        if rules:
            node["x-kubernetes-validations"] = rules
    return node


def _strip_null(node: Schema, defs: dict[str, Schema], path: str) -> Schema:
    branches = [b for b in node["anyOf"] if b != {"type": "null"}]
    rest = {k: v for k, v in node.items() if k != "anyOf"}
    if node.get("x-kubernetes-int-or-string"):
        return node
    if len(branches) == 1:
        inner = _resolve(branches[0], defs)
        if "anyOf" in inner:
            inner = _strip_null(inner, defs, path)
        rules = inner.get("x-kubernetes-validations", []) + rest.pop(
            "x-kubernetes-validations", [])
        merged = {**inner, **rest}
        if rules:
            merged["x-kubernetes-validations"] = rules
        if merged.get("default", 0) is None:
            del merged["default"]
        return merged
    raise SchemaError(f"{path}: a union of {len(branches)} types has no structural form")


def _convert(node: Schema, defs: dict[str, Schema], *, path: str, in_template: bool) -> Schema:
    node = _resolve(node, defs)
    if "anyOf" in node:
        node = _strip_null(node, defs, path)
    for bad in ("oneOf", "allOf", "not"):
        if bad in node:
            raise SchemaError(f"{path}: {bad} has no structural form")
    in_template = in_template or bool(node.get(TEMPLATE_KEY))
    out: Schema = {}
    rules: list[dict[str, str]] = list(node.get("x-kubernetes-validations", []))
    for key, value in node.items():
        if key in _DROPPED or key in (TEMPLATE_KEY, IMMUTABLE_KEY, "x-kubernetes-validations"):
            continue
        if key == "description":
            out[key] = normalize_description(value)
        elif key == "const":
            out["enum"] = [value]
        elif key in ("exclusiveMinimum", "exclusiveMaximum"):
            bound = "minimum" if key == "exclusiveMinimum" else "maximum"
            out[bound] = value
            out[key] = True
        elif key == "additionalProperties":
            if value is False:
                continue  # unknown fields are pruned or rejected by field validation
            out[key] = _convert(value, defs, path=f"{path}.*", in_template=in_template)
        elif key == "items":
            out[key] = _convert(value, defs, path=f"{path}[]", in_template=in_template)
        elif key == "properties":
            out[key] = {
                name: _convert(sub, defs, path=f"{path}.{name}", in_template=in_template)
                for name, sub in value.items()
            }
        elif key == "default" and value is None:
            continue
        else:
            out[key] = value
    if not in_template:
        rules = _immutability_rules(node, defs) + rules
        if node.get(IMMUTABLE_KEY):
            name = path.rsplit(".", 1)[-1]
            rules.insert(0, {"rule": "self == oldSelf", "message": f"{name} is immutable"})
    if rules:
        out["x-kubernetes-validations"] = rules
    if "type" not in out and not out.get("x-kubernetes-int-or-string"):
        raise SchemaError(f"{path}: no type")
    return out


def _immutability_rules(node: Schema, defs: dict[str, Schema]) -> list[dict[str, str]]:
    """A transition rule only runs when old and new values both exist, so an optional
    immutable field also needs its parent to forbid adding or removing it."""
    required = set(node.get("required", ()))
    rules = []
    for name, sub in node.get("properties", {}).items():
        if not sub.get(IMMUTABLE_KEY) or name in required:
            continue
        if sub.get("default") is not None or _resolve(sub, defs).get("default") is not None:
            continue
        rules.append({
            "rule": f"has(self.{name}) == has(oldSelf.{name})",
            "message": f"{name} is immutable: it cannot be added or removed",
            "fieldPath": f".{name}",
        })
    return rules
