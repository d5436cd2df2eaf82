"""The Application examples render the chart, so they share the chart tests' helm fixture."""

from tests.chart.conftest import helm, workdir

__all__ = ["helm", "workdir"]
