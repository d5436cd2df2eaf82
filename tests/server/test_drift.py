"""Drift scores and the shared sliding window they are computed on."""

from __future__ import annotations

import math
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from modelloop_server.drift import DriftScores, WindowCounts, drift_scores, fractions
from modelloop_server.window import Observation, PredictionWindow
from modelloop_trainer.profile import Histogram, ReferenceProfile


def profile(class_counts: tuple[int, ...], bin_counts: tuple[int, ...]) -> ReferenceProfile:
    edges = tuple(i / len(bin_counts) for i in range(len(bin_counts) + 1))
    return ReferenceProfile(
        labels=tuple(f"c{i}" for i in range(len(class_counts))),
        samples=sum(class_counts),
        class_counts=class_counts,
        confidence=Histogram(edges=edges, counts=bin_counts),
        confidence_mean=0.5,
        confidence_std=0.1,
        confidence_quantiles={},
    )


REFERENCE = profile((50, 30, 20), (25, 25, 25, 25))


def psi(expected: list[float], actual: list[float]) -> float:
    """PSI written out independently of the code under test (epsilon 1e-4)."""
    total = 0.0
    for e, a in zip(expected, actual, strict=True):
        e, a = max(e, 1e-4), max(a, 1e-4)
        total += (a - e) * math.log(a / e)
    return total


class TestDriftScores:
    def test_same_distribution_scores_zero(self) -> None:
        scores = drift_scores(REFERENCE, WindowCounts((5, 3, 2), (1, 3, 3, 3)))
        assert scores.samples == 10
        assert scores.class_psi == pytest.approx(0.0, abs=1e-12)

    def test_matches_the_psi_formula(self) -> None:
        scores = drift_scores(REFERENCE, WindowCounts((10, 30, 60), (70, 10, 10, 10)))
        assert scores.class_psi == pytest.approx(psi([0.5, 0.3, 0.2], [0.1, 0.3, 0.6]))
        assert scores.confidence_psi == pytest.approx(
            psi([0.25] * 4, [0.7, 0.1, 0.1, 0.1])
        )

    def test_known_value(self) -> None:
        # (0.1-0.5)ln(0.1/0.5) + 0 + (0.6-0.2)ln(0.6/0.2) = 0.4 ln 5 + 0.4 ln 3
        scores = drift_scores(REFERENCE, WindowCounts((1, 3, 6), (4, 2, 2, 2)))
        assert scores.class_psi == pytest.approx(0.4 * math.log(5) + 0.4 * math.log(3))

    def test_a_class_missing_from_the_window_is_large_but_finite(self) -> None:
        scores = drift_scores(REFERENCE, WindowCounts((0, 0, 10), (10, 0, 0, 0)))
        assert scores.class_psi is not None and scores.confidence_psi is not None
        assert math.isfinite(scores.class_psi) and scores.class_psi > 2.0
        assert math.isfinite(scores.confidence_psi) and scores.confidence_psi > 2.0

    def test_more_shift_scores_higher(self) -> None:
        mild = drift_scores(REFERENCE, WindowCounts((45, 30, 25), (25, 25, 25, 25)))
        strong = drift_scores(REFERENCE, WindowCounts((20, 30, 50), (25, 25, 25, 25)))
        assert mild.class_psi is not None and strong.class_psi is not None
        assert 0 < mild.class_psi < 0.1 < 0.25 < strong.class_psi

    def test_empty_window_has_no_score_rather_than_zero(self) -> None:
        assert drift_scores(REFERENCE, WindowCounts((0, 0, 0), (0, 0, 0, 0))) == DriftScores(
            samples=0, class_psi=None, confidence_psi=None
        )

    @pytest.mark.parametrize(
        "window",
        [WindowCounts((1, 1), (1, 1, 0, 0)), WindowCounts((1, 1, 0), (1, 1, 0))],
    )
    def test_shape_mismatch_with_the_profile_is_an_error(self, window: WindowCounts) -> None:
        with pytest.raises(ValueError, match="profile has"):
            drift_scores(REFERENCE, window)

    def test_inconsistent_counts_are_rejected(self) -> None:
        with pytest.raises(ValueError, match="disagree"):
            WindowCounts((1, 2), (1, 1))
        with pytest.raises(ValueError, match="negative"):
            WindowCounts((-1, 2), (1, 0))

    @settings(max_examples=200, deadline=None)
    @given(st.lists(st.integers(0, 1000), min_size=3, max_size=3).filter(lambda c: sum(c) > 0))
    def test_psi_is_non_negative_and_finite(self, classes: list[int]) -> None:
        n = sum(classes)
        scores = drift_scores(REFERENCE, WindowCounts(tuple(classes), (n, 0, 0, 0)))
        assert scores.class_psi is not None
        assert scores.class_psi >= -1e-12 and math.isfinite(scores.class_psi)
        assert scores.samples == n

    def test_fractions(self) -> None:
        assert fractions([1, 3]) == (0.25, 0.75)
        assert fractions([0, 0]) == (0.0, 0.0)


