"""The reference profile: what the model's predictions looked like on validation data.

The server compares live traffic against it to detect drift with the population stability
index (PSI), for two distributions: the predicted class, and the confidence (the top softmax
probability). Both the trainer (which writes the profile) and the server (which reads it and
bins live predictions) use the functions here, so the bins on both sides are the same by
construction rather than by convention.

Confidence bins are quantile bins of the reference confidences (deciles by default), not
equal-width bins: a good classifier puts most of its confidences in [0.9, 1], so equal-width
bins would leave nearly all reference mass in one bin and PSI would see little. Quantile
bins give each bin about the same reference mass, the usual set-up for PSI.
"""

from __future__ import annotations

import bisect
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from modelloop_trainer.errors import ArtifactError

PROFILE_VERSION = 1
DEFAULT_CONFIDENCE_BINS = 10
# Fractions are floored at this value before PSI so that an empty bin gives a large but finite
# contribution instead of an infinite one (the usual convention for PSI).
PSI_EPSILON = 1e-4


@dataclass(frozen=True)
class Histogram:
    """Counts and fractions over `edges` (len(edges) == len(counts) + 1)."""

    edges: tuple[float, ...]
    counts: tuple[int, ...]

    @property
    def fractions(self) -> tuple[float, ...]:
        total = sum(self.counts)
        return tuple(c / total if total else 0.0 for c in self.counts)


@dataclass(frozen=True)
class ReferenceProfile:
    """Predicted-class and confidence distributions of a model on its validation set."""

    labels: tuple[str, ...]
    samples: int
    class_counts: tuple[int, ...]
    confidence: Histogram
    confidence_mean: float
    confidence_std: float
    confidence_quantiles: dict[str, float]
    accuracy: float | None = None

    @property
    def class_fractions(self) -> tuple[float, ...]:
        return tuple(c / self.samples if self.samples else 0.0 for c in self.class_counts)

    def confidence_bin(self, confidence: float) -> int:
        """The histogram bin a live confidence falls in (same rule as the reference)."""
        return confidence_bin(self.confidence.edges, confidence)

    def to_json(self) -> dict[str, Any]:
        return {
            "v": PROFILE_VERSION,
            "samples": self.samples,
            "labels": list(self.labels),
            "predictedClass": {
                "counts": list(self.class_counts),
                "fractions": _rounded(self.class_fractions),
            },
            "confidence": {
                "mean": round(self.confidence_mean, 6),
                "std": round(self.confidence_std, 6),
                "quantiles": {k: round(v, 6) for k, v in self.confidence_quantiles.items()},
                "histogram": {
                    "edges": list(self.confidence.edges),  # exact: the server bins by them
                    "counts": list(self.confidence.counts),
                    "fractions": _rounded(self.confidence.fractions),
                },
            },
            "validation": {"accuracy": self.accuracy},
        }

    @classmethod
    def from_json(
        cls, data: dict[str, Any], *, source: str = "reference profile"
    ) -> ReferenceProfile:
        try:
            if data.get("v") != PROFILE_VERSION:
                raise ArtifactError(
                    f"{source}: unsupported profile version {data.get('v')!r} "
                    f"(this reader understands {PROFILE_VERSION})"
                )
            labels = tuple(str(x) for x in data["labels"])
            class_counts = tuple(int(x) for x in data["predictedClass"]["counts"])
            conf = data["confidence"]
            hist = conf["histogram"]
            histogram = Histogram(
                edges=tuple(float(x) for x in hist["edges"]),
                counts=tuple(int(x) for x in hist["counts"]),
            )
            accuracy = data.get("validation", {}).get("accuracy")
            profile = cls(
                labels=labels,
                samples=int(data["samples"]),
                class_counts=class_counts,
                confidence=histogram,
                confidence_mean=float(conf["mean"]),
                confidence_std=float(conf["std"]),
                confidence_quantiles={k: float(v) for k, v in conf["quantiles"].items()},
                accuracy=None if accuracy is None else float(accuracy),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"{source}: malformed ({exc!r})") from exc
        if len(class_counts) != len(labels):
            raise ArtifactError(
                f"{source}: {len(class_counts)} class counts for {len(labels)} labels"
            )
        if len(histogram.edges) != len(histogram.counts) + 1:
            raise ArtifactError(f"{source}: histogram edges and counts do not match")
        return profile

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> ReferenceProfile:
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError as exc:
            raise ArtifactError(f"reference profile not found: {path}") from exc
        except json.JSONDecodeError as exc:
            raise ArtifactError(f"reference profile {path} is not valid JSON: {exc}") from exc
        return cls.from_json(data, source=str(path))


