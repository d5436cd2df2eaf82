"""Constrained scalar types shared by every kind: URIs, durations, quantities, names.

Each type validates in Python with a message a user can act on, and carries the same
constraint into the CRD (a CEL rule with that message, or the Kubernetes int-or-string
form), so the API server and the operator reject the same values with the same words.
Regular expressions are written in the subset shared by Go RE2, CEL and Python ``re``.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Annotated, Any, Final

from pydantic import AfterValidator, Field, PlainValidator, WithJsonSchema

from .markers import Rule, k8s

# --- URIs -------------------------------------------------------------------------------

#: Schemes a model or dataset may be read from. ``builtin://`` names data and weights that
#: ship inside the trainer image (``builtin://all-minilm-l6-v2``, ``builtin://bbc-news``,
#: ``builtin://rotten-tomatoes``).
SOURCE_URI_SCHEMES: Final = ("builtin", "file", "pvc", "s3")
#: Schemes an artifact may be written to.
OUTPUT_URI_SCHEMES: Final = ("file", "pvc", "s3")
URI_MAX_LENGTH: Final = 1024

# pvc://<claim>/<path>: the claim is a DNS-1123 subdomain, mounted by the operator.
_PVC = r"^pvc://[a-z0-9]([-a-z0-9.]*[a-z0-9])?(/[^ ]*)?$"


def _uri_pattern(schemes: tuple[str, ...]) -> str:
    other = [s for s in schemes if s != "pvc"]
    return "^(" + "|".join(other) + r")://[^ ]+$"


def _uri_rule(schemes: tuple[str, ...]) -> Rule:
    listed = ", ".join(f"{s}://" for s in schemes)
    return Rule(
        rule=f"self.matches('{_uri_pattern(schemes)}') || self.matches('{_PVC}')",
        message=f"must be a URI with scheme {listed} (pvc://<claim>/<path>), without spaces",
    )


def check_uri(value: str, schemes: tuple[str, ...]) -> str:
    """Return ``value`` if it is a URI with one of ``schemes``; raise ValueError otherwise.

    ``fullmatch``, not ``match``: in Python ``$`` also matches before a final newline,
    in RE2 (the API server's CEL) it does not, so ``pvc://models\\n`` would pass here only.
    """
    if re.fullmatch(_uri_pattern(schemes), value) or (
            "pvc" in schemes and re.fullmatch(_PVC, value)):
        return value
    listed = ", ".join(f"{s}://" for s in schemes)
    raise ValueError(
        f"must be a URI with scheme {listed} (pvc://<claim>/<path>), without spaces "
        f"(got {value!r})"
    )


def uri_scheme(uri: str) -> str:
    """The scheme of a URI already validated by :func:`check_uri` (``pvc``, ``s3``...)."""
    return uri.split("://", 1)[0]


def pvc_claim(uri: str) -> str | None:
    """The PersistentVolumeClaim a ``pvc://claim/path`` URI names, None for other schemes."""
    if uri_scheme(uri) != "pvc":
        return None
    return uri.removeprefix("pvc://").split("/", 1)[0]


SourceURI = Annotated[
    str,
    AfterValidator(lambda v: check_uri(v, SOURCE_URI_SCHEMES)),
    Field(min_length=1, max_length=URI_MAX_LENGTH,
          json_schema_extra=k8s(_uri_rule(SOURCE_URI_SCHEMES))),
]
"""A model or dataset location: ``builtin://``, ``file://``, ``pvc://claim/path`` or ``s3://``."""

OutputURI = Annotated[
    str,
    AfterValidator(lambda v: check_uri(v, OUTPUT_URI_SCHEMES)),
    Field(min_length=1, max_length=URI_MAX_LENGTH,
          json_schema_extra=k8s(_uri_rule(OUTPUT_URI_SCHEMES))),
]
"""Where an artifact is written: ``file://``, ``pvc://claim/path`` or ``s3://``."""

TrainedModelURI = Annotated[
    str,
    AfterValidator(lambda v: check_uri(v, OUTPUT_URI_SCHEMES)),
    Field(min_length=1, max_length=URI_MAX_LENGTH,
          json_schema_extra=k8s(_uri_rule(OUTPUT_URI_SCHEMES))),
]
"""A trained artifact read back: where an output was written (``builtin://`` names only
untrained base models, so it is not one)."""

HTTP_URL_PATTERN: Final = r"^https?://[^ /]+(/[^ ]*)?$"

HttpURL = Annotated[
    str,
    AfterValidator(lambda v: _check_http_url(v)),
    Field(min_length=1, max_length=URI_MAX_LENGTH,
          json_schema_extra=k8s(Rule(f"self.matches('{HTTP_URL_PATTERN}')",
                                     "must be an http:// or https:// URL"))),
]
"""An http(s) endpoint, e.g. a Prometheus server."""


def _check_http_url(value: str) -> str:
    if not re.fullmatch(HTTP_URL_PATTERN, value):
        raise ValueError(f"must be an http:// or https:// URL (got {value!r})")
    return value


# --- durations --------------------------------------------------------------------------

#: Go-style durations: one or more ``<integer><unit>`` with units ms, s, m, h (``1h30m``).
DURATION_PATTERN: Final = r"^([0-9]+(ms|s|m|h))+$"
#: Longest duration accepted (366 days): far beyond any interval, window or cooldown, and
#: far below what Go (about 2,562,047 h) and Python's timedelta can hold.
MAX_DURATION: Final = "8784h"
_MAX_DURATION_SECONDS: Final = 8784 * 3600
_DURATION_PART = re.compile(r"([0-9]+)(ms|s|m|h)")
_UNIT_SECONDS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: str) -> timedelta:
    """Parse a Go-style duration (``30s``, ``5m``, ``1h30m``, ``250ms``) into a timedelta.

    Only the units a person would use for monitoring and cooldowns are accepted, so that
    the schema pattern, CEL and this parser agree exactly.
    """
    if not re.fullmatch(DURATION_PATTERN, value):
        raise ValueError(f"must be a duration such as 30s, 5m or 1h (got {value!r})")
    seconds = sum(int(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION_PART.findall(value))
    if seconds > _MAX_DURATION_SECONDS:
        raise ValueError(f"must be at most {MAX_DURATION} (366 days) (got {value!r})")
    return timedelta(seconds=seconds)


def _check_duration(value: str) -> str:
    if parse_duration(value) <= timedelta(0):
        raise ValueError(f"must be longer than zero (got {value!r})")
    return value


Duration = Annotated[
    str,
    AfterValidator(_check_duration),
    Field(max_length=32, json_schema_extra=k8s(Rule(
        f"self.matches('{DURATION_PATTERN}') && duration(self) > duration('0s')"
        f" && duration(self) <= duration('{MAX_DURATION}')",
        "must be a positive duration such as 30s, 5m or 1h (units ms, s, m, h), "
        f"at most {MAX_DURATION}",
    ))),
]
"""A positive Go-style duration string; read it with :func:`parse_duration`."""


#: The largest integer the API server stores (JSON numbers beyond it are not integers).
INT64_MAX: Final = 2**63 - 1


# --- quantities -------------------------------------------------------------------------

#: Kubernetes resource quantity without a sign (``500m``, ``2``, ``4Gi``, ``1e3``).
QUANTITY_PATTERN: Final = (
    r"^(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)


def _check_quantity(value: object) -> int | str:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(
            f"must be an integer or a quantity string such as 500m, 2 or 4Gi (got {value!r})")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"must not be negative (got {value})")
        if value > INT64_MAX:
            raise ValueError(f"must fit a 64-bit integer (got {value})")
        return value
    if not re.fullmatch(QUANTITY_PATTERN, value):
        raise ValueError(
            f"must be a Kubernetes quantity such as 500m, 2 or 4Gi (got {value!r})")
    return value


# One plain validator for the whole int-or-string union, so that a bad value gets one
# message instead of one per union branch.
Quantity = Annotated[
    int | str,
    PlainValidator(_check_quantity),
    WithJsonSchema({
        "anyOf": [{"type": "integer"}, {"type": "string"}],
        "pattern": QUANTITY_PATTERN,
        "x-kubernetes-int-or-string": True,
    }),
]
"""A Kubernetes resource quantity, as an integer or a string (``500m``, ``4Gi``)."""


# --- names ------------------------------------------------------------------------------

DNS_LABEL_PATTERN: Final = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN_PATTERN: Final = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
_OBJECT_NAME = "a Kubernetes object name: lowercase letters, digits, '-' and '.'"

ObjectName = Annotated[
    str,
    AfterValidator(lambda v: check_pattern(v, DNS_SUBDOMAIN_PATTERN, _OBJECT_NAME)),
    Field(min_length=1, max_length=253, json_schema_extra={"pattern": DNS_SUBDOMAIN_PATTERN}),
]
"""The name of an object in the same namespace (a DNS-1123 subdomain)."""


def check_pattern(value: str, pattern: str, what: str) -> str:
    """Return ``value`` if it matches ``pattern``; else say ``what`` it must be (a person
    reads the message, not the regular expression)."""
    if not re.fullmatch(pattern, value):
        raise ValueError(f"must be {what} (got {value!r})")
    return value


#: A label value: empty, or alphanumerics with '-', '_' and '.' inside, at most 63.
LABEL_VALUE_PATTERN: Final = r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$"
#: A label or annotation key: an optional DNS-subdomain prefix and '/', then a name of
#: at most 63 alphanumerics with '-', '_' and '.' inside (a "qualified name"). ``[.]``,
#: not ``\.``: the pattern also sits inside a CEL string literal, where ``\.`` is invalid.
QUALIFIED_NAME_PATTERN: Final = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
QUALIFIED_NAME_MAX_LENGTH: Final = 317  # a 253-character prefix, '/', a 63-character name
# The prefix, when there is one, is at most 253 characters (a DNS subdomain).
_PREFIX_LENGTH: Final = r"^([^/]{1,253}/)?[^/]+$"
_LABEL_VALUE = "a label value: at most 63 letters, digits, '-', '_' or '.', starting and " \
    "ending with a letter or digit"
_QUALIFIED_NAME = "a label key such as app or example.com/team: an optional DNS prefix " \
    "and '/', then at most 63 letters, digits, '-', '_' or '.'"

LabelValue = Annotated[
    str,
    AfterValidator(lambda v: check_pattern(v, LABEL_VALUE_PATTERN, _LABEL_VALUE)),
    Field(max_length=63, json_schema_extra={"pattern": LABEL_VALUE_PATTERN}),
]
"""A label value (the API server refuses anything else on the pods the operator makes)."""

QualifiedName = Annotated[
    str,
    AfterValidator(lambda v: check_pattern(v, QUALIFIED_NAME_PATTERN, _QUALIFIED_NAME)),
    Field(min_length=1, max_length=QUALIFIED_NAME_MAX_LENGTH,
          json_schema_extra={"pattern": QUALIFIED_NAME_PATTERN}),
]
"""A label key, annotation key or taint key."""


def keys_rule(*, max_properties: int) -> dict[str, Any]:
    """Schema extras for a map whose keys are label or annotation keys: the structural
    schema cannot constrain keys, so a CEL rule does (cheap enough with maxProperties)."""
    return k8s(Rule(
        f"self.all(k, k.size() <= {QUALIFIED_NAME_MAX_LENGTH}"
        f" && k.matches('{QUALIFIED_NAME_PATTERN}') && k.matches('{_PREFIX_LENGTH}'))",
        f"keys must be {_QUALIFIED_NAME}"), max_properties=max_properties)


def check_keys(value: dict[str, Any]) -> dict[str, Any]:
    """The Python side of :func:`keys_rule`."""
    for key in value:
        if len(key) > QUALIFIED_NAME_MAX_LENGTH or not (
                re.fullmatch(QUALIFIED_NAME_PATTERN, key) and re.fullmatch(_PREFIX_LENGTH, key)):
            raise ValueError(f"keys must be {_QUALIFIED_NAME} (got {key!r})")
    return value


Labels = Annotated[dict[str, LabelValue], AfterValidator(check_keys),
                   Field(json_schema_extra=keys_rule(max_properties=64))]
"""Labels: qualified-name keys, label values, at most 64."""

Annotations = Annotated[dict[str, Annotated[str, Field(max_length=4096)]],
                        AfterValidator(check_keys),
                        Field(json_schema_extra=keys_rule(max_properties=64))]
"""Annotations: qualified-name keys, values up to 4096 characters, at most 64."""

#: A container image reference (registry/path:tag@digest), without spaces or controls.
IMAGE_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9._/:@+-]*$"
IMAGE_MAX_LENGTH: Final = 512

Image = Annotated[
    str,
    AfterValidator(lambda v: check_pattern(
        v, IMAGE_PATTERN, "an image reference such as registry.example.com/ml/trainer:1.2")),
    Field(min_length=1, max_length=IMAGE_MAX_LENGTH,
          json_schema_extra={"pattern": IMAGE_PATTERN}),
]
"""A container image; the operator's configured image when absent."""


TIMESTAMP_PATTERN: Final = (r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}"
                             r"(\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2})$")


def _timestamp(value: Any) -> datetime:
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str) and re.match(TIMESTAMP_PATTERN, value):
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    else:
        raise ValueError(f"{value!r} is not an RFC 3339 time such as 2026-12-06T12:00:00Z")
    if moment.tzinfo is None:
        raise ValueError(f"{value!r} has no time zone (end it with Z)")
    return moment


Timestamp = Annotated[
    datetime,
    PlainValidator(_timestamp),
    WithJsonSchema({"type": "string", "format": "date-time", "maxLength": 64,
                    "pattern": TIMESTAMP_PATTERN}),
]
"""An RFC 3339 time in a spec (e.g. 2026-12-06T12:00:00Z), with its zone."""
