"""Champion/challenger: the candidate against the model being served, and the verdict.

Pure: figures from predictions, the rules, `decide`, and the report section in its two
sizes (full for `report.json`, compact for the 4 KiB termination message). The models are
loaded and run by `optimize/cli.py`; nothing here touches files or torch.

Two datasets, two rules:

- the *original* validation data the optimizer evaluates on anyway: the champion's accuracy
  minus the candidate's must be at most `maxOriginalDrop`;
- the *holdout* of recent labelled traffic (when one is given): the candidate's accuracy
  minus the champion's must be at least `minImprovement`, on at least `minHoldoutRows` rows.

Anything that keeps a rule from being checked (a champion that cannot be read, a holdout
that is missing or too small, different label sets) fails the comparison with its reason:
a candidate is never accepted blind.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from modelloop_trainer.evaluate import classification_metrics

# Float noise in accuracy differences (e.g. 0.95 - 0.94) must not flip a verdict.
_EPSILON = 1e-9
# The compact form: what the termination message can afford.
MESSAGE_DIGITS = 4
MESSAGE_MAX_LABELS = 20
MESSAGE_MAX_REASON_CHARS = 500
MESSAGE_MAX_REASONS = 16
_MAX_LISTED_LABELS = 5


@dataclass(frozen=True)
class Figures:
    """One model's figures on one dataset. `per_class_recall` has the labels that occur in
    the data (recall of a label with no examples says nothing)."""

    accuracy: float
    macro_f1: float
    samples: int
    per_class_recall: Mapping[str, float] = field(default_factory=dict)

    def to_json(self, *, digits: int = 6, max_labels: int | None = None) -> dict[str, Any]:
        recall = sorted(self.per_class_recall.items())
        if max_labels is not None and len(recall) > max_labels:
            # The worst-recalled labels are the ones a reader needs to see.
            recall = sorted(sorted(recall, key=lambda kv: (kv[1], kv[0]))[:max_labels])
        return {
            "accuracy": round(self.accuracy, digits),
            "macroF1": round(self.macro_f1, digits),
            "samples": self.samples,
            "perClassRecall": {k: round(v, digits) for k, v in recall},
        }


def figures_from_metrics(metrics: Mapping[str, Any]) -> Figures:
    """Figures from `evaluate.classification_metrics` output."""
    per_class = metrics.get("per_class", {})
    return Figures(
        accuracy=float(metrics["accuracy"]),
        macro_f1=float(metrics["f1_macro"]),
        samples=int(metrics["samples"]),
        per_class_recall={
            name: float(row["recall"]) for name, row in per_class.items() if row["support"]
        },
    )


def figures(
    targets: Sequence[int], predictions: Sequence[int], label_names: Sequence[str]
) -> Figures:
    """Figures of class-id predictions against class-id targets (ids index `label_names`)."""
    return figures_from_metrics(
        classification_metrics(list(targets), list(predictions), label_names)
    )


@dataclass(frozen=True)
class Rules:
    min_improvement: float = 0.0
    max_original_drop: float = 0.01
    min_holdout_rows: int = 20

    def to_json(self) -> dict[str, Any]:
        return {
            "minImprovement": self.min_improvement,
            "maxOriginalDrop": self.max_original_drop,
            "minHoldoutRows": self.min_holdout_rows,
        }


@dataclass(frozen=True)
class Side:
    """A model's figures on both datasets; None where it was not (or could not be) run."""

    original: Figures | None = None
    holdout: Figures | None = None


@dataclass(frozen=True)
class Comparison:
    passed: bool
    reasons: list[str]


def decide(
    rules: Rules,
    *,
    champion: Side,
    candidate: Side,
    champion_labels: Sequence[str] | None,
    candidate_labels: Sequence[str],
    holdout_rows: int | None,
    problems: Sequence[str] = (),
) -> Comparison:
    """Check every rule; each failed one gives a reason with its figures.

    `champion_labels` is None when the champion could not be read (then `problems` says
    why). `holdout_rows` is None when no holdout was asked for (only the original-data rule
    applies), otherwise the rows the holdout has. `problems` are failures found while
    loading (champion or holdout unreadable); each is a reason of its own.
    """
    reasons = list(problems)
    if champion_labels is not None and set(champion_labels) != set(candidate_labels):
        reasons.append(label_mismatch(champion_labels, candidate_labels))
    comparable = not reasons

    drop_rule = _original_rule(rules, champion.original, candidate.original)
    if drop_rule is not None:
        reasons.append(drop_rule)
    elif comparable and (champion.original is None or candidate.original is None):
        reasons.append("original data: no figures to compare (not evaluated)")

    if holdout_rows is not None:
        if holdout_rows < rules.min_holdout_rows:
            reasons.append(
                f"holdout has {holdout_rows} rows, minHoldoutRows {rules.min_holdout_rows} "
                "(too few to compare)"
            )
        else:
            gain_rule = _holdout_rule(rules, champion.holdout, candidate.holdout)
            if gain_rule is not None:
                reasons.append(gain_rule)
            elif comparable and (champion.holdout is None or candidate.holdout is None):
                reasons.append("holdout: no figures to compare (not evaluated)")
    return Comparison(passed=not reasons, reasons=reasons)


