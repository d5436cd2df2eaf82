"""Group, version and the object envelope (apiVersion, kind, metadata) of every kind."""

from __future__ import annotations

import re
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field

GROUP: Final = "modelloop.dev"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
CATEGORY: Final = "modelloop"

#: Resource names must be DNS-1035 labels: Services are named after them.
NAME_PATTERN: Final = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"


def check_name(name: str, *, kind: str, max_length: int) -> None:
    """Raise ValueError when ``name`` cannot be a ``kind``'s name (the CRD's root rules).

    An empty name is allowed: objects built in code before the API server names them.
    """
    if not name:
        return
    if len(name) > max_length:
        raise ValueError(
            f"metadata.name must be at most {max_length} characters for a {kind}, so that the "
            f"names of the objects the operator creates fit 63 (got {len(name)})")
    if not re.fullmatch(NAME_PATTERN, name):
        raise ValueError(
            "metadata.name must start with a letter and contain only lowercase letters, "
            f"digits and '-' (it names a Service) (got {name!r})")


class ObjectMeta(BaseModel):
    """The part of ``metadata`` the operator reads. Everything else is kept as-is."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    name: str = ""
    namespace: str | None = None
    uid: str | None = None
    generation: int | None = None
    resource_version: str | None = Field(default=None, alias="resourceVersion")
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    owner_references: list[dict[str, Any]] = Field(
        default_factory=list, alias="ownerReferences")
    deletion_timestamp: str | None = Field(default=None, alias="deletionTimestamp")


class PrinterColumn(BaseModel):
    """A ``kubectl get`` column (additionalPrinterColumns)."""

    model_config = ConfigDict(frozen=True)

    name: str
    type: str
    json_path: str
    description: str
    priority: int = 0


class KindInfo(BaseModel):
    """Everything the CRD needs about a kind besides its spec and status schemas.

    ``max_name_length`` keeps room for the suffixes of the objects the operator creates
    (``<name>-<index>`` pod hostnames, ``<name>-canary``, ``<name>-rt-<hash>`` retrains),
    all of which must fit a 63-character DNS label.
    """

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    kind: str
    plural: str
    singular: str
    short_names: tuple[str, ...]
    max_name_length: int
    printer_columns: tuple[PrinterColumn, ...]
    description: str
    spec_model: type[BaseModel]
    status_model: type[BaseModel]

    @property
    def crd_name(self) -> str:
        """``<plural>.<group>``, the CRD object's name."""
        return f"{self.plural}.{GROUP}"


AGE_COLUMN: Final = PrinterColumn(
    name="Age", type="date", json_path=".metadata.creationTimestamp",
    description="Time since creation.")
