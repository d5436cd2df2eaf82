"""`make demo`: the whole modelloop loop on this machine, narrated, YAML to retrained model.

Brings up the local stack (tests/e2e/stack.py: control plane, pod runner node `local-0`,
`models` claim, operator), applies examples/quickstart/ one manifest at a time, narrates
each transition (with the trainer's steps as they happen), asks the served model about
held-out BBC articles, then runs the closed loop the e2e test runs (tests/e2e/closedloop.py):
a real Prometheus, capture and feedback, users sending text in a new vocabulary and a
labeller posting the true labels, live accuracy falling, the deployment Degraded, a retrain
on base data + labelled traffic that the champion/challenger gate rejects, a better one it
promotes, and live accuracy back up on the same traffic, with a live progress line. It
ends with a summary table (accuracies, live accuracy, the gate's figures, sizes,
latencies, the lineage chain). Everything stops at the end (or on Ctrl-C); with
KEEP=1 it stays up until Ctrl-C and prints how to reach it. Re-runnable: each run starts
from an empty work dir.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
# This checkout's packages first: the shared environment's editable installs may point at
# another clone (tests/e2e/stack.py, SOURCE_PATH, does the same for the operator and pods).
for _package in ("operator", "trainer-image", "server-image"):
    sys.path.insert(1, str(REPO_ROOT / _package / "src"))

from tests.e2e import closedloop, loop  # noqa: E402
from tests.e2e.orphans import processes_using  # noqa: E402
from tests.e2e.prometheus import Prometheus  # noqa: E402
from tests.e2e.stack import NODE_NAME, Stack, start_stack  # noqa: E402
from tests.harness.binaries import BUILD_SCRIPT  # noqa: E402
from tests.harness.podrunner.podman import node_containers  # noqa: E402
from tests.harness.prometheus import (  # noqa: E402
    BUILD_STEP,
    missing_prometheus_message,
    prometheus_binary,
)

Json = dict[str, Any]
STARTED = time.monotonic()
LIVE = sys.stdout.isatty()
"""On a terminal the progress line is redrawn in place; in a log it is a line per change."""
_progress_shown = False


def _stamp(message: str) -> str:
    return f"[{time.monotonic() - STARTED:6.1f}s] {message}"


def say(message: str) -> None:
    global _progress_shown
    if _progress_shown:
        print(flush=True)
        _progress_shown = False
    print(_stamp(message), flush=True)


def progress(line: str) -> None:
    """The live progress view: one line, redrawn in place on a terminal."""
    global _progress_shown
    if not LIVE:
        say(line)
        return
    width = shutil.get_terminal_size((120, 20)).columns - 1
    sys.stdout.write("\r\033[K" + _stamp(line.strip())[:width])
    sys.stdout.flush()
    _progress_shown = True


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


def serve_and_ask(stack: Stack, archive: str, *, show: int) -> Json:
    """Classify the held-out articles with the model of `archive` over HTTP; print `show`
    of them; return the served accuracy and a single-text latency."""
    address = loop.wait_serving_address(stack, "quickstart", model_uri=archive)
    model = loop.model_name_of(archive)
    held_out = loop.held_out_examples(per_class=4)
    predictions = loop.predict(address, model, held_out.texts)
    step = max(1, len(held_out.texts) // show) if show else 0
    for text, label, prediction in (list(zip(held_out.texts, held_out.labels, predictions,
                                             strict=True))[::step] if step else []):
        first_line = text.splitlines()[0][:60]
        say(f"  {first_line!r:64} -> {prediction['label']:13} "
            f"({prediction['confidence']:.2f}; truth {label})")
    latencies: list[float] = []
    for text in held_out.texts[:10]:
        started = time.monotonic()
        loop.predict(address, model, [text])
        latencies.append((time.monotonic() - started) * 1000)
    return {"url": f"http://{address}:{loop.INFERENCE_PORT}/predictions/{model}",
            "accuracy": loop.accuracy(predictions, held_out.labels),
            "held_out": len(held_out.texts), "latency_ms": statistics.median(latencies)}


def run(stack: Stack, settings: loop.Settings) -> Json:
    """Train -> int8 -> serve -> predict; returns what the summary prints."""
    summary: Json = {}
    view = closedloop.ProgressView(stack, say=progress, every=1 if LIVE else 10)
    say("applying examples/quickstart/10-trainingjob.yaml")
    stack.apply(loop.training_job(settings))

    def training_progress() -> None:
        step = loop.trainer_progress(stack, "quickstart")
        if step:
            view.show(f"  TrainingJob quickstart: {step}")

    tj = loop.wait_phase(stack, "trainingjob", "quickstart", {"Succeeded"},
                         timeout=settings.train_timeout, on_change=narrate_status("TrainingJob"),
                         on_poll=training_progress)
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
    say("asking the served model about held-out articles (never trained on):")
    summary["served"] = serve_and_ask(stack, oj["status"]["archiveUri"], show=5)
    summary["url"] = summary["served"]["url"]
    return summary


def run_closed_loop(stack: Stack, prom: Prometheus, summary: Json) -> None:
    """Coded traffic with feedback -> live accuracy down -> Degraded -> a retrain the gate
    rejects -> one it promotes -> live accuracy back up (tests/e2e/closedloop.py), live."""
    archive = summary["oj"]["status"]["archiveUri"]
    view = closedloop.ProgressView(stack, say=progress, every=2 if LIVE else 10)
    seen = closedloop.run(stack, prom, model=loop.model_name_of(archive), archive=archive,
                          settings=loop.DEMO, view=view, on_step=say)
    summary["loop"] = seen
    new_archive = seen.promoted["status"]["activeModel"]["archiveUri"]
    say("asking the promoted model about the same held-out articles:")
    summary["served_after"] = serve_and_ask(stack, new_archive, show=0)
    summary["url"] = summary["served_after"]["url"]


def print_summary(summary: Json, stack: Stack) -> None:
    tj, oj, mdep = summary["tj"], summary["oj"], summary["mdep"]
    seen: closedloop.Observed | None = summary.get("loop")
    rtj = seen.training_job if seen else {}
    roj = seen.optimization_job if seen else {}

    def report(obj: Json) -> tuple[Json, Json, Json]:
        rep = loop.dig(obj, "status", "report") or {}
        return rep, rep.get("baseline") or {}, rep.get("optimized") or {}

    def mb(value: Any) -> str:
        return f"{value / 1e6:.1f} MB" if isinstance(value, int | float) else "-"

    def num(value: Any, fmt: str = ".3f") -> str:
        return format(value, fmt) if isinstance(value, int | float) else "-"

    def both(first: str, second: str) -> str:
        return f"{first:<24}{second if seen else ''}"

    rows: list[tuple[str, str]] = [("", both("quickstart (v1)", "retrained (promoted)"))]
    (rep1, base1, opt1), (rep2, base2, opt2) = report(oj), report(roj)
    served, after = summary["served"], summary.get("served_after") or {}
    rows += [
        ("trained accuracy (validation)",
         both(num(loop.dig(tj, "status", "metrics", "accuracy")),
              num(loop.dig(rtj, "status", "metrics", "accuracy")))),
        ("fp32 / int8 accuracy",
         both(f"{num(base1.get('accuracy'))} / {num(opt1.get('accuracy'))}",
              f"{num(base2.get('accuracy'))} / {num(opt2.get('accuracy'))}")),
        ("fp32 / int8 size",
         both(f"{mb(base1.get('sizeBytes'))} / {mb(opt1.get('sizeBytes'))}",
              f"{mb(base2.get('sizeBytes'))} / {mb(opt2.get('sizeBytes'))}")),
        ("fp32 / int8 latency p50",
         both(f"{num(base1.get('latencyP50Ms'), '.1f')} / {num(opt1.get('latencyP50Ms'), '.1f')}"
              " ms",
              f"{num(base2.get('latencyP50Ms'), '.1f')} / {num(opt2.get('latencyP50Ms'), '.1f')}"
              " ms")),
        ("int8 speedup", both(num(rep1.get("speedup"), ".2f") + "x",
                              num(rep2.get("speedup"), ".2f") + "x")),
        (f"served accuracy ({served['held_out']} held-out articles)",
         both(num(served["accuracy"], ".2f"), num(after.get("accuracy"), ".2f"))),
        ("served latency p50 (1 text, HTTP)",
         both(f"{served['latency_ms']:.0f} ms",
              f"{after['latency_ms']:.0f} ms" if after else "-")),
    ]
    if seen is not None:
        before, after = seen.live_before, seen.live_after
        rows.append((f"live accuracy, coded traffic (min {loop.DEMO.live_accuracy_min})",
                     both(f"{num(before.accuracy)} ({before.correct}/{before.requests})",
                          f"{num(after.accuracy)} ({after.correct}/{after.requests})")))
        for kind in ("class", "input"):
            rows.append((f"drift PSI, {kind}, vs the data trained for",
                         both(num(seen.drift_before.get(kind)), num(seen.drift_after.get(kind)))))
        comparison = loop.dig(roj, "status", "report", "comparison") or {}
        for section in ("holdout", "original"):
            rows.append((f"gate: {section} accuracy (n="
                         f"{loop.dig(comparison, 'candidate', section, 'samples')})",
                         both(num(loop.dig(comparison, "champion", section, "accuracy")),
                              num(loop.dig(comparison, "candidate", section, "accuracy")))))
        rejected = seen.rejected
        rows.append(("rejected run", f"{rejected.get('trainingJob')} {rejected.get('outcome')}"
                     f" ({closedloop.gate_line(rejected)})"))
    active = loop.dig(seen.healthy if seen else mdep, "status", "activeModel") or {}
    chain = [loop.dig(tj, "spec", "model", "uri"), f"TrainingJob/{tj['metadata']['name']}",
             f"OptimizationJob/{oj['metadata']['name']}", oj["status"].get("archiveUri")]
    if seen is not None:
        lineage = active.get("lineage") or {}
        checks = ", ".join(f"{c.get('name')} {num(c.get('value'))}, bound {num(c.get('threshold'))}"
                           for c in loop.dig(lineage, "triggeredBy", "checks") or [])
        chain += [f"ModelDeployment/{mdep['metadata']['name']} ({checks})",
                  f"TrainingJob/{lineage.get('trainingJob')} on {lineage.get('dataset')} + "
                  f"labelled traffic (snapshot {str(lineage.get('datasetDigest'))[:19]})",
                  f"OptimizationJob/{lineage.get('optimizationJob')}", active.get("archiveUri")]
    chain.append(f"ModelDeployment/{mdep['metadata']['name']}")
    width = max(len(name) for name, _ in rows)
    print("\n" + "=" * 78)
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    print("  lineage:\n    " + "\n    -> ".join(str(link) for link in chain if link))
    print("=" * 78)
    print("  bring-up: " + ", ".join(f"{k} {v:.1f}s" for k, v in stack.timings.items()))
    if seen is not None:
        print("  closed loop: " + ", ".join(f"{k} {v:.0f}s" for k, v in seen.timings.items()))
    print(f"  total: {time.monotonic() - STARTED:.0f}s\n", flush=True)


def obtain_prometheus() -> str:
    """The Prometheus binary, built first if needed (a no-op in seconds when cached).

    `make demo` has built it already (`cluster-binaries`); running hack/demo.py directly on a
    fresh machine builds it here, before anything starts. Exits naming the step if it fails.
    """
    found = prometheus_binary()
    if found is not None:
        return found
    if os.environ.get("MODELLOOP_PROMETHEUS"):  # an explicit choice: not ours to replace
        raise SystemExit(f"demo: {missing_prometheus_message()}")
    say(f"Prometheus is not built yet: {BUILD_STEP} (cold: minutes; cached afterwards)")
    build = subprocess.run(["bash", str(BUILD_SCRIPT), "prometheus"], check=False)
    found = prometheus_binary()
    if found is None:
        raise SystemExit(f"demo: `{BUILD_STEP}` failed (exit {build.returncode}, its log is "
                         f"above); {missing_prometheus_message()}")
    return found


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
    say(f"Prometheus: {obtain_prometheus()}")
    stack: Stack | None = None
    prom: Prometheus | None = None
    try:
        stack = start_stack(args.workdir, on_step=say)
        summary = run(stack, loop.DEMO)
        say("starting Prometheus (scrapes the serving pods' metrics)")
        prom = closedloop.start_prometheus(stack)
        run_closed_loop(stack, prom, summary)
        print_summary(summary, stack)
        if args.keep:
            print(f"KEEP=1: running until Ctrl-C\n  export KUBECONFIG={stack.plane.kubeconfig}\n"
                  f"  curl -s -H 'Content-Type: application/json' -d '{{\"text\": \"...\"}}' "
                  f"{summary['url']}\n"
                  + (f"  Prometheus: {prom.url}\n" if prom is not None else "")
                  + f"  operator log: {args.workdir / 'operator.log'}", flush=True)
            while True:
                time.sleep(3600)
        return 0
    except KeyboardInterrupt:
        say("interrupted: tearing everything down")
        return 130
    finally:
        if prom is not None:
            prom.stop()
        if stack is not None:
            say("stopping operator, pods and control plane")
            dirs = [stack.workdir, *stack.pod_dirs]
            stack.stop()
            leftovers = [p for d in dirs for p in processes_using(d)]
            leftovers += [f"container {c}" for c in node_containers(NODE_NAME)]
            say("stopped; nothing left running" if not leftovers
                else f"stopped, but these processes remain: {leftovers}")


if __name__ == "__main__":
    sys.exit(main())
