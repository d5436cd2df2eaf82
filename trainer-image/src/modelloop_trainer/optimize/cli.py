"""`modelloop-optimize`: compress a trained model, measure it against the original, package it.

Recipe: load the trained artifact and the evaluation data; measure the baseline; apply the
techniques in order (distillation trains on the data's training split; quantization comes
last); write the optimized artifact and load it back, so that what is measured is exactly
what ships, including its size on disk; decide acceptance; package the accepted model as a
TorchServe archive. A rejected result still writes its report and termination message and
exits 4. Flags: docs/contracts.md section 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from modelloop_trainer.artifact import (
    WEIGHTS_FILE,
    ArtifactContents,
    LoadedArtifact,
    load_artifact,
    save_artifact,
)
from modelloop_trainer.cli import ArgumentParser, add_termination_flag, run_command
from modelloop_trainer.datasets import Splits, load_splits
from modelloop_trainer.errors import InputError, RejectedError
from modelloop_trainer.evaluate import predict_proba_and_embeddings
from modelloop_trainer.optimize.distill import distill
from modelloop_trainer.optimize.measure import Measurement, MeasureSettings, measure_pair
from modelloop_trainer.optimize.package import (
    ServingConfig,
    build_archive,
    default_handler_path,
    validate_archive_name,
)
from modelloop_trainer.optimize.pruning import prune_model
from modelloop_trainer.optimize.quantize import quantize_dynamic_int8
from modelloop_trainer.optimize.report import Budget, build_report, summary_report
from modelloop_trainer.optimize.techniques import (
    Distillation,
    Pruning,
    Quantization,
    Technique,
    describe,
    parse_techniques,
)
from modelloop_trainer.profile import build_reference_profile
from modelloop_trainer.progress import Progress
from modelloop_trainer.storage import check_writable, fetch, parse_uri, publish
from modelloop_trainer.train import add_dataset_flags, dataset_spec

REPORT_FILE = "report.json"


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="modelloop-optimize", description=__doc__)
    p.add_argument("--model-uri", required=True, help="a trained model (modelloop-train output)")
    add_dataset_flags(p)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--techniques", required=True, help="JSON list, see docs/contracts.md")
    p.add_argument("--max-accuracy-drop", type=float, default=0.01)
    p.add_argument("--min-speedup", type=float, default=None)
    p.add_argument("--output-uri", required=True)
    p.add_argument("--archive-name", default="model")
    p.add_argument("--archive-version", default="1.0")
    p.add_argument(
        "--handler",
        default=None,
        help="TorchServe handler file (default: the installed modelloop_server one)",
    )
    p.add_argument("--batch-size", type=int, default=8, help="TorchServe batch size")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--max-batch-delay-ms", type=int, default=50)
    p.add_argument("--response-timeout-s", type=int, default=120)
    p.add_argument("--latency-samples", type=int, default=100)
    p.add_argument("--throughput-batches", type=int, default=8)
    p.add_argument("--no-package", action="store_true", help="skip the TorchServe archive")
    add_termination_flag(p)
    return p


def validate(args: argparse.Namespace) -> tuple[list[Technique], Path | None, ServingConfig]:
    techniques = parse_techniques(args.techniques)
    if not 0 <= args.max_accuracy_drop <= 1:
        raise InputError(f"--max-accuracy-drop must be in [0, 1], got {args.max_accuracy_drop}")
    if args.min_speedup is not None and args.min_speedup <= 0:
        raise InputError(f"--min-speedup must be > 0, got {args.min_speedup}")
    for name in (
        "batch_size",
        "workers",
        "response_timeout_s",
        "latency_samples",
        "throughput_batches",
    ):
        if getattr(args, name) < 1:
            raise InputError(f"--{name.replace('_', '-')} must be >= 1")
    if args.max_batch_delay_ms < 0:
        raise InputError("--max-batch-delay-ms must be >= 0")
    validate_archive_name(args.archive_name)
    handler: Path | None = None
    if not args.no_package:
        handler = Path(args.handler) if args.handler else default_handler_path()
        if handler is None or not handler.is_file():
            raise InputError(
                f"handler {args.handler or 'modelloop_server/handler.py'}: not found; install "
                "the server package or pass --handler"
            )
    serving = ServingConfig(
        batch_size=args.batch_size,
        workers=args.workers,
        max_batch_delay_ms=args.max_batch_delay_ms,
        response_timeout_s=args.response_timeout_s,
    )
    return techniques, handler, serving


def optimize(args: argparse.Namespace) -> dict[str, Any]:
    techniques, handler, serving = validate(args)
    progress = Progress(command="optimize")
    output = parse_uri(args.output_uri)
    check_writable(output)
    torch.manual_seed(args.seed)

    model_dir = fetch(parse_uri(args.model_uri))
    baseline = load_artifact(model_dir)
    splits = load_splits(dataset_spec(args))
    if not set(splits.label_names) <= set(baseline.labels):
        raise InputError(
            f"dataset {args.dataset_uri}: labels {splits.label_names} do not match the model's "
            f"{baseline.labels}"
        )
    labels = baseline.labels
    val_texts = splits.validation.texts
    val_targets = [labels.index(x) for x in splits.validation.labels]
    settings = MeasureSettings(
        max_length=baseline.max_length,
        latency_samples=args.latency_samples,
        throughput_batches=args.throughput_batches,
    )
    applied: list[dict[str, Any]] = []
    model = baseline.model
    for technique in techniques:
        progress.event("technique", f"applying {technique.type}", **describe(technique))
        model, record = _apply(technique, model, baseline, splits, args, progress)
        applied.append(record)

    with tempfile.TemporaryDirectory(prefix="modelloop-optimize-") as tmp:
        staging = Path(tmp) / "artifact"
        _save_optimized(model, baseline, staging, val_texts, val_targets, applied, args)
        optimized = load_artifact(staging)
        progress.event("measure", "measuring baseline and optimized model, interleaved")
        # A fresh copy of the baseline: pruning works in place on the one loaded above.
        reference = load_artifact(model_dir)
        base_m, opt_m = measure_pair(
            reference.model,
            optimized.model,
            optimized.tokenizer,
            val_texts,
            val_targets,
            labels,
            sizes=(
                (model_dir / WEIGHTS_FILE).stat().st_size,
                (staging / WEIGHTS_FILE).stat().st_size,
            ),
            settings=settings,
        )
        progress.event("measured", "baseline", **base_m.to_json())
        progress.event("measured", "optimized", **opt_m.to_json())
        report = build_report(
            base_m,
            opt_m,
            Budget(args.max_accuracy_drop, args.min_speedup),
            applied,
            settings={
                "latencySamples": settings.latency_samples,
                "throughputBatchSize": settings.throughput_batch_size,
                "throughputBatches": settings.throughput_batches,
                "maxLength": settings.max_length,
                "evaluationSamples": len(val_texts),
                "threads": torch.get_num_threads(),
            },
        )
        _write_metrics(staging, opt_m, report)
        archive_uri = None
        if report["accepted"] and handler is not None:
            mar = build_archive(
                artifact_dir=staging,
                handler=handler,
                name=args.archive_name,
                version=args.archive_version,
                serving=serving,
                export_dir=Path(tmp) / "mar",
            )
            archive_location = output.child(mar.name)
            publish(mar, archive_location)
            archive_uri = archive_location.uri
        publish(staging, output)

    summary: dict[str, Any] = {
        "accepted": report["accepted"],
        "outputUri": args.output_uri,
        "archiveUri": archive_uri,
        "checksum": optimized.manifest["weights"]["sha256"],
        "metrics": {"accuracy": round(opt_m.accuracy, 6), "f1_macro": round(opt_m.f1_macro, 6)},
        "report": summary_report(report),
    }
    verdict = (
        f"speedup {report['speedup']:.2f}x, {report['sizeRatio']:.2f}x smaller, accuracy drop "
        f"{report['accuracyDrop'] * 100:.2f} points"
    )
    progress.event("done", verdict, accepted=report["accepted"], archive=archive_uri)
    if not report["accepted"]:
        raise RejectedError(
            f"optimization rejected: {'; '.join(report['reasons'])} ({verdict})", summary=summary
        )
    summary["message"] = f"optimization accepted: {verdict}"
    return summary


def _apply(
    technique: Technique,
    model: torch.nn.Module,
    baseline: LoadedArtifact,
    splits: Splits,
    args: argparse.Namespace,
    progress: Progress,
) -> tuple[torch.nn.Module, dict[str, Any]]:
    record = describe(technique)
    if isinstance(technique, Pruning):
        record.update(prune_model(model, technique))
    elif isinstance(technique, Distillation):
        teacher_config: Any = model.config
        teacher_layers = int(teacher_config.num_hidden_layers)
        if technique.student_layers >= teacher_layers:
            raise InputError(
                f"distillation: studentLayers {technique.student_layers} must be fewer than "
                f"the teacher's {teacher_layers}"
            )
        model = distill(
            model,
            baseline.tokenizer,
            splits.train.texts,
            [baseline.labels.index(x) for x in splits.train.labels],
            technique,
            max_length=baseline.max_length,
            seed=args.seed,
            progress=progress,
        )
        record["teacherLayers"] = teacher_layers
    elif isinstance(technique, Quantization):
        model = quantize_dynamic_int8(model, technique)
    return model, record


def _save_optimized(
    model: torch.nn.Module,
    baseline: LoadedArtifact,
    staging: Path,
    texts: Sequence[str],
    targets: Sequence[int],
    applied: list[dict[str, Any]],
    args: argparse.Namespace,
) -> None:
    """Write the optimized artifact with a reference profile of the *optimized* model (its
    confidences differ from the baseline's, and drift is measured against what is served).
    The input section too comes from the optimized model's own embeddings: a distilled
    student's encoder, or a quantized one, does not embed texts where the baseline did."""
    probabilities, embeddings = predict_proba_and_embeddings(
        model, baseline.tokenizer, texts, max_length=baseline.max_length
    )
    profile = build_reference_profile(
        probabilities, baseline.labels, targets=torch.tensor(list(targets)), embeddings=embeddings
    )
    lineage = dict(baseline.manifest.get("lineage", {}))
    lineage["parent"] = args.model_uri
    save_artifact(
        staging,
        model=model,
        tokenizer=baseline.tokenizer,
        contents=ArtifactContents(
            labels=baseline.labels,
            max_length=baseline.max_length,
            reference_profile=profile,
            techniques=[*baseline.manifest.get("techniques", []), *applied],
            lineage=lineage,
        ),
    )


def _write_metrics(staging: Path, measurement: Measurement, report: dict[str, Any]) -> None:
    (staging / "metrics.json").write_text(json.dumps(measurement.metrics, indent=2) + "\n")
    (staging / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    return run_command("optimize", build_parser(), optimize, argv)


if __name__ == "__main__":
    sys.exit(main())
