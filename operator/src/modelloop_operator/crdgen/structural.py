"""A checker for the Kubernetes structural-schema rules a generated CRD must follow.

The API server rejects a CRD whose schema is not structural; running the same rules here
turns that into a fast unit-test failure with the offending path, before any cluster.
Rules follow "Specifying a structural schema" in the Kubernetes CRD documentation.
"""

from __future__ import annotations

from typing import Any

#: Keys of apiextensions.k8s.io/v1 JSONSchemaProps that a generated schema may use.
ALLOWED_KEYS = frozenset({
    "type", "format", "description", "default", "enum", "nullable",
    "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf",
    "minLength", "maxLength", "pattern", "minItems", "maxItems", "uniqueItems",
    "minProperties", "maxProperties", "required", "properties", "additionalProperties",
    "items", "anyOf", "allOf", "oneOf", "not", "example",
    "x-kubernetes-int-or-string", "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-embedded-resource", "x-kubernetes-list-type", "x-kubernetes-list-map-keys",
    "x-kubernetes-map-type", "x-kubernetes-validations",
})
TYPES = frozenset({"object", "array", "string", "integer", "number", "boolean"})
INT_OR_STRING = [{"type": "integer"}, {"type": "string"}]
_VALIDATION_KEYS = frozenset({"rule", "message", "messageExpression", "fieldPath", "reason",
                              "optionalOldSelf"})


def structural_errors(schema: dict[str, Any], path: str = "") -> list[str]:
    """Every violation in ``schema`` (empty when it is structural), each naming its path."""
    errors: list[str] = []
    _check(schema, path or "<root>", errors)
    return errors


def _check(node: dict[str, Any], path: str, errors: list[str]) -> None:
    unknown = sorted(set(node) - ALLOWED_KEYS)
    if unknown:
        errors.append(f"{path}: keys not allowed in a CRD schema: {', '.join(unknown)}")
    kind = node.get("type")
    if node.get("x-kubernetes-int-or-string"):
        if kind is not None:
            errors.append(f"{path}: int-or-string must not also set type")
        if node.get("anyOf") not in (None, INT_OR_STRING):
            errors.append(f"{path}: int-or-string anyOf must be exactly integer, string")
    elif node.get("x-kubernetes-preserve-unknown-fields") and kind is None:
        pass
    elif kind not in TYPES:
        errors.append(f"{path}: every node needs a type (got {kind!r})")
    for bad in ("oneOf", "allOf", "not"):
        if bad in node:
            errors.append(f"{path}: {bad} is not used by our generator and must not appear")
    if "anyOf" in node and not node.get("x-kubernetes-int-or-string"):
        errors.append(f"{path}: anyOf outside int-or-string")
    if node.get("nullable") is not None:
        errors.append(f"{path}: nullable is not used (null values are pruned instead)")
    if "properties" in node and "additionalProperties" in node:
        errors.append(f"{path}: properties and additionalProperties are mutually exclusive")
    if isinstance(node.get("additionalProperties"), bool):
        errors.append(f"{path}: additionalProperties must be a schema, not a boolean")
    for key in ("exclusiveMinimum", "exclusiveMaximum"):
        if key in node and not isinstance(node[key], bool):
            errors.append(f"{path}: {key} must be a boolean in OpenAPI v3")
    if kind == "object":
        for name in node.get("required", []):
            if name not in node.get("properties", {}):
                errors.append(f"{path}: required field {name!r} is not a property")
        for name, sub in node.get("properties", {}).items():
            _check(sub, f"{path}.{name}", errors)
        if isinstance(node.get("additionalProperties"), dict):
            _check(node["additionalProperties"], f"{path}.*", errors)
    elif "properties" in node or "additionalProperties" in node:
        errors.append(f"{path}: properties on a non-object")
    if kind == "array":
        if not isinstance(node.get("items"), dict):
            errors.append(f"{path}: an array needs an items schema")
        else:
            _check(node["items"], f"{path}[]", errors)
        _check_list_map(node, path, errors)
    elif "items" in node:
        errors.append(f"{path}: items on a non-array")
    for i, rule in enumerate(node.get("x-kubernetes-validations", [])):
        extra = sorted(set(rule) - _VALIDATION_KEYS)
        if extra or not rule.get("rule") or not (rule.get("message")
                                                 or rule.get("messageExpression")):
            errors.append(f"{path}: x-kubernetes-validations[{i}] needs rule and message "
                          f"(unknown keys: {extra})")
        field_path = rule.get("fieldPath")
        if field_path is not None and not _resolves(node, field_path):
            errors.append(f"{path}: x-kubernetes-validations[{i}].fieldPath {field_path!r} "
                          "does not name a property of this node")
    if "default" in node and node["default"] is None:
        errors.append(f"{path}: default null")
    if "enum" in node and "default" in node and node["default"] not in node["enum"]:
        errors.append(f"{path}: default {node['default']!r} is not in enum")


def _check_list_map(node: dict[str, Any], path: str, errors: list[str]) -> None:
    list_type = node.get("x-kubernetes-list-type")
    keys = node.get("x-kubernetes-list-map-keys")
    if keys and list_type != "map":
        errors.append(f"{path}: list-map-keys without list-type map")
    if list_type != "map":
        return
    items = node.get("items", {})
    if not keys:
        errors.append(f"{path}: list-type map needs list-map-keys")
        return
    for key in keys:
        prop = items.get("properties", {}).get(key)
        if prop is None:
            errors.append(f"{path}: list-map key {key!r} is not an item property")
        elif key not in items.get("required", []) and "default" not in prop:
            errors.append(f"{path}: list-map key {key!r} must be required or defaulted")
        elif prop.get("type") not in ("string", "integer", "boolean"):
            errors.append(f"{path}: list-map key {key!r} must be a scalar")


def _resolves(node: dict[str, Any], field_path: str) -> bool:
    """Whether a simple ``.a.b`` fieldPath names declared properties (the API server
    rejects one that does not, e.g. ``.metadata.name`` where metadata is untyped)."""
    for part in field_path.removeprefix(".").split("."):
        props = node.get("properties", {})
        if part not in props:
            return False
        node = props[part]
    return True
