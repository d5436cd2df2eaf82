"""Magnitude pruning of the encoder's Linear layers, layer by layer.

Unstructured: in each Linear, the `amount` fraction of weights with the smallest |w| is set
to zero. Structured: in each Linear, the `amount` fraction of output neurons (weight rows)
with the smallest L2 norm is zeroed, together with their bias. Pruning is per layer (each
layer loses the same fraction) rather than global, so no layer is emptied.

The classifier head is left alone (it is tiny and directly sets the output). Masks are
folded into the weights (`prune.remove`), so the result is a plain model with zeros; a dense
file does not shrink and dense kernels do not speed up from zeros, which the optimization
report shows honestly. Pruning pays off combined with quantization or sparse runtimes.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import prune

from modelloop_trainer.optimize.techniques import Pruning


def prune_model(model: nn.Module, spec: Pruning) -> dict[str, float]:
    """Prune in place; returns the achieved sparsity of the pruned layers."""
    pruned = 0
    total = 0
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear) or name.startswith("classifier"):
            continue
        if spec.structured:
            prune.ln_structured(  # type: ignore[no-untyped-call]
                module, name="weight", amount=spec.amount, n=2, dim=0
            )
            with torch.no_grad():
                if module.bias is not None:
                    kept_rows = module.get_buffer("weight_mask").abs().sum(dim=1) > 0
                    module.bias.mul_(kept_rows.to(module.bias.dtype))
        else:
            prune.l1_unstructured(module, name="weight", amount=spec.amount)  # type: ignore[no-untyped-call]
        prune.remove(module, "weight")  # type: ignore[no-untyped-call]
        pruned += int((module.weight == 0).sum())
        total += module.weight.numel()
    if total == 0:
        raise ValueError("the model has no Linear layers to prune")
    return {"sparsity": round(pruned / total, 6), "prunedWeights": pruned, "layerWeights": total}
