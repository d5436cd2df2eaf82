"""Input drift: the window's bookkeeping, then real text through the real handler.

The real-model tests train the pretrained MiniLM on 400 BBC News articles with
`modelloop-train` itself (one epoch, ~20 s on two cores; ~95% validation accuracy), so the
input section under test is the one the trainer writes. Traffic is held-out BBC articles
(from the training side of the split, beyond the 400 trained on: never trained or profiled
on) and Rotten Tomatoes film reviews, read offline from the installed corpora.
"""

from __future__ import annotations

import logging
import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from modelloop_server.drift import WindowCounts, drift_scores
from modelloop_server.service import _profile_key
from modelloop_server.window import Observation, PredictionWindow
from modelloop_trainer.profile import (
    REFERENCE_MAX_TEXTS,
    InputProfile,
    ReferenceProfile,
    build_input_profile,
    build_reference_profile,
)

from tests.server.test_handler import Worker, metric_lines, wire_row

BOUND = 0.2
"""The input-drift bound these tests hold the model to (docs/metrics.md: on this model,
in-domain windows measure 0.08-0.14 at 100 texts, film reviews 2.0-2.7)."""
TRAINED_ON = 400
VALIDATION_SPLIT = 0.2
SEED = 42


# --- the window and the scores, without a model -------------------------------------------


def small_profile(*, with_inputs: bool = True) -> ReferenceProfile:
    generator = torch.Generator().manual_seed(0)
    probabilities = torch.softmax(torch.randn(40, 3, generator=generator), dim=-1)
    embeddings = torch.randn(40, 6, generator=generator) if with_inputs else None
    return build_reference_profile(
        probabilities, ("a", "b", "c"), bins=4, embeddings=embeddings,
        input_components=2, input_bins=3,
    )


def test_the_window_counts_input_bins_per_component(tmp_path: Path) -> None:
    window = PredictionWindow(tmp_path / "w.sqlite", num_classes=3, num_confidence_bins=4,
                              input_bins=(3, 2), max_samples=3)
    counts = window.record([Observation(0, 1, (2, 0)), Observation(1, 1, (2, 1))], now=1.0)
    assert counts.input_bins == ((0, 0, 2), (1, 1))
    counts = window.record([Observation(2, 0, (0, 1)), Observation(2, 0, (1, 1))], now=2.0)
    assert counts.samples == 3 and counts.input_bins == ((1, 1, 1), (0, 3))  # oldest trimmed
    for bad in ((3, 0), (0,), ()):
        with pytest.raises(ValueError, match="input bins"):
            window.record([Observation(0, 0, bad)], now=3.0)


def test_input_counts_follow_inserts_and_both_trims(tmp_path: Path) -> None:
    """The triggers' running counts equal a recount of the observations still in the window,
    through count and age trimming and a second process's handle on the same file."""
    rng = random.Random(3)
    sizes = (4, 3, 5)
    kwargs = {"num_classes": 2, "num_confidence_bins": 2, "input_bins": sizes,
              "max_samples": 25, "max_age_s": 10.0}
    first = PredictionWindow(tmp_path / "w.sqlite", **kwargs)  # type: ignore[arg-type]
    second = PredictionWindow(tmp_path / "w.sqlite", **kwargs)  # type: ignore[arg-type]
    kept: list[tuple[float, tuple[int, ...]]] = []
    for step in range(60):
        now = float(step)
        batch = [tuple(rng.randrange(n) for n in sizes) for _ in range(rng.randrange(0, 6))]
        window = first if step % 2 else second
        counts = window.record([Observation(0, 0, bins) for bins in batch], now=now)
        kept = [(at, b) for at, b in kept + [(now, b) for b in batch] if at >= now - 10.0][-25:]
        expected = tuple(tuple(sum(1 for _, b in kept if b[j] == i) for i in range(n))
                         for j, n in enumerate(sizes))
        assert counts.input_bins == expected and counts.samples == len(kept)


def test_no_input_section_means_no_input_score_and_an_empty_window_none() -> None:
    old = small_profile(with_inputs=False)
    assert old.inputs is None
    assert drift_scores(old, WindowCounts((2, 1, 0), (1, 1, 1, 0))).input_psi is None
    new = small_profile()
    assert new.inputs is not None and new.inputs.bin_counts == (3, 3)
    empty = WindowCounts((0, 0, 0), (0, 0, 0, 0), ((0, 0, 0), (0, 0, 0)))
    assert drift_scores(new, empty).input_psi is None
    scored = drift_scores(new, WindowCounts((2, 1, 0), (1, 1, 1, 0), ((1, 1, 1), (3, 0, 0))))
    assert scored.input_psi is not None and scored.input_psi > 0
    with pytest.raises(ValueError, match="input bins"):
        drift_scores(new, WindowCounts((1, 0, 0), (1, 0, 0, 0), ((1, 0), (1, 0))))


def test_the_window_file_key_covers_the_input_bins() -> None:
    profile = small_profile()
    assert profile.inputs is not None
    moved = InputProfile(
        mean=profile.inputs.mean, components=profile.inputs.components,
        edges=tuple(tuple(e + 0.5 for e in edges) for edges in profile.inputs.edges),
        counts=profile.inputs.counts, samples=profile.inputs.samples,
    )
    keys = {_profile_key(p) for p in (profile, replace(profile, inputs=None),
                                      replace(profile, inputs=moved))}
    assert len(keys) == 3


