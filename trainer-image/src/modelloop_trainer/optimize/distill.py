"""Knowledge distillation into a shallower student of the same architecture.

The student copies the teacher's config with fewer layers and starts from the teacher's own
weights: embeddings, pooler and classifier as they are, and `student_layers` encoder layers
picked evenly across the teacher's depth (6 -> 3 keeps layers 1, 3, 5: each student layer
stands in for the block that ends at it, as in DistilBERT's every-other-layer init). It is
then trained on the training split with the usual loss:

    alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * CE(labels)

T > 1 softens the teacher's distribution so that its "dark knowledge" (which wrong classes
are nearly right) carries signal; T^2 keeps the gradient scale independent of T.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812
from transformers import PreTrainedTokenizerBase

from modelloop_trainer.loop import LoopSettings, build_optimizer
from modelloop_trainer.optimize.techniques import Distillation
from modelloop_trainer.progress import Progress


def student_layer_map(teacher_layers: int, student_layers: int) -> list[int]:
    """Which teacher layer initialises each student layer (evenly spaced, ending at the top)."""
    if not 1 <= student_layers <= teacher_layers:
        raise ValueError(
            f"a student needs 1..{teacher_layers} layers (the teacher's), got {student_layers}"
        )
    step = teacher_layers / student_layers
    return [round((i + 1) * step) - 1 for i in range(student_layers)]


def make_student(teacher: nn.Module, student_layers: int) -> nn.Module:
    """A copy of `teacher` keeping only the mapped encoder layers."""
    encoder = _encoder_layers(teacher)
    keep = student_layer_map(len(encoder), student_layers)
    student = copy.deepcopy(teacher)
    layers = _encoder_layers(student)
    kept = nn.ModuleList([layers[i] for i in keep])
    _set_encoder_layers(student, kept)
    config: Any = student.config
    config.num_hidden_layers = student_layers
    for i, layer in enumerate(kept):  # attention modules know their index in some versions
        for module in layer.modules():
            if hasattr(module, "layer_idx"):
                setattr(module, "layer_idx", i)  # noqa: B010 - attribute of some modules only
    return student


def distill(
    teacher: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    labels: Sequence[int],
    spec: Distillation,
    *,
    max_length: int,
    seed: int,
    progress: Progress,
) -> nn.Module:
    """Train a student of `spec.student_layers` layers to imitate `teacher`."""
    torch.manual_seed(seed)
    teacher.eval()
    student = make_student(teacher, spec.student_layers)
    student.train()
    order = list(range(len(texts)))
    steps_per_epoch = (len(order) + spec.batch_size - 1) // spec.batch_size
    settings = LoopSettings(
        epochs=spec.epochs,
        batch_size=spec.batch_size,
        learning_rate=spec.learning_rate,
        weight_decay=0.01,
        warmup_ratio=0.1,
        gradient_accumulation_steps=1,
        seed=seed,
    )
    total = steps_per_epoch * spec.epochs
    optimizer, scheduler = build_optimizer(student, settings, total)
    t = spec.temperature
    step = 0
    for epoch in range(spec.epochs):
        random.Random(seed + epoch).shuffle(order)
        for start in range(0, len(order), spec.batch_size):
            idx = order[start : start + spec.batch_size]
            batch = tokenizer(
                [texts[i] for i in idx],
                truncation=True,
                max_length=max_length,
                padding=True,
                return_tensors="pt",
            )
            targets = torch.tensor([labels[i] for i in idx])
            with torch.no_grad():
                teacher_logits = teacher(**batch).logits
            student_logits = student(**batch).logits
            soft = F.kl_div(
                F.log_softmax(student_logits / t, dim=-1),
                F.softmax(teacher_logits / t, dim=-1),
                reduction="batchmean",
            ) * (t * t)
            hard = F.cross_entropy(student_logits, targets)
            loss = spec.alpha * soft + (1 - spec.alpha) * hard
            loss.backward()  # type: ignore[no-untyped-call]
            torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            if step % 10 == 0 or step == total:
                progress.event(
                    "distill-step",
                    step=step,
                    total_steps=total,
                    epoch=epoch,
                    loss=round(float(loss.detach()), 6),
                )
    student.eval()
    return student


def _encoder_layers(model: nn.Module) -> nn.ModuleList:
    base: Any = getattr(model, str(model.base_model_prefix))
    layers = base.encoder.layer
    if not isinstance(layers, nn.ModuleList):
        raise ValueError(f"{type(model).__name__}: cannot find its encoder layers")
    return layers


def _set_encoder_layers(model: nn.Module, layers: nn.ModuleList) -> None:
    base: Any = getattr(model, str(model.base_model_prefix))
    base.encoder.layer = layers
