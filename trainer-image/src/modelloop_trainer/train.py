"""`modelloop-train`: fine-tune a classifier, for text (a transformers encoder) or images
(EfficientNet-Lite0), chosen by `--task`.

The recipe, the same for every task (tasks.py holds what differs): load data (the base
dataset, plus labelled production traffic with `--captured-uri`, captured.py) and base
model, encode the examples once, resume from the newest
checkpoint if there is one, snapshot the data used (`<output>/dataset/`), run the loop
(loop.py), evaluate on the validation split, write the artifact (artifact.py) with metrics
and reference profile, apply the evaluation gate. Flags and exit codes are specified in
docs/contracts.md section 1; docs/trainer.md explains the rest.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from modelloop_trainer.artifact import (
    LABELS_FILE,
    MANIFEST_FILE,
    TASK_IMAGE,
    TASK_TEXT,
    ArtifactContents,
    read_labels,
)
from modelloop_trainer.captured import load_captured, parse_time
from modelloop_trainer.checkpoint import (
    CHECKPOINTS_DIR,
    complete_steps,
    load_latest_checkpoint,
    remove_checkpoints,
    save_checkpoint,
)
from modelloop_trainer.cli import ArgumentParser, add_termination_flag, run_command
from modelloop_trainer.datasets import DatasetSpec, Examples, Splits, load_splits
from modelloop_trainer.distributed import World, init_world, shutdown_world
from modelloop_trainer.errors import GateMissedError, InputError
from modelloop_trainer.evaluate import METRICS, evaluate_probabilities
from modelloop_trainer.image_data import DEFAULT_IMAGE_SIZE, MAX_IMAGE_SIZE
from modelloop_trainer.loop import (
    LoopResult,
    LoopSettings,
    Plan,
    build_optimizer,
    grad_scaler,
    run_loop,
)
from modelloop_trainer.models import DEFAULT_MODEL_URI
from modelloop_trainer.progress import Progress
from modelloop_trainer.reference import trained_for
from modelloop_trainer.storage import Location, check_writable, fetch, parse_uri, publish
from modelloop_trainer.tasks import TASKS, ProfileInputs, Task, TaskModel, task_for
from modelloop_trainer.tasks import tokenize as tokenize  # the benchmarks' import path
from modelloop_trainer.vision import DEFAULT_IMAGE_MODEL_URI

SNAPSHOT_DIR = "dataset"
SNAPSHOT_TRAIN = "train.jsonl"
SNAPSHOT_VALIDATION = "validation.jsonl"
SNAPSHOT_FILE = "snapshot.json"
SOURCE_BASE = "base"
SOURCE_CAPTURED = "captured"
TEXT_LEARNING_RATE = 5e-5
IMAGE_LEARNING_RATE = 2e-3


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="modelloop-train", description=__doc__)
    p.add_argument("--task", choices=TASKS, default=TASK_TEXT)
    p.add_argument(
        "--model-uri",
        default=None,
        help=f"default {DEFAULT_MODEL_URI} (text), {DEFAULT_IMAGE_MODEL_URI} (images)",
    )
    add_dataset_flags(p)
    add_captured_flags(p)
    p.add_argument("--output-uri", required=True)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=16, help="per process (per rank)")
    p.add_argument(
        "--learning-rate",
        type=float,
        default=None,
        help=f"default {TEXT_LEARNING_RATE} (text), {IMAGE_LEARNING_RATE} (images)",
    )
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--warmup-ratio", type=float, default=0.1)
    p.add_argument("--gradient-accumulation-steps", type=int, default=1)
    p.add_argument("--max-length", type=int, default=128, help="text: tokens per example")
    p.add_argument(
        "--image-size",
        type=int,
        default=DEFAULT_IMAGE_SIZE,
        help="images: every image is resized to this many pixels square",
    )
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


def add_captured_flags(p: argparse.ArgumentParser) -> None:
    """Labelled production traffic added to the base dataset (captured.py)."""
    g = p.add_argument_group("labelled production traffic")
    g.add_argument(
        "--captured-uri",
        default=None,
        help="labelled records (modelloop.dev/labelled/v1), e.g. <sink>/labelled",
    )
    g.add_argument(
        "--captured-since", default=None, help="RFC 3339 with a zone: requests served from then"
    )
    g.add_argument(
        "--captured-max-rows",
        type=int,
        default=20000,
        help="cap on captured train + validation rows (the newest are kept)",
    )
    g.add_argument(
        "--captured-min-rows",
        type=int,
        default=1,
        help="fewest captured train + validation rows to train at all",
    )
    g.add_argument(
        "--holdout-fraction",
        type=float,
        default=0.2,
        help="share of request ids held out (never trained on) for the champion comparison",
    )


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
    # Per-task defaults: a fine-tuned transformer and a convolutional net want different rates.
    image = args.task == TASK_IMAGE
    if args.model_uri is None:
        args.model_uri = DEFAULT_IMAGE_MODEL_URI if image else DEFAULT_MODEL_URI
    if args.learning_rate is None:
        args.learning_rate = IMAGE_LEARNING_RATE if image else TEXT_LEARNING_RATE
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
    if args.captured_max_rows < 1:
        raise InputError(f"--captured-max-rows must be >= 1, got {args.captured_max_rows}")
    if args.captured_min_rows < 0:
        raise InputError(f"--captured-min-rows must be >= 0, got {args.captured_min_rows}")
    if not 0 <= args.holdout_fraction < 1:
        raise InputError(f"--holdout-fraction must be in [0, 1), got {args.holdout_fraction}")
    if not 16 <= args.image_size <= MAX_IMAGE_SIZE:
        raise InputError(f"--image-size must be in [16, {MAX_IMAGE_SIZE}], got {args.image_size}")
    if args.task == TASK_IMAGE and args.captured_uri:
        raise InputError(
            "--captured-uri is for text classification only: labelled traffic records hold "
            "texts; image capture is not supported yet"
        )
    if args.captured_since is not None:
        if not args.captured_uri:
            raise InputError("--captured-since needs --captured-uri")
        parse_time(args.captured_since, "--captured-since", needs_zone=True)


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

    task = task_for(args)
    splits, snapshot, from_snapshot = load_training_data(args, output, task)
    rows = snapshot.rows
    progress.event(
        "data",
        f"{len(splits.train)} training and {len(splits.validation)} validation "
        f"examples ({rows['capturedTrain']} and {rows['capturedValidation']} captured), "
        f"labels {splits.label_names}"
        + (f", from the snapshot in {args.output_uri}" if from_snapshot else ""),
        train=len(splits.train),
        validation=len(splits.validation),
        labels=splits.label_names,
        dataset={"digest": snapshot.digest, "rows": rows},
    )
    model_dir = task.resolve_model(args.model_uri)
    warm_start = check_warm_start(model_dir, args.model_uri, splits.label_names, task.base_model)
    if warm_start:
        progress.event(
            "model",
            f"warm start from the modelloop model {args.model_uri} (same labels: its "
            "classification head is kept)",
            warm_start=True,
        )
    task_model = task.load_model(model_dir, args.model_uri, splits.label_names)
    model = task_model.model.to(world.device)
    data = task_model.encode(splits.train, splits.train_ids())

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
        min_batch_size=task.min_batch_size,
    )
    plan = Plan(data, world, settings)
    if len(plan.sampler) < task.min_batch_size:
        raise InputError(
            f"dataset {args.dataset_uri}: {len(splits.train)} training examples for "
            f"{world.world_size} process(es); {args.task} needs at least "
            f"{task.min_batch_size} per process"
        )
    optimizer, scheduler = build_optimizer(model, settings, plan.total_steps)
    scaler = grad_scaler(args.precision, world.device)
    fingerprint = run_fingerprint(args, splits, world, snapshot.digest)
    start_step = 0
    checkpoint = load_latest_checkpoint(output, fingerprint)
    if world.is_main and not from_snapshot:
        # After the checkpoint check: a refused resume leaves the old run's snapshot alone.
        write_snapshot(snapshot, output)
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
        summary = _finish(args, world, task_model, splits, snapshot, result, output, progress)
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
    task_model: TaskModel,
    splits: Splits,
    snapshot: Snapshot,
    result: LoopResult,
    output: Location,
    progress: Progress,
) -> dict[str, Any]:
    """Rank 0: evaluate, write the artifact, apply the gate; returns the summary."""
    progress.event("evaluate", f"evaluating on {len(splits.validation)} validation examples")
    batch_size = max(32, args.batch_size)
    probabilities = task_model.predict_proba(
        splits.validation.texts, batch_size=batch_size, device=world.device
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
    profile = task_model.reference_profile(
        ProfileInputs(
            probabilities=probabilities,
            targets=targets,
            data=trained_for(splits.train, splits.validation),
            label_names=splits.label_names,
            batch_size=batch_size,
            device=world.device,
            seed=args.seed,
        )
    )
    lineage: dict[str, Any] = {
        "baseModel": args.model_uri,
        "dataset": args.dataset_uri,
        "datasetDigest": snapshot.digest,
    }
    if args.captured_uri:
        lineage["captured"] = {"uri": args.captured_uri, "since": args.captured_since}
    dataset = snapshot.summary()
    staging = (
        output.local_path if output.is_local else Path(tempfile.mkdtemp(prefix="modelloop-out-"))
    )
    task_model.model.to("cpu")
    manifest = task_model.save(
        staging,
        ArtifactContents(
            labels=splits.label_names,
            max_length=args.max_length,
            reference_profile=profile,
            metrics=metrics,
            lineage=lineage,
            dataset=dataset,
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
        "dataset": dataset,
    }
    progress.event(
        "done",
        summary["message"],
        metrics=summary["metrics"],
        output=args.output_uri,
        samples_per_second=metrics["train"]["samplesPerSecond"],
    )
    return summary


def run_fingerprint(
    args: argparse.Namespace, splits: Splits, world: World, dataset_digest: str
) -> dict[str, Any]:
    """What must be equal for a checkpoint to be resumable by this run."""
    keys = (
        "model_uri",
        "dataset_uri",
        "validation_uri",
        "validation_split",
        "text_field",
        "label_field",
        "max_samples",
        "captured_uri",
        "captured_since",
        "captured_max_rows",
        "holdout_fraction",
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
    if args.task != TASK_TEXT:
        # Only for other tasks: text checkpoints of earlier trainers stay resumable.
        fingerprint["task"] = args.task
        fingerprint["image_size"] = args.image_size
    fingerprint["labels"] = splits.label_names
    fingerprint["train_examples"] = len(splits.train)
    fingerprint["world_size"] = world.world_size
    fingerprint["dataset_digest"] = dataset_digest
    normalised: dict[str, Any] = json.loads(json.dumps(fingerprint))  # as read back later
    return normalised


@dataclass(frozen=True)
class Snapshot:
    """The data a run trains and validates on, as written to `<output>/dataset/`."""

    train_jsonl: bytes
    validation_jsonl: bytes
    meta: dict[str, Any]  # snapshot.json

    @property
    def digest(self) -> str:
        return str(self.meta["digest"])

    @property
    def rows(self) -> dict[str, int]:
        return {k: int(v) for k, v in self.meta["rows"].items()}

    def summary(self) -> dict[str, Any]:
        """What the manifest and the termination message carry: digest and row counts."""
        return {"digest": self.digest, "rows": self.rows}


def load_training_data(
    args: argparse.Namespace, output: Location, task: Task
) -> tuple[Splits, Snapshot, bool]:
    """The run's train/validation splits, their snapshot, and whether it was read back.

    A run that will resume (a complete checkpoint under the output) trains on the snapshot
    its first attempt wrote, not on a fresh read of the sources: new labelled segments
    closed since then must not change the data under a half-trained model. Otherwise the
    base dataset is loaded (load_splits) and, with --captured-uri, labelled traffic added.
    """
    snapshot_file = output.child(SNAPSHOT_DIR).child(SNAPSHOT_FILE)
    if complete_steps(output.child(CHECKPOINTS_DIR)) and snapshot_file.exists():
        splits, snapshot = read_snapshot(output, task.input_field)
        return splits, snapshot, True
    base = load_splits(dataset_spec(args), task.load_examples)
    if not args.captured_uri:
        snapshot = build_snapshot(
            args,
            base.train,
            Examples([], []),
            base.validation,
            Examples([], []),
            holdout=0,
            skipped=0,
            input_field=task.input_field,
        )
        return base, snapshot, False
    captured = load_captured(
        args.captured_uri,
        since=args.captured_since,
        holdout_fraction=args.holdout_fraction,
        validation_split=args.validation_split,
        max_rows=args.captured_max_rows,
    )
    usable = len(captured.train) + len(captured.validation)
    if usable < args.captured_min_rows:
        raise InputError(
            f"only {usable} labelled rows since {args.captured_since or 'the start'} in "
            f"{args.captured_uri}; {args.captured_min_rows} needed (--captured-min-rows; "
            f"train + validation, besides {len(captured.holdout)} holdout and "
            f"{captured.skipped} invalid records)"
        )
    known = set(base.label_names)
    every = captured.train.labels + captured.validation.labels + captured.holdout.labels
    unknown = sorted(set(every) - known)
    if unknown:
        raise InputError(
            f"captured data {args.captured_uri}: labels {unknown[:10]} are not among the base "
            f"dataset's labels {base.label_names[:20]} ({args.dataset_uri}); the label set "
            "never grows silently: add examples of the new labels to the base dataset"
        )
    splits = Splits(
        train=_concat(base.train, captured.train),
        validation=_concat(base.validation, captured.validation),
        label_names=base.label_names,
    )
    snapshot = build_snapshot(
        args,
        base.train,
        captured.train,
        base.validation,
        captured.validation,
        holdout=len(captured.holdout),
        skipped=captured.skipped,
        input_field=task.input_field,
    )
    return splits, snapshot, False


def build_snapshot(
    args: argparse.Namespace,
    base_train: Examples,
    captured_train: Examples,
    base_validation: Examples,
    captured_validation: Examples,
    *,
    holdout: int,
    skipped: int,
    input_field: str = "text",
) -> Snapshot:
    """The snapshot of the data used: base rows first, then captured, in load order.

    `input_field` names each row's input: "text", or "image" (a base64 PNG) for images.
    """
    f = input_field
    train = _jsonl(base_train, SOURCE_BASE, f) + _jsonl(captured_train, SOURCE_CAPTURED, f)
    validation = _jsonl(base_validation, SOURCE_BASE, f) + _jsonl(
        captured_validation, SOURCE_CAPTURED, f
    )
    meta: dict[str, Any] = {
        "digest": snapshot_digest(train, validation),
        "rows": {
            "baseTrain": len(base_train),
            "capturedTrain": len(captured_train),
            "baseValidation": len(base_validation),
            "capturedValidation": len(captured_validation),
            "holdout": holdout,
            "skipped": skipped,
        },
        "datasetUri": args.dataset_uri,
        "capturedUri": args.captured_uri or None,
        "since": args.captured_since if args.captured_uri else None,
        "holdoutFraction": args.holdout_fraction if args.captured_uri else None,
    }
    return Snapshot(train_jsonl=train, validation_jsonl=validation, meta=meta)


def snapshot_digest(train_jsonl: bytes, validation_jsonl: bytes) -> str:
    """`sha256:<hex>` over train.jsonl's bytes, then validation.jsonl's."""
    digest = hashlib.sha256(train_jsonl)
    digest.update(validation_jsonl)
    return f"sha256:{digest.hexdigest()}"


def write_snapshot(snapshot: Snapshot, output: Location) -> None:
    """Write `<output>/dataset/` (rank 0), snapshot.json last; unchanged files stay as they are.

    The files are a function of the data alone (no time stamps), so a rerun on the same
    data finds an equal digest and rewrites nothing.
    """
    target = output.child(SNAPSHOT_DIR)
    meta = (json.dumps(snapshot.meta, indent=2) + "\n").encode()
    files = (
        (SNAPSHOT_TRAIN, snapshot.train_jsonl),
        (SNAPSHOT_VALIDATION, snapshot.validation_jsonl),
        (SNAPSHOT_FILE, meta),
    )
    if _snapshot_unchanged(target, files):
        return
    if target.is_local:
        directory = target.local_path
        directory.mkdir(parents=True, exist_ok=True)
        for name, content in files:
            staged = directory / f".{name}.tmp"
            staged.write_bytes(content)
            staged.replace(directory / name)
        return
    with tempfile.TemporaryDirectory(prefix="modelloop-snapshot-") as tmp:
        for name, content in files:
            staged = Path(tmp) / name
            staged.write_bytes(content)
            publish(staged, target.child(name))


def _snapshot_unchanged(target: Location, files: Sequence[tuple[str, bytes]]) -> bool:
    """Whether `target` already holds these files (all of them where local; for a remote
    output, an equal snapshot.json, whose digest covers the data files)."""
    if target.is_local:
        directory = target.local_path
        return all(
            (directory / name).is_file() and (directory / name).read_bytes() == content
            for name, content in files
        )
    meta_file = target.child(SNAPSHOT_FILE)
    if not meta_file.exists():
        return False
    with tempfile.TemporaryDirectory(prefix="modelloop-snapshot-") as tmp:
        return fetch(meta_file, Path(tmp)).read_bytes() == files[-1][1]


def read_snapshot(output: Location, input_field: str = "text") -> tuple[Splits, Snapshot]:
    """The splits and snapshot a previous attempt of this run wrote, checked against its digest."""
    target = output.child(SNAPSHOT_DIR)
    with tempfile.TemporaryDirectory(prefix="modelloop-snapshot-") as tmp:
        local = fetch(target, Path(tmp))
        try:
            meta = json.loads((local / SNAPSHOT_FILE).read_text())
            train = (local / SNAPSHOT_TRAIN).read_bytes()
            validation = (local / SNAPSHOT_VALIDATION).read_bytes()
        except (OSError, ValueError) as exc:
            raise InputError(f"{target.uri}: cannot read the dataset snapshot: {exc}") from exc
    if not isinstance(meta, dict) or snapshot_digest(train, validation) != meta.get("digest"):
        raise InputError(
            f"{target.uri}: the dataset snapshot does not match its digest (modified or "
            "partially copied); use a new --output-uri or delete its checkpoints/"
        )
    snapshot = Snapshot(train_jsonl=train, validation_jsonl=validation, meta=meta)
    train_examples, train_sources = _from_jsonl(train, target.uri, input_field)
    validation_examples, _ = _from_jsonl(validation, target.uri, input_field)
    label_names = sorted(
        {
            label
            for label, source in zip(train_examples.labels, train_sources, strict=True)
            if source == SOURCE_BASE
        }
    )
    return Splits(train_examples, validation_examples, label_names), snapshot


def check_warm_start(
    model_dir: Path, uri: str, label_names: Sequence[str], base_model: str = DEFAULT_MODEL_URI
) -> bool:
    """Whether `model_dir` is a modelloop model to fine-tune as it is (a warm start).

    A modelloop artifact keeps its classification head only for the very same labels in
    the same order (class ids are indices into the sorted label names); other labels would
    silently reuse rows of the head for the wrong classes when the count matches, so they
    are refused. Any other model directory gets a fresh head (load_classifier).
    """
    if not ((model_dir / MANIFEST_FILE).is_file() or (model_dir / LABELS_FILE).is_file()):
        return False
    try:
        model_labels = read_labels(model_dir)
    except InputError as exc:
        raise InputError(f"model {uri}: cannot read its labels for a warm start: {exc}") from exc
    if model_labels != list(label_names):
        raise InputError(
            f"model {uri}: a warm start needs the same labels; the model has "
            f"{model_labels[:20]}, the training data has {list(label_names)[:20]} (train from "
            f"a base model such as {base_model} for a new label set)"
        )
    return True


def _concat(first: Examples, second: Examples) -> Examples:
    return Examples(first.texts + second.texts, first.labels + second.labels)


def _jsonl(examples: Examples, source: str, input_field: str = "text") -> bytes:
    return "".join(
        json.dumps({input_field: text, "label": label, "source": source}, ensure_ascii=False) + "\n"
        for text, label in zip(examples.texts, examples.labels, strict=True)
    ).encode("utf-8")


def _from_jsonl(raw: bytes, uri: str, input_field: str = "text") -> tuple[Examples, list[str]]:
    texts: list[str] = []
    labels: list[str] = []
    sources: list[str] = []
    # Split on b"\n" only: str.splitlines() would also split inside texts at U+2028 and
    # the like, which json.dumps(ensure_ascii=False) leaves unescaped.
    for number, line in enumerate(raw.split(b"\n"), start=1):
        if not line:
            continue
        try:
            row = json.loads(line.decode("utf-8"))
            texts.append(str(row[input_field]))
            labels.append(str(row["label"]))
            sources.append(str(row["source"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise InputError(f"{uri}: snapshot line {number} is malformed: {exc}") from exc
    return Examples(texts, labels), sources


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
