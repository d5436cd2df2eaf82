"""Evaluation: predictions in batches and the classification metrics we report and gate on.

Metrics are computed here rather than with scikit-learn to keep the image small. Macro F1 is
the unweighted mean of per-class F1 over the classes that occur in the targets or the
predictions (a label absent from both says nothing about this evaluation).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

METRICS = ("accuracy", "f1_macro")


def predict_proba(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    *,
    max_length: int,
    batch_size: int = 32,
    device: torch.device | None = None,
) -> torch.Tensor:
    """Softmax probabilities (N x K, float32, CPU) of `model` in eval mode."""
    probabilities, _ = _predict(
        model, tokenizer, texts, max_length=max_length, batch_size=batch_size, device=device,
        embeddings=False,
    )
    return probabilities


def predict_proba_and_embeddings(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    *,
    max_length: int,
    batch_size: int = 32,
    device: torch.device | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax probabilities (N x K) and pooled embeddings (N x d), both float32 on the CPU,
    from one forward pass.

    The embedding is the mean of the encoder's last hidden state over the non-padding tokens
    (the input-drift profile's definition, `modelloop_trainer.profile`). It comes from the
    model's own `hidden_states` output, so it is the encoder the model really runs: float,
    dynamically quantized, pruned or a distilled student alike.
    """
    probabilities, embeddings = _predict(
        model, tokenizer, texts, max_length=max_length, batch_size=batch_size, device=device,
        embeddings=True,
    )
    assert embeddings is not None
    return probabilities, embeddings


def pooled_embeddings(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Masked mean over tokens of a B x T x d hidden state, in float32."""
    mask = attention_mask.to(hidden.device).unsqueeze(-1).float()
    return (hidden.float() * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)


def _predict(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    *,
    max_length: int,
    batch_size: int,
    device: torch.device | None,
    embeddings: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    device = device or torch.device("cpu")
    was_training = model.training
    model.eval()
    outputs: list[torch.Tensor] = []
    pooled: list[torch.Tensor] = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(
                list(texts[start : start + batch_size]),
                truncation=True,
                max_length=max_length,
                padding=True,
                return_tensors="pt",
            )
            inputs = {k: v.to(device) for k, v in batch.items()}
            if not embeddings:
                logits = model(**inputs).logits
            else:
                out = model(**inputs, output_hidden_states=True)
                logits = out.logits
                if not out.hidden_states:
                    raise ValueError(f"{type(model).__name__} returns no hidden states")
                pooled.append(
                    pooled_embeddings(out.hidden_states[-1], inputs["attention_mask"]).cpu()
                )
            outputs.append(torch.softmax(logits.float(), dim=-1).cpu())
    model.train(was_training)
    probabilities = torch.cat(outputs) if outputs else torch.empty(0, 0)
    if not embeddings:
        return probabilities, None
    return probabilities, torch.cat(pooled) if pooled else torch.empty(0, 0)


def classification_metrics(
    targets: Sequence[int], predictions: Sequence[int], label_names: Sequence[str]
) -> dict[str, Any]:
    """Accuracy, macro F1, a per-class report and the confusion matrix (rows: true class)."""
    k = len(label_names)
    if len(targets) != len(predictions) or not targets:
        raise ValueError("targets and predictions must be equally long and non-empty")
    confusion = [[0] * k for _ in range(k)]
    for t, p in zip(targets, predictions, strict=True):
        confusion[t][p] += 1
    per_class: dict[str, dict[str, float | int]] = {}
    f1s: list[float] = []
    for i, name in enumerate(label_names):
        tp = confusion[i][i]
        support = sum(confusion[i])
        predicted = sum(row[i] for row in confusion)
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = {
            "precision": round(precision, 6),
            "recall": round(recall, 6),
            "f1": round(f1, 6),
            "support": support,
        }
        if support or predicted:
            f1s.append(f1)
    correct = sum(confusion[i][i] for i in range(k))
    return {
        "accuracy": correct / len(targets),
        "f1_macro": sum(f1s) / len(f1s) if f1s else 0.0,
        "samples": len(targets),
        "per_class": per_class,
        "confusion_matrix": {"labels": list(label_names), "matrix": confusion},
    }


def evaluate_probabilities(
    probabilities: torch.Tensor, targets: Sequence[int], label_names: Sequence[str]
) -> dict[str, Any]:
    predictions = probabilities.argmax(dim=1).tolist()
    metrics = classification_metrics(list(targets), predictions, label_names)
    nll = torch.nn.functional.nll_loss(
        torch.log(probabilities.clamp_min(1e-12)), torch.tensor(list(targets))
    )
    metrics["loss"] = float(nll)
    return metrics
