"""Generate CRDs, chart CRD templates and the API field reference from the models.

``python -m modelloop_operator.crdgen`` writes them; ``--check`` fails on drift (CI).
"""

from .crd import build_crd, name_rules, root_schema
from .outputs import generated_files
from .schema import SchemaError, model_schema

__all__ = ["SchemaError", "build_crd", "generated_files", "model_schema", "name_rules",
           "root_schema"]
