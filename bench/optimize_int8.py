"""Benchmark: dynamic int8 quantization (embeddings too) of the fine-tuned MiniLM.

Targets (issue #4): >= 1.3x throughput at batch 32, >= 2.5x smaller on disk, accuracy drop
<= 1 point, all from modelloop-optimize's own report (baseline and result measured side by
side in one run, on the BBC News validation split the model was not trained on).

Run: .venv/bin/python bench/optimize_int8.py  (trains the shared model first if not cached)
"""

from __future__ import annotations

from trainer_bench_common import run_optimize_bench

TECHNIQUES = '[{"type":"quantization","dtype":"int8","embeddings":true}]'

if __name__ == "__main__":
    run_optimize_bench(
        "optimize_int8",
        TECHNIQUES,
        targets={"speedup": 1.3, "sizeRatio": 2.5, "accuracyDrop": 0.01},
    )
