"""Saving and rebuilding dynamically quantized modules without pickle.

`torch.ao.quantization.quantize_dynamic` replaces `nn.Linear` with a dynamic int8 Linear and
(optionally) `nn.Embedding` with a weight-only uint8 Embedding. Their `state_dict` holds
packed, backend-specific parameter objects that only `torch.save` (pickle) can store, and a
pickle can run arbitrary code when loaded. Instead we store, in safetensors, each quantized
weight as its integer representation plus per-channel scales and zero points, and at load
time rebuild the same module types around those tensors. The file really holds int8/uint8
data, so its size on disk is the honest size of the quantized model, and the packing is done
by the loading machine's own backend (fbgemm/x86 or qnnpack), so an artifact written on x86
also loads on ARM.

Per quantized module `<name>` the tensors are:
  `<name>.weight.int8` (linear, int8) or `<name>.weight.uint8` (embedding, uint8),
  `<name>.weight.scales`, `<name>.weight.zero_points` (per output channel, axis 0),
  `<name>.bias` (linear only, float32, when the layer has a bias).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import torch
from torch import nn

from modelloop_trainer.errors import ArtifactError

LINEAR = "dynamic-int8-linear"
EMBEDDING = "uint8-weight-only-embedding"
KINDS = (LINEAR, EMBEDDING)


@contextmanager
def quiet_ao_deprecation() -> Iterator[None]:
    """`torch.ao.quantization` warns on every use that it is deprecated in favour of torchao.

    We use it knowingly (torchao's int8 path is slower than fp32 on CPU without
    torch.compile, see docs/trainer.md), so the warning would only be noise in job logs.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.ao\.quantization is deprecated.*")
        warnings.filterwarnings("ignore", message=r".*quantized tensor creation functions.*")
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.ao\..*")
        yield


def _quantized_types() -> tuple[type[nn.Module], type[nn.Module]]:
    with quiet_ao_deprecation():
        from torch.ao.nn.quantized import Embedding as QEmbedding
        from torch.ao.nn.quantized.dynamic import Linear as QLinear
    return QLinear, QEmbedding


def quantized_module_kinds(model: nn.Module) -> dict[str, str]:
    """Names of the model's quantized modules and their kind (LINEAR or EMBEDDING)."""
    qlinear, qembedding = _quantized_types()
    kinds: dict[str, str] = {}
    for name, module in model.named_modules():
        if isinstance(module, qlinear):
            kinds[name] = LINEAR
        elif isinstance(module, qembedding):
            kinds[name] = EMBEDDING
    return kinds


def export_tensors(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """All of the model's state as plain tensors, plus the kinds of its quantized modules."""
    kinds = quantized_module_kinds(model)
    tensors: dict[str, torch.Tensor] = {}
    with quiet_ao_deprecation():
        modules = dict(model.named_modules())
        for name, kind in kinds.items():
            module = modules[name]
            if kind == LINEAR:
                weight, bias = module._weight_bias()
                tensors[f"{name}.weight.int8"] = weight.int_repr()
                if bias is not None:
                    tensors[f"{name}.bias"] = bias.detach()
            else:
                weight = module.weight()
                tensors[f"{name}.weight.uint8"] = weight.int_repr()
            if weight.qscheme() not in (
                torch.per_channel_affine,
                torch.per_channel_affine_float_qparams,
            ):
                raise ValueError(
                    f"{name}: only per-channel quantization is stored, got {weight.qscheme()}"
                )
            tensors[f"{name}.weight.scales"] = weight.q_per_channel_scales()
            tensors[f"{name}.weight.zero_points"] = weight.q_per_channel_zero_points()
        for key, value in model.state_dict().items():
            if _owner(key, kinds) is None:
                if not isinstance(value, torch.Tensor):
                    raise ValueError(f"state entry {key} is not a tensor ({type(value).__name__})")
                tensors[key] = value.detach()
    return {k: v.contiguous() for k, v in tensors.items()}, kinds


def rebuild_quantized(
    model: nn.Module, tensors: Mapping[str, torch.Tensor], kinds: Mapping[str, str], *, source: str
) -> None:
    """Turn a float model skeleton into the stored quantized model, in place.

    `model` is built from the artifact's config (random weights). Each module named in
    `kinds` is replaced by a quantized module holding the stored integer weights; every other
    tensor is loaded into the float part, and anything missing or left over is an error.
    """
    qlinear, qembedding = _quantized_types()
    used: set[str] = set()

    def take(key: str) -> torch.Tensor:
        if key not in tensors:
            raise ArtifactError(f"{source}: tensor {key} is missing from the weights file")
        used.add(key)
        return tensors[key]

    with quiet_ao_deprecation():
        for name, kind in kinds.items():
            if kind not in KINDS:
                raise ArtifactError(f"{source}: unknown quantized module kind {kind!r} for {name}")
            original = model.get_submodule(name)
            scales = take(f"{name}.weight.scales")
            zero_points = take(f"{name}.weight.zero_points")
            replacement: nn.Module
            if kind == LINEAR:
                if not isinstance(original, nn.Linear):
                    raise ArtifactError(f"{source}: {name} is not a Linear in this architecture")
                ints = take(f"{name}.weight.int8")
                qweight = torch._make_per_channel_quantized_tensor(ints, scales, zero_points, 0)
                bias_key = f"{name}.bias"
                bias = take(bias_key) if bias_key in tensors else None
                replacement = qlinear(
                    original.in_features,
                    original.out_features,
                    bias_=bias is not None,
                    dtype=torch.qint8,
                )
                replacement.set_weight_bias(qweight, bias)  # type: ignore[operator]
            else:
                if not isinstance(original, nn.Embedding):
                    raise ArtifactError(
                        f"{source}: {name} is not an Embedding in this architecture"
                    )
                ints = take(f"{name}.weight.uint8")
                qweight = torch._make_per_channel_quantized_tensor(ints, scales, zero_points, 0)
                replacement = qembedding(
                    original.num_embeddings,
                    original.embedding_dim,
                    dtype=torch.quint8,
                    padding_idx=original.padding_idx,
                )
                replacement.set_weight(qweight)  # type: ignore[operator]
            _replace_submodule(model, name, replacement)

    float_keys = [k for k in model.state_dict() if _owner(k, kinds) is None]
    missing = [k for k in float_keys if k not in tensors]
    if missing:
        raise ArtifactError(
            f"{source}: weights file lacks {len(missing)} tensors, e.g. {missing[:3]}"
        )
    used.update(float_keys)
    unexpected = sorted(set(tensors) - used)
    if unexpected:
        raise ArtifactError(
            f"{source}: weights file has {len(unexpected)} tensors this architecture does not "
            f"use, e.g. {unexpected[:3]}"
        )
    # Not load_state_dict: the quantized modules' loaders insist on their packed-params keys.
    with torch.no_grad():
        for key in float_keys:
            module_name, _, attr = key.rpartition(".")
            target = getattr(model.get_submodule(module_name), attr)
            if not isinstance(target, torch.Tensor) or target.shape != tensors[key].shape:
                raise ArtifactError(f"{source}: tensor {key} does not fit this architecture")
            target.copy_(tensors[key])


def _owner(key: str, kinds: Mapping[str, str]) -> str | None:
    """The quantized module a state-dict key belongs to, if any."""
    for name in kinds:
        if key.startswith(name + "."):
            return name
    return None


def _replace_submodule(model: nn.Module, name: str, replacement: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, replacement)