def test_the_input_profile_is_built_from_embeddings_alone() -> None:
    inputs = build_input_profile(torch.randn(30, 6, generator=torch.Generator().manual_seed(1)),
                                 components=2, bins=3)
    assert inputs.samples == 30 and len(inputs.components) == 2


# --- a MiniLM trained on BBC News, through the handler -------------------------------------


@pytest.fixture(scope="module")
def bbc_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MiniLM fine-tuned on BBC News by modelloop-train (its profile has an input section)."""
    out = tmp_path_factory.mktemp("bbc") / "model"
    result = subprocess.run(
        [sys.executable, "-m", "modelloop_trainer.train",
         "--model-uri", "builtin://all-minilm-l6-v2", "--dataset-uri", "builtin://bbc-news",
         "--output-uri", f"file://{out}", "--max-samples", str(TRAINED_ON),
         "--validation-split", str(VALIDATION_SPLIT), "--seed", str(SEED), "--epochs", "1",
         "--batch-size", "16", "--learning-rate", "2e-4", "--max-length", "64",
         "--log-every", "50", "--termination-log", str(out.parent / "termination.json")],
        capture_output=True, text=True, timeout=600, check=False,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def held_out_bbc(n: int) -> list[str]:
    """Articles neither trained on (the first TRAINED_ON of the training side) nor in the
    validation split (the rows the profile was built from). Cut to 5,000 characters (a few are over
    the server's 20,000 per text; the model reads the first 64 tokens anyway)."""
    from modelloop_trainer.datasets import DatasetSpec, load_splits

    splits = load_splits(DatasetSpec(uri="builtin://bbc-news",
                                     validation_split=VALIDATION_SPLIT, seed=SEED))
    rest = splits.train.texts[TRAINED_ON:]
    return [text[:5000] for text in random.Random(0).sample(rest, n)]


def reviews(n: int) -> list[str]:
    from modelloop_trainer.datasets import load_examples

    return random.Random(7).sample(load_examples("builtin://rotten-tomatoes").texts, n)


@pytest.fixture
def worker(bbc_model: Path, tmp_path: Path) -> Iterator[Worker]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MODELLOOP_STATE_DIR", str(tmp_path))
        yield Worker(bbc_model)


def serve(worker: Worker, texts: list[str], caplog: pytest.LogCaptureFixture,
          *, at: tuple[int, ...] = (100, 300)) -> dict[int, dict[str, float]]:
    """Send `texts` in requests of 20; the exported PSI per distribution after `at` texts."""
    caplog.set_level(logging.INFO)
    seen: dict[int, dict[str, float]] = {}
    for start in range(0, len(texts), 20):
        caplog.clear()
        [(status, _)] = worker.run(wire_row({"texts": texts[start:start + 20]}))
        assert status == 200
        if start + 20 in at:
            seen[start + 20] = {dims.rsplit(":", 1)[1]: v for v, dims in
                                metric_lines(caplog, "modelloop_drift_psi")}
    return seen


@pytest.mark.slow
def test_the_trainer_profiled_the_data_it_was_trained_for(bbc_model: Path) -> None:
    profile = ReferenceProfile.load(bbc_model / "reference_profile.json")
    assert profile.accuracy is not None and profile.accuracy > 0.85
    assert profile.inputs is not None
    assert (len(profile.inputs.components), profile.inputs.dim) == (8, 384)
    # Confidence: the 445 validation predictions; classes: the labels of all 845 rows
    # trained for; inputs: a sample of 400 of them (REFERENCE_MAX_TEXTS).
    assert profile.samples == 445 and profile.inputs.samples == REFERENCE_MAX_TEXTS == 400
    assert profile.class_source == "labels" and sum(profile.class_counts) == TRAINED_ON + 445
    assert profile.inputs.bin_counts == (10,) * 8


@pytest.mark.slow
def test_held_out_news_stays_under_the_bound(
        worker: Worker, caplog: pytest.LogCaptureFixture) -> None:
    seen = serve(worker, held_out_bbc(300), caplog)
    for n, psi in seen.items():
        print(f"\nin-domain, {n} texts: {psi}")
        assert psi["input"] < BOUND, (n, psi)
        assert psi["class"] < BOUND, (n, psi)


@pytest.mark.slow
def test_film_reviews_cross_it(worker: Worker, caplog: pytest.LogCaptureFixture) -> None:
    seen = serve(worker, reviews(300), caplog)
    for n, psi in seen.items():
        print(f"\nout-of-domain, {n} texts: {psi}")
        assert psi["input"] > 5 * BOUND, (n, psi)


def test_a_model_without_an_input_profile_exports_no_input_score(
        tiny_artifact: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MODELLOOP_STATE_DIR", str(tmp_path))
        worker = Worker(tiny_artifact)
    handler = worker.handler
    assert handler.artifact is not None and handler.artifact.reference_profile.inputs is None
    caplog.set_level(logging.INFO)
    worker.run(wire_row({"texts": ["shares rose", "a goal"]}))
    dims = {d for _, d in metric_lines(caplog, "modelloop_drift_psi")}
    assert dims and not any(d.endswith("distribution:input") for d in dims)
    assert handler.window is not None
    scores = drift_scores(handler.artifact.reference_profile,
                          handler.window.counts(now=time.time()))
    assert scores.samples == 2 and scores.input_psi is None and scores.class_psi is not None
