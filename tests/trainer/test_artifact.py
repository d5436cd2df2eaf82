"""The artifact format: round trips, int8 storage, integrity checks, reference profile."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from modelloop_trainer.artifact import ArtifactContents, load_artifact, save_artifact
from modelloop_trainer.errors import ArtifactError
from modelloop_trainer.optimize.quantize import quantize_dynamic_int8
from modelloop_trainer.optimize.techniques import Quantization
from modelloop_trainer.profile import (
    ReferenceProfile,
    build_reference_profile,
    confidence_bin,
    population_stability_index,
    quantile_edges,
    reference_sample,
)
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

Classifier = tuple[BertForSequenceClassification, object]

LABELS = ["business", "sport", "tech"]
TEXTS = ["shares fell after the merger", "the striker scored a goal", "a new phone chip", "x"]


@pytest.fixture(scope="module")
def classifier(tiny_model_dir: Path) -> tuple[BertForSequenceClassification, object]:
    config = BertConfig.from_pretrained(
        tiny_model_dir,
        num_labels=3,
        id2label=dict(enumerate(LABELS)),
        label2id={name: i for i, name in enumerate(LABELS)},
    )
    torch.manual_seed(0)
    model = BertForSequenceClassification(config)
    model.train(False)  # eval mode; .eval() is untyped in transformers
    return model, AutoTokenizer.from_pretrained(tiny_model_dir)


def _save(model: torch.nn.Module, tokenizer: object, directory: Path) -> dict[str, object]:
    probabilities = torch.softmax(torch.randn(20, 3), dim=-1)
    profile = build_reference_profile(probabilities, LABELS)
    return save_artifact(
        directory,
        model=model,
        tokenizer=tokenizer,  # type: ignore[arg-type]
        contents=ArtifactContents(labels=LABELS, max_length=32, reference_profile=profile),
    )


def _probabilities(model: torch.nn.Module, tokenizer: object) -> torch.Tensor:
    batch = tokenizer(TEXTS, padding=True, truncation=True, max_length=32, return_tensors="pt")  # type: ignore[operator]
    with torch.inference_mode():
        return torch.softmax(model(**batch).logits, dim=-1)


def test_float_model_round_trips_to_the_same_predictions(
        classifier: Classifier, tmp_path: Path) -> None:
    model, tokenizer = classifier
    _save(model, tokenizer, tmp_path / "a")
    loaded = load_artifact(tmp_path / "a")
    assert loaded.labels == LABELS and loaded.max_length == 32
    assert not loaded.model.training
    assert torch.allclose(loaded.predict_proba(TEXTS), _probabilities(model, tokenizer), atol=1e-6)
    assert loaded.reference_profile.labels == tuple(LABELS)


@pytest.mark.parametrize("embeddings", [False, True])
def test_int8_model_is_stored_as_int8_and_reloads_bit_identical(
    classifier: Classifier, tmp_path: Path, embeddings: bool
) -> None:
    model, tokenizer = classifier
    _save(model, tokenizer, tmp_path / "float")
    quantized = quantize_dynamic_int8(model, Quantization(embeddings=embeddings))
    manifest = _save(quantized, tokenizer, tmp_path / "int8")
    assert manifest["weights"]["encoding"] == "dynamic-int8"  # type: ignore[index]
    modules = manifest["quantization"]["modules"]  # type: ignore[index]
    assert modules["bert.encoder.layer.0.attention.self.query"] == "dynamic-int8-linear"
    assert ("bert.embeddings.word_embeddings" in modules) is embeddings

    from safetensors import safe_open

    with safe_open(str(tmp_path / "int8" / "model.safetensors"), "pt") as f:
        key = "bert.encoder.layer.0.attention.self.query.weight.int8"
        assert f.get_tensor(key).dtype == torch.int8
        if embeddings:
            assert f.get_tensor("bert.embeddings.word_embeddings.weight.uint8").dtype == torch.uint8
    float_size = (tmp_path / "float" / "model.safetensors").stat().st_size
    int8_size = (tmp_path / "int8" / "model.safetensors").stat().st_size
    # Each int8 Linear weight takes 1 byte instead of 4, plus 16 bytes of scale and zero
    # point per output row (a visible overhead only in rows as short as this model's), and
    # a few KB more safetensors header for the extra tensor names.
    linear = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    saved = sum(3 * m.weight.numel() - 16 * m.out_features for m in linear)
    assert float_size - int8_size >= saved - 4096
    if embeddings:  # the 30k-token embedding dominates the tiny model
        assert int8_size < 0.45 * float_size

    loaded = load_artifact(tmp_path / "int8")
    assert torch.equal(loaded.predict_proba(TEXTS), _probabilities(quantized, tokenizer))


def test_quantized_artifact_refuses_gpu(classifier: Classifier, tmp_path: Path) -> None:
    model, tokenizer = classifier
    _save(quantize_dynamic_int8(model, Quantization()), tokenizer, tmp_path / "q")
    with pytest.raises(ArtifactError, match="CPU only"):
        load_artifact(tmp_path / "q", device="cuda")


def test_corrupt_or_incomplete_artifacts_fail_with_the_reason(
        classifier: Classifier, tmp_path: Path) -> None:
    model, tokenizer = classifier
    _save(model, tokenizer, tmp_path / "a")
    weights = tmp_path / "a" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="does not match the checksum"):
        load_artifact(tmp_path / "a")

    _save(model, tokenizer, tmp_path / "b")
    manifest = json.loads((tmp_path / "b" / "modelloop.json").read_text())
    manifest["version"] = 99
    (tmp_path / "b" / "modelloop.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="format version 99"):
        load_artifact(tmp_path / "b")

    with pytest.raises(ArtifactError, match=r"no modelloop\.json"):
        load_artifact(tmp_path)
    with pytest.raises(ArtifactError, match="not a directory"):
        load_artifact(tmp_path / "missing")


def test_profile_bins_are_deciles_and_psi_sees_a_shift(tmp_path: Path) -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(500, 3, generator=generator) * 3
    profile = build_reference_profile(torch.softmax(logits, dim=-1), LABELS)
    assert profile.confidence.edges[0] == 0.0 and profile.confidence.edges[-1] == 1.0
    assert len(profile.confidence.counts) == 10
    assert all(40 <= c <= 60 for c in profile.confidence.counts)  # about a tenth each
    assert sum(profile.class_counts) == 500

    profile.save(tmp_path / "p.json")
    again = ReferenceProfile.load(tmp_path / "p.json")
    assert again.confidence.edges == profile.confidence.edges
    assert again.class_counts == profile.class_counts

    same = population_stability_index(profile.class_fractions, profile.class_fractions)
    shifted = population_stability_index(profile.class_fractions, (0.9, 0.05, 0.05))
    assert same == 0.0 and shifted > 0.25


def test_confidence_bins_cover_zero_to_one_and_collapse_ties() -> None:
    assert quantile_edges([1.0] * 50, 10) == [0.0, 1.0]
    edges = [0.0, 0.5, 0.9, 1.0]
    assert [confidence_bin(edges, c) for c in (0.0, 0.49, 0.5, 0.95, 1.0)] == [0, 0, 1, 2, 2]


def test_the_class_section_can_be_the_datas_labels_and_round_trips(tmp_path: Path) -> None:
    logits = torch.randn(20, 3, generator=torch.Generator().manual_seed(1))
    probabilities = torch.softmax(logits, dim=-1)
    profile = build_reference_profile(probabilities, LABELS, data_labels=[0] * 6 + [1] * 3 + [2])
    assert profile.class_source == "labels" and profile.class_counts == (6, 3, 1)
    assert profile.class_fractions == (0.6, 0.3, 0.1) and profile.samples == 20
    profile.save(tmp_path / "p.json")
    stored = json.loads((tmp_path / "p.json").read_text())
    assert stored["v"] == 2
    assert stored["classes"] == {
        "source": "labels", "samples": 10, "counts": [6, 3, 1], "fractions": [0.6, 0.3, 0.1]
    }
    loaded = ReferenceProfile.load(tmp_path / "p.json")
    assert (loaded.class_source, loaded.class_counts) == ("labels", (6, 3, 1))
    with pytest.raises(ValueError, match=r"in \[0, 3\)"):
        build_reference_profile(probabilities, LABELS, data_labels=[0, 3])


def test_a_version_1_profile_still_loads_with_its_predicted_classes(tmp_path: Path) -> None:
    data = build_reference_profile(torch.eye(3).repeat(4, 1), LABELS).to_json()
    classes = data.pop("classes")
    data.update(v=1, predictedClass={k: classes[k] for k in ("counts", "fractions")})
    (tmp_path / "v1.json").write_text(json.dumps(data))
    loaded = ReferenceProfile.load(tmp_path / "v1.json")
    assert loaded.class_source == "predictions" and loaded.class_counts == (4, 4, 4)
    data["v"] = 3
    (tmp_path / "v3.json").write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match=r"unsupported profile version 3 .*understands 1, 2"):
        ReferenceProfile.load(tmp_path / "v3.json")


def test_the_reference_sample_is_seeded_sorted_and_bounded() -> None:
    assert reference_sample(5, limit=10) == [0, 1, 2, 3, 4]
    picked = reference_sample(1000, limit=400, seed=7)
    assert len(picked) == 400 == len(set(picked)) and picked == sorted(picked)
    assert picked == reference_sample(1000, limit=400, seed=7) != reference_sample(1000, limit=400)
