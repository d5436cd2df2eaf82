"""modelloop-train end to end on a tiny BERT: outputs, resume after SIGKILL, DDP, the gate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from modelloop_trainer.artifact import load_artifact, sha256_file
from safetensors.torch import load_file

from .conftest import kill_at_checkpoint, run_cli, run_ddp, train_flags


def test_training_writes_a_loadable_artifact_and_a_summary(trained_artifact: Path) -> None:
    expected = {
        "config.json",
        "model.safetensors",
        "labels.json",
        "metrics.json",
        "modelloop.json",
        "reference_profile.json",
        "tokenizer.json",
    }
    assert expected <= {p.name for p in trained_artifact.iterdir()}
    assert not (trained_artifact / "checkpoints").exists()

    metrics = json.loads((trained_artifact / "metrics.json").read_text())
    assert metrics["accuracy"] >= 0.9, metrics  # the topics are learnable: it must learn them
    assert set(metrics["per_class"]) == {"business", "sport", "tech"}
    assert sum(map(sum, metrics["confusion_matrix"]["matrix"])) == metrics["samples"] == 24

    artifact = load_artifact(trained_artifact)
    probabilities = artifact.predict_proba(["the striker scored a goal for the team"])
    assert artifact.labels[int(probabilities.argmax())] == "sport"

    raw = (trained_artifact.parent / "termination.json").read_text()
    assert len(raw.encode()) < 4096
    summary = json.loads(raw)
    assert summary["status"] == "Succeeded" and summary["exitCode"] == 0
    assert summary["checksum"] == sha256_file(trained_artifact / "model.safetensors")
    assert summary["labels"] == ["business", "sport", "tech"]
    assert summary["samples"] == {"train": 72, "validation": 24}
    assert summary["metrics"]["accuracy"] == pytest.approx(metrics["accuracy"], abs=1e-6)


def test_progress_is_json_lines_when_not_a_tty(
    tiny_model_dir: Path, dataset_file: Path, tmp_path: Path
) -> None:
    result = run_cli(
        "modelloop_trainer.train",
        *train_flags(tiny_model_dir, dataset_file, tmp_path / "m"),
        "--epochs",
        "1",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    events = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "data" and kinds[-1] == "done" and "step" in kinds
    step = next(e for e in events if e["event"] == "step")
    assert {"step", "loss", "samples_per_second", "learning_rate"} <= set(step)


def test_killed_run_resumes_from_its_checkpoint_and_matches_an_uninterrupted_run(
    tiny_model_dir: Path, dataset_file: Path, trained_artifact: Path, tmp_path: Path
) -> None:
    out = tmp_path / "resumed"
    flags = [*train_flags(tiny_model_dir, dataset_file, out), "--checkpoint-every", "20"]
    # Mid-way through epoch 5 of 10 (9 steps per epoch).
    assert kill_at_checkpoint(flags, at_step=40) == 40
    assert not (out / "model.safetensors").exists()
    checkpoints = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert checkpoints[-1] == "step-00000040" and len(checkpoints) <= 2

    result = run_cli("modelloop_trainer.train", *flags)
    assert result.returncode == 0, result.stderr[-2000:]
    events = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    resume = next(e for e in events if e["event"] == "resume")
    assert resume["step"] == 40 and resume["total_steps"] == 90
    first_step = next(e["step"] for e in events if e["event"] == "step")
    assert first_step == 41  # continues, not restarts
    train = json.loads((out / "metrics.json").read_text())["train"]
    assert train["resumedFromStep"] == 40 and train["stepsRun"] == 50

    resumed = load_file(str(out / "model.safetensors"))
    uninterrupted = load_file(str(trained_artifact / "model.safetensors"))
    for name, tensor in uninterrupted.items():
        assert torch.allclose(resumed[name], tensor, atol=1e-5), name


def test_two_process_ddp_trains_the_same_kind_of_model(
    tiny_model_dir: Path, dataset_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "ddp"
    result = run_ddp(
        *train_flags(tiny_model_dir, dataset_file, out),
        "--batch-size",
        "4",
        "--termination-log",
        str(tmp_path / "term.json"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train"]["worldSize"] == 2
    # 72 examples, 2 ranks x 4 per batch: 9 steps per epoch, like 1 process x 8.
    assert metrics["train"]["steps"] == 90
    assert metrics["accuracy"] >= 0.9, metrics
    artifact = load_artifact(out)
    assert artifact.labels == ["business", "sport", "tech"]
    summary = json.loads((tmp_path / "term.json").read_text())
    assert summary["status"] == "Succeeded" and summary["outputUri"] == f"file://{out}"
    assert result.stdout.count('"event": "done"') == 1  # only rank 0 reports


def test_missed_gate_exits_3_with_metrics_in_the_summary(
    tiny_model_dir: Path, dataset_file: Path, tmp_path: Path
) -> None:
    term = tmp_path / "term.json"
    result = run_cli(
        "modelloop_trainer.train",
        *train_flags(tiny_model_dir, dataset_file, tmp_path / "m"),
        "--epochs",
        "1",
        "--learning-rate",
        "1e-6",
        "--min-score",
        "0.99",
        "--metric",
        "f1_macro",
        "--termination-log",
        str(term),
    )
    assert result.returncode == 3, result.stderr[-2000:]
    assert "evaluation gate missed: f1_macro" in result.stderr
    summary = json.loads(term.read_text())
    assert summary["exitCode"] == 3 and summary["status"] == "Failed"
    assert "--min-score 0.99" in summary["message"]
    assert summary["metrics"]["f1_macro"] < 0.99
