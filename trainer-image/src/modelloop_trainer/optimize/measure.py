"""Measuring a model the way the report compares them: size, latency, throughput, quality.

Baseline and optimized model are measured in the same process, on the same texts, with the
same thread count, one after the other: absolute timings drift between runs on shared
machines, ratios measured side by side do not (much). Timing covers the model's forward
pass on pre-tokenized inputs; tokenization is identical for both models and would only
dilute the ratio.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from modelloop_trainer.evaluate import evaluate_probabilities, predict_proba


@dataclass(frozen=True)
class MeasureSettings:
    max_length: int
    latency_samples: int = 100
    throughput_batches: int = 8
    throughput_batch_size: int = 32
    warmup: int = 3


@dataclass(frozen=True)
class Measurement:
    size_bytes: int
    latency_p50_ms: float
    latency_p99_ms: float
    throughput: float  # texts per second at throughput_batch_size
    accuracy: float
    f1_macro: float
    metrics: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "sizeBytes": self.size_bytes,
            "latencyP50Ms": round(self.latency_p50_ms, 3),
            "latencyP99Ms": round(self.latency_p99_ms, 3),
            "throughput": round(self.throughput, 3),
            "accuracy": round(self.accuracy, 6),
            "f1_macro": round(self.f1_macro, 6),
        }


def measure(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    targets: Sequence[int],
    label_names: Sequence[str],
    *,
    size_bytes: int,
    settings: MeasureSettings,
) -> Measurement:
    model.eval()
    probabilities = predict_proba(model, tokenizer, texts, max_length=settings.max_length)
    metrics = evaluate_probabilities(probabilities, targets, label_names)
    p50, p99 = _latency(model, tokenizer, texts, settings)
    return Measurement(
        size_bytes=size_bytes,
        latency_p50_ms=p50,
        latency_p99_ms=p99,
        throughput=_throughput(model, tokenizer, texts, settings),
        accuracy=float(metrics["accuracy"]),
        f1_macro=float(metrics["f1_macro"]),
        metrics=metrics,
    )


def _encode(
    tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_length: int
) -> dict[str, torch.Tensor]:
    return dict(
        tokenizer(
            list(texts), truncation=True, max_length=max_length, padding=True, return_tensors="pt"
        )
    )


def _latency(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    settings: MeasureSettings,
) -> tuple[float, float]:
    """p50 and p99 of single-text forward passes, in milliseconds."""
    inputs = [
        _encode(tokenizer, [texts[i % len(texts)]], settings.max_length)
        for i in range(settings.latency_samples)
    ]
    times: list[float] = []
    with torch.inference_mode():
        for batch in inputs[: settings.warmup]:
            model(**batch)
        for batch in inputs:
            start = time.perf_counter()
            model(**batch)
            times.append((time.perf_counter() - start) * 1000.0)
    times.sort()
    p99_index = min(len(times) - 1, round(0.99 * (len(times) - 1)))
    return statistics.median(times), times[p99_index]


def _throughput(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    settings: MeasureSettings,
) -> float:
    """Texts per second over full batches of throughput_batch_size."""
    size = settings.throughput_batch_size
    batches = [
        _encode(
            tokenizer,
            [texts[(b * size + j) % len(texts)] for j in range(size)],
            settings.max_length,
        )
        for b in range(settings.throughput_batches)
    ]
    with torch.inference_mode():
        model(**batches[0])
        start = time.perf_counter()
        for batch in batches:
            model(**batch)
        elapsed = time.perf_counter() - start
    return size * len(batches) / elapsed