def build_reference_profile(
    probabilities: torch.Tensor,
    labels: Sequence[str],
    *,
    targets: torch.Tensor | None = None,
    bins: int = DEFAULT_CONFIDENCE_BINS,
) -> ReferenceProfile:
    """Summarise softmax outputs `probabilities` (N x K) into a profile.

    `targets`, when given, adds the validation accuracy (for humans reading the profile; drift
    detection does not need it).
    """
    if probabilities.ndim != 2 or probabilities.shape[1] != len(labels):
        raise ValueError(
            f"probabilities of shape {tuple(probabilities.shape)} do not match {len(labels)} labels"
        )
    if probabilities.shape[0] == 0:
        raise ValueError("cannot build a reference profile from zero predictions")
    probs = probabilities.detach().to(torch.float64).cpu()
    confidence, predicted = probs.max(dim=1)
    class_counts = torch.bincount(predicted, minlength=len(labels)).tolist()
    edges = quantile_edges(confidence.tolist(), bins)
    counts = [0] * (len(edges) - 1)
    for c in confidence.tolist():
        counts[confidence_bin(edges, c)] += 1
    quantile_points = {"p05": 0.05, "p25": 0.25, "p50": 0.5, "p75": 0.75, "p95": 0.95}
    points = torch.tensor(list(quantile_points.values()), dtype=torch.float64)
    q = torch.quantile(confidence, points).tolist()
    accuracy = None
    if targets is not None:
        accuracy = float((predicted == targets.cpu()).double().mean())
    return ReferenceProfile(
        labels=tuple(labels),
        samples=int(probs.shape[0]),
        class_counts=tuple(int(c) for c in class_counts),
        confidence=Histogram(edges=tuple(edges), counts=tuple(counts)),
        confidence_mean=float(confidence.mean()),
        confidence_std=float(confidence.std(unbiased=False)),
        confidence_quantiles=dict(zip(quantile_points, q, strict=True)),
        accuracy=accuracy,
    )


def quantile_edges(values: Sequence[float], bins: int) -> list[float]:
    """Bin edges from 0 to 1 with interior edges at the quantiles of `values`.

    Ties (many confidences of exactly 1.0, say) collapse into fewer, distinct edges; there is
    always at least one bin, [0, 1].
    """
    if bins < 1:
        raise ValueError("bins must be >= 1")
    ordered = sorted(values)
    interior: list[float] = []
    for i in range(1, bins):
        v = ordered[min(len(ordered) - 1, (i * len(ordered)) // bins)]
        if 0.0 < v < 1.0 and (not interior or v > interior[-1]):
            interior.append(v)
    return [0.0, *interior, 1.0]


def confidence_bin(edges: Sequence[float], confidence: float) -> int:
    """Index of the bin with edges[i] <= confidence < edges[i+1]; 1.0 goes in the last bin."""
    i = bisect.bisect_right(edges, confidence) - 1
    return min(max(i, 0), len(edges) - 2)


def population_stability_index(
    expected: Sequence[float], actual: Sequence[float], *, epsilon: float = PSI_EPSILON
) -> float:
    """PSI = sum((a - e) * ln(a / e)) over bins, both given as fractions summing to 1.

    Rule of thumb: < 0.1 stable, 0.1-0.25 a moderate shift, > 0.25 a significant shift.
    """
    if len(expected) != len(actual):
        raise ValueError(f"PSI needs equal bin counts, got {len(expected)} and {len(actual)}")
    total = 0.0
    for e, a in zip(expected, actual, strict=True):
        e_, a_ = max(e, epsilon), max(a, epsilon)
        total += (a_ - e_) * math.log(a_ / e_)
    return total


def _rounded(values: Sequence[float]) -> list[float]:
    return [round(v, 6) for v in values]
