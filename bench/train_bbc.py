"""Benchmark: fine-tune MiniLM on BBC News with modelloop-train, against a plain PyTorch loop.

Targets (issue #4): validation accuracy >= 0.95 after 1 epoch on 1,500 docs at length 128,
and our trainer's training throughput >= 0.95x that of a minimal plain loop (AdamW, no
scheduler, no checkpoints, no logging) on the same model, data and batch size, measured in
the same run. The plain loop runs PLAIN_STEPS steps (throughput does not need a whole epoch).

Run: .venv/bin/python bench/train_bbc.py   (several minutes on 2 cores)
Writes bench/results/train_bbc.json and leaves the trained model in the bench cache for the
optimize benchmarks.
"""

from __future__ import annotations

import json
import shutil
import time

import torch
from trainer_bench_common import TRAIN_FLAGS, TRAINED, ensure_trained_model, write_result

PLAIN_STEPS = 40


def plain_loop_samples_per_second(batch_size: int, max_length: int) -> float:
    from modelloop_trainer.datasets import DatasetSpec, load_splits
    from modelloop_trainer.models import load_classifier, load_tokenizer, resolve_model_dir

    splits = load_splits(DatasetSpec(uri="builtin://bbc-news", max_samples=1500, seed=42))
    model_dir = resolve_model_dir("builtin://all-minilm-l6-v2")
    tokenizer = load_tokenizer(model_dir, "builtin")
    torch.manual_seed(42)
    model = load_classifier(model_dir, "builtin", splits.label_names)
    model.train()
    labels = splits.train_ids()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batches = []
    for step in range(PLAIN_STEPS):
        idx = [(step * batch_size + j) % len(labels) for j in range(batch_size)]
        enc = tokenizer(
            [splits.train.texts[i] for i in idx],
            truncation=True,
            max_length=max_length,
            padding=True,
            return_tensors="pt",
        )
        enc["labels"] = torch.tensor([labels[i] for i in idx])
        batches.append(enc)
    start = time.perf_counter()
    for batch in batches:
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return PLAIN_STEPS * batch_size / (time.perf_counter() - start)


def main() -> None:
    shutil.rmtree(TRAINED, ignore_errors=True)  # always train afresh: this is the measurement
    path, seconds = ensure_trained_model()
    metrics = json.loads((path / "metrics.json").read_text())
    ours = metrics["train"]["samplesPerSecond"]
    plain = plain_loop_samples_per_second(batch_size=16, max_length=128)
    ratio = ours / plain
    result = {
        "settings": {"flags": TRAIN_FLAGS, "plainLoopSteps": PLAIN_STEPS},
        "accuracy": metrics["accuracy"],
        "f1_macro": metrics["f1_macro"],
        "validationSamples": metrics["samples"],
        "trainSeconds": metrics["train"]["seconds"],
        "wallSeconds": round(seconds or 0, 1),
        "samplesPerSecond": {"modelloop": ours, "plainLoop": round(plain, 3)},
        "throughputRatio": round(ratio, 4),
        "targets": {"accuracy": 0.95, "throughputRatio": 0.95},
        "met": {"accuracy": metrics["accuracy"] >= 0.95, "throughputRatio": ratio >= 0.95},
    }
    write_result("train_bbc", result)
    print(
        f"train_bbc: accuracy {metrics['accuracy']:.4f} (target 0.95), "
        f"{ours:.1f} vs plain {plain:.1f} samples/s = {ratio:.3f}x (target 0.95x), "
        f"train {metrics['train']['seconds']:.0f}s"
    )


if __name__ == "__main__":
    main()