def label_mismatch(champion_labels: Sequence[str], candidate_labels: Sequence[str]) -> str:
    only_champion = sorted(set(champion_labels) - set(candidate_labels))
    only_candidate = sorted(set(candidate_labels) - set(champion_labels))
    return (
        "labels differ: the champion's and the candidate's label sets must be equal "
        f"(only the champion has {_listed(only_champion)}, only the candidate has "
        f"{_listed(only_candidate)})"
    )


def _original_rule(rules: Rules, champion: Figures | None, candidate: Figures | None) -> str | None:
    if champion is None or candidate is None:
        return None
    drop = champion.accuracy - candidate.accuracy
    if drop <= rules.max_original_drop + _EPSILON:
        return None
    return (
        f"original accuracy {candidate.accuracy:.4f} < champion {champion.accuracy:.4f} - "
        f"maxOriginalDrop {rules.max_original_drop:.4f} (drop {drop:.4f}, "
        f"n={candidate.samples})"
    )


def _holdout_rule(rules: Rules, champion: Figures | None, candidate: Figures | None) -> str | None:
    if champion is None or candidate is None:
        return None
    if candidate.accuracy - champion.accuracy >= rules.min_improvement - _EPSILON:
        return None
    return (
        f"holdout accuracy {candidate.accuracy:.4f} < champion {champion.accuracy:.4f} + "
        f"minImprovement {rules.min_improvement:.4f} (n={candidate.samples})"
    )


def _listed(labels: Sequence[str]) -> str:
    if not labels:
        return "none"
    shown = [label[:30] for label in labels[:_MAX_LISTED_LABELS]]
    more = len(labels) - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")


def comparison_report(
    *,
    champion_name: str,
    champion: Side,
    candidate: Side,
    rules: Rules,
    comparison: Comparison,
) -> dict[str, Any]:
    """The `comparison` section of report.json (figures to 6 decimals, every label)."""
    return {
        "champion": {"name": champion_name, **_side_json(champion)},
        "candidate": _side_json(candidate),
        "rules": rules.to_json(),
        "passed": comparison.passed,
        "reasons": list(comparison.reasons),
    }


def compact_report(section: Mapping[str, Any], *, with_recall: bool = True) -> dict[str, Any]:
    """`section` (from `comparison_report`) for the termination message: figures to 4
    decimals, at most 20 labels of per-class recall (or none), reasons capped in number
    and length (the operator's status schema takes 16 of at most 512 characters)."""

    def figures_json(raw: Any) -> Any:
        if not isinstance(raw, Mapping):
            return raw
        fig = Figures(
            accuracy=float(raw["accuracy"]),
            macro_f1=float(raw["macroF1"]),
            samples=int(raw["samples"]),
            per_class_recall=dict(raw.get("perClassRecall", {})) if with_recall else {},
        )
        out = fig.to_json(digits=MESSAGE_DIGITS, max_labels=MESSAGE_MAX_LABELS)
        if not with_recall:
            out.pop("perClassRecall")
        return out

    def side(raw: Mapping[str, Any]) -> dict[str, Any]:
        return {k: (figures_json(v) if k in ("original", "holdout") else v) for k, v in raw.items()}

    champion = side(section["champion"])
    champion["name"] = str(champion.get("name", ""))[:253]
    return {
        "champion": champion,
        "candidate": side(section["candidate"]),
        "rules": dict(section["rules"]),
        "passed": section["passed"],
        "reasons": [
            _truncate(r, MESSAGE_MAX_REASON_CHARS)
            for r in list(section["reasons"])[:MESSAGE_MAX_REASONS]
        ],
    }


def verdict(section: Mapping[str, Any]) -> str:
    """The comparison in one line, e.g. ``vs bbc-v1 passed: holdout accuracy 0.8700 vs
    0.6500 (n=120), original accuracy 0.9300 vs 0.9400 (n=222)`` (candidate first)."""
    parts = []
    for key in ("holdout", "original"):
        mine, theirs = section["candidate"].get(key), section["champion"].get(key)
        if mine is None or theirs is None:
            continue
        parts.append(
            f"{key} accuracy {mine['accuracy']:.4f} vs {theirs['accuracy']:.4f} "
            f"(n={mine['samples']})"
        )
    name = _truncate(str(section["champion"].get("name") or "champion"), 64)
    result = "passed" if section["passed"] else "failed"
    return f"vs {name} {result}" + (": " + ", ".join(parts) if parts else "")


def _side_json(side: Side) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if side.original is not None:
        out["original"] = side.original.to_json()
    if side.holdout is not None:
        out["holdout"] = side.holdout.to_json()
    return out


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
