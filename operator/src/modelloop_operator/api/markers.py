"""Kubernetes schema markers that live next to the fields they constrain.

The pydantic models are the single source of truth for the CRDs. Constraints that JSON
Schema cannot say (CEL rules, immutability, int-or-string, list semantics) are attached to
a field or a model as ``json_schema_extra`` through the helpers here, the way kubebuilder
markers sit on Go fields. The CRD generator (``modelloop_operator.crdgen``) turns them into
``x-kubernetes-*`` extensions, so it stays generic: it never knows about a particular kind.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic.config import JsonDict, JsonValue

#: Key the generator looks for: the field may not change after creation.
IMMUTABLE_KEY = "x-modelloop-immutable"
#: Key the generator looks for: the subtree is a template for objects the operator
#: creates, so the immutability of the templated kind does not apply inside it.
TEMPLATE_KEY = "x-modelloop-template"

#: ``reason`` values the API server accepts on a validation rule.
Reason = Literal["FieldValueInvalid", "FieldValueForbidden", "FieldValueRequired",
                 "FieldValueDuplicate"]


@dataclass(frozen=True)
class Rule:
    """One CEL validation rule (``x-kubernetes-validations`` item).

    ``message`` is what ``kubectl apply`` prints, so it must read well on its own.
    ``field_path`` (a JSONPath relative to the node, e.g. ``.modelUri``) points the error
    at the offending child instead of the node carrying the rule.
    """

    rule: str
    message: str
    field_path: str | None = None
    reason: Reason | None = None

    def to_schema(self) -> dict[str, str]:
        """The rule as it appears in the CRD."""
        out = {"rule": self.rule, "message": self.message}
        if self.field_path is not None:
            out["fieldPath"] = self.field_path
        if self.reason is not None:
            out["reason"] = self.reason
        return out


def k8s(
    *rules: Rule,
    immutable: bool = False,
    template: bool = False,
    default: JsonValue = None,
    list_type: Literal["atomic", "set", "map"] | None = None,
    list_map_keys: tuple[str, ...] = (),
    max_properties: int | None = None,
) -> JsonDict:
    """Schema extras for one field or model (``json_schema_extra=k8s(...)``).

    ``default`` is written into the CRD even where the Python default is a factory; use
    ``default={}`` on a nested object so the API server applies the defaults inside it
    when the user leaves the whole object out.
    """
    extra: JsonDict = {}
    if rules:
        extra["x-kubernetes-validations"] = [dict(r.to_schema()) for r in rules]
    if immutable:
        extra[IMMUTABLE_KEY] = True
    if template:
        extra[TEMPLATE_KEY] = True
    if default is not None:
        extra["default"] = default
    if list_type is not None:
        extra["x-kubernetes-list-type"] = list_type
    if list_map_keys:
        extra["x-kubernetes-list-map-keys"] = [*list_map_keys]
    if max_properties is not None:
        extra["maxProperties"] = max_properties
    return extra
