"""Which metric names exist, from their sources, and which ones a PromQL expression reads.

Known names come from what is actually exported, not from a list kept here:
- the operator: an OperatorMetrics registry exercised once through its public methods and
  rendered in the Prometheus text format;
- the served model: the metrics config TorchServe exports (server-image's metrics.yaml; in
  prometheus mode TorchServe exports exactly what that file declares), cross-checked
  against docs/metrics.md when that document exists;
- Prometheus itself: the series every scrape adds (``up`` and friends).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import promql_parser
import yaml
from modelloop_operator.metrics import OperatorMetrics
from prometheus_client import generate_latest

REPO = Path(__file__).resolve().parents[2]
SERVER_METRICS_CONFIG = REPO / "server-image" / "src" / "modelloop_server" / "metrics.yaml"
METRICS_DOC = REPO / "docs" / "metrics.md"
SCRAPE_SERIES = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped"})

# Grafana's variables, replaced by something PromQL accepts before parsing.
_GRAFANA_DURATIONS = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h",
                      "${__rate_interval}": "5m", "${__interval}": "1m", "${__range}": "1h"}
_GRAFANA_VARIABLE = re.compile(r"\$\{?[A-Za-z_][A-Za-z0-9_]*\}?")


def operator_series() -> set[str]:
    """Series names the operator exports, after one reconcile, one error, one object and
    one retrain (process_* and python_* come from the registry's collectors)."""
    metrics = OperatorMetrics()
    with metrics.reconciling(kind="TrainingJob", trigger="create"):
        pass
    try:
        with metrics.reconciling(kind="TrainingJob", trigger="timer"):
            raise RuntimeError("exercise the error counter")
    except RuntimeError:
        pass
    metrics.set_phase(kind="TrainingJob", key="ns/a", phase="Running")
    metrics.retrain_started(namespace="ns", reason="drift")
    return exposition_names(generate_latest(metrics.registry).decode())


def exposition_names(text: str) -> set[str]:
    """Series names in a Prometheus text exposition."""
    names = set()
    for line in text.splitlines():
        if line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def server_series() -> set[str]:
    """Series names TorchServe exports with the server image's metrics config.

    Counters keep their names (ours already end in _total), gauges too, histograms add
    _bucket, _sum and _count (Prometheus' Java client, which TorchServe uses).
    """
    config = yaml.safe_load(SERVER_METRICS_CONFIG.read_text())
    names: set[str] = set()
    for section in ("ts_metrics", "model_metrics"):
        for kind, metrics in (config.get(section) or {}).items():
            for metric in metrics or []:
                name = str(metric["name"])
                if kind == "histogram":
                    names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
                else:
                    names.add(name)
    return names


def documented_server_metrics() -> set[str] | None:
    """Names docs/metrics.md shows in backticks (metric names among them), or None while it
    does not exist."""
    if not METRICS_DOC.is_file():
        return None
    return set(re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)`", METRICS_DOC.read_text()))


def known_series() -> set[str]:
    return operator_series() | server_series() | set(SCRAPE_SERIES)


def to_promql(expr: str) -> str:
    """A Grafana expression with its variables replaced, ready for a PromQL parser."""
    for variable, value in _GRAFANA_DURATIONS.items():
        expr = expr.replace(variable, value)
    return _GRAFANA_VARIABLE.sub("x", expr)


def selected_names(expr: str) -> set[str]:
    """Metric names read by a PromQL expression; raises ValueError if it does not parse."""
    tree = promql_parser.parse(expr)
    names: set[str] = set()

    def visit(node: promql_parser.Expr) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            name = node.name or _name_matcher(node)
            if not name:
                raise ValueError(f"selector without a metric name in {expr!r}")
            names.add(name)

    promql_parser.walk(tree, visit)
    return names


def _name_matcher(node: promql_parser.VectorSelector) -> str | None:
    for matcher in _matchers(node):
        if matcher.name == "__name__":
            return str(matcher.value)
    return None


def _matchers(node: promql_parser.VectorSelector) -> Iterable[promql_parser.Matcher]:
    return list(node.matchers.matchers)
