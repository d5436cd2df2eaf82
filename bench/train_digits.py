"""Benchmark: fine-tune EfficientNet-Lite0 on scikit-learn's digits with modelloop-train.

The image-classification figure of record (issue #18): the real command end to end, on all
1,617 training digits at 32 px for 3 epochs, scored on the 180 held-out digits. The issue
asks for accuracy well above chance (0.1 for ten classes); the target here is 0.95.

Run: cd bench && ../.venv/bin/python train_digits.py   (a few minutes on 2 cores)
Writes bench/results/train_digits.json and leaves the model in the bench cache.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from typing import Any

from trainer_bench_common import CACHE, run, write_result

TARGET_ACCURACY = 0.95
FLAGS = [
    "--task",
    "image-classification",
    "--dataset-uri",
    "builtin://digits",
    "--image-size",
    "32",
    "--epochs",
    "3",
    "--batch-size",
    "16",
    "--seed",
    "42",
    "--log-every",
    "50",
]


def main() -> None:
    out = CACHE / "efficientnet-digits"
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    result = run("modelloop_trainer.train", *FLAGS, "--output-uri", f"file://{out}")
    wall = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"training failed ({result.returncode}):\n{result.stderr[-3000:]}")
    metrics: dict[str, Any] = json.loads((out / "metrics.json").read_text())
    recall = {
        name: round(float(values["recall"]), 4)
        for name, values in (metrics.get("per_class") or {}).items()
    }
    accuracy = float(metrics["accuracy"])
    write_result(
        "train_digits",
        {
            "flags": FLAGS,
            "accuracy": accuracy,
            "macroF1": metrics.get("f1_macro"),
            "validationSamples": metrics["samples"],
            "recall": recall,
            "steps": metrics["train"]["steps"],
            "trainSeconds": metrics["train"]["seconds"],
            "wallSeconds": round(wall, 1),
            "imagesPerSecond": metrics["train"]["samplesPerSecond"],
            "chance": 0.1,
            "targets": {"accuracy": TARGET_ACCURACY},
            "met": {"accuracy": accuracy >= TARGET_ACCURACY},
        },
    )
    print(
        f"train_digits: accuracy {accuracy:.4f} (target {TARGET_ACCURACY}, chance 0.1) on "
        f"{metrics['samples']} held-out digits after {metrics['train']['seconds']:.0f}s"
    )


if __name__ == "__main__":
    main()
