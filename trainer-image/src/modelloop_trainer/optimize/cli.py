"""`modelloop-optimize`: compress a trained model, measure it against the original, package it.

Recipe: load the trained artifact and the evaluation data; measure the baseline; apply the
techniques in order (distillation trains on the data's training split; quantization comes
last); write the optimized artifact and load it back, so that what is measured is exactly
what ships, including its size on disk; decide acceptance; package the accepted model as a
TorchServe archive. With --champion-uri the optimized model is also compared with the model
being served (the champion) on the validation data and, with --holdout-uri, on a holdout of
recent labelled traffic (optimize/compare.py); a failed comparison is a rejection. A
rejected result still writes its report and termination message and exits 4. Flags:
docs/contracts.md section 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import zipfile
import zlib
from collections.abc import Sequence
from datetime import datetime
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
from modelloop_trainer.captured import load_captured
from modelloop_trainer.cli import ArgumentParser, add_termination_flag, run_command
from modelloop_trainer.datasets import Examples, Splits, load_splits
from modelloop_trainer.errors import ArtifactError, InputError, RejectedError
from modelloop_trainer.evaluate import predict_proba
from modelloop_trainer.optimize.compare import (
    Figures,
    Rules,
    Side,
    comparison_report,
    decide,
    figures,
    figures_from_metrics,
    verdict,
)
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
from modelloop_trainer.progress import Progress
from modelloop_trainer.reference import model_reference_profile, trained_for
from modelloop_trainer.storage import check_writable, fetch, parse_uri, publish
from modelloop_trainer.termination import LIMIT_BYTES
from modelloop_trainer.train import (
    SNAPSHOT_DIR,
    SNAPSHOT_FILE,
    add_dataset_flags,
    dataset_spec,
    read_snapshot,
)

REPORT_FILE = "report.json"
# The summary, message included, stays this far below the kubelet's 4 KiB: the run_command
# envelope (v, kind, status, exitCode) and JSON escaping need the rest.
_SUMMARY_BUDGET_BYTES = LIMIT_BYTES - 512


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
    g = p.add_argument_group("champion/challenger comparison (docs/trainer.md)")
    g.add_argument(
        "--champion-uri",
        default=None,
        help="the model being served: a model directory or a TorchServe .mar; the optimized "
        "model is accepted only if it holds its own against it",
    )
    g.add_argument("--champion-name", default=None, help="the champion's name in the report")
    g.add_argument(
        "--holdout-uri",
        default=None,
        help="labelled records (modelloop.dev/labelled/v1, a capture sink's labelled/ "
        "directory) whose holdout both models are evaluated on",
    )
    g.add_argument("--holdout-since", default=None, help="RFC 3339: only requests from then on")
    g.add_argument(
        "--holdout-fraction",
        type=float,
        default=0.2,
        help="the fraction the candidate's training kept out (the same split is taken)",
    )
    g.add_argument("--min-holdout-rows", type=int, default=20)
    g.add_argument(
        "--min-improvement",
        type=float,
        default=0.0,
        help="candidate holdout accuracy minus the champion's must be at least this",
    )
    g.add_argument(
        "--max-original-drop",
        type=float,
        default=0.01,
        help="champion accuracy on the validation data minus the candidate's: at most this",
    )
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
    _validate_comparison(args)
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


def _validate_comparison(args: argparse.Namespace) -> None:
    """The comparison flags, checked before any work (exit 2). Whether the champion and the
    holdout can be read is found out later: that failure rejects the run (exit 4)."""
    if not args.champion_uri:
        if args.holdout_uri:
            raise InputError("--holdout-uri needs --champion-uri (the model to compare with)")
        return
    if not -1 <= args.min_improvement <= 1:
        raise InputError(f"--min-improvement must be in [-1, 1], got {args.min_improvement}")
    if not 0 <= args.max_original_drop <= 1:
        raise InputError(f"--max-original-drop must be in [0, 1], got {args.max_original_drop}")
    if args.min_holdout_rows < 1:
        raise InputError(f"--min-holdout-rows must be >= 1, got {args.min_holdout_rows}")
    if not 0 < args.holdout_fraction < 1:
        raise InputError(f"--holdout-fraction must be in (0, 1), got {args.holdout_fraction}")
    if args.holdout_since is not None:
        try:
            since = datetime.fromisoformat(args.holdout_since)
        except ValueError as exc:
            raise InputError(
                f"--holdout-since {args.holdout_since!r}: not an RFC 3339 time ({exc})"
            ) from exc
        if since.tzinfo is None:
            raise InputError(
                f"--holdout-since {args.holdout_since!r}: needs a time zone (Z or +hh:mm)"
            )


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
        reference_data = _reference_data(model_dir, baseline, splits)
        _save_optimized(
            model, baseline, staging, (val_texts, val_targets), reference_data, applied, args
        )
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
        comparison = None
        if args.champion_uri:
            comparison = _compare(
                args,
                optimized,
                splits.validation,
                figures_from_metrics(opt_m.metrics),
                Path(tmp) / "champion",
                progress,
            )
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
            comparison=comparison,
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
    figures_text = (
        f"speedup {report['speedup']:.2f}x, {report['sizeRatio']:.2f}x smaller, accuracy drop "
        f"{report['accuracyDrop'] * 100:.2f} points"
    )
    if comparison is not None:
        figures_text += f", {verdict(comparison)}"
    progress.event("done", figures_text, accepted=report["accepted"], archive=archive_uri)
    if report["accepted"]:
        message = f"optimization accepted: {figures_text}"
    else:
        message = f"optimization rejected: {'; '.join(report['reasons'])} ({figures_text})"
    message = _fit_summary(summary, report, message)
    if not report["accepted"]:
        raise RejectedError(message, summary=summary)
    summary["message"] = message
    return summary


def _fit_summary(summary: dict[str, Any], report: dict[str, Any], message: str) -> str:
    """Keep the termination message well under 4 KiB, so that the operator always gets the
    report with its comparison: first without per-class recall (report.json keeps every
    figure), then with a shorter message (its reasons are in the comparison as well).
    Returns the message to use."""
    if "comparison" not in report:
        return message

    def size(text: str) -> int:
        return len(json.dumps({**summary, "message": text}, separators=(",", ":")).encode())

    if size(message) > _SUMMARY_BUDGET_BYTES:
        summary["report"] = summary_report(report, with_recall=False)
    excess = size(message) - _SUMMARY_BUDGET_BYTES
    if excess > 0:
        message = message[: max(64, len(message) - excess - 3)] + "..."
    return message


def _compare(
    args: argparse.Namespace,
    candidate: LoadedArtifact,
    validation: Examples,
    candidate_original: Figures,
    workdir: Path,
    progress: Progress,
) -> dict[str, Any]:
    """Champion and candidate on the validation data and the holdout: the report section.

    Never raises for a champion or holdout that cannot be read: that is a failed comparison
    with its reason (a candidate is never accepted blind)."""
    rules = Rules(
        min_improvement=args.min_improvement,
        max_original_drop=args.max_original_drop,
        min_holdout_rows=args.min_holdout_rows,
    )
    name = args.champion_name or args.champion_uri
    problems: list[str] = []
    progress.event("compare", f"loading champion {name}", uri=args.champion_uri)
    champion: LoadedArtifact | None = None
    try:
        champion = load_champion(args.champion_uri, workdir)
    except Exception as exc:  # any failure to load: rejected with the reason, never blind
        problems.append(
            f"champion {args.champion_uri} cannot be read: {_detail(exc, args.champion_uri)}"
        )

    holdout: Examples | None = None
    holdout_rows: int | None = None  # None: no holdout asked for, or it could not be read
    if args.holdout_uri:
        try:
            captured = load_captured(
                args.holdout_uri,
                since=args.holdout_since,
                holdout_fraction=args.holdout_fraction,
            )
        except Exception as exc:  # as for the champion: a reason, not a crash
            problems.append(
                f"holdout {args.holdout_uri} cannot be read: {_detail(exc, args.holdout_uri)}"
            )
        else:
            holdout, holdout_rows = captured.holdout, len(captured.holdout)
            unknown = sorted(set(holdout.labels) - set(candidate.labels))
            if unknown:
                problems.append(
                    f"holdout labels {unknown[:5]} are not among the candidate's labels "
                    f"{candidate.labels[:10]}"
                )
                holdout = None

    labels = candidate.labels
    if holdout is not None and len(holdout) < rules.min_holdout_rows:
        holdout = None  # too few rows: decide() says so, nothing is evaluated on it
    candidate_side = Side(
        original=candidate_original,
        holdout=_figures_of(candidate, holdout, labels) if holdout is not None else None,
    )
    champion_side = Side()
    if champion is not None and set(champion.labels) == set(labels):
        progress.event("compare", "evaluating the champion")
        champion_side = Side(
            original=_figures_of(champion, validation, labels),
            holdout=_figures_of(champion, holdout, labels) if holdout is not None else None,
        )
    result = decide(
        rules,
        champion=champion_side,
        candidate=candidate_side,
        champion_labels=champion.labels if champion is not None else None,
        candidate_labels=candidate.labels,
        holdout_rows=holdout_rows,
        problems=problems,
    )
    section = comparison_report(
        champion_name=name,
        champion=champion_side,
        candidate=candidate_side,
        rules=rules,
        comparison=result,
    )
    progress.event("compared", verdict(section), passed=result.passed, reasons=result.reasons)
    return section


def _detail(exc: Exception, uri: str) -> str:
    """An error's message without the URI it starts with (the reason names it already);
    unexpected errors keep their type."""
    if isinstance(exc, InputError):
        return str(exc).removeprefix(f"{uri}: ")
    return f"{type(exc).__name__}: {exc}"


def load_champion(uri: str, workdir: Path) -> LoadedArtifact:
    """The model at `uri`: a model directory, or a TorchServe .mar (a zip with the artifact
    files at its root, as `optimize/package.py` builds it), extracted into `workdir` and
    loaded with `load_artifact` as the server's handler loads it (int8 included)."""
    workdir.mkdir(parents=True, exist_ok=True)
    local = fetch(parse_uri(uri), cache_dir=workdir)
    if local.is_dir():
        return load_artifact(local)
    if not zipfile.is_zipfile(local):
        raise ArtifactError(f"{uri}: neither a model directory nor a .mar (zip) archive")
    target = workdir / "extracted"
    try:
        with zipfile.ZipFile(local) as mar:
            broken = mar.testzip()
            if broken is not None:
                raise ArtifactError(f"{uri}: corrupt archive (bad CRC in {broken})")
            mar.extractall(target)  # zipfile drops absolute paths and '..' components
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError) as exc:
        raise ArtifactError(f"{uri}: corrupt archive ({exc})") from exc
    try:
        return load_artifact(target)
    except ArtifactError as exc:
        raise ArtifactError(str(exc).replace(str(target), uri)) from exc


