"""The input-drift section of the reference profile: PCA projection, per-component
quantile bins, JSON and the PSI figure (pure, on synthetic embeddings); then the section as
the trainer and the optimizer write it, from the embeddings of the model they save."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from modelloop_trainer.artifact import load_artifact
from modelloop_trainer.datasets import DatasetSpec, load_splits
from modelloop_trainer.evaluate import predict_proba_and_embeddings
from modelloop_trainer.optimize import main as optimize_main
from modelloop_trainer.optimize.pruning import prune_model
from modelloop_trainer.optimize.quantize import quantize_dynamic_int8
from modelloop_trainer.optimize.techniques import Pruning, Quantization
from modelloop_trainer.profile import (
    ReferenceProfile,
    bin_counts,
    build_input_profile,
    build_reference_profile,
    component_psis,
    input_bin,
    input_psi,
    open_quantile_edges,
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


def test_edges_lie_between_reference_values_and_outer_bins_are_open() -> None:
    values = [float(v) for v in range(10)]
    edges = open_quantile_edges(values, 5)
    assert edges == [1.5, 3.5, 5.5, 7.5]
    assert [input_bin(edges, v) for v in (-100.0, 1.5, 9.0, 1e9)] == [0, 1, 4, 4]
    assert open_quantile_edges([2.0] * 10, 4) == []  # ties collapse into a single bin


def test_the_mean_over_components_is_the_figure() -> None:
    profile = build_input_profile(embeddings(200, seed=0), components=3, bins=4)
    counts = bin_counts(profile, profile.bins(embeddings(80, seed=3, shift=1.0)))
    psis = component_psis(profile, counts)
    assert psis is not None and len(psis) == 3
    assert input_psi(profile, counts) == pytest.approx(sum(psis) / 3)


# --- on trained models: the trainer and the optimizer write the section ------------------


def trained_for_rows(data: Path) -> tuple[list[str], list[str]]:
    """Texts and labels the reference describes for train_flags' runs: training rows, then
    validation rows (same file, fraction and seed; fewer than the sample's limit)."""
    splits = load_splits(DatasetSpec(uri=f"file://{data}", validation_split=0.25, seed=42))
    return (
        splits.train.texts + splits.validation.texts,
        splits.train.labels + splits.validation.labels,
    )


def test_the_trainer_profiles_the_data_it_was_trained_for(
    trained_artifact: Path, dataset_file: Path
) -> None:
    artifact = load_artifact(trained_artifact)
    profile = artifact.reference_profile
    inputs = profile.inputs
    assert inputs is not None
    texts, labels = trained_for_rows(dataset_file)
    assert inputs.samples == len(texts) == 96 and inputs.dim == 32  # the tiny BERT's hidden size
    # The class mix is the data's labels, not the model's predictions of them.
    assert profile.class_source == "labels"
    assert profile.class_counts == tuple(labels.count(name) for name in profile.labels)
    assert profile.samples == 24  # the confidence histogram: held-out validation predictions
    probabilities, pooled = artifact.predict_with_embeddings(texts)
    assert torch.allclose(probabilities, artifact.predict_proba(texts), atol=1e-6)
    # The server's binning of the same texts reproduces the stored reference exactly.
    assert bin_counts(inputs, inputs.bins(pooled)) == inputs.counts


def test_embeddings_come_from_quantized_and_pruned_encoders_too(trained_artifact: Path) -> None:
    artifact = load_artifact(trained_artifact)
    texts = ["shares and profit at the bank", "the striker scored", "a new phone chip"]
    _, float_pooled = artifact.predict_with_embeddings(texts)
    for change in ("prune", "quantize"):
        if change == "prune":
            prune_model(artifact.model, Pruning(amount=0.5))
        else:
            artifact.model = quantize_dynamic_int8(artifact.model, Quantization())
        probabilities, pooled = artifact.predict_with_embeddings(texts)
        assert pooled.shape == (3, 32) and pooled.dtype == torch.float32
        assert torch.allclose(probabilities, artifact.predict_proba(texts), atol=1e-6)
        assert not torch.allclose(pooled, float_pooled, atol=1e-4)  # its own encoder's


def test_a_distilled_student_gets_a_profile_of_its_own_embeddings(
    trained_artifact: Path, dataset_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "student-int8"
    code = optimize_main([
        "--model-uri", f"file://{trained_artifact}",
        "--dataset-uri", f"file://{dataset_file}",
        "--validation-split", "0.25",
        "--techniques",
        '[{"type":"distillation","studentLayers":1,"epochs":1,"learningRate":0.003,'
        '"batchSize":8},{"type":"quantization"}]',
        "--output-uri", f"file://{out}",
        "--latency-samples", "2",
        "--throughput-batches", "1",
        "--max-accuracy-drop", "1",
        "--no-package",
        "--termination-log", str(tmp_path / "term.json"),
    ])
    assert code == 0, (tmp_path / "term.json").read_text()
    student = load_artifact(out)
    assert student.manifest["weights"]["encoding"] == "dynamic-int8"
    inputs = student.reference_profile.inputs
    teacher = load_artifact(trained_artifact).reference_profile.inputs
    assert inputs is not None and teacher is not None and inputs.mean != teacher.mean
    # Batches as the optimizer's: int8 activations are scaled per batch.
    _, pooled = predict_proba_and_embeddings(
        student.model, student.tokenizer, trained_for_rows(dataset_file)[0],
        max_length=student.max_length, batch_size=32,
    )
    assert bin_counts(inputs, inputs.bins(pooled)) == inputs.counts
