"""The input-drift section of the reference profile: PCA projection, per-component
quantile bins, JSON, and the PSI figure (pure; synthetic embeddings)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from modelloop_trainer.profile import (
    ReferenceProfile,
    bin_counts,
    build_input_profile,
    build_reference_profile,
    input_psi,
)

LABELS = ("a", "b", "c")


def embeddings(n: int, *, seed: int, shift: float = 0.0, dim: int = 32) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    scales = torch.linspace(3.0, 0.1, dim)  # a few strong directions, like real encoders
    return torch.randn(n, dim, generator=generator) * scales + shift


def test_the_projection_keeps_the_strongest_directions_and_bins_them_evenly() -> None:
    profile = build_input_profile(embeddings(400, seed=0), components=4, bins=5)
    assert len(profile.components) == 4 and profile.dim == 32
    assert profile.bin_counts == (5, 5, 5, 5)
    for counts in profile.counts:
        assert sum(counts) == 400 and max(counts) - min(counts) <= 40
    rows = torch.tensor(profile.components)
    assert torch.allclose(rows @ rows.T, torch.eye(4, dtype=rows.dtype), atol=1e-3)


def test_few_samples_give_fewer_components() -> None:
    assert len(build_input_profile(embeddings(3, seed=0), components=8).components) == 2
    with pytest.raises(ValueError, match="N >= 2"):
        build_input_profile(embeddings(1, seed=0))


def test_the_same_distribution_scores_low_and_a_shifted_one_high() -> None:
    profile = build_input_profile(embeddings(500, seed=0))
    same = input_psi(profile, bin_counts(profile, profile.bins(embeddings(300, seed=1))))
    moved = input_psi(profile, bin_counts(profile, profile.bins(
        embeddings(300, seed=2, shift=4.0))))
    assert same is not None and moved is not None
    assert same < 0.1 < 1.0 < moved


def test_an_empty_window_has_no_score() -> None:
    profile = build_input_profile(embeddings(50, seed=0), components=2, bins=3)
    assert input_psi(profile, ((0, 0, 0), (0, 0, 0))) is None
    with pytest.raises(ValueError, match="do not match"):
        input_psi(profile, ((1, 0, 0),))


def test_the_profile_round_trips_through_json_and_an_old_one_still_loads(
        tmp_path: Path) -> None:
    probabilities = torch.softmax(torch.randn(60, 3, generator=torch.Generator().manual_seed(0)),
                                  dim=-1)
    profile = build_reference_profile(probabilities, LABELS, embeddings=embeddings(60, seed=0))
    path = tmp_path / "reference_profile.json"
    profile.save(path)
    loaded = ReferenceProfile.load(path)
    assert loaded.inputs == profile.inputs
    assert loaded.inputs is not None
    x = embeddings(20, seed=5)
    assert loaded.inputs.bins(x) == profile.inputs.bins(x)  # type: ignore[union-attr]
    data = json.loads(path.read_text())
    del data["inputs"]
    path.write_text(json.dumps(data))
    assert ReferenceProfile.load(path).inputs is None
