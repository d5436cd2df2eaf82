"""The `--techniques` JSON: an ordered list of compression steps, parsed and checked up front.

Parsing everything before any work means a typo in the last technique fails in a second,
not after an hour of distillation, and the message names the technique and the field.
Quantization must come last: afterwards the weights are integers that can be neither
pruned nor trained, so any later step would silently undo it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from modelloop_trainer.errors import InputError


@dataclass(frozen=True)
class Quantization:
    dtype: str = "int8"
    embeddings: bool = False
    type: str = "quantization"


@dataclass(frozen=True)
class Pruning:
    amount: float = 0.3
    structured: bool = False
    type: str = "pruning"


@dataclass(frozen=True)
class Distillation:
    student_layers: int = 3
    epochs: int = 1
    temperature: float = 2.0
    alpha: float = 0.5
    learning_rate: float = 1e-4
    batch_size: int = 16
    type: str = "distillation"


Technique = Quantization | Pruning | Distillation

# JSON key -> dataclass field, per technique type (the JSON is camelCase like the CRD).
_FIELDS: dict[str, dict[str, str]] = {
    "quantization": {"dtype": "dtype", "embeddings": "embeddings"},
    "pruning": {"amount": "amount", "structured": "structured"},
    "distillation": {
        "studentLayers": "student_layers",
        "epochs": "epochs",
        "temperature": "temperature",
        "alpha": "alpha",
        "learningRate": "learning_rate",
        "batchSize": "batch_size",
    },
}
_TYPES: dict[str, type[Quantization] | type[Pruning] | type[Distillation]] = {
    "quantization": Quantization,
    "pruning": Pruning,
    "distillation": Distillation,
}


def parse_techniques(text: str) -> list[Technique]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"--techniques is not valid JSON: {exc}") from exc
    if not isinstance(data, list) or not data:
        raise InputError("--techniques must be a non-empty JSON list of objects")
    techniques = [_parse_one(i, item) for i, item in enumerate(data)]
    for i, technique in enumerate(techniques[:-1]):
        if isinstance(technique, Quantization):
            raise InputError(
                f"--techniques[{i}]: quantization must be the last technique (a quantized model "
                f"cannot be pruned or distilled further); got {techniques[i + 1].type} after it"
            )
    return techniques


def describe(technique: Technique) -> dict[str, Any]:
    """The technique as recorded in manifests and reports (camelCase, like the input)."""
    fields = asdict(technique)
    names = {v: k for k, v in _FIELDS[technique.type].items()}
    return {"type": technique.type, **{names[k]: v for k, v in fields.items() if k != "type"}}


def _parse_one(index: int, item: object) -> Technique:
    where = f"--techniques[{index}]"
    if not isinstance(item, dict):
        raise InputError(f"{where}: must be an object with a 'type'")
    kind = item.get("type")
    if kind not in _TYPES:
        raise InputError(f"{where}: unknown type {kind!r} (known: {', '.join(_TYPES)})")
    fields = _FIELDS[kind]
    unknown = sorted(set(item) - set(fields) - {"type"})
    if unknown:
        raise InputError(f"{where} ({kind}): unknown field(s) {unknown}; known: {sorted(fields)}")
    cls = _TYPES[kind]
    defaults = asdict(cls())
    values: dict[str, Any] = {}
    for key, name in fields.items():
        if key in item:
            values[name] = _coerce(where, kind, key, item[key], defaults[name])
    technique = cls(**values)
    _check(where, technique)
    return technique


def _coerce(where: str, kind: str, key: str, value: object, default: object) -> object:
    ok = (
        isinstance(value, bool)
        if isinstance(default, bool)
        else isinstance(value, int) and not isinstance(value, bool)
        if isinstance(default, int)
        else isinstance(value, int | float) and not isinstance(value, bool)
        if isinstance(default, float)
        else isinstance(value, str)
    )
    if not ok:
        raise InputError(
            f"{where} ({kind}): {key} must be a {type(default).__name__}, got {value!r}"
        )
    return float(value) if isinstance(default, float) else value  # type: ignore[arg-type]


def _check(where: str, t: Technique) -> None:
    if isinstance(t, Quantization) and t.dtype != "int8":
        raise InputError(f"{where} (quantization): dtype {t.dtype!r} is not supported (int8)")
    if isinstance(t, Pruning) and not 0.0 < t.amount < 1.0:
        raise InputError(f"{where} (pruning): amount must be between 0 and 1, got {t.amount}")
    if isinstance(t, Distillation):
        if t.student_layers < 1:
            raise InputError(f"{where} (distillation): studentLayers must be >= 1")
        if t.epochs < 1 or t.batch_size < 1:
            raise InputError(f"{where} (distillation): epochs and batchSize must be >= 1")
        if t.temperature <= 0 or not 0.0 <= t.alpha <= 1.0 or t.learning_rate <= 0:
            raise InputError(
                f"{where} (distillation): needs temperature > 0, 0 <= alpha <= 1, learningRate > 0"
            )
