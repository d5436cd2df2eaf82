"""Assemble a CustomResourceDefinition for one kind from its models and KindInfo."""

from __future__ import annotations

from typing import Any

from modelloop_operator.api.meta import CATEGORY, GROUP, NAME_PATTERN, VERSION, KindInfo

from .schema import Schema, model_schema, normalize_description


def name_rules(kind: KindInfo) -> list[dict[str, str]]:
    """Root rules on metadata.name: a DNS-1035 label (Services are named after it) short
    enough that every child name still fits 63 characters. (No fieldPath: the API server
    only accepts paths into the schema, and metadata has no properties there.)"""
    return [
        {
            "rule": f"self.metadata.name.size() <= {kind.max_name_length}",
            "message": (f"metadata.name must be at most {kind.max_name_length} characters, "
                        "so that the names of the objects the operator creates fit 63"),
            "reason": "FieldValueInvalid",
        },
        {
            "rule": f"self.metadata.name.matches('{NAME_PATTERN}')",
            "message": ("metadata.name must start with a letter and contain only lowercase "
                        "letters, digits and '-' (it names a Service)"),
            "reason": "FieldValueInvalid",
        },
    ]


def root_schema(kind: KindInfo) -> Schema:
    """The openAPIV3Schema of a kind: envelope, spec, status and the name rules."""
    return {
        "type": "object",
        "description": normalize_description(kind.description),
        "required": ["spec"],
        "properties": {
            "apiVersion": {
                "type": "string",
                "description": "APIVersion of this representation of the object.",
            },
            "kind": {
                "type": "string",
                "description": "Kind of the object.",
            },
            "metadata": {"type": "object"},
            "spec": model_schema(kind.spec_model),
            "status": model_schema(kind.status_model),
        },
        "x-kubernetes-validations": name_rules(kind),
    }


def build_crd(kind: KindInfo) -> dict[str, Any]:
    """The CRD manifest: one served and stored version with the status subresource."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": kind.crd_name,
            "labels": {"app.kubernetes.io/part-of": "modelloop"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind.kind,
                "listKind": f"{kind.kind}List",
                "plural": kind.plural,
                "singular": kind.singular,
                "shortNames": list(kind.short_names),
                "categories": [CATEGORY],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {
                            "name": c.name,
                            "type": c.type,
                            "jsonPath": c.json_path,
                            "description": c.description,
                            **({"priority": c.priority} if c.priority else {}),
                        }
                        for c in kind.printer_columns
                    ],
                    "schema": {"openAPIV3Schema": root_schema(kind)},
                }
            ],
        },
    }
