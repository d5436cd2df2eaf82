"""Base classes for every API model: camelCase aliases, strict specs, lenient status."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


class SpecModel(BaseModel):
    """Anything a user writes. Unknown fields are errors: a typo must not be ignored.

    Fields are snake_case in Python and camelCase in YAML; both names are accepted on
    input and ``model_dump()`` writes camelCase, the form the API server stores.
    """

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        serialize_by_alias=True,
        extra="forbid",
        use_attribute_docstrings=True,
    )


class StatusModel(BaseModel):
    """Anything the operator writes. Unknown fields are ignored so that a status written
    by a newer or older operator version still reads."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        serialize_by_alias=True,
        extra="ignore",
        use_attribute_docstrings=True,
    )
