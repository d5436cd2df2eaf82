"""`modelloop-train`: fine-tune a transformers encoder for text classification.

The recipe: load data and base model, tokenize once, resume from the newest checkpoint if
there is one, run the loop (loop.py), evaluate on the validation split, write the artifact
(artifact.py) with metrics and reference profile, apply the evaluation gate. Flags and exit
codes are specified in docs/contracts.md section 1; docs/trainer.md explains the rest.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from modelloop_trainer.artifact import ArtifactContents, save_artifact
from modelloop_trainer.checkpoint import (
    load_latest_checkpoint,
    remove_checkpoints,
    save_checkpoint,
)
from modelloop_trainer.cli import ArgumentParser, add_termination_flag, run_command
from modelloop_trainer.datasets import DatasetSpec, Splits, load_splits
from modelloop_trainer.distributed import World, init_world, shutdown_world
from modelloop_trainer.errors import GateMissedError, InputError
from modelloop_trainer.evaluate import (
    METRICS,
    evaluate_probabilities,
    predict_proba_and_embeddings,
)
from modelloop_trainer.loop import (
    LoopResult,
    LoopSettings,
    Plan,
    TokenizedExamples,
    build_optimizer,
    grad_scaler,
    run_loop,
)
from modelloop_trainer.models import (
    DEFAULT_MODEL_URI,
    load_classifier,
    load_tokenizer,
    resolve_model_dir,
)
from modelloop_trainer.profile import build_reference_profile
from modelloop_trainer.progress import Progress
from modelloop_trainer.storage import Location, check_writable, parse_uri, publish


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="modelloop-train", description=__doc__)
    p.add_argument("--model-uri", default=DEFAULT_MODEL_URI)
    add_dataset_flags(p)
    p.add_argument("--output-uri", required=True)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=16, help="per process (per rank)")
    p.add_argument("--learning-rate", type=float, default=5e-5)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--warmup-ratio", type=float, default=0.1)
    p.add_argument("--gradient-accumulation-steps", type=int, default=1)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16", "fp16"),
        default="auto",
        help="auto: bf16 (or fp16) autocast on GPU, fp32 on CPU",
    )
    p.add_argument("--checkpoint-every", type=int, default=0, help="steps; 0 disables")
    p.add_argument("--metric", choices=METRICS, default="accuracy")
    p.add_argument("--min-score", type=float, default=None)
    p.add_argument("--metrics-port", type=int, default=None)
    p.add_argument("--log-every", type=int, default=10, help="steps between JSON progress lines")
    add_termination_flag(p)
    return p


def add_dataset_flags(p: argparse.ArgumentParser) -> None:
    """The dataset flags shared with modelloop-optimize."""
    p.add_argument("--dataset-uri", required=True)
    p.add_argument("--validation-uri", default=None)
    p.add_argument("--validation-split", type=float, default=0.1)
    p.add_argument("--text-field", default="text")
    p.add_argument("--label-field", default="label")
    p.add_argument("--max-samples", type=int, default=None)


def dataset_spec(args: argparse.Namespace) -> DatasetSpec:
    return DatasetSpec(
        uri=args.dataset_uri,
        text_field=args.text_field,
        label_field=args.label_field,
        validation_uri=args.validation_uri,
        validation_split=args.validation_split,
        max_samples=args.max_samples,
        seed=args.seed,
    )


def validate(args: argparse.Namespace) -> None:
    positive = ("epochs", "batch_size", "gradient_accumulation_steps", "max_length", "log_every")
    for name in positive:
        if getattr(args, name) < 1:
            raise InputError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.learning_rate <= 0:
        raise InputError(f"--learning-rate must be > 0, got {args.learning_rate}")
    if not 0 <= args.warmup_ratio < 1:
        raise InputError(f"--warmup-ratio must be in [0, 1), got {args.warmup_ratio}")
    if args.checkpoint_every < 0:
        raise InputError(f"--checkpoint-every must be >= 0, got {args.checkpoint_every}")
    if args.min_score is not None and not 0 <= args.min_score <= 1:
        raise InputError(f"--min-score must be in [0, 1], got {args.min_score}")


def tokenize(
    tokenizer: Any, texts: Sequence[str], labels: list[int], max_length: int
) -> TokenizedExamples:
    encoded = tokenizer(list(texts), truncation=True, max_length=max_length)
    return TokenizedExamples(
        input_ids=[list(ids) for ids in encoded["input_ids"]],
        labels=labels,
        pad_token_id=int(tokenizer.pad_token_id or 0),
    )


def train(args: argparse.Namespace) -> dict[str, Any]:
    validate(args)
    world = init_world()
    try:
        return _train(args, world)
    finally:
        shutdown_world(world)


def _train(args: argparse.Namespace, world: World) -> dict[str, Any]:
    progress = Progress(
        command="train",
        enabled=world.is_main,
        metrics_port=args.metrics_port if world.is_main else None,
    )
    output = parse_uri(args.output_uri)
    if world.is_main:
        check_writable(output)
    random.seed(args.seed)
    torch.manual_seed(args.seed)

    splits = load_splits(dataset_spec(args))
    progress.event(
        "data",
        f"{len(splits.train)} training and {len(splits.validation)} validation "
        f"examples, labels {splits.label_names}",
        train=len(splits.train),
        validation=len(splits.validation),
        labels=splits.label_names,
    )
    model_dir = resolve_model_dir(args.model_uri)
    tokenizer = load_tokenizer(model_dir, args.model_uri)
    model = load_classifier(model_dir, args.model_uri, splits.label_names).to(world.device)
    data = tokenize(tokenizer, splits.train.texts, splits.train_ids(), args.max_length)

    settings = LoopSettings(
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        weight_decay=args.weight_decay,
        warmup_ratio=args.warmup_ratio,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        seed=args.seed,
        precision=args.precision,
        log_every=args.log_every,
    )
    plan = Plan(data, world, settings)
    optimizer, scheduler = build_optimizer(model, settings, plan.total_steps)
    scaler = grad_scaler(args.precision, world.device)
    fingerprint = run_fingerprint(args, splits, world)
    start_step = 0
    checkpoint = load_latest_checkpoint(output, fingerprint)
    if checkpoint is not None:
        model.load_state_dict(checkpoint.model_state)
        optimizer.load_state_dict(checkpoint.trainer_state["optimizer"])
        scheduler.load_state_dict(checkpoint.trainer_state["scheduler"])
        if scaler is not None and "scaler" in checkpoint.trainer_state:
            scaler.load_state_dict(checkpoint.trainer_state["scaler"])
        start_step = checkpoint.step
        progress.event(
            "resume",
            f"resuming from {checkpoint.location.uri} (step {start_step} of {plan.total_steps})",
            step=start_step,
            total_steps=plan.total_steps,
        )

    def on_step_end(step: int) -> None:
        if args.checkpoint_every and step % args.checkpoint_every == 0 and step < plan.total_steps:
            if world.is_main:
                where = save_checkpoint(
                    output,
                    step=step,
                    model=model,
                    optimizer=optimizer,
                    scheduler=scheduler,
                    fingerprint=fingerprint,
                    scaler=scaler,
                )
                progress.event("checkpoint", f"checkpoint {where.uri}", step=step)
            world.barrier()

    result = run_loop(
        model=model,
        data=data,
        world=world,
        settings=settings,
        plan=plan,
        optimizer=optimizer,
        scheduler=scheduler,
        start_step=start_step,
        progress=progress,
        on_step_end=on_step_end,
        scaler=scaler,
    )
    summary: dict[str, Any] = {}
    if world.is_main:
        summary = _finish(args, world, model, tokenizer, splits, result, output, progress)
    world.barrier()
    score = summary.get("metrics", {}).get(args.metric)
    if args.min_score is not None and score is not None and score < args.min_score:
        raise GateMissedError(
            f"evaluation gate missed: {args.metric} {score:.4f} < --min-score {args.min_score} "
            f"(model written to {args.output_uri} for inspection)",
            summary=summary,
        )
    return summary


def _finish(
    args: argparse.Namespace,
    world: World,
    model: torch.nn.Module,
    tokenizer: Any,
    splits: Splits,
    result: LoopResult,
    output: Location,
    progress: Progress,
) -> dict[str, Any]:
    """Rank 0: evaluate, write the artifact, apply the gate; returns the summary."""
    progress.event("evaluate", f"evaluating on {len(splits.validation)} validation examples")
    # One pass gives the metrics' probabilities and the input profile's embeddings.
    probabilities, embeddings = predict_proba_and_embeddings(
        model,
        tokenizer,
        splits.validation.texts,
        max_length=args.max_length,
        batch_size=max(32, args.batch_size),
        device=world.device,
    )
    targets = splits.validation_ids()
    metrics = evaluate_probabilities(probabilities, targets, splits.label_names)
    metrics["train"] = {
        "steps": result.steps,
        "resumedFromStep": result.resumed_from,
        "stepsRun": result.steps_run,
        "seconds": round(result.train_seconds, 3),
        "samplesPerSecond": round(result.samples_per_second, 3),
        "finalLoss": result.final_loss,
        "worldSize": world.world_size,
    }
    profile = build_reference_profile(
        probabilities, splits.label_names, targets=torch.tensor(targets), embeddings=embeddings
    )
    lineage = {"baseModel": args.model_uri, "dataset": args.dataset_uri}
    staging = (
        output.local_path if output.is_local else Path(tempfile.mkdtemp(prefix="modelloop-out-"))
    )
    model.to("cpu")
    manifest = save_artifact(
        staging,
        model=model,
        tokenizer=tokenizer,
        contents=ArtifactContents(
            labels=splits.label_names,
            max_length=args.max_length,
            reference_profile=profile,
            metrics=metrics,
            lineage=lineage,
        ),
    )
    publish(staging, output)
    remove_checkpoints(output)
    score = float(metrics[args.metric])
    summary: dict[str, Any] = {
        "message": f"trained: {args.metric} {score:.4f} on {len(targets)} validation examples",
        "metrics": {k: round(float(metrics[k]), 6) for k in ("accuracy", "f1_macro", "loss")},
        "outputUri": args.output_uri,
        "checksum": manifest["weights"]["sha256"],
        "labels": splits.label_names,
        "samples": {"train": len(splits.train), "validation": len(splits.validation)},
    }
    progress.event(
        "done",
        summary["message"],
        metrics=summary["metrics"],
        output=args.output_uri,
        samples_per_second=metrics["train"]["samplesPerSecond"],
    )
    return summary


def run_fingerprint(args: argparse.Namespace, splits: Splits, world: World) -> dict[str, Any]:
    """What must be equal for a checkpoint to be resumable by this run."""
    keys = (
        "model_uri",
        "dataset_uri",
        "validation_uri",
        "validation_split",
        "text_field",
        "label_field",
        "max_samples",
        "epochs",
        "batch_size",
        "learning_rate",
        "weight_decay",
        "warmup_ratio",
        "gradient_accumulation_steps",
        "max_length",
        "seed",
    )
    fingerprint = {k: getattr(args, k) for k in keys}
    fingerprint["labels"] = splits.label_names
    fingerprint["train_examples"] = len(splits.train)
    fingerprint["world_size"] = world.world_size
    normalised: dict[str, Any] = json.loads(json.dumps(fingerprint))  # as read back later
    return normalised


def main(argv: Sequence[str] | None = None) -> int:
    # Rank 0 of each pod writes the pod's termination message.
    return run_command(
        "train",
        build_parser(),
        train,
        argv,
        writes_summary=lambda: os.environ.get("LOCAL_RANK", "0") == "0",
    )


if __name__ == "__main__":
    sys.exit(main())
