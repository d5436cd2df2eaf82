"""Measuring a model the way the report compares them: size, latency, throughput, quality.

Baseline and optimized model are measured in the same process, on the same texts, with the
same thread count, taking turns call by call: absolute timings drift on shared machines
(minute-long bursts from neighbours), ratios of interleaved calls much less. Timing covers
the model's forward pass on pre-tokenized inputs; tokenization is identical for both models
and would only dilute the ratio.
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


def measure_pair(
    baseline: nn.Module,
    optimized: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    targets: Sequence[int],
    label_names: Sequence[str],
    *,
    sizes: tuple[int, int],
    settings: MeasureSettings,
) -> tuple[Measurement, Measurement]:
    """Measure both models; their timings are interleaved call by call.

    Taking turns (in alternating order) means a burst of load from a neighbour slows both
    models alike instead of whichever happened to be measured at the time, which on a
    shared machine matters more than any other source of error.
    """
    models = (baseline.eval(), optimized.eval())
    latencies = _latencies(models, tokenizer, texts, settings)
    throughputs = _throughputs(models, tokenizer, texts, settings)
    results = []
    for model, size, times, throughput in zip(models, sizes, latencies, throughputs, strict=True):
        probabilities = predict_proba(model, tokenizer, texts, max_length=settings.max_length)
        metrics = evaluate_probabilities(probabilities, targets, label_names)
        times.sort()
        p99_index = min(len(times) - 1, round(0.99 * (len(times) - 1)))
        results.append(
            Measurement(
                size_bytes=size,
                latency_p50_ms=statistics.median(times),
                latency_p99_ms=times[p99_index],
                throughput=throughput,
                accuracy=float(metrics["accuracy"]),
                f1_macro=float(metrics["f1_macro"]),
                metrics=metrics,
            )
        )
    return results[0], results[1]


def _encode(
    tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_length: int
) -> dict[str, torch.Tensor]:
    return dict(
        tokenizer(
            list(texts), truncation=True, max_length=max_length, padding=True, return_tensors="pt"
        )
    )


def _turns(i: int, count: int) -> list[int]:
    """Model order for call i: 0, 1 then 1, 0, so neither always runs first."""
    order = list(range(count))
    return order if i % 2 == 0 else order[::-1]


def _latencies(
    models: Sequence[nn.Module],
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    settings: MeasureSettings,
) -> list[list[float]]:
    """Single-text forward passes, in milliseconds, per model."""
    inputs = [
        _encode(tokenizer, [texts[i % len(texts)]], settings.max_length)
        for i in range(settings.latency_samples)
    ]
    times: list[list[float]] = [[] for _ in models]
    with torch.inference_mode():
        for batch in inputs[: settings.warmup]:
            for model in models:
                model(**batch)
        for i, batch in enumerate(inputs):
            for m in _turns(i, len(models)):
                start = time.perf_counter()
                models[m](**batch)
                times[m].append((time.perf_counter() - start) * 1000.0)
    return times


def _throughputs(
    models: Sequence[nn.Module],
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    settings: MeasureSettings,
) -> list[float]:
    """Texts per second over full batches of throughput_batch_size, per model."""
    size = settings.throughput_batch_size
    batches = [
        _encode(
            tokenizer,
            [texts[(b * size + j) % len(texts)] for j in range(size)],
            settings.max_length,
        )
        for b in range(settings.throughput_batches)
    ]
    elapsed = [0.0 for _ in models]
    with torch.inference_mode():
        for model in models:
            model(**batches[0])
        for i, batch in enumerate(batches):
            for m in _turns(i, len(models)):
                start = time.perf_counter()
                models[m](**batch)
                elapsed[m] += time.perf_counter() - start
    return [size * len(batches) / e for e in elapsed]