def window(path: Path, **kwargs: float) -> PredictionWindow:
    return PredictionWindow(path, num_classes=3, num_confidence_bins=4, **kwargs)  # type: ignore[arg-type]


def obs(*classes: int, bin_: int = 0) -> list[Observation]:
    return [Observation(c, bin_) for c in classes]


class TestPredictionWindow:
    def test_counts_classes_and_bins(self, tmp_path: Path) -> None:
        w = window(tmp_path / "w.sqlite")
        counts = w.record([Observation(0, 3), Observation(2, 1), Observation(2, 3)], now=100.0)
        assert counts == WindowCounts((1, 0, 2), (0, 1, 0, 2))

    def test_keeps_only_the_most_recent_max_samples(self, tmp_path: Path) -> None:
        w = window(tmp_path / "w.sqlite", max_samples=3)
        w.record(obs(0, 0), now=1.0)
        counts = w.record(obs(1, 2, 2), now=2.0)
        assert counts.classes == (0, 1, 2)
        counts = w.record(obs(0), now=3.0)
        assert counts.classes == (1, 0, 2)

    def test_forgets_predictions_older_than_max_age(self, tmp_path: Path) -> None:
        w = window(tmp_path / "w.sqlite", max_age_s=10.0)
        w.record(obs(0, 0), now=100.0)
        w.record(obs(1), now=105.0)
        assert w.counts(now=110.0).classes == (2, 1, 0)  # exactly max_age old is kept
        assert w.counts(now=110.5).classes == (0, 1, 0)
        assert w.counts(now=200.0).samples == 0

    def test_two_processes_worth_of_handles_share_one_window(self, tmp_path: Path) -> None:
        a, b = window(tmp_path / "w.sqlite"), window(tmp_path / "w.sqlite")
        a.record(obs(0), now=1.0)
        assert b.record(obs(1, 1), now=1.0).classes == (1, 2, 0)
        assert a.counts(now=1.0).classes == (1, 2, 0)

    def test_concurrent_writers_lose_nothing(self, tmp_path: Path) -> None:
        path = tmp_path / "w.sqlite"
        window(path).close()  # create the schema once

        def writer(cls: int) -> None:
            w = window(path, max_samples=10_000)
            for _ in range(50):
                w.record(obs(cls, cls), now=1.0)
            w.close()

        threads = [threading.Thread(target=writer, args=(c,)) for c in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert window(path, max_samples=10_000).counts(now=1.0).classes == (100, 100, 100)

    @pytest.mark.parametrize(("index", "bin_"), [(3, 0), (-1, 0), (0, 4), (0, -1)])
    def test_out_of_range_observations_are_rejected_and_nothing_is_written(
        self, tmp_path: Path, index: int, bin_: int
    ) -> None:
        w = window(tmp_path / "w.sqlite")
        with pytest.raises(ValueError, match="outside"):
            w.record([Observation(0, 0), Observation(index, bin_)], now=1.0)
        assert w.counts(now=1.0).samples == 0

    @pytest.mark.parametrize(
        "kwargs", [{"max_samples": 0}, {"max_age_s": 0.0}, {"max_age_s": -5.0}]
    )
    def test_invalid_bounds(self, tmp_path: Path, kwargs: dict[str, float]) -> None:
        with pytest.raises(ValueError):
            window(tmp_path / "w.sqlite", **kwargs)
