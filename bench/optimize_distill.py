"""Benchmark: distil the fine-tuned 6-layer MiniLM into a 3-layer student.

Targets (issue #4): >= 1.8x throughput at batch 32, accuracy drop <= 2 points. The student
is initialised from teacher layers 1, 3, 5 and trained for one epoch on the same 1,500
training documents with temperature-scaled soft targets (T = 2, alpha = 0.5).

Run: .venv/bin/python bench/optimize_distill.py  (trains the shared model first if not cached)
"""

from __future__ import annotations

from trainer_bench_common import run_optimize_bench

TECHNIQUES = (
    '[{"type":"distillation","studentLayers":3,"epochs":1,"temperature":2.0,"alpha":0.5,'
    '"learningRate":0.0001,"batchSize":16}]'
)

if __name__ == "__main__":
    run_optimize_bench(
        "optimize_distill",
        TECHNIQUES,
        targets={"speedup": 1.8, "accuracyDrop": 0.02},
    )
