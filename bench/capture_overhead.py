"""Request capture's cost on serving, and the collector's feedback throughput.

    .venv/bin/python bench/capture_overhead.py [--requests 400] [--concurrency 8] [--rounds 2]

1. **Capture overhead.** TorchServe (via modelloop-serve, the model of bench/serve_throughput.py)
   serves single BBC News documents at concurrency 8, alternately with capture off and with
   capture at 100% to a real collector (`modelloop-collect`, a file sink), `--rounds` times
   each, in the same run. The figure is `ratio`: the median req/s with capture over the median
   without (target: >= 0.95, i.e. capture costs at most 5% of throughput).
2. **Feedback throughput.** A fresh collector ingests synthetic capture records in batches of
   500 (`ingestRecordsPerSecond`), then takes their feedback in batches of 100 items at
   concurrency 4 (`batchedItemsPerSecond`) and one item per request at concurrency 8
   (`singleRequestsPerSecond`). Every write is fsynced before the collector answers.

Writes bench/results/capture_overhead.json and prints one summary line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from serve_throughput import base_artifact, bbc_texts, free_ports, post, served  # noqa: E402
from trainer_bench_common import RESULTS, machine  # noqa: E402

LABELS = ["business", "entertainment", "politics", "sport", "tech"]


class Collector:
    """`modelloop-collect` as a subprocess on a free port, with a file sink."""

    def __init__(self, workdir: Path) -> None:
        self.sink = workdir / "sink"
        (self.port,) = free_ports(1)
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = (workdir / "collector.log").open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "modelloop_server.collector_server", "--sink",
             f"file://{self.sink}", "--deployment", "bench", "--address", "127.0.0.1",
             "--port", str(self.port)], stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", timeout=2):
                    return
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise SystemExit(f"collector did not start; see {self._log.name}") from None
                time.sleep(0.2)

    def metric(self, name: str) -> float:
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=10) as response:
            text = response.read().decode()
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith(name + "{") or line.startswith(name + " "))

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)
        self._log.close()


def capture_overhead(artifact: Path, texts: list[str], *, requests: int, concurrency: int,
                     rounds: int) -> dict[str, Any]:
    off: list[float] = []
    on: list[float] = []
    captured = 0.0
    for _ in range(rounds):
        for mode in ("off", "on"):
            with tempfile.TemporaryDirectory(prefix=f"capture-bench-{mode}-") as tmp:
                workdir = Path(tmp)
                collector = Collector(workdir) if mode == "on" else None
                saved = dict(os.environ)
                try:
                    if collector is not None:
                        os.environ["MODELLOOP_CAPTURE_URL"] = f"{collector.url}/v1/capture"
                        os.environ["MODELLOOP_CAPTURE_SAMPLE_RATE"] = "1"
                    figures = served(artifact, texts, requests=requests,
                                     concurrency=concurrency, workdir=workdir)
                    if collector is not None:
                        time.sleep(2.0)  # the workers' senders flush every second
                        captured += collector.metric("modelloop_captured_total")
                finally:
                    os.environ.clear()
                    os.environ.update(saved)
                    if collector is not None:
                        collector.stop()
            (on if mode == "on" else off).append(figures["requestsPerSecond"])
    expected = rounds * (requests + concurrency * 2)  # measured requests and the warm-up
    return {"offRequestsPerSecond": off, "onRequestsPerSecond": on,
            "off": statistics.median(off), "on": statistics.median(on),
            "ratio": statistics.median(on) / statistics.median(off),
            "captured": captured, "servedWithCapture": expected}


def _post_json(url: str, body: Any) -> int:
    return post(url, json.dumps(body).encode())


def feedback_throughput(workdir: Path, *, records: int) -> dict[str, Any]:
    from modelloop_server.capture_records import (
        CaptureRecord,
        ModelIdentity,
        encode,
        utc_timestamp,
    )

    collector = Collector(workdir)
    try:
        model = ModelIdentity(name="bench", version="v1", digest="sha256:0")
        text = bbc_texts(1)[0][:2000]
        batches = []
        for start in range(0, records, 500):
            batches.append(b"".join(encode(CaptureRecord(
                request_id=f"r{i}", time=utc_timestamp(time.time()), model=model, pod="p",
                text=text, label=LABELS[i % 5], confidence=0.9,
                scores={label: 0.2 for label in LABELS}, latency_ms=1.0).to_json())
                for i in range(start, min(records, start + 500))))
        began = time.perf_counter()
        for body in batches:
            request = urllib.request.Request(f"{collector.url}/v1/capture", data=body,
                                             method="POST")
            with urllib.request.urlopen(request, timeout=60) as response:
                response.read()
        ingest_s = time.perf_counter() - began
        url = f"{collector.url}/v1/models/bench/feedback"
        half = records // 2
        batched = [{"feedback": [{"requestId": f"r{i}", "label": LABELS[(i + 1) % 5]}
                                 for i in range(start, min(half, start + 100))]}
                   for start in range(0, half, 100)]
        began = time.perf_counter()
        with ThreadPoolExecutor(max_workers=4) as pool:
            codes = list(pool.map(lambda b: _post_json(url, b), batched))
        batched_s = time.perf_counter() - began
        singles = [{"requestId": f"r{i}", "label": LABELS[i % 5]} for i in range(half, records)]
        began = time.perf_counter()
        with ThreadPoolExecutor(max_workers=8) as pool:
            codes += list(pool.map(lambda b: _post_json(url, b), singles))
        single_s = time.perf_counter() - began
        if any(code != 200 for code in codes):
            raise SystemExit(f"{sum(c != 200 for c in codes)} feedback requests failed")
        labelled = collector.metric("modelloop_feedback_total")
    finally:
        collector.stop()
    return {"records": records, "ingestRecordsPerSecond": records / ingest_s,
            "batchedItemsPerSecond": half / batched_s,
            "singleRequestsPerSecond": (records - half) / single_s,
            "labelled": labelled, "textChars": len(text)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--feedback-records", type=int, default=20_000)
    args = parser.parse_args()

    load_before = os.getloadavg()
    artifact, model_desc = base_artifact()
    texts = bbc_texts(200)
    overhead = capture_overhead(artifact, texts, requests=args.requests,
                                concurrency=args.concurrency, rounds=args.rounds)
    with tempfile.TemporaryDirectory(prefix="feedback-bench-") as tmp:
        feedback = feedback_throughput(Path(tmp), records=args.feedback_records)
    result = {
        "benchmark": "capture_overhead",
        "model": model_desc,
        "settings": {"requests": args.requests, "concurrency": args.concurrency,
                     "rounds": args.rounds, "sampleRate": 1.0, "workers": 1,
                     "texts": "BBC News documents, one per request"},
        "capture": overhead,
        "feedback": feedback,
        "machine": {**machine(), "loadAverage1m": {"start": load_before[0],
                                                    "end": os.getloadavg()[0]}},
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "capture_overhead.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"capture_overhead: capture at 100% {overhead['on']:.1f} req/s vs "
          f"{overhead['off']:.1f} off (ratio {overhead['ratio']:.3f}, "
          f"{overhead['captured']:.0f}/{overhead['servedWithCapture']} captured); feedback "
          f"{feedback['batchedItemsPerSecond']:.0f} items/s batched, "
          f"{feedback['singleRequestsPerSecond']:.0f} req/s single, ingest "
          f"{feedback['ingestRecordsPerSecond']:.0f} records/s")


if __name__ == "__main__":
    main()
