"""Does retraining on labelled production traffic learn? The closed loop's models, offline.

    .venv/bin/python bench/loop_quality.py [--captured 500] [--evaluate 240] [--shift coded]

The closed loop's shift (tests/e2e/shift.py: `coded`, every word of six letters or more
pseudonymised into a stable code word, or `noisy`, 20% of the letters wrong), on articles
no model trains on as base data, with the quickstart's e2e training settings (150
articles, maxLength 48, 3 epochs):

- `first`: the quickstart model (base data only);
- `retrained`: base data + `--captured` labelled shifted requests, as the loop retrains
  (modelloop-train --captured-uri, holdout fraction 0.2, from the pretrained base);
- `warm`: the same data, warm-started from `first` (spec.retrain.data.warmStart);
- `direct`: the labelled requests alone (no base data), the naive alternative.

Each is evaluated on `--evaluate` shifted requests that none of them trained on (`shifted`)
and on as many whole unseen articles (`original`). Writes bench/results/loop_quality.json
and prints one summary line.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
sys.path.insert(1, str(ROOT.parent))  # tests.e2e.shift: the e2e test's and demo's traffic

from trainer_bench_common import run, write_result  # noqa: E402

from tests.e2e import shift  # noqa: E402

SETTINGS = ["--dataset-uri", "builtin://bbc-news", "--max-samples", "150",
            "--validation-split", "0.05", "--max-length", "48", "--epochs", "3",
            "--batch-size", "8", "--learning-rate", "1e-4", "--seed", "42"]
BASE = "builtin://all-minilm-l6-v2"


def labelled_records(rows: list[tuple[str, str]]) -> str:
    """The collector's labelled/v1 records for `rows`, as the sink writes them."""
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    return "".join(json.dumps({
        "schema": "modelloop.dev/labelled/v1", "requestId": f"bench-{i}", "time": now,
        "labelledAt": now, "text": text, "label": label}) + "\n"
        for i, (text, label) in enumerate(rows))


def train(name: str, out: Path, *flags: str) -> tuple[Path, float]:
    started = time.perf_counter()
    result = run("modelloop_trainer.train", *flags, "--output-uri", f"file://{out / name}")
    if result.returncode != 0:
        sys.exit(f"training {name} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return out / name, time.perf_counter() - started


def accuracy(model_dir: Path, rows: list[tuple[str, str]]) -> float:
    from modelloop_trainer.artifact import load_artifact
    from modelloop_trainer.evaluate import predict_proba

    model = load_artifact(model_dir)
    probabilities = predict_proba(model.model, model.tokenizer, [t for t, _ in rows],
                                  max_length=model.max_length)
    predicted = [model.labels[i] for i in probabilities.argmax(dim=1).tolist()]
    hits: int = sum(p == label for p, (_, label) in zip(predicted, rows, strict=True))
    return hits / len(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--captured", type=int, default=500)
    parser.add_argument("--evaluate", type=int, default=240)
    parser.add_argument("--shift", choices=sorted(shift.SHIFTS), default="coded")
    parser.add_argument("--out", type=Path, default=None,
                        help="result JSON (default bench/results)")
    args = parser.parse_args()
    traffic = shift.traffic(shift=shift.SHIFTS[args.shift])
    captured = traffic.shifted[:args.captured]
    evaluation = {"shifted": traffic.shifted[-args.evaluate:],
                  "original": traffic.original[:args.evaluate]}
    if len(traffic.shifted) < args.captured + args.evaluate:
        sys.exit(f"only {len(traffic.shifted)} shifted requests")
    with tempfile.TemporaryDirectory(prefix="loop-quality-") as tmp:
        work = Path(tmp)
        sink = work / "sink" / "labelled" / "2026-12-07"
        sink.mkdir(parents=True)
        (sink / "segment-0.jsonl").write_text(labelled_records(captured))
        direct_data = work / "direct.jsonl"
        direct_data.write_text("".join(json.dumps({"text": t, "label": label}) + "\n"
                                       for t, label in captured))
        capture_flags = ["--captured-uri", f"file://{work / 'sink'}",
                         "--holdout-fraction", "0.2"]
        models: dict[str, tuple[Path, float]] = {}
        models["first"] = train("first", work, "--model-uri", BASE, *SETTINGS)
        models["retrained"] = train("retrained", work, "--model-uri", BASE, *SETTINGS,
                                    *capture_flags)
        models["warm"] = train("warm", work, "--model-uri", f"file://{models['first'][0]}",
                               *SETTINGS, *capture_flags)
        direct = [f if f != "builtin://bbc-news" else f"file://{direct_data}" for f in SETTINGS]
        direct = [f for i, f in enumerate(direct)
                  if f != "--max-samples" and (i == 0 or direct[i - 1] != "--max-samples")]
        models["direct"] = train("direct", work, "--model-uri", BASE, *direct)
        figures: dict[str, Any] = {
            name: {**{domain: round(accuracy(path, rows), 4)
                      for domain, rows in evaluation.items()},
                   "trainSeconds": round(seconds, 1)}
            for name, (path, seconds) in models.items()}
    noise = {"noise": shift.NOISE} if args.shift == "noisy" else {}
    data = {"settings": {"captured": len(captured), "holdoutFraction": 0.2, "shift": args.shift,
                         **noise,
                         "evaluated": {k: len(v) for k, v in evaluation.items()},
                         "training": " ".join(SETTINGS)},
            **figures,
            "drop": round(figures["first"]["original"] - figures["first"]["shifted"], 4),
            "recovered": round(figures["retrained"]["shifted"] - figures["first"]["shifted"], 4)}
    if args.out is not None:
        args.out.write_text(json.dumps(data, indent=2) + "\n")
    else:  # the loop's shift is the run of record; others keep their own file
        write_result("loop_quality" + ("" if args.shift == "coded" else f"_{args.shift}"), data)
    print("loop_quality ({s}): shifted accuracy first {f} -> retrained {r} (warm {w}, "
          "direct {d}); original first {fo} -> retrained {ro}".format(
              s=args.shift,
              f=figures["first"]["shifted"], r=figures["retrained"]["shifted"],
              w=figures["warm"]["shifted"], d=figures["direct"]["shifted"],
              fo=figures["first"]["original"], ro=figures["retrained"]["original"]))


if __name__ == "__main__":
    main()