def _figures_of(artifact: LoadedArtifact, examples: Examples, labels: Sequence[str]) -> Figures:
    """`artifact`'s figures on `examples`, class ids in `labels` order (the candidate's; the
    champion's may list the same names in another order)."""
    probabilities = predict_proba(
        artifact.model, artifact.tokenizer, examples.texts, max_length=artifact.max_length
    )
    predicted = [labels.index(artifact.labels[i]) for i in probabilities.argmax(dim=1).tolist()]
    return figures([labels.index(x) for x in examples.labels], predicted, labels)


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


def _reference_data(model_dir: Path, baseline: LoadedArtifact, splits: Splits) -> Examples:
    """The rows the baseline was trained for: its dataset snapshot (`dataset/`, written by
    modelloop-train, captured rows included) where it has one, else this job's dataset."""
    if not (model_dir / SNAPSHOT_DIR / SNAPSHOT_FILE).is_file():
        return trained_for(splits.train, splits.validation)
    snapshot_splits, snapshot = read_snapshot(parse_uri(model_dir.as_uri()))
    recorded = (baseline.manifest.get("dataset") or {}).get("digest")
    if recorded is not None and recorded != snapshot.digest:
        raise ArtifactError(
            f"artifact {model_dir}: its dataset snapshot has digest {snapshot.digest}, the "
            f"manifest records {recorded} (a snapshot of another run was copied in)"
        )
    return trained_for(snapshot_splits.train, snapshot_splits.validation)


def _save_optimized(
    model: torch.nn.Module,
    baseline: LoadedArtifact,
    staging: Path,
    validation: tuple[Sequence[str], Sequence[int]],
    reference_data: Examples,
    applied: list[dict[str, Any]],
    args: argparse.Namespace,
) -> None:
    """Write the optimized artifact with a reference profile of the *optimized* model (its
    confidences differ from the baseline's, and drift is measured against what is served).
    The input section too comes from the optimized model's own embeddings of the data the
    baseline was trained for: a distilled student's encoder, or a quantized one, does not
    embed texts where the baseline did."""
    texts, targets = validation
    probabilities = predict_proba(
        model, baseline.tokenizer, texts, max_length=baseline.max_length
    )
    profile = model_reference_profile(
        model,
        baseline.tokenizer,
        probabilities,
        targets,
        reference_data,
        baseline.labels,
        max_length=baseline.max_length,
        seed=args.seed,
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
