"""The custom PromQL checks in the examples read series that really exist.

A check whose metric name is misspelt never finds data: the analysis calls it Inconclusive
forever, which looks like a quiet model rather than a broken check.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from .metric_names import REPO, known_series, selected_names

KNOWN = known_series()


def example_queries() -> list[tuple[str, str]]:
    """(where, query) for every check query of every ModelDeployment in examples/."""
    found: list[tuple[str, str]] = []
    for path in sorted((REPO / "examples").rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not isinstance(doc, dict) or doc.get("kind") != "ModelDeployment":
                continue
            checks: list[dict[str, Any]] = (
                (doc.get("spec") or {}).get("monitoring") or {}).get("checks") or []
            for check in checks:
                for key in ("query", "samplesQuery"):
                    if check.get(key):
                        where = f"{path.relative_to(REPO)}: {check.get('name')}.{key}"
                        found.append((where, str(check[key])))
    return found


def as_promql(query: str) -> str:
    """The operator substitutes $selector and $window (docs/monitoring.md); any valid
    values do for parsing."""
    return query.replace("$selector", 'namespace="x"').replace("$window", "5m")


def test_the_examples_have_custom_checks() -> None:
    assert example_queries(), "no example exercises a custom check any more"


@pytest.mark.parametrize(("where", "query"), example_queries())
def test_example_check_reads_exported_series(where: str, query: str) -> None:
    names = selected_names(as_promql(query))
    assert names, where
    assert names <= KNOWN, f"{where}: not exported by the operator or the server: {names - KNOWN}"
