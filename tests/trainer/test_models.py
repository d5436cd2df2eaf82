"""Loading base models for fine-tuning."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from modelloop_trainer.models import load_classifier
from transformers import AutoModel, AutoTokenizer


@pytest.mark.parametrize("stored", [torch.float16, torch.bfloat16])
def test_a_half_precision_checkpoint_is_fine_tuned_with_fp32_weights(
    tmp_path: Path, tiny_model_dir: Path, stored: torch.dtype
) -> None:
    # transformers 5 keeps a checkpoint's stored dtype unless told otherwise; fine-tuning
    # fp16 master weights loses small AdamW updates, and the artifact would be fp16 too.
    half = tmp_path / "half"
    AutoModel.from_pretrained(str(tiny_model_dir), dtype=stored).save_pretrained(half)
    AutoTokenizer.from_pretrained(str(tiny_model_dir)).save_pretrained(half)

    model = load_classifier(half, f"file://{half}", ["a", "b", "c"])

    assert {p.dtype for p in model.parameters()} == {torch.float32}
