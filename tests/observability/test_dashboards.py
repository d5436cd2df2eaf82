"""The Grafana dashboards shipped with the chart: valid dashboard JSON, and every PromQL
expression parses and reads only metrics that are actually exported (metric_names.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.observability.metric_names import (
    documented_server_metrics,
    known_series,
    operator_series,
    selected_names,
    server_series,
    to_promql,
)

REPO = Path(__file__).resolve().parents[2]
DASHBOARDS = sorted((REPO / "charts" / "modelloop" / "dashboards").glob("*.json"))
KNOWN = known_series()


def load(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text())
    assert isinstance(data, dict)
    return data


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def expressions(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) for every panel target and every query variable."""
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            yield f"panel {panel['title']!r} {target['refId']}", target["expr"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]["query"]
            # label_values(<selector>, label): the selector is PromQL.
            assert query.startswith("label_values(") and query.endswith(")"), query
            selector = query[len("label_values("):-1].rsplit(",", 1)[0]
            yield f"variable {variable['name']}", selector


def all_expressions() -> list[Any]:
    return [pytest.param(expr, id=f"{path.stem}: {where}")
            for path in DASHBOARDS for where, expr in expressions(load(path))]


def test_both_dashboards_exist() -> None:
    assert [p.name for p in DASHBOARDS] == ["modelloop-models.json", "modelloop-operator.json"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_dashboard_is_importable_grafana_json(path: Path) -> None:
    dashboard = load(path)
    assert dashboard["uid"] == path.stem and dashboard["title"]
    assert dashboard["id"] is None  # Grafana assigns ids on import
    assert isinstance(dashboard["schemaVersion"], int)
    names = [v["name"] for v in dashboard["templating"]["list"]]
    assert names[0] == "datasource" and len(names) == len(set(names))
    ids = [p["id"] for p in panels(dashboard)]
    assert len(ids) == len(set(ids))
    for panel in panels(dashboard):
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24 and pos["h"] > 0, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["description"], panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert ref_ids and len(ref_ids) == len(set(ref_ids)), panel["title"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_panels_do_not_overlap(path: Path) -> None:
    taken: set[tuple[int, int]] = set()
    for panel in panels(load(path)):
        pos = panel["gridPos"]
        cells = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"])
                 for y in range(pos["y"], pos["y"] + pos["h"])}
        assert not cells & taken, panel["title"]
        taken |= cells


@pytest.mark.parametrize("expr", all_expressions())
def test_expression_parses_and_reads_exported_metrics(expr: str) -> None:
    names = selected_names(to_promql(expr))
    assert names, expr
    assert names <= KNOWN, f"not exported by the operator or the server: {names - KNOWN}"


def _names_in(path: Path) -> set[str]:
    return {name for _, expr in expressions(load(path)) for name in selected_names(to_promql(expr))}


def test_operator_dashboard_shows_rate_errors_duration_phases_retrains_and_process() -> None:
    names = _names_in(REPO / "charts/modelloop/dashboards/modelloop-operator.json")
    assert {"modelloop_reconcile_total", "modelloop_reconcile_errors_total",
            "modelloop_reconcile_duration_seconds_bucket", "modelloop_objects", "up",
            "modelloop_retrains_total", "process_cpu_seconds_total",
            "process_resident_memory_bytes"} <= names


def test_every_operator_metric_is_documented_in_observability_md() -> None:
    """Each modelloop_* family the operator exports has a row in the operator's table."""
    text = (REPO / "docs" / "observability.md").read_text()
    families = {n.removesuffix("_bucket").removesuffix("_sum").removesuffix("_count")
                for n in operator_series()
                if n.startswith("modelloop_") and not n.endswith("_created")}
    assert families and {f for f in families if f"`{f}`" not in text} == set()


def test_models_dashboard_shows_latency_throughput_drift_confidence_retrains() -> None:
    names = _names_in(REPO / "charts/modelloop/dashboards/modelloop-models.json")
    assert {"modelloop_request_latency_seconds_bucket", "modelloop_predictions_total",
            "modelloop_inference_errors_total", "modelloop_drift_psi",
            "modelloop_drift_window_samples", "modelloop_prediction_confidence_bucket",
            "modelloop_prediction_confidence_sum", "modelloop_objects"} <= names


def test_server_metrics_used_are_documented() -> None:
    documented = documented_server_metrics()
    if documented is None:
        pytest.skip("docs/metrics.md (owned by the server image) does not exist yet")
    used = set().union(*(_names_in(p) for p in DASHBOARDS)) & server_series()
    bases = {n.removesuffix("_bucket").removesuffix("_sum").removesuffix("_count") for n in used}
    assert bases <= documented, f"used but not in docs/metrics.md: {bases - documented}"


def test_the_checker_rejects_what_it_should() -> None:
    with pytest.raises(ValueError):
        selected_names("sum(rate(modelloop_reconcile_total[5m])")
    with pytest.raises(ValueError):
        selected_names("rate(modelloop_reconcile_total)")  # a vector where a range is needed
    assert "modelloop_reconcile_totl" not in KNOWN
    assert selected_names(to_promql(
        'sum by (le) (rate(a_bucket{ns=~"$namespace"}[$__rate_interval])) / b')) == {
        "a_bucket", "b"}
