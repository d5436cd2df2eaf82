"""Every generated file and its content, keyed by path relative to the repository root."""

from __future__ import annotations

from pathlib import Path

from modelloop_operator.api import KINDS

from .crd import build_crd
from .reference import render_index, render_reference
from .render import chart_template, crd_yaml
from .schema import SchemaError
from .structural import structural_errors

CRD_DIR = Path("crds")
CHART_CRD_DIR = Path("charts/modelloop/templates/crds")
REFERENCE_DIR = Path("docs/reference")


def generated_files() -> dict[Path, str]:
    """CRDs, chart CRD templates and the field reference, all from the models."""
    files: dict[Path, str] = {}
    for kind in KINDS:
        crd = build_crd(kind)
        errors = structural_errors(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
        if errors:
            raise SchemaError(f"{kind.kind}: schema is not structural:\n" + "\n".join(errors))
        name = f"{kind.crd_name}.yaml"
        files[CRD_DIR / name] = crd_yaml(crd)
        files[CHART_CRD_DIR / name] = chart_template(crd)
        files[REFERENCE_DIR / f"{kind.singular}.md"] = render_reference(kind)
    files[REFERENCE_DIR / "README.md"] = render_index(KINDS)
    return files
