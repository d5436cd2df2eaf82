"""Shared by the trainer benchmarks (bench/train_*.py, bench/optimize_*.py): machine facts,
result files, and the one MiniLM-on-BBC-News model the optimize benchmarks start from."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
CACHE = Path(os.environ.get("MODELLOOP_BENCH_CACHE", Path.home() / ".cache/modelloop/bench"))
TRAINED = CACHE / "minilm-bbc"

# The documented settings: MiniLM on 1,500 BBC News training docs, 1 epoch, length 128.
TRAIN_FLAGS = [
    "--model-uri",
    "builtin://all-minilm-l6-v2",
    "--dataset-uri",
    "builtin://bbc-news",
    "--max-samples",
    "1500",
    "--epochs",
    "1",
    "--max-length",
    "128",
    "--batch-size",
    "16",
    "--learning-rate",
    "1e-4",
    "--warmup-ratio",
    "0.1",
    "--seed",
    "42",
    "--log-every",
    "10",
]
EVAL_FLAGS = ["--dataset-uri", "builtin://bbc-news", "--max-samples", "1500", "--seed", "42"]


def machine() -> dict[str, Any]:
    import torch
    import transformers

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "torchThreads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }


def run(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", module, *args], capture_output=True, text=True, env=env, check=False
    )


def ensure_trained_model() -> tuple[Path, float | None]:
    """The cached fine-tuned MiniLM (trained with TRAIN_FLAGS if absent); seconds if trained."""
    if (TRAINED / "modelloop.json").is_file():
        return TRAINED, None
    start = time.perf_counter()
    result = run("modelloop_trainer.train", *TRAIN_FLAGS, "--output-uri", f"file://{TRAINED}")
    if result.returncode != 0:
        sys.exit(f"training failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return TRAINED, time.perf_counter() - start


def write_result(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"benchmark": name, **data, "machine": machine()}, indent=2) + "\n")
    return path


def run_optimize_bench(name: str, techniques: str, targets: dict[str, float]) -> None:
    """Run modelloop-optimize on the shared model and record its report against `targets`."""
    model, _ = ensure_trained_model()
    out = CACHE / name
    start = time.perf_counter()
    result = run(
        "modelloop_trainer.optimize",
        "--model-uri",
        f"file://{model}",
        *EVAL_FLAGS,
        "--techniques",
        techniques,
        "--max-accuracy-drop",
        str(targets["accuracyDrop"]),
        "--output-uri",
        f"file://{out}",
        "--no-package",
        "--latency-samples",
        "100",
        "--throughput-batches",
        "8",
    )
    wall = time.perf_counter() - start
    if result.returncode not in (0, 4):
        sys.exit(
            f"{name}: modelloop-optimize failed ({result.returncode}):\n{result.stderr[-3000:]}"
        )
    report = json.loads((out / "report.json").read_text())
    met = {
        "speedup": report["speedup"] >= targets["speedup"],
        "accuracyDrop": report["accuracyDrop"] <= targets["accuracyDrop"],
    }
    if "sizeRatio" in targets:
        met["sizeRatio"] = report["sizeRatio"] >= targets["sizeRatio"]
    write_result(
        name,
        {
            "techniques": json.loads(techniques),
            "exitCode": result.returncode,
            "wallSeconds": round(wall, 1),
            "targets": targets,
            "met": met,
            "baseline": report["baseline"],
            "optimized": report["optimized"],
            "speedup": report["speedup"],
            "latencySpeedup": report["latencySpeedup"],
            "sizeRatio": report["sizeRatio"],
            "accuracyDrop": report["accuracyDrop"],
            "settings": report["settings"],
        },
    )
    print(
        f"{name}: throughput {report['speedup']:.2f}x, latency p50 "
        f"{report['latencySpeedup']:.2f}x, {report['sizeRatio']:.2f}x smaller, accuracy "
        f"{report['baseline']['accuracy']:.4f} -> {report['optimized']['accuracy']:.4f} "
        f"(targets {targets}, met {met})"
    )
