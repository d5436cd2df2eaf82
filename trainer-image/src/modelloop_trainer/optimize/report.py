"""The optimization report: baseline vs optimized, ratios, and the acceptance decision."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from modelloop_trainer.optimize.compare import compact_report
from modelloop_trainer.optimize.measure import Measurement


@dataclass(frozen=True)
class Budget:
    max_accuracy_drop: float
    min_speedup: float | None = None


def build_report(
    baseline: Measurement,
    optimized: Measurement,
    budget: Budget,
    techniques: list[dict[str, Any]],
    settings: dict[str, Any],
    comparison: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """`accuracyDrop` is in accuracy points as a fraction (0.01 = 1 point), positive = worse.

    Accepted when the drop is within budget and, if a minimum speedup is set, the batch
    throughput ratio reaches it, and, when the run was compared with a champion
    (`comparison`, from `optimize.compare.comparison_report`), that comparison passed.
    `reasons` says in words why a result was rejected (the comparison's reasons included).
    """
    accuracy_drop = baseline.accuracy - optimized.accuracy
    speedup = optimized.throughput / baseline.throughput if baseline.throughput else 0.0
    latency_speedup = (
        baseline.latency_p50_ms / optimized.latency_p50_ms if optimized.latency_p50_ms else 0.0
    )
    size_ratio = baseline.size_bytes / optimized.size_bytes if optimized.size_bytes else 0.0
    reasons = []
    if accuracy_drop > budget.max_accuracy_drop + 1e-12:
        reasons.append(
            f"accuracy dropped {accuracy_drop * 100:.2f} points "
            f"({baseline.accuracy:.4f} -> {optimized.accuracy:.4f}), budget "
            f"{budget.max_accuracy_drop * 100:.2f}"
        )
    if budget.min_speedup is not None and speedup < budget.min_speedup:
        reasons.append(f"speedup {speedup:.2f}x is below --min-speedup {budget.min_speedup}x")
    if comparison is not None and not comparison["passed"]:
        reasons.extend(f"champion comparison: {r}" for r in comparison["reasons"])
    report: dict[str, Any] = {
        "v": 1,
        "accepted": not reasons,
        "reasons": reasons,
        "baseline": baseline.to_json(),
        "optimized": optimized.to_json(),
        "deltas": {
            "sizeBytes": optimized.size_bytes - baseline.size_bytes,
            "latencyP50Ms": round(optimized.latency_p50_ms - baseline.latency_p50_ms, 3),
            "latencyP99Ms": round(optimized.latency_p99_ms - baseline.latency_p99_ms, 3),
            "throughput": round(optimized.throughput - baseline.throughput, 3),
            "accuracy": round(optimized.accuracy - baseline.accuracy, 6),
            "f1_macro": round(optimized.f1_macro - baseline.f1_macro, 6),
        },
        "sizeRatio": round(size_ratio, 4),
        "speedup": round(speedup, 4),
        "latencySpeedup": round(latency_speedup, 4),
        "accuracyDrop": round(accuracy_drop, 6),
        "budget": {"maxAccuracyDrop": budget.max_accuracy_drop, "minSpeedup": budget.min_speedup},
        "techniques": techniques,
        "settings": settings,
    }
    if comparison is not None:
        report["comparison"] = comparison
    return report


def summary_report(report: dict[str, Any], *, with_recall: bool = True) -> dict[str, Any]:
    """The part of the report that goes into the (4 KiB) termination message; the
    comparison in its compact form (`with_recall=False` leaves out per-class recall)."""
    keys = ("baseline", "optimized", "sizeRatio", "speedup", "accuracyDrop")
    summary = {k: report[k] for k in keys}
    if "comparison" in report:
        summary["comparison"] = compact_report(report["comparison"], with_recall=with_recall)
    return summary
