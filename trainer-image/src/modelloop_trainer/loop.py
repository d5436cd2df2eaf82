"""The fine-tuning loop: AdamW with linear warmup and decay, gradient accumulation, optional
mixed precision, DistributedDataParallel, checkpoints and exact resume.

Reproducibility is by construction rather than by saved RNG state: an epoch's example order
is a function of (seed, epoch) (DistributedSampler), and the dropout randomness of each
optimizer step is seeded from (seed, step, rank). A run resumed from step N therefore takes
the same batches and the same random draws as one that never stopped.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler
from transformers import get_linear_schedule_with_warmup

from modelloop_trainer.distributed import World
from modelloop_trainer.progress import Progress


@dataclass(frozen=True)
class LoopSettings:
    epochs: int
    batch_size: int
    learning_rate: float
    weight_decay: float
    warmup_ratio: float
    gradient_accumulation_steps: int
    seed: int
    precision: str = "auto"  # auto | fp32 | bf16 | fp16
    max_grad_norm: float = 1.0
    log_every: int = 10
    # A smaller last micro-batch of an epoch joins the one before it: BatchNorm cannot train
    # on one example (the image task sets 2; text keeps every batch as it is).
    min_batch_size: int = 1


@dataclass
class LoopResult:
    steps: int
    resumed_from: int
    steps_run: int
    train_seconds: float
    train_samples: int
    final_loss: float

    @property
    def samples_per_second(self) -> float:
        return self.train_samples / self.train_seconds if self.train_seconds > 0 else 0.0


class LoopData(Protocol):
    """The training examples as the loop sees them: a length and batches of model inputs."""

    def __len__(self) -> int: ...

    def batch(self, indices: list[int], device: torch.device) -> dict[str, torch.Tensor]: ...


@dataclass(frozen=True)
class TokenizedExamples:
    """Token ids per example (unpadded) and class ids; batches are padded to their longest."""

    input_ids: list[list[int]]
    labels: list[int]
    pad_token_id: int

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, indices: list[int], device: torch.device) -> dict[str, torch.Tensor]:
        longest = max(len(self.input_ids[i]) for i in indices)
        ids = torch.full((len(indices), longest), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(indices), longest), dtype=torch.long)
        for row, i in enumerate(indices):
            seq = self.input_ids[i]
            ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
            mask[row, : len(seq)] = 1
        labels = torch.tensor([self.labels[i] for i in indices], dtype=torch.long)
        return {
            "input_ids": ids.to(device),
            "attention_mask": mask.to(device),
            "labels": labels.to(device),
        }


class Plan:
    """How many steps there are and which micro-batches make up each of them."""

    def __init__(self, data: LoopData, world: World, settings: LoopSettings) -> None:
        self.sampler: DistributedSampler[int] = DistributedSampler(
            range(len(data)),  # type: ignore[arg-type]  # any sized sequence works
            num_replicas=world.world_size,
            rank=world.rank,
            shuffle=True,
            seed=settings.seed,
            drop_last=False,
        )
        self.batch_size = settings.batch_size
        self.min_batch_size = settings.min_batch_size
        self.accumulation = settings.gradient_accumulation_steps
        per_rank = len(self.sampler)
        self.batches_per_epoch = math.ceil(per_rank / self.batch_size)
        if self.batches_per_epoch > 1 and 0 < per_rank % self.batch_size < self.min_batch_size:
            self.batches_per_epoch -= 1
        self.steps_per_epoch = math.ceil(self.batches_per_epoch / self.accumulation)
        self.total_steps = self.steps_per_epoch * settings.epochs

    def steps(self, start_step: int) -> Iterator[tuple[int, int, list[list[int]]]]:
        """(step number, epoch, micro-batches as index lists) from `start_step` on."""
        step = start_step
        while step < self.total_steps:
            epoch, step_in_epoch = divmod(step, self.steps_per_epoch)
            self.sampler.set_epoch(epoch)
            order = list(self.sampler)
            batches = [
                order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)
            ]
            if len(batches) > 1 and len(batches[-1]) < self.min_batch_size:
                last = batches.pop()
                batches[-1] = batches[-1] + last
            for s in range(step_in_epoch, self.steps_per_epoch):
                group = batches[s * self.accumulation : (s + 1) * self.accumulation]
                yield step, epoch, group
                step += 1


def build_optimizer(
    model: nn.Module, settings: LoopSettings, total_steps: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """Fused AdamW without weight decay on biases and LayerNorm weights (the BERT recipe)."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim < 2 or "LayerNorm" in name else decay).append(param)
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": settings.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=settings.learning_rate,
        # One fused kernel per step instead of a dozen elementwise ops per tensor: on 2 CPU
        # cores MiniLM's AdamW step drops from ~4 s to ~1 s under load (see docs/trainer.md).
        fused=True,
    )
    warmup = round(total_steps * settings.warmup_ratio)
    scheduler: torch.optim.lr_scheduler.LRScheduler = get_linear_schedule_with_warmup(  # type: ignore[no-untyped-call]
        optimizer, warmup, total_steps
    )
    return optimizer, scheduler


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """Mixed precision on GPUs only: bf16 where supported, else fp16; fp32 on CPU."""
    if device.type != "cuda" or precision == "fp32":
        return None
    if precision == "bf16" or (precision == "auto" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return torch.float16


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler | None:
    """The loss scaler of ``--precision fp16`` on a GPU; None otherwise."""
    if device.type == "cuda" and precision == "fp16":
        return torch.amp.GradScaler("cuda")
    return None


def run_loop(
    *,
    model: nn.Module,
    data: LoopData,
    world: World,
    settings: LoopSettings,
    plan: Plan,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    start_step: int,
    progress: Progress,
    on_step_end: Callable[[int], None],
    scaler: torch.amp.GradScaler | None,
) -> LoopResult:
    """Train from `start_step` to the end; `on_step_end(step)` is where checkpoints happen."""
    dtype = autocast_dtype(settings.precision, world.device)
    ddp: nn.Module = (
        DistributedDataParallel(
            model, device_ids=[world.device] if world.device.type == "cuda" else None
        )
        if world.distributed
        else model
    )
    ddp.train()
    progress.start(plan.total_steps, start_step)
    samples = 0
    window_loss, window_steps, window_samples = 0.0, 0, 0
    window_start = loop_start = time.perf_counter()
    last_loss = float("nan")
    steps_run = 0
    for step, epoch, group in plan.steps(start_step):
        torch.manual_seed(settings.seed * 1_000_003 + step * 1_009 + world.rank)
        group_size = sum(len(b) for b in group)
        step_loss = torch.zeros((), device=world.device)
        for i, indices in enumerate(group):
            batch = data.batch(indices, world.device)
            # Only the last micro-batch of a step synchronises gradients across ranks.
            sync = (
                ddp.no_sync()
                if isinstance(ddp, DistributedDataParallel) and i < len(group) - 1
                else contextlib.nullcontext()
            )
            with sync, _autocast(world.device, dtype):
                loss = ddp(**batch).loss * (len(indices) / group_size)
            (scaler.scale(loss) if scaler is not None else loss).backward()
            step_loss += loss.detach()
        if scaler is not None:
            scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), settings.max_grad_norm)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        steps_run += 1
        done = step + 1
        global_samples = group_size * world.world_size
        samples += global_samples
        last_loss = float(step_loss)
        window_loss += last_loss
        window_steps += 1
        window_samples += global_samples
        is_log_step = done % settings.log_every == 0 or done == plan.total_steps
        elapsed = time.perf_counter() - window_start
        progress.step(
            step=done,
            epoch=epoch,
            loss=window_loss / window_steps,
            samples_per_second=window_samples / elapsed if elapsed > 0 else 0.0,
            learning_rate=float(scheduler.get_last_lr()[0]),
            log=is_log_step,
        )
        if is_log_step:
            window_loss, window_steps, window_samples = 0.0, 0, 0
            window_start = time.perf_counter()
        on_step_end(done)
    progress.close()
    return LoopResult(
        steps=plan.total_steps,
        resumed_from=start_step,
        steps_run=steps_run,
        train_seconds=time.perf_counter() - loop_start,
        train_samples=samples,
        final_loss=last_loss,
    )


def _autocast(device: torch.device, dtype: torch.dtype | None) -> Any:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
