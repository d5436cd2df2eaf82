"""Benchmark: fine-tune MiniLM on BBC News with modelloop-train, against a plain PyTorch loop.

Targets (issue #4): validation accuracy >= 0.95 after 1 epoch on 1,500 docs at length 128
(the real `modelloop-train` command, end to end), and our training throughput >= 0.95x that
of a minimal plain loop on the same model, data and batch size.

Throughput on a shared machine drifts by minutes, so the comparison is not "our whole run vs
a later plain run": the trainer's own loop (`modelloop_trainer.loop.run_loop`, exactly what
the command runs) and the plain loop take turns in one process, ROUNDS times STEPS steps
each after a warm-up step, and the ratio is the median of the per-round ratios. The plain
loop is measured twice: with PyTorch's default AdamW (the target) and with fused AdamW (our
choice), which shows the trainer's own overhead apart from the optimizer choice.

Run: cd bench && ../.venv/bin/python train_bbc.py   (tens of minutes on 2 busy cores)
     `--reuse-model` takes accuracy from the cached model instead of training again.
Writes bench/results/train_bbc.json and leaves the trained model in the bench cache for the
optimize benchmarks.
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
import time
from typing import Any

import torch
from trainer_bench_common import TRAIN_FLAGS, TRAINED, ensure_trained_model, write_result

ROUNDS = 3
STEPS = 5
BATCH = 16
LENGTH = 128


def interleaved_throughput() -> dict[str, Any]:
    from modelloop_trainer.datasets import DatasetSpec, load_splits
    from modelloop_trainer.distributed import World
    from modelloop_trainer.loop import LoopSettings, Plan, build_optimizer, run_loop
    from modelloop_trainer.models import load_classifier, load_tokenizer, resolve_model_dir
    from modelloop_trainer.progress import Progress
    from modelloop_trainer.train import tokenize

    splits = load_splits(DatasetSpec(uri="builtin://bbc-news", max_samples=1500, seed=42))
    model_dir = resolve_model_dir("builtin://all-minilm-l6-v2")
    tokenizer = load_tokenizer(model_dir, "builtin")
    labels = splits.train_ids()
    data = tokenize(tokenizer, splits.train.texts, labels, LENGTH)
    world = World(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    settings = LoopSettings(
        epochs=1,
        batch_size=BATCH,
        learning_rate=1e-4,
        weight_decay=0.01,
        warmup_ratio=0.1,
        gradient_accumulation_steps=1,
        seed=42,
    )

    torch.manual_seed(42)
    ours_model = load_classifier(model_dir, "builtin", splits.label_names)
    plan = Plan(data, world, settings)
    optimizer, scheduler = build_optimizer(ours_model, settings, plan.total_steps)

    def ours(start: int, steps: int) -> float:
        plan.total_steps = start + steps  # run exactly these steps of the real plan
        result = run_loop(
            model=ours_model,
            data=data,
            world=world,
            settings=settings,
            plan=plan,
            optimizer=optimizer,
            scheduler=scheduler,
            start_step=start,
            progress=Progress(command="bench", enabled=False),
            on_step_end=lambda _: None,
            scaler=None,
        )
        return result.samples_per_second

    plain_models = {}
    for kind, fused in (("default", False), ("fused", True)):
        torch.manual_seed(42)
        model = load_classifier(model_dir, "builtin", splits.label_names)
        model.train()
        plain_models[kind] = (model, torch.optim.AdamW(model.parameters(), lr=1e-4, fused=fused))

    def plain(kind: str, start: int, steps: int) -> float:
        model, opt = plain_models[kind]
        batches = []
        for step in range(start, start + steps):
            idx = [(step * BATCH + j) % len(labels) for j in range(BATCH)]
            batches.append(data.batch(idx, world.device))
        begin = time.perf_counter()
        for batch in batches:
            model(**batch).loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        return steps * BATCH / (time.perf_counter() - begin)

    ours(0, 1)
    plain("default", 0, 1)
    plain("fused", 0, 1)
    rounds = []
    for r in range(ROUNDS):
        start = 1 + r * STEPS
        rounds.append(
            {
                "plainDefault": plain("default", start, STEPS),
                "ours": ours(start, STEPS),
                "plainFused": plain("fused", start, STEPS),
            }
        )
    return {
        "rounds": [{k: round(v, 3) for k, v in r.items()} for r in rounds],
        "ratioVsPlainDefault": statistics.median(r["ours"] / r["plainDefault"] for r in rounds),
        "ratioVsPlainFused": statistics.median(r["ours"] / r["plainFused"] for r in rounds),
    }


def main() -> None:
    if "--reuse-model" not in sys.argv:  # normally train afresh: this is the measurement
        shutil.rmtree(TRAINED, ignore_errors=True)
    path, seconds = ensure_trained_model()
    metrics = json.loads((path / "metrics.json").read_text())
    comparison = interleaved_throughput()
    ratio = comparison["ratioVsPlainDefault"]
    result = {
        "settings": {
            "flags": TRAIN_FLAGS,
            "rounds": ROUNDS,
            "stepsPerRound": STEPS,
            "reusedCachedModel": seconds is None,
        },
        "accuracy": metrics["accuracy"],
        "f1_macro": metrics["f1_macro"],
        "validationSamples": metrics["samples"],
        "trainSeconds": metrics["train"]["seconds"],
        "wallSeconds": round(seconds or 0, 1),
        "commandSamplesPerSecond": metrics["train"]["samplesPerSecond"],
        "throughput": comparison,
        "targets": {"accuracy": 0.95, "throughputRatio": 0.95},
        "met": {"accuracy": metrics["accuracy"] >= 0.95, "throughputRatio": ratio >= 0.95},
    }
    write_result("train_bbc", result)
    print(
        f"train_bbc: accuracy {metrics['accuracy']:.4f} (target 0.95) after "
        f"{metrics['train']['seconds']:.0f}s; throughput {ratio:.2f}x a plain loop "
        f"(target 0.95x; {comparison['ratioVsPlainFused']:.2f}x a plain loop with fused AdamW)"
    )


if __name__ == "__main__":
    main()
