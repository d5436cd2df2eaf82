"""The reference profile of a model about to be saved (trainer and optimizer alike).

Its confidence section comes from the model's predictions on held-out validation data; its
class and input sections from the data the model was trained for (training and validation
rows, captured ones included), so that drift after a retrain on production traffic says how
far the traffic is from that data, not from what the candidate happens to predict.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from modelloop_trainer.datasets import Examples, encode_labels
from modelloop_trainer.evaluate import predict_proba_and_embeddings
from modelloop_trainer.profile import ReferenceProfile, build_reference_profile, reference_sample


def trained_for(train: Examples, validation: Examples) -> Examples:
    """The rows a model was trained for: its training rows, then its validation rows."""
    return Examples(train.texts + validation.texts, train.labels + validation.labels)


def model_reference_profile(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    probabilities: torch.Tensor,
    targets: Sequence[int],
    data: Examples,
    label_names: Sequence[str],
    *,
    max_length: int,
    batch_size: int = 32,
    device: torch.device | None = None,
    seed: int = 0,
) -> ReferenceProfile:
    """The profile from validation `probabilities` and `targets` and the model's embeddings
    of a seeded sample of `data` (the rows it was trained for; all their labels count)."""
    data_labels = encode_labels(data.labels, label_names, "reference data")
    sample = data.take(reference_sample(len(data), seed=seed))
    embeddings = None
    if len(sample) >= 2:
        _, embeddings = predict_proba_and_embeddings(
            model, tokenizer, sample.texts, max_length=max_length, batch_size=batch_size,
            device=device,
        )
    return build_reference_profile(
        probabilities,
        label_names,
        targets=torch.tensor(list(targets)),
        embeddings=embeddings,
        data_labels=data_labels or None,
    )
