"""The chart's PrometheusRule: every alert parses as PromQL and reads exported metrics."""

from __future__ import annotations

from pathlib import Path

from tests.chart.helm import Helm, one
from tests.observability.metric_names import known_series, selected_names


def test_alert_expressions_parse_and_read_exported_metrics(helm: Helm, workdir: Path) -> None:
    objects = helm.template({"metrics": {"prometheusRule": {"enabled": True}}}, workdir=workdir)
    rules = [r for g in one(objects, "PrometheusRule")["spec"]["groups"] for r in g["rules"]]
    known = known_series()
    read = set()
    for rule in rules:
        names = selected_names(rule["expr"])
        assert names <= known, (rule["alert"], names - known)
        read |= names
        assert rule["labels"]["severity"] in ("critical", "warning")
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
    assert {"up", "modelloop_reconcile_errors_total", "modelloop_reconcile_total",
            "modelloop_objects"} <= read


def test_alert_thresholds_follow_values(helm: Helm, workdir: Path) -> None:
    objects = helm.template({"metrics": {"prometheusRule": {
        "enabled": True, "reconcileErrorRatio": 0.25, "degradedFor": "1h", "downFor": "2m"}}},
        workdir=workdir)
    rules = {r["alert"]: r for g in one(objects, "PrometheusRule")["spec"]["groups"]
             for r in g["rules"]}
    assert rules["ModelloopReconcileErrors"]["expr"].rstrip().endswith("> 0.25")
    assert rules["ModelloopModelDeploymentDegraded"]["for"] == "1h"
    assert rules["ModelloopOperatorDown"]["for"] == "2m"
