"""Drift of live predictions against the model's reference profile.

Two distributions are compared with the population stability index (PSI), both binned exactly
as the trainer binned the validation set (`modelloop_trainer.profile`, one definition for
both sides):

- `class`: the predicted class;
- `confidence`: the top softmax probability, in the profile's quantile bins;
- `input`: the inputs themselves: each text's pooled encoder embedding, projected on the
  profile's fixed principal components and binned per component (the profile's `inputs`
  section); the figure is the mean PSI over components. It rises on out-of-domain text even
  when the predicted classes do not move. A profile without that section has no input score.

The live side is a sliding window over the most recent predictions (`PredictionWindow`), so
the score follows the traffic instead of averaging over the server's whole life. A PSI over a
handful of samples is noise; the number of samples behind each score is exported next to it
so that the monitor can refuse to judge a thin window.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from modelloop_trainer.profile import ReferenceProfile, input_psi, population_stability_index

__all__ = ["DriftScores", "WindowCounts", "drift_scores", "fractions"]


@dataclass(frozen=True)
class WindowCounts:
    """How many predictions in the window fell in each class and each confidence bin."""

    classes: tuple[int, ...]
    confidence_bins: tuple[int, ...]
    input_bins: tuple[tuple[int, ...], ...] = ()
    """Per input component, the window's count in each bin (empty without an input profile)."""

    @property
    def samples(self) -> int:
        return sum(self.classes)

    def __post_init__(self) -> None:
        if sum(self.confidence_bins) != sum(self.classes):
            raise ValueError(
                f"window counts disagree: {sum(self.classes)} class samples, "
                f"{sum(self.confidence_bins)} confidence samples"
            )
        if any(c < 0 for c in (*self.classes, *self.confidence_bins)):
            raise ValueError("window counts cannot be negative")
        if any(sum(component) != sum(self.classes) for component in self.input_bins):
            raise ValueError("window input counts disagree with the class counts")


@dataclass(frozen=True)
class DriftScores:
    """PSI of each distribution over `samples` predictions; None when the window is empty."""

    samples: int
    class_psi: float | None
    confidence_psi: float | None
    input_psi: float | None = None


def fractions(counts: Sequence[int]) -> tuple[float, ...]:
    """Counts as fractions of their total (all zeros for an empty window)."""
    total = sum(counts)
    return tuple(c / total if total else 0.0 for c in counts)


def drift_scores(profile: ReferenceProfile, window: WindowCounts) -> DriftScores:
    """PSI of the window's class and confidence distributions against `profile`.

    An empty window has no distribution, so no score: None, never 0 (which would read as
    "no drift" to a monitor).
    """
    if len(window.classes) != len(profile.labels):
        raise ValueError(
            f"window has {len(window.classes)} classes, profile has {len(profile.labels)}"
        )
    if len(window.confidence_bins) != len(profile.confidence.counts):
        raise ValueError(
            f"window has {len(window.confidence_bins)} confidence bins, "
            f"profile has {len(profile.confidence.counts)}"
        )
    if profile.inputs is not None and window.input_bins and (
        tuple(len(c) for c in window.input_bins) != profile.inputs.bin_counts
    ):
        raise ValueError(
            f"window has input bins {[len(c) for c in window.input_bins]}, "
            f"profile has {list(profile.inputs.bin_counts)}"
        )
    if window.samples == 0:
        return DriftScores(samples=0, class_psi=None, confidence_psi=None)
    inputs = None
    if profile.inputs is not None and window.input_bins:
        inputs = input_psi(profile.inputs, window.input_bins)
    return DriftScores(
        samples=window.samples,
        input_psi=inputs,
        class_psi=population_stability_index(
            profile.class_fractions, fractions(window.classes)
        ),
        confidence_psi=population_stability_index(
            profile.confidence.fractions, fractions(window.confidence_bins)
        ),
    )
