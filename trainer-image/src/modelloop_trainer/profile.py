"""The reference profile: what a served model's drift is measured against.

The server compares live traffic against it with the population stability index (PSI), for
three distributions: the class mix, the confidence (the top softmax probability) and the
inputs (pooled encoder embeddings, `inputs`). The class mix and the inputs describe the data
the model was trained for (the true labels and a sample of the texts of its training and
validation data), so after a retrain on production data the reference moves with that data,
not with the candidate's own predictions; the confidence describes the model on held-out
validation data, the only place its confidences are honest. Both the trainer (which writes
the profile) and the server (which reads it and bins live traffic) use the functions here, so
the bins on both sides are the same by construction rather than by convention.

Confidence bins are quantile bins of the reference confidences (deciles by default), not
equal-width bins: a good classifier puts most of its confidences in [0.9, 1], so equal-width
bins would leave nearly all reference mass in one bin and PSI would see little. Quantile
bins give each bin about the same reference mass, the usual set-up for PSI.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import json
import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from modelloop_trainer.errors import ArtifactError

PROFILE_VERSION = 2
# Version 1 profiles (class mix from the model's validation predictions) still load.
READABLE_VERSIONS = (1, 2)
# Where the class section comes from: the data's true labels (v2) or the model's predictions.
CLASS_SOURCE_LABELS = "labels"
CLASS_SOURCE_PREDICTIONS = "predictions"
# Texts of the training data the input section is built from, at most (a seeded sample).
REFERENCE_MAX_TEXTS = 400
DEFAULT_CONFIDENCE_BINS = 10
# Fractions are floored at this value before PSI so that an empty bin gives a large but finite
# contribution instead of an infinite one (the usual convention for PSI).
PSI_EPSILON = 1e-4
DEFAULT_INPUT_COMPONENTS = 8
DEFAULT_INPUT_BINS = 10
# Significant digits stored for the projection (mean and components) and the input bin edges.
# The validation projections are binned with the *rounded* values, so what the server
# computes from the stored numbers is exactly what the reference counts describe.
_PROJECTION_DIGITS = 4
_EDGE_DIGITS = 6
POOLING = "mean of the last hidden state over non-padding tokens, float32"


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
    """Class mix, confidence and input distributions a served model is compared with.

    `samples` counts the validation predictions behind the confidence histogram;
    `class_counts` may count other rows (the training data's labels, `class_source`).
    """

    labels: tuple[str, ...]
    samples: int
    class_counts: tuple[int, ...]
    confidence: Histogram
    confidence_mean: float
    confidence_std: float
    confidence_quantiles: dict[str, float]
    accuracy: float | None = None
    inputs: InputProfile | None = None
    class_source: str = CLASS_SOURCE_PREDICTIONS

    @property
    def class_fractions(self) -> tuple[float, ...]:
        total = sum(self.class_counts)
        return tuple(c / total if total else 0.0 for c in self.class_counts)

    def confidence_bin(self, confidence: float) -> int:
        """The histogram bin a live confidence falls in (same rule as the reference)."""
        return confidence_bin(self.confidence.edges, confidence)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "v": PROFILE_VERSION,
            "samples": self.samples,
            "labels": list(self.labels),
            "classes": {
                "source": self.class_source,
                "samples": sum(self.class_counts),
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
        if self.inputs is not None:
            data["inputs"] = self.inputs.to_json()
        return data

    @classmethod
    def from_json(
        cls, data: dict[str, Any], *, source: str = "reference profile"
    ) -> ReferenceProfile:
        try:
            version = data.get("v")
            if version not in READABLE_VERSIONS:
                raise ArtifactError(
                    f"{source}: unsupported profile version {version!r} "
                    f"(this reader understands {', '.join(map(str, READABLE_VERSIONS))})"
                )
            labels = tuple(str(x) for x in data["labels"])
            classes = data["predictedClass"] if version == 1 else data["classes"]
            class_counts = tuple(int(x) for x in classes["counts"])
            class_source = (
                CLASS_SOURCE_PREDICTIONS if version == 1 else str(classes["source"])
            )
            if class_source not in (CLASS_SOURCE_LABELS, CLASS_SOURCE_PREDICTIONS):
                raise ValueError(f"class source {class_source!r}")
            conf = data["confidence"]
            hist = conf["histogram"]
            histogram = Histogram(
                edges=tuple(float(x) for x in hist["edges"]),
                counts=tuple(int(x) for x in hist["counts"]),
            )
            accuracy = data.get("validation", {}).get("accuracy")
            raw_inputs = data.get("inputs")
            inputs = None if raw_inputs is None else InputProfile.from_json(raw_inputs)
            profile = cls(
                labels=labels,
                samples=int(data["samples"]),
                class_counts=class_counts,
                confidence=histogram,
                confidence_mean=float(conf["mean"]),
                confidence_std=float(conf["std"]),
                confidence_quantiles={k: float(v) for k, v in conf["quantiles"].items()},
                accuracy=None if accuracy is None else float(accuracy),
                inputs=inputs,
                class_source=class_source,
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
        path.write_text(_dumps(self.to_json()))

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
    embeddings: torch.Tensor | None = None,
    data_labels: Sequence[int] | None = None,
    input_components: int = DEFAULT_INPUT_COMPONENTS,
    input_bins: int = DEFAULT_INPUT_BINS,
) -> ReferenceProfile:
    """Summarise validation softmax outputs `probabilities` (N x K) into a profile.

    `targets`, when given, adds the validation accuracy (for humans reading the profile; drift
    detection does not need it). `data_labels` (label ids of the data the model was trained
    for), when given, is the class section; without it the predicted classes are.
    `embeddings` (M x d, pooled embeddings of the texts the input section describes), when
    given, adds the input section (`build_input_profile`).
    """
    if probabilities.ndim != 2 or probabilities.shape[1] != len(labels):
        raise ValueError(
            f"probabilities of shape {tuple(probabilities.shape)} do not match {len(labels)} labels"
        )
    if probabilities.shape[0] == 0:
        raise ValueError("cannot build a reference profile from zero predictions")
    probs = probabilities.detach().to(torch.float64).cpu()
    confidence, predicted = probs.max(dim=1)
    class_source = CLASS_SOURCE_PREDICTIONS
    class_ids = predicted
    if data_labels is not None:
        if not data_labels:
            raise ValueError("cannot build the class section from zero labels")
        if min(data_labels) < 0 or max(data_labels) >= len(labels):
            raise ValueError(f"data label ids must be in [0, {len(labels)})")
        class_source, class_ids = CLASS_SOURCE_LABELS, torch.tensor(list(data_labels))
    class_counts = torch.bincount(class_ids, minlength=len(labels)).tolist()
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
    inputs = None
    # Two texts are the fewest a spread (and so a projection) can be estimated from.
    if embeddings is not None and embeddings.shape[0] >= 2:
        if embeddings.ndim != 2:
            raise ValueError(f"embeddings of shape {tuple(embeddings.shape)} are not N x d")
        inputs = build_input_profile(embeddings, components=input_components, bins=input_bins)
    return ReferenceProfile(
        labels=tuple(labels),
        samples=int(probs.shape[0]),
        class_counts=tuple(int(c) for c in class_counts),
        confidence=Histogram(edges=tuple(edges), counts=tuple(counts)),
        confidence_mean=float(confidence.mean()),
        confidence_std=float(confidence.std(unbiased=False)),
        confidence_quantiles=dict(zip(quantile_points, q, strict=True)),
        accuracy=accuracy,
        inputs=inputs,
        class_source=class_source,
    )


def reference_sample(count: int, *, limit: int = REFERENCE_MAX_TEXTS, seed: int = 0) -> list[int]:
    """Indices (ascending) of the at most `limit` of `count` rows the input section describes:
    all of them, or a seeded uniform sample, so the trainer and the optimizer pick the same."""
    if count < 0 or limit < 1:
        raise ValueError("count must be >= 0 and limit >= 1")
    if count <= limit:
        return list(range(count))
    return sorted(random.Random(seed).sample(range(count), limit))


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


@dataclass(frozen=True)
class InputProfile:
    """Where the validation texts lie in the model's embedding space, in PSI-ready bins.

    `mean` (d) and `components` (k x d, orthonormal rows) define the projection
    `(embedding - mean) @ components.T`; component j's values are cut at `edges[j]` (interior
    edges, ascending; the outer bins are open-ended, so an out-of-range value still has a
    bin), and `counts[j]` (len(edges[j]) + 1) are the validation projections in each bin.
    """

    mean: tuple[float, ...]
    components: tuple[tuple[float, ...], ...]
    edges: tuple[tuple[float, ...], ...]
    counts: tuple[tuple[int, ...], ...]
    samples: int

    @property
    def dim(self) -> int:
        return len(self.mean)

    @property
    def bin_counts(self) -> tuple[int, ...]:
        """Number of bins of each component (ties in the projections can merge bins)."""
        return tuple(len(c) for c in self.counts)

    @property
    def fractions(self) -> tuple[tuple[float, ...], ...]:
        return tuple(tuple(n / self.samples if self.samples else 0.0 for n in c)
                     for c in self.counts)

    @functools.cached_property
    def _tensors(self) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        mean = torch.tensor(self.mean, dtype=torch.float64)
        components = torch.tensor(self.components, dtype=torch.float64).reshape(-1, self.dim)
        edges = [torch.tensor(e, dtype=torch.float64) for e in self.edges]
        return mean, components, edges

    def project(self, embeddings: torch.Tensor) -> torch.Tensor:
        """N x d embeddings -> N x k projections (float64, CPU)."""
        mean, components, _ = self._tensors
        if embeddings.ndim != 2 or embeddings.shape[1] != self.dim:
            raise ValueError(
                f"embeddings of shape {tuple(embeddings.shape)} do not match the input "
                f"profile's dimension {self.dim}"
            )
        x = embeddings.detach().to(device="cpu", dtype=torch.float64)
        return (x - mean) @ components.T

    def bins(self, embeddings: torch.Tensor) -> list[tuple[int, ...]]:
        """Per text, the bin of each of its k projections (same rule as the reference)."""
        return input_bins(self, embeddings)

    def to_json(self) -> dict[str, Any]:
        return {
            "pooling": POOLING,
            "samples": self.samples,
            "dim": self.dim,
            "projection": {"mean": list(self.mean), "components": [list(c) for c in
                                                                  self.components]},
            "histograms": [
                {"edges": list(e), "counts": list(c), "fractions": _rounded(f)}
                for e, c, f in zip(self.edges, self.counts, self.fractions, strict=True)
            ],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> InputProfile:
        """Raises KeyError/TypeError/ValueError on malformed data (the caller names the file)."""
        mean = tuple(float(x) for x in data["projection"]["mean"])
        components = tuple(
            tuple(float(x) for x in row) for row in data["projection"]["components"]
        )
        histograms = data["histograms"]
        edges = tuple(tuple(float(x) for x in h["edges"]) for h in histograms)
        counts = tuple(tuple(int(x) for x in h["counts"]) for h in histograms)
        profile = cls(
            mean=mean, components=components, edges=edges, counts=counts,
            samples=int(data["samples"]),
        )
        if not components or any(len(row) != len(mean) for row in components):
            raise ValueError(f"input projection is not k x {len(mean)}")
        if len(histograms) != len(components):
            raise ValueError(f"{len(histograms)} input histograms for {len(components)} components")
        for e, c in zip(edges, counts, strict=True):
            if len(c) != len(e) + 1 or any(b <= a for a, b in itertools.pairwise(e)):
                raise ValueError("input histogram edges must ascend, with one bin more than edges")
            if sum(c) != profile.samples:
                raise ValueError("input histogram counts do not add up to the samples")
        return profile


def build_input_profile(
    embeddings: torch.Tensor,
    *,
    components: int = DEFAULT_INPUT_COMPONENTS,
    bins: int = DEFAULT_INPUT_BINS,
) -> InputProfile:
    """The input section from the validation texts' pooled embeddings (N x d).

    PCA (in float64) keeps the top `components` directions (fewer when N - 1 or d is
    smaller); each projection is cut at its own quantiles into `bins` bins.
    """
    if components < 1 or bins < 1:
        raise ValueError("components and bins must be >= 1")
    if embeddings.ndim != 2 or embeddings.shape[0] < 2 or embeddings.shape[1] < 1:
        raise ValueError(
            f"an input profile needs N >= 2 embeddings (N x d), got {tuple(embeddings.shape)}"
        )
    x = embeddings.detach().to(device="cpu", dtype=torch.float64)
    n, d = x.shape
    mean = x.mean(dim=0)
    _, _, vh = torch.linalg.svd(x - mean, full_matrices=False)
    k = min(components, d, n - 1)
    top = vh[:k]
    # A component's sign is arbitrary; fix it (largest entry positive) so rebuilding the same
    # profile gives the same numbers.
    signs = torch.sign(top.gather(1, top.abs().argmax(dim=1, keepdim=True)))
    top = top * torch.where(signs == 0, torch.ones_like(signs), signs)
    rounded_mean = tuple(_significant(v, _PROJECTION_DIGITS) for v in mean.tolist())
    rounded_components = tuple(
        tuple(_significant(v, _PROJECTION_DIGITS) for v in row) for row in top.tolist()
    )
    unbinned = InputProfile(
        mean=rounded_mean, components=rounded_components, edges=((),) * k,
        counts=((n,),) * k, samples=n,
    )
    projections = unbinned.project(x)
    edges = tuple(
        tuple(open_quantile_edges(projections[:, j].tolist(), bins)) for j in range(k)
    )
    binned = InputProfile(
        mean=rounded_mean, components=rounded_components, edges=edges,
        counts=tuple((0,) * (len(e) + 1) for e in edges), samples=n,
    )
    return InputProfile(
        mean=rounded_mean,
        components=rounded_components,
        edges=edges,
        counts=bin_counts(binned, binned.bins(x)),
        samples=n,
    )


def open_quantile_edges(values: Sequence[float], bins: int) -> list[float]:
    """The `bins - 1` interior edges at the quantiles of `values` (rounded, ties collapsed).

    Each edge lies halfway between the two reference values around its quantile, so no
    reference value sits on (or, after rounding, within a rounding error of) an edge: the
    reference counts stay what the server reproduces even when its forward pass differs
    from the trainer's in the last float bits (another batch, other padding). With
    `input_bin`'s rule each of the `bins` bins holds about the same share of `values`; the
    outer bins are open-ended.
    """
    if bins < 1:
        raise ValueError("bins must be >= 1")
    ordered = sorted(values)
    edges: list[float] = []
    for i in range(1, bins):
        upper = max(1, min(len(ordered) - 1, (i * len(ordered)) // bins))
        if upper >= len(ordered):
            break
        v = _significant((ordered[upper - 1] + ordered[upper]) / 2, _EDGE_DIGITS)
        if v > ordered[0] and (not edges or v > edges[-1]):
            edges.append(v)
    return edges


def input_bin(edges: Sequence[float], value: float) -> int:
    """Index of the bin of `value`: 0 below edges[0], i for edges[i-1] <= value < edges[i],
    len(edges) at or above edges[-1]."""
    return bisect.bisect_right(edges, value)


def input_bins(profile: InputProfile, embeddings: torch.Tensor) -> list[tuple[int, ...]]:
    """Per row of `embeddings` (N x d), the tuple of its k bin indices."""
    _, _, edges = profile._tensors
    projections = profile.project(embeddings)
    if projections.shape[0] == 0:
        return []
    # searchsorted(right=True) is bisect_right, i.e. `input_bin`, for a whole column at once.
    columns = [
        torch.searchsorted(e, projections[:, j].contiguous(), right=True)
        for j, e in enumerate(edges)
    ]
    return [tuple(int(v) for v in row) for row in torch.stack(columns, dim=1).tolist()]


def bin_counts(profile: InputProfile,
               binned: Sequence[Sequence[int]]) -> tuple[tuple[int, ...], ...]:
    """Per component, how many of `binned` (from `input_bins`) fall in each bin."""
    counts = [[0] * n for n in profile.bin_counts]
    for row in binned:
        if len(row) != len(counts):
            raise ValueError(f"{len(row)} input bins for {len(counts)} components")
        for j, b in enumerate(row):
            counts[j][b] += 1
    return tuple(tuple(c) for c in counts)


def component_psis(profile: InputProfile, counts: Sequence[Sequence[int]]) -> list[float] | None:
    """PSI of each component's window counts against the reference; None for no samples."""
    if len(counts) != len(profile.counts) or any(
        len(c) != len(r) for c, r in zip(counts, profile.counts, strict=False)
    ):
        raise ValueError(
            f"window input bins {[len(c) for c in counts]} do not match the profile's "
            f"{list(profile.bin_counts)}"
        )
    if not counts or sum(counts[0]) == 0:
        return None
    return [
        population_stability_index(ref, tuple(n / sum(c) for n in c))
        for ref, c in zip(profile.fractions, counts, strict=True)
    ]


def input_psi(profile: InputProfile, counts: Sequence[Sequence[int]]) -> float | None:
    """One input-drift figure for a window's per-component counts; None for an empty window.

    The mean over components, not the max: on BBC News vs Rotten Tomatoes (docs/metrics.md)
    both separate, but the max of k noisy PSIs inflates in-domain noise the most.
    """
    psis = component_psis(profile, counts)
    if psis is None:
        return None
    return sum(psis) / len(psis)


def _significant(value: float, digits: int) -> float:
    return float(f"{value:.{digits}g}")


_NUMBER_LIST = re.compile(r"\[\s*(-?[0-9][-+0-9.eE]*(?:,\s*-?[0-9][-+0-9.eE]*)*)\s*\]")


def _dumps(data: dict[str, Any]) -> str:
    """Indented JSON with each list of numbers on one line (the input projection is a few
    thousand numbers; one per line would triple the file)."""
    text = json.dumps(data, indent=2)
    return _NUMBER_LIST.sub(
        lambda m: "[" + ", ".join(part.strip() for part in m.group(1).split(",")) + "]", text
    ) + "\n"
