"""`make demo`: the quickstart loop on this machine, narrated, from YAML to predictions.

Brings up the local stack (tests/e2e/stack.py: control plane, pod runner node `local-0`,
`models` claim, operator), applies examples/quickstart/ one manifest at a time, narrates
each transition, asks the served model about held-out BBC articles and ends with a summary.
Everything stops at the end (or on Ctrl-C); with KEEP=1 it stays up until Ctrl-C and
prints how to reach it. Re-runnable: each run starts from an empty work dir.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests.e2e import loop  # noqa: E402
from tests.e2e.orphans import processes_using  # noqa: E402
from tests.e2e.stack import Stack, start_stack  # noqa: E402

Json = dict[str, Any]
STARTED = time.monotonic()


def say(message: str) -> None:
    print(f"[{time.monotonic() - STARTED:6.1f}s] {message}", flush=True)


def narrate_status(kind: str) -> Any:
    def show(obj: Json) -> None:
        status = obj.get("status", {})
        conditions = ", ".join(f"{c['type']}={c['status']}"
                               for c in status.get("conditions", []) or [])
        say(f"{kind} {obj['metadata']['name']}: phase {status.get('phase', '?')}"
            f"{' (' + conditions + ')' if conditions else ''}"
            f"{' - ' + status['message'] if status.get('message') else ''}")
    return show


def _sigterm(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run(stack: Stack, settings: loop.Settings) -> Json:
    """The loop; returns what the summary prints."""
    summary: Json = {}
    say("applying examples/quickstart/10-trainingjob.yaml")
    stack.apply(loop.training_job(settings))
    tj = loop.wait_phase(stack, "trainingjob", "quickstart", {"Succeeded"},
                         timeout=settings.train_timeout, on_change=narrate_status("TrainingJob"))
    summary["tj"] = tj
    say(f"trained: metrics {tj['status'].get('metrics')}, model {loop.dig(tj, 'status', 'model')}")

    say("applying examples/quickstart/20-optimizationjob.yaml (int8 dynamic quantization)")
    stack.apply(loop.manifest("20-optimizationjob"))
    oj = loop.wait_phase(stack, "optimizationjob", "quickstart-int8", {"Succeeded"},
                         timeout=settings.optimize_timeout,
                         on_change=narrate_status("OptimizationJob"))
    summary["oj"] = oj
    say("optimization report:\n" + json.dumps(oj["status"].get("report"), indent=2))

    say("applying examples/quickstart/30-modeldeployment.yaml (TorchServe)")
    stack.apply(loop.manifest("30-modeldeployment"))
    mdep = loop.wait_phase(stack, "modeldeployment", "quickstart", {"Ready"},
                           timeout=settings.serve_timeout,
                           on_change=narrate_status("ModelDeployment"))
    summary["mdep"] = mdep
    address = loop.wait_serving_address(stack, "quickstart")
    model = loop.model_name_of(oj["status"]["archiveUri"])
    summary["url"] = f"http://{address}:{loop.INFERENCE_PORT}/predictions/{model}"
    held_out = loop.held_out_examples(per_class=4)
    predictions = loop.predict(address, model, held_out.texts)
    for text, label, prediction in list(zip(held_out.texts, held_out.labels, predictions,
                                            strict=True))[::4]:
        first_line = text.splitlines()[0][:60]
        say(f"  {first_line!r:64} -> {prediction['label']:13} "
            f"({prediction['confidence']:.2f}; truth {label})")
    summary["served_accuracy"] = loop.accuracy(predictions, held_out.labels)
    summary["held_out"] = len(held_out.texts)
    latencies: list[float] = []
    for text in held_out.texts[:10]:
        started = time.monotonic()
        loop.predict(address, model, [text])
        latencies.append((time.monotonic() - started) * 1000)
    summary["latency_ms"] = statistics.median(latencies)
    return summary


def print_summary(summary: Json, stack: Stack) -> None:
    tj, oj, mdep = summary["tj"], summary["oj"], summary["mdep"]
    report = oj["status"].get("report") or {}
    base, opt = report.get("baseline") or {}, report.get("optimized") or {}

    def mb(value: Any) -> str:
        return f"{value / 1e6:.1f} MB" if isinstance(value, int | float) else "-"

    def num(value: Any, fmt: str = ".3f") -> str:
        return format(value, fmt) if isinstance(value, int | float) else "-"

    rows = [
        ("trained accuracy (validation)", num(loop.dig(tj, "status", "metrics", "accuracy"))),
        ("fp32 / int8 accuracy", f"{num(base.get('accuracy'))} / {num(opt.get('accuracy'))}"),
        ("fp32 / int8 size", f"{mb(base.get('sizeBytes'))} / {mb(opt.get('sizeBytes'))}"),
        ("fp32 / int8 latency p50",
         f"{num(base.get('latencyP50Ms'), '.1f')} / {num(opt.get('latencyP50Ms'), '.1f')} ms"),
        ("int8 speedup", num(report.get("speedup"), ".2f") + "x"),
        (f"served accuracy ({summary['held_out']} held-out articles)",
         num(summary["served_accuracy"], ".2f")),
        ("served latency p50 (1 text, HTTP)", f"{summary['latency_ms']:.0f} ms"),
        ("lineage", " -> ".join(filter(None, [
            loop.dig(tj, "spec", "model", "uri"), f"TrainingJob/{tj['metadata']['name']}",
            f"OptimizationJob/{oj['metadata']['name']}",
            loop.dig(mdep, "status", "activeModel", "archiveUri"),
            f"ModelDeployment/{mdep['metadata']['name']}"]))),
    ]
    width = max(len(name) for name, _ in rows)
    print("\n" + "=" * 78)
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    print("=" * 78)
    print("  bring-up: " + ", ".join(f"{k} {v:.1f}s" for k, v in stack.timings.items()))
    print(f"  total: {time.monotonic() - STARTED:.0f}s\n", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=REPO_ROOT / ".cache" / "demo")
    parser.add_argument("--keep", action="store_true", default=os.environ.get("KEEP") == "1",
                        help="leave everything running until Ctrl-C (also KEEP=1)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    signal.signal(signal.SIGTERM, _sigterm)
    # Processes of an earlier run died with it (they are tied to their parent), so an
    # old work dir holds only files.
    shutil.rmtree(args.workdir, ignore_errors=True)
    stack: Stack | None = None
    try:
        stack = start_stack(args.workdir, on_step=say)
        summary = run(stack, loop.DEMO)
        print_summary(summary, stack)
        if args.keep:
            print(f"KEEP=1: running until Ctrl-C\n  export KUBECONFIG={stack.plane.kubeconfig}\n"
                  f"  curl -s -H 'Content-Type: application/json' -d '{{\"text\": \"...\"}}' "
                  f"{summary['url']}\n  operator log: {args.workdir / 'operator.log'}",
                  flush=True)
            while True:
                time.sleep(3600)
        return 0
    except KeyboardInterrupt:
        say("interrupted: tearing everything down")
        return 130
    finally:
        if stack is not None:
            say("stopping operator, pods and control plane")
            dirs = [stack.workdir, *stack.pod_dirs]
            stack.stop()
            leftovers = [p for d in dirs for p in processes_using(d)]
            say("stopped; nothing left running" if not leftovers
                else f"stopped, but these processes remain: {leftovers}")


if __name__ == "__main__":
    sys.exit(main())
