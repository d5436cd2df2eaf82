"""modelloop-optimize on the tiny trained model: techniques, report, acceptance, packaging."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch
from modelloop_trainer.artifact import load_artifact
from modelloop_trainer.optimize import main as optimize_main
from modelloop_trainer.optimize.distill import student_layer_map
from modelloop_trainer.optimize.pruning import prune_model
from modelloop_trainer.optimize.techniques import Pruning

from .conftest import optimize_flags

HANDLER = '''"""A stand-in TorchServe handler for packaging tests."""
def handle(data, context):
    return data
'''


def _optimize(
    trained: Path, data: Path, out: Path, techniques: str, *extra: str
) -> tuple[int, dict[str, Any]]:
    code = optimize_main(optimize_flags(trained, data, out, techniques, *extra))
    return code, json.loads((out.parent / f"{out.name}-term.json").read_text())


def test_quantize_with_pruning_is_measured_reported_and_packaged(
    trained_artifact: Path, dataset_file: Path, tmp_path: Path
) -> None:
    handler = tmp_path / "handler.py"
    handler.write_text(HANDLER)
    out = tmp_path / "opt"
    code, summary = _optimize(
        trained_artifact,
        dataset_file,
        out,
        '[{"type":"pruning","amount":0.3},{"type":"quantization","embeddings":true}]',
        "--handler",
        str(handler),
        "--archive-name",
        "topics",
        "--batch-size",
        "4",
        "--workers",
        "2",
        "--max-batch-delay-ms",
        "20",
        "--response-timeout-s",
        "30",
        "--max-accuracy-drop",
        "0.1",
    )
    assert code == 0, summary
    report = json.loads((out / "report.json").read_text())
    assert report["accepted"] is True and report["reasons"] == []
    for side in ("baseline", "optimized"):
        assert set(report[side]) == {
            "sizeBytes",
            "latencyP50Ms",
            "latencyP99Ms",
            "throughput",
            "accuracy",
            "f1_macro",
        }
    assert (
        report["baseline"]["sizeBytes"] == (trained_artifact / "model.safetensors").stat().st_size
    )
    assert report["optimized"]["sizeBytes"] == (out / "model.safetensors").stat().st_size
    assert report["sizeRatio"] > 2.5  # int8 linears and embeddings: about 4x smaller
    assert report["accuracyDrop"] <= 0.1
    assert [t["type"] for t in report["techniques"]] == ["pruning", "quantization"]
    assert 0.29 < report["techniques"][0]["sparsity"] < 0.31

    optimized = load_artifact(out)
    assert optimized.manifest["weights"]["encoding"] == "dynamic-int8"
    assert "bert.embeddings.word_embeddings" in optimized.manifest["quantization"]["modules"]
    assert optimized.manifest["lineage"]["parent"] == f"file://{trained_artifact}"
    assert (
        optimized.labels[int(optimized.predict_proba(["shares and profit"]).argmax())] == "business"
    )

    assert summary["accepted"] is True and summary["archiveUri"] == f"file://{out}/topics.mar"
    assert summary["report"]["speedup"] == report["speedup"]
    with zipfile.ZipFile(out / "topics.mar") as mar:
        names = set(mar.namelist())
        assert {
            "MAR-INF/MANIFEST.json",
            "handler.py",
            "model-config.yaml",
            "model.safetensors",
            "modelloop.json",
            "labels.json",
            "reference_profile.json",
            "config.json",
            "tokenizer.json",
        } <= names
        manifest = json.loads(mar.read("MAR-INF/MANIFEST.json"))
        assert manifest["model"]["modelName"] == "topics"
        assert manifest["model"]["handler"] == "handler.py"
        config = mar.read("model-config.yaml").decode()
        for line in (
            "minWorkers: 2",
            "maxWorkers: 2",
            "batchSize: 4",
            "maxBatchDelay: 20",
            "responseTimeout: 30",
        ):
            assert line in config
        assert mar.read("model.safetensors") == (out / "model.safetensors").read_bytes()


def test_distillation_produces_a_shallower_student(
    trained_artifact: Path, dataset_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "student"
    code, summary = _optimize(
        trained_artifact,
        dataset_file,
        out,
        '[{"type":"distillation","studentLayers":1,"epochs":2,"learningRate":0.003,'
        '"batchSize":8,"temperature":2.0}]',
        "--no-package",
        "--max-accuracy-drop",
        "0.25",
    )
    assert code == 0, summary
    student = load_artifact(out)
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == 1
    student_model: Any = student.model  # a BertForSequenceClassification, loaded generically
    assert len(student_model.bert.encoder.layer) == 1
    assert student.manifest["weights"]["encoding"] == "float"
    report = json.loads((out / "report.json").read_text())
    assert report["techniques"][0]["teacherLayers"] == 2
    assert report["optimized"]["sizeBytes"] < report["baseline"]["sizeBytes"]
    assert summary["archiveUri"] is None


def test_a_result_outside_the_budget_is_rejected_with_exit_code_4(
    trained_artifact: Path, dataset_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "rejected"
    code, summary = _optimize(
        trained_artifact,
        dataset_file,
        out,
        '[{"type":"quantization"}]',
        "--min-speedup",
        "1000",
        "--handler",
        str(tmp_path / "unused.py"),
        "--no-package",
    )
    assert code == 4
    assert summary["accepted"] is False and summary["exitCode"] == 4
    assert "below --min-speedup 1000" in summary["message"]
    report = json.loads((out / "report.json").read_text())
    assert report["accepted"] is False
    assert not list(out.glob("*.mar"))


def test_student_layers_are_spread_over_the_teacher() -> None:
    assert student_layer_map(6, 3) == [1, 3, 5]
    assert student_layer_map(6, 2) == [2, 5]
    assert student_layer_map(2, 1) == [1]
    with pytest.raises(ValueError):
        student_layer_map(2, 3)


@pytest.mark.parametrize("structured", [False, True])
def test_pruning_zeroes_the_requested_fraction_per_layer(structured: bool) -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(20, 10), torch.nn.ReLU(), torch.nn.Linear(10, 4))
    stats = prune_model(model, Pruning(amount=0.5, structured=structured))
    assert stats["sparsity"] == pytest.approx(0.5, abs=0.01)
    linears = [m for m in model if isinstance(m, torch.nn.Linear)]
    for layer in linears:
        assert not hasattr(layer, "weight_orig")  # masks folded in: a plain model
        if structured:
            zero_rows = (layer.weight.abs().sum(dim=1) == 0).sum()
            assert int(zero_rows) == layer.out_features // 2
            assert torch.all(layer.bias[layer.weight.abs().sum(dim=1) == 0] == 0)
