"""Hypothesis strategies for fuzzing modelloop manifests, and an in-process judge of what
the API server admits.

A fuzzed manifest is one of the valid examples in ``examples/`` with one to three
mutations at places the generated CRD schema knows about: a field set to another valid
value, to a wrong type, an out-of-range number, an odd string (empty, blank, very long,
unicode, control characters), an extreme quantity or duration; a field deleted; an
unknown field added. Mostly-valid input reaches the deep rules (CEL, the operator's
builders) that purely random documents never get past.

The judge (:func:`schema_verdict`) does what the API server does with a CRD: structural
validation of the OpenAPI schema (types, bounds, lengths, RE2 patterns, enums, required
and unknown fields, list-map keys), then defaults and the CEL rules
(:mod:`tests.operator.cel_admission`). The unit tier compares it with the pydantic models;
the cluster tier compares it with the real API server, which keeps the judge honest.

Pure: no cluster, no network. URLs the strategies write point at 127.0.0.1 only, since
the cluster tier hands accepted objects to a running operator that may fetch them.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import re2  # type: ignore[import-untyped]
from hypothesis import strategies as st
from modelloop_operator.api import KINDS, ModelDeployment, OptimizationJob, TrainingJob
from modelloop_operator.crdgen import root_schema
from pydantic import BaseModel, ValidationError

from .api_cases import Manifest, example
from .cel_admission import admit

Schema = dict[str, Any]
Path = tuple[str | int, ...]

SCHEMAS: dict[str, Schema] = {k.kind: root_schema(k) for k in KINDS}
MODELS: dict[str, type[BaseModel]] = {
    "TrainingJob": TrainingJob, "OptimizationJob": OptimizationJob,
    "ModelDeployment": ModelDeployment,
}
#: Valid starting points per kind (files in examples/).
BASES: dict[str, tuple[str, ...]] = {
    "TrainingJob": ("trainingjob-bbc.yaml", "trainingjob-rotten-tomatoes-gpu.yaml"),
    "OptimizationJob": ("optimizationjob-int8.yaml", "optimizationjob-prune-distill.yaml"),
    "ModelDeployment": ("modeldeployment.yaml", "modeldeployment-archive.yaml"),
}
#: Where Prometheus "is" for fuzzed deployments: a closed loopback port, never the network.
SAFE_PROMETHEUS = "http://127.0.0.1:9"

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
Action = Literal["valid", "invalid", "delete", "unknown"]


# --- the judge ---------------------------------------------------------------------------

def _re2_search(pattern: str, value: str) -> bool:
    """Patterns as the API server runs them: Go RE2 (``$`` is the end of the text, not
    "before a final newline" as in Python's ``re``)."""
    return re2.search(pattern, value) is not None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def structural_errors(schema: Schema, value: Any, path: str = "") -> list[str]:
    """OpenAPI errors of ``value`` against a structural ``schema``, as field validation
    ``Strict`` reports them (unknown fields are errors). Nulls of object fields are pruned
    before this, as the API server does."""
    errors: list[str] = []
    if schema.get("x-kubernetes-int-or-string"):
        if not ((_is_int(value) and INT64_MIN <= value <= INT64_MAX) or isinstance(value, str)):
            return [f"{path}: must be an integer or a string"]
        if isinstance(value, str) and "pattern" in schema and not _re2_search(
                schema["pattern"], value):
            errors.append(f"{path}: should match {schema['pattern']!r}")
        return errors
    kind = schema.get("type")
    if kind == "object":
        if not isinstance(value, dict):
            return [f"{path}: must be of type object"]
        props: dict[str, Schema] = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        present = {k: v for k, v in value.items() if v is not None}
        if "maxProperties" in schema and len(present) > schema["maxProperties"]:
            errors.append(f"{path}: must have at most {schema['maxProperties']} properties")
        for name in schema.get("required", []):
            if name not in present:
                errors.append(f"{path}.{name}: Required value")
        for key, sub in present.items():
            if key in props:
                errors += structural_errors(props[key], sub, f"{path}.{key}")
            elif isinstance(extra, dict):
                errors += structural_errors(extra, sub, f"{path}.{key}")
            elif path != ".metadata":
                errors.append(f"{path}.{key}: field not declared in schema")
        return errors
    if kind == "array":
        if not isinstance(value, list):
            return [f"{path}: must be of type array"]
        if len(value) < schema.get("minItems", 0):
            errors.append(f"{path}: should have at least {schema['minItems']} items")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            errors.append(f"{path}: must have at most {schema['maxItems']} items")
        for i, item in enumerate(value):
            if item is None:
                errors.append(f"{path}[{i}]: must not be null")
            else:
                errors += structural_errors(schema["items"], item, f"{path}[{i}]")
        keys = schema.get("x-kubernetes-list-map-keys")
        if keys and not errors:
            seen = [tuple(json.dumps(i.get(k)) for k in keys) for i in value]
            if len(set(seen)) != len(seen):
                errors.append(f"{path}: duplicate entries for key")
        return errors
    if kind == "string":
        if not isinstance(value, str):
            return [f"{path}: must be of type string"]
        if len(value) < schema.get("minLength", 0):
            errors.append(f"{path}: should be at least {schema['minLength']} chars long")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            errors.append(f"{path}: may not be longer than {schema['maxLength']}")
        if "pattern" in schema and not _re2_search(schema["pattern"], value):
            errors.append(f"{path}: should match {schema['pattern']!r}")
    elif kind == "integer":
        if not _is_int(value) or not INT64_MIN <= value <= INT64_MAX:
            return [f"{path}: must be of type integer"]
    elif kind == "number":
        if not (_is_int(value) or isinstance(value, float)):
            return [f"{path}: must be of type number"]
    elif kind == "boolean" and not isinstance(value, bool):
        return [f"{path}: must be of type boolean"]
    if kind in ("integer", "number"):
        low, high = schema.get("minimum"), schema.get("maximum")
        if low is not None and (value < low or (schema.get("exclusiveMinimum") and value == low)):
            errors.append(f"{path}: should be greater than {low}")
        if high is not None and (value > high or (schema.get("exclusiveMaximum")
                                                  and value == high)):
            errors.append(f"{path}: should be less than {high}")
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: Unsupported value: {value!r}")
    return errors


def schema_verdict(doc: Manifest, old: Manifest | None = None) -> list[str]:
    """Why the API server (CRD schema, then CEL) would reject ``doc``, created or (with
    ``old``) as an update; empty to admit."""
    schema = SCHEMAS[doc["kind"]]
    errors = structural_errors(schema, doc)
    if errors:
        return errors
    return admit(schema, doc, old)


def model_verdict(doc: Manifest, *, strict: bool) -> str | None:
    """None when the pydantic model accepts ``doc``, else the error. ``strict`` validates
    the JSON text without coercion (the API server never coerces "3" to 3); lax is what
    the operator does with what the API server hands it. Anything but a ValidationError
    propagates: a model must never crash on input."""
    model = MODELS[doc["kind"]]
    try:
        if strict:
            model.model_validate_json(json.dumps(doc), strict=True)
        else:
            model.model_validate(doc)
    except ValidationError as exc:
        return str(exc)
    return None


# --- positions: where a mutation may land -----------------------------------------------

NEW_KEY = "<new key>"
APPEND = "<append>"


@dataclass(frozen=True)
class Position:
    """A place in a manifest where a mutation may land."""

    path: Path
    schema: Schema
    present: bool
    holds_object: bool = False
    """Whether the manifest has a map there now (an unknown field can be added)."""


def _positions(schema: Schema, value: Any, path: Path) -> Iterator[Position]:
    """Every property of every object the manifest has (present or not), every item of
    its lists, and one new entry per map and list."""
    kind = schema.get("type")
    if kind == "object" and isinstance(value, dict):
        for name, sub in schema.get("properties", {}).items():
            here = (*path, name)
            yield Position(here, sub, name in value, isinstance(value.get(name), dict))
            if name in value:
                yield from _positions(sub, value[name], here)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key, sub_value in value.items():
                yield Position((*path, key), extra, True, isinstance(sub_value, dict))
                yield from _positions(extra, sub_value, (*path, key))
            yield Position((*path, NEW_KEY), extra, False)
    elif kind == "array" and isinstance(value, list):
        for i, item in enumerate(value):
            yield Position((*path, i), schema["items"], True, isinstance(item, dict))
            yield from _positions(schema["items"], item, (*path, i))
        yield Position((*path, APPEND), schema["items"], False)


def _parent(doc: Manifest, path: Path) -> Any:
    node: Any = doc
    for part in path[:-1]:
        node = node[part]
    return node


def set_at(doc: Manifest, path: Path, value: Any) -> None:
    """Set (or append) at ``path``; the parents exist, since positions come from ``doc``."""
    parent, last = _parent(doc, path), path[-1]
    if last == APPEND:
        parent.append(value)
    else:
        parent[last] = value


def delete_at(doc: Manifest, path: Path) -> None:
    parent, last = _parent(doc, path), path[-1]
    del parent[last]


# --- values -----------------------------------------------------------------------------

_MATCHES = re.compile(r"matches\('([^']*)'\)")

#: Strings that exercise encodings, lengths and lookalikes.
ODD_STRINGS: tuple[str, ...] = (
    "", " ", "\t", "\n", "x\n", "\x00", "-", ".", "..", "/", "a/b", "A", "ümlaut", "名前",
    "\u202eevil", "emoji-\U0001f600", "zero\u200bwidth", "'; drop", "${HOME}", "$(id)",
    "other-ns/foo", "system:serviceaccount:kube-system:default", "a" * 64, "a" * 254,
    "x" * 5000,
)
ODD_QUANTITIES: tuple[Any, ...] = (
    "-1", -1, "1e1000", "1e-1000", "9" * 40, 10**20, 2**63, "1.5.5", "0x10", "1 Gi",
    "1gi", "1Ki ", "", "∞", 0.5, "+1", "0", 0, "1E", "1Ei", "999999999999Ei", True, [],
)
ODD_DURATIONS: tuple[Any, ...] = (
    "0s", "0ms", "-1s", "1d", "1h-5m", "1.5h", "ms", "", "9999999999999h", "2562048h",
    "99999999999999999999ms", "1h 30m", "1H", "5", 5, "P1D", "1h30m0s", "1us",
)

_DURATION_PART = st.tuples(st.integers(0, 400), st.sampled_from(["ms", "s", "m", "h"]))
DURATIONS = st.lists(_DURATION_PART, min_size=1, max_size=3).map(
    lambda parts: "".join(f"{n}{u}" for n, u in parts))

HTTP_URLS = st.one_of(
    st.just(SAFE_PROMETHEUS),
    st.builds(lambda port, tail: f"http://127.0.0.1:{port}{tail}",
              st.sampled_from(["9", "1", "0", "65535", "99999", "08"]),
              st.sampled_from(["", "/", "/prom", "/a%20b", "/ü", "/?q=1#f", "/\t"])),
)


def _string_rules(schema: Schema) -> list[str]:
    return [m for r in schema.get("x-kubernetes-validations", [])
            for m in _MATCHES.findall(r["rule"])]


def _is_duration(schema: Schema) -> bool:
    return any("duration(" in r["rule"] for r in schema.get("x-kubernetes-validations", []))


def _is_http_url(schema: Schema) -> bool:
    return any("https?://" in p for p in _string_rules(schema))


def valid_value(schema: Schema, depth: int = 0) -> st.SearchStrategy[Any]:
    """Values the schema means to admit (CEL rules across fields may still object)."""
    if schema.get("x-kubernetes-int-or-string"):
        return st.one_of(
            st.integers(0, 10**6),
            st.from_regex(r"\A[1-9][0-9]{0,3}(m|Mi|Gi|k|M|G)?\Z"),
            st.from_regex(schema["pattern"].replace("$", r"\Z"), fullmatch=False).filter(
                lambda s: len(s) <= 40))
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    if kind == "boolean":
        return st.booleans()
    if kind == "integer":
        low = schema.get("minimum", -(2**31))
        high = schema.get("maximum", 2**31)
        if schema.get("exclusiveMinimum"):
            low += 1
        if schema.get("exclusiveMaximum"):
            high -= 1
        return st.one_of(st.just(low), st.just(high), st.integers(low, high))
    if kind == "number":
        low, high = schema.get("minimum"), schema.get("maximum")
        return st.floats(min_value=low, max_value=high,
                         exclude_min=bool(schema.get("exclusiveMinimum")),
                         exclude_max=bool(schema.get("exclusiveMaximum")),
                         allow_nan=False, allow_infinity=False)
    if kind == "string":
        return _valid_string(schema)
    if kind == "array":
        items = valid_value(schema["items"], depth + 1)
        low = schema.get("minItems", 0)
        return st.lists(items, min_size=low, max_size=min(schema.get("maxItems", 3), low + 2))
    if kind == "object":
        return _valid_object(schema, depth)
    raise AssertionError(f"no strategy for {schema}")


def _valid_string(schema: Schema) -> st.SearchStrategy[str]:
    low, high = schema.get("minLength", 0), schema.get("maxLength", 64)
    if _is_duration(schema):
        return DURATIONS
    if _is_http_url(schema):
        return HTTP_URLS
    patterns = [schema["pattern"]] if "pattern" in schema else _string_rules(schema)
    if patterns:
        return st.one_of(*[
            st.from_regex(p.replace("$", r"\Z"), fullmatch=False).filter(
                lambda s: low <= len(s) <= high) for p in patterns])
    return st.text(min_size=low, max_size=min(high, 30))


def _valid_object(schema: Schema, depth: int) -> st.SearchStrategy[dict[str, Any]]:
    props: dict[str, Schema] = schema.get("properties", {})
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        keys = st.one_of(st.from_regex(r"\A[a-z][a-z0-9.-]{0,20}(/[a-z0-9]{1,10})?\Z"),
                         st.sampled_from(ODD_STRINGS[:20]))
        return st.dictionaries(keys, valid_value(extra, depth + 1), max_size=3)
    required = {n: valid_value(props[n], depth + 1) for n in schema.get("required", [])}
    optional = {} if depth > 3 else {
        n: valid_value(s, depth + 1) for n, s in props.items() if n not in required}
    return st.fixed_dictionaries(required, optional=optional)


def invalid_value(schema: Schema) -> st.SearchStrategy[Any]:
    """Values the schema (or its CEL rules) should refuse, or that sit right on a bound."""
    if schema.get("x-kubernetes-int-or-string"):
        return st.sampled_from(ODD_QUANTITIES)
    kind = schema.get("type")
    wrong_type: list[Any] = ["7", 7, 1.5, True, [], {}, "true"]
    if kind == "object":
        return st.sampled_from(["x", 5, [], [{}], True, {}])
    if kind == "array":
        item = valid_value(schema["items"], 4)
        too_many = schema.get("maxItems", 50) + 1
        return st.one_of(st.sampled_from(["x", {}, 5, [None], [5], ["x"], []]),
                         st.lists(item, min_size=too_many, max_size=too_many),
                         item.map(lambda i: [i, copy.deepcopy(i)]))
    if kind == "boolean":
        return st.sampled_from(["true", "false", 1, 0, "yes", [], None])
    if "enum" in schema:
        values = [str(v) for v in schema["enum"]]
        return st.one_of(st.sampled_from(["", "unknown", 1, *[v.upper() for v in values],
                                          *[v.capitalize() for v in values],
                                          *[v + " " for v in values]]))
    if kind in ("integer", "number"):
        near: list[Any] = []
        for bound, step in (("minimum", -1), ("maximum", 1)):
            if bound in schema:
                near += [schema[bound], schema[bound] + step, schema[bound] + step * 0.5]
        extremes = [2**31, 2**63, 2**64, -(2**63) - 1, -1, 0, 1e300, -1e300, 1e-300]
        return st.sampled_from([*near, *extremes, *(v for v in wrong_type if v != 7)])
    if kind == "string":
        if _is_duration(schema):
            return st.sampled_from(ODD_DURATIONS)
        max_len = schema.get("maxLength", 64)
        long = ["x" * (max_len + 1)]
        if _is_http_url(schema):
            return st.one_of(st.sampled_from(["", "127.0.0.1:9", "ftp://127.0.0.1:9",
                                              "http://", "http:// 127.0.0.1", *long]),
                             HTTP_URLS.map(lambda u: u + " x"))
        valid = _valid_string(schema)
        return st.one_of(
            st.sampled_from([*ODD_STRINGS, *long, 7, True, [], {}]),
            st.text(max_size=40),
            valid.map(lambda s: s + "\n"), valid.map(lambda s: s.upper() + "!"),
            valid.map(lambda s: " " + s), valid.map(lambda s: s + "é"))
    raise AssertionError(f"no strategy for {schema}")


UNKNOWN_KEYS = ("namespace", "Name", "name ", "apiVersion", "kind", "uid", "extra", "x" * 300)


# --- manifests --------------------------------------------------------------------------

@dataclass(frozen=True)
class Mutation:
    """One change to a valid example, for the report of a failing case."""

    action: Action
    path: Path
    value: Any = None

    def __str__(self) -> str:
        where = ".".join(str(p) for p in self.path)
        if self.action == "delete":
            return f"delete {where}"
        shown = json.dumps(self.value, ensure_ascii=True)
        return f"{self.action} {where} = {shown[:120]}{'...' if len(shown) > 120 else ''}"


@dataclass(frozen=True)
class Fuzzed:
    """A mutated example: the document, where it came from and what changed."""

    doc: Manifest
    base: str
    mutations: tuple[Mutation, ...]

    @property
    def field_names(self) -> set[str]:
        """The property names along every mutated path (what an error should name)."""
        return {str(p) for m in self.mutations for p in m.path
                if isinstance(p, str) and p not in ("spec", NEW_KEY, APPEND)}

    def describe(self) -> str:
        return (f"{self.doc['kind']} from {self.base}: " + "; ".join(map(str, self.mutations))
                + "\n" + json.dumps(self.doc, indent=1, ensure_ascii=True)[:6000])


@st.composite
def mutation(draw: st.DrawFn, doc: Manifest) -> Mutation:
    """One mutation at a position of ``doc`` (applied by the caller)."""
    spec_schema = SCHEMAS[doc["kind"]]["properties"]["spec"]
    positions = list(_positions(spec_schema, doc["spec"], ("spec",)))
    where = draw(st.sampled_from(positions))
    path, schema = where.path, where.schema
    actions: list[Action] = ["valid", "valid", "invalid", "invalid", "invalid"]
    if where.present:
        actions.append("delete")
    if where.holds_object and "properties" in schema:
        actions.append("unknown")
    action = draw(st.sampled_from(actions))
    if path[-1] == NEW_KEY:
        key = draw(st.one_of(st.sampled_from(ODD_STRINGS),
                             st.from_regex(r"\A[a-z][a-z0-9./-]{0,30}\Z")))
        path = (*path[:-1], key)
    if action == "delete":
        return Mutation("delete", path)
    if action == "unknown":
        key = draw(st.sampled_from(UNKNOWN_KEYS))
        return Mutation("unknown", (*path, key), draw(st.sampled_from(["x", 1, {}])))
    strategy = valid_value(schema, depth=len(path)) if action == "valid" else invalid_value(
        schema)
    return Mutation(action, path, draw(strategy))


def apply_mutation(doc: Manifest, change: Mutation) -> None:
    if change.action == "delete":
        delete_at(doc, change.path)
    else:
        set_at(doc, change.path, copy.deepcopy(change.value))


def make_safe(doc: Manifest) -> None:
    """Point the examples' Prometheus at a closed loopback port (fuzzed URLs already are)."""
    monitoring = doc.get("spec", {}).get("monitoring")
    if isinstance(monitoring, dict) and monitoring.get("prometheusUrl") == (
            "http://prometheus.monitoring:9090"):
        monitoring["prometheusUrl"] = SAFE_PROMETHEUS


@st.composite
def fuzzed_manifest(draw: st.DrawFn, kind: str, *, name: str = "fuzzed",
                    max_mutations: int = 3) -> Fuzzed:
    """A valid example of ``kind`` with one to ``max_mutations`` mutations."""
    base = draw(st.sampled_from(BASES[kind]))
    doc = example(base)
    doc["metadata"] = {"name": name}
    make_safe(doc)
    changes: list[Mutation] = []
    for _ in range(draw(st.integers(1, max_mutations))):
        change = draw(mutation(doc))
        apply_mutation(doc, change)
        changes.append(change)
    return Fuzzed(doc=doc, base=base, mutations=tuple(changes))


def uses_network_outside_loopback(doc: Manifest) -> bool:
    """Whether an accepted document could make the operator call anything but 127.0.0.1
    (the only URL it fetches is monitoring.prometheusUrl)."""
    spec = doc.get("spec")
    monitoring = spec.get("monitoring") if isinstance(spec, dict) else None
    url = monitoring.get("prometheusUrl") if isinstance(monitoring, dict) else None
    return (isinstance(url, str) and re.match(r"(?i)\s*https?:", url) is not None
            and not url.startswith("http://127.0.0.1:"))
