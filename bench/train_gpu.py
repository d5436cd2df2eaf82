"""Benchmark: the trainer's CUDA paths on one GPU (bf16 autocast, fused AdamW, DDP over nccl).

What it runs, in order of importance (a phase that would not fit in `--budget-s` is
skipped and named in the result, and the JSON is rewritten after every phase, so whatever
ran survives a kill):

1. The real `modelloop-train` (`python -m modelloop_trainer.train`, the console script's
   `main`) under `torchrun --standalone --nproc-per-node 1` with bench/trainer_bench_common.py
   TRAIN_FLAGS: MiniLM, 1,500 BBC News docs, length 128, batch 16, 1 epoch, precision auto
   (bf16 autocast on a GPU). Accuracy, the command's wall time, the GPU's peak memory
   (nvidia-smi, sampled) and the dtype of the weights it wrote.
2. Throughput of the trainer's own loop (`run_loop`, exactly what the command runs) against
   a minimal plain PyTorch loop, interleaved in one process like train_bbc.py does on the
   CPU, at each of `--batches`. Variants: `ours`; `oursDdp` (the same loop through
   DistributedDataParallel with `device_ids` over an nccl group of one: one GPU cannot hold
   two nccl ranks, so this is the nearest a single GPU gets to the multi-GPU path);
   `plainDefault` / `plainFused` (bf16 autocast, AdamW default / fused, batches built before
   the clock starts); `plainFp32Fused` (no autocast). Plus the host cost of building one
   batch, and short checks of the other CUDA paths: fp16 with GradScaler, DDP with
   gradient accumulation (no_sync), a checkpoint saved and resumed on the GPU.
3. More command runs: all training docs at batch 64 for 3 epochs; the 1,500-doc run with
   `--precision fp32` and with `--precision fp16` (GradScaler).

Run (on a GPU machine; hack/gpu-bench.sh does this on the lent H200):
    PYTHONPATH=trainer-image/src:bench python bench/train_gpu.py [--model-dir DIR] [--out DIR]
`--quick` shrinks everything (64 docs, batches 4 and 8, 2 steps) to smoke-test the script
on a CPU in a few minutes. Writes `<out>/train_gpu.json` (default bench/results/) and prints
one summary line.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from modelloop_trainer.distributed import World
from trainer_bench_common import RESULTS, TRAIN_FLAGS, machine

# Seconds each phase is expected to take on a GPU; a phase that would end past the budget
# is skipped. Generous: a skipped phase costs a figure, an overrun costs the whole call.
ESTIMATES = {"command": 75.0, "throughput": 120.0}


def main() -> None:
    args = parse_args()
    bench = GpuBench(args)
    bench.command("bbc1500_b16_auto", [])
    bench.phase("throughput", "loop vs plain", bench.throughput)
    bench.command(
        "all_b64_e3_auto", ["--max-samples", "100000", "--batch-size", "64", "--epochs", "3"]
    )
    bench.command("bbc1500_b16_fp32", ["--precision", "fp32"])
    bench.command("bbc1500_b16_fp16", ["--precision", "fp16"])
    bench.write()
    print(bench.summary(), flush=True)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--model-dir", type=Path, default=None, help="default: the builtin MiniLM")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--budget-s", type=float, default=380.0)
    p.add_argument("--batches", default="16,64,128")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=20, help="steps per variant per round")
    p.add_argument("--quick", action="store_true", help="tiny sizes, for a CPU smoke test")
    args = p.parse_args()
    if args.quick:
        args.batches, args.rounds, args.steps = "4,8", 2, 2
    return args


def override(flags: list[str], extra: list[str]) -> list[str]:
    """TRAIN_FLAGS with the values of `extra`'s flags replaced (or appended)."""
    values = dict(zip(flags[::2], flags[1::2], strict=True))
    values.update(zip(extra[::2], extra[1::2], strict=True))
    return [item for pair in values.items() for item in pair]


class GpuBench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.start = time.perf_counter()
        self.device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
        self.model_uri = (
            f"file://{args.model_dir.resolve()}" if args.model_dir else "builtin://all-minilm-l6-v2"
        )
        self.max_samples = 64 if args.quick else 1500
        self.work = Path(tempfile.mkdtemp(prefix="modelloop-gpu-bench-"))
        args.out.mkdir(parents=True, exist_ok=True)
        self.log = args.out / "commands.log"
        self.result: dict[str, Any] = {
            "benchmark": "train_gpu",
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "settings": {
                "modelUri": self.model_uri,
                "trainFlags": TRAIN_FLAGS,
                "batches": args.batches,
                "rounds": args.rounds,
                "stepsPerRound": args.steps,
                "quick": args.quick,
                "budgetSeconds": args.budget_s,
            },
            "machine": {**machine(), **gpu_facts()},
            "commands": {},
            "throughput": {},
            "checks": {},
            "skipped": [],
            "errors": {},
        }
        self.write()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def write(self) -> None:
        self.result["elapsedSeconds"] = round(self.elapsed(), 1)
        text = json.dumps(self.result, indent=2) + "\n"
        (self.args.out / "train_gpu.json").write_text(text)

    def phase(self, kind: str, name: str, body: Callable[[], None]) -> None:
        if self.elapsed() + ESTIMATES[kind] > self.args.budget_s:
            self.result["skipped"].append(f"{kind} {name} at {self.elapsed():.0f}s")
            print(f"skipping {kind} {name}: {self.elapsed():.0f}s elapsed", flush=True)
            return
        try:
            body()
        except Exception as exc:  # record and go on: one broken phase must not hide the rest
            import traceback

            traceback.print_exc()
            self.result["errors"][f"{kind}@{self.elapsed():.0f}s"] = f"{type(exc).__name__}: {exc}"
        self.write()

    # -- 1 and 3: the real command under torchrun ----------------------------------------

    def command(self, name: str, extra: list[str]) -> None:
        self.phase("command", name, lambda: self._command(name, extra))

    def _command(self, name: str, extra: list[str]) -> None:
        flags = override(TRAIN_FLAGS, ["--model-uri", self.model_uri, *extra])
        if self.args.quick:
            flags = override(flags, ["--max-samples", str(self.max_samples), "--max-length", "32"])
        out = self.work / name
        termination = self.work / f"{name}.termination.json"
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            "1",
            "-m",
            "modelloop_trainer.train",
            *flags,
            "--output-uri",
            f"file://{out}",
            "--termination-log",
            str(termination),
        ]
        print(f"command {name}: {' '.join(cmd[3:])}", flush=True)
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        remaining = max(30.0, self.args.budget_s - self.elapsed())
        with self.log.open("a") as log, GpuMemorySampler() as memory:
            log.write(f"\n===== {name}: {' '.join(cmd)}\n")
            log.flush()
            begin = time.perf_counter()
            proc = subprocess.run(
                cmd, stdout=log, stderr=subprocess.STDOUT, env=env, timeout=remaining, check=False
            )
            wall = time.perf_counter() - begin
        entry: dict[str, Any] = {
            "flags": flags,
            "exitCode": proc.returncode,
            "wallSeconds": round(wall, 1),
            "gpuPeakMemoryMiB": memory.peak_mib,
        }
        if termination.is_file():
            entry["termination"] = json.loads(termination.read_text())
        metrics_file = out / "metrics.json"
        if metrics_file.is_file():
            metrics = json.loads(metrics_file.read_text())
            entry.update(
                accuracy=metrics["accuracy"],
                f1_macro=metrics["f1_macro"],
                validationSamples=metrics["samples"],
                train=metrics["train"],
                savedWeightDtypes=saved_dtypes(out),
            )
        self.result["commands"][name] = entry
        print(
            f"command {name}: exit {proc.returncode}, accuracy {entry.get('accuracy')}, "
            f"wall {wall:.1f}s, train {entry.get('train', {}).get('seconds')}s, "
            f"{entry.get('train', {}).get('samplesPerSecond')} samples/s, "
            f"GPU peak {memory.peak_mib} MiB",
            flush=True,
        )
        shutil.rmtree(out, ignore_errors=True)

    # -- 2: the loop against a plain loop, and the other CUDA paths ----------------------

    def throughput(self) -> None:
        from modelloop_trainer.datasets import DatasetSpec, load_splits
        from modelloop_trainer.models import load_tokenizer, resolve_model_dir
        from modelloop_trainer.train import tokenize

        init_group_of_one(self.device)
        try:
            spec = DatasetSpec(uri="builtin://bbc-news", max_samples=self.max_samples, seed=42)
            splits = load_splits(spec)
            model_dir = resolve_model_dir(self.model_uri)
            tokenizer = load_tokenizer(model_dir, self.model_uri)
            length = 32 if self.args.quick else 128
            data = tokenize(tokenizer, splits.train.texts, splits.train_ids(), length)
            for batch in (int(b) for b in self.args.batches.split(",")):
                self.result["throughput"][f"batch{batch}"] = self._compare(
                    model_dir, splits.label_names, data, batch
                )
                self.write()
                print(f"throughput batch {batch}: {self.result['throughput'][f'batch{batch}']}")
            self.result["checks"] = self._checks(model_dir, splits.label_names, data)
        finally:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()

    def _compare(
        self, model_dir: Path, label_names: list[str], data: Any, batch: int
    ) -> dict[str, Any]:
        steps, rounds = self.args.steps, self.args.rounds
        cuda = self.device.type == "cuda"
        variants: dict[str, Callable[[int, int], float]] = {
            "ours": LoopRunner(model_dir, label_names, data, batch, self.device, ddp=False),
            "oursDdp": LoopRunner(model_dir, label_names, data, batch, self.device, ddp=True),
            "plainDefault": PlainRunner(
                model_dir, label_names, data, batch, self.device, fused=False, bf16=cuda
            ),
            "plainFused": PlainRunner(
                model_dir, label_names, data, batch, self.device, fused=True, bf16=cuda
            ),
        }
        if cuda:  # on a CPU there is no autocast, so this would repeat plainFused
            variants["plainFp32Fused"] = PlainRunner(
                model_dir, label_names, data, batch, self.device, fused=True, bf16=False
            )
        for run in variants.values():
            run(0, 2)  # warm-up: kernels chosen, allocator grown, fused optimizer built
        peak: dict[str, float] = {}
        per_round: list[dict[str, float]] = []
        for r in range(rounds):
            figures = {}
            for name, run in variants.items():
                if cuda:
                    torch.cuda.reset_peak_memory_stats(self.device)
                figures[name] = run(2 + r * steps, steps)
                if cuda:
                    peak[name] = torch.cuda.max_memory_allocated(self.device) / 2**20
            per_round.append(figures)
        medians = {n: statistics.median(f[n] for f in per_round) for n in variants}
        ratio = {
            "oursVsPlainDefault": statistics.median(
                f["ours"] / f["plainDefault"] for f in per_round
            ),
            "oursVsPlainFused": statistics.median(f["ours"] / f["plainFused"] for f in per_round),
            "oursDdpVsOurs": statistics.median(f["oursDdp"] / f["ours"] for f in per_round),
        }
        if cuda:
            ratio["plainFusedBf16VsFp32"] = statistics.median(
                f["plainFused"] / f["plainFp32Fused"] for f in per_round
            )
        host = batch_build_ms(data, batch, self.device, steps)
        result = {
            "samplesPerSecondMedian": {k: round(v, 1) for k, v in medians.items()},
            "ratios": {k: round(v, 3) for k, v in ratio.items()},
            "rounds": [{k: round(v, 1) for k, v in f.items()} for f in per_round],
            "batchBuildMs": round(host, 3),
            "peakAllocatedMiB": {k: round(v) for k, v in peak.items()},
        }
        del variants
        if cuda:
            torch.cuda.empty_cache()
        return result

    def _checks(self, model_dir: Path, label_names: list[str], data: Any) -> dict[str, Any]:
        checks: dict[str, Any] = {}
        batch = 8 if self.args.quick else 16
        if self.device.type == "cuda":
            fp16 = LoopRunner(
                model_dir, label_names, data, batch, self.device, ddp=False, precision="fp16"
            )
            fp16(0, 5)
            scaler = fp16.scaler
            checks["fp16GradScaler"] = {
                "finalLoss": fp16.last.final_loss if fp16.last else None,
                "scale": float(scaler.get_scale()) if scaler else None,
            }
        accumulate = LoopRunner(
            model_dir, label_names, data, batch, self.device, ddp=True, accumulation=2
        )
        accumulate(0, 3)
        checks["ddpGradientAccumulation2"] = {
            "finalLoss": accumulate.last.final_loss if accumulate.last else None
        }
        checks["checkpointResume"] = checkpoint_roundtrip(
            model_dir, label_names, data, batch, self.device, self.work / "ckpt"
        )
        print(f"checks: {checks}", flush=True)
        return checks

    def summary(self) -> str:
        parts = [f"train_gpu on {self.result['machine'].get('gpu') or 'cpu'}:"]
        for name, c in self.result["commands"].items():
            parts.append(
                f"{name} acc {c.get('accuracy', float('nan')):.4f} wall {c['wallSeconds']:.0f}s "
                f"(train {c.get('train', {}).get('seconds', float('nan')):.1f}s);"
            )
        for name, t in self.result["throughput"].items():
            s = t["samplesPerSecondMedian"]
            parts.append(
                f"{name} ours {s['ours']:.0f} vs plain {s['plainDefault']:.0f} samples/s "
                f"({t['ratios']['oursVsPlainDefault']:.2f}x);"
            )
        if self.result["skipped"] or self.result["errors"]:
            parts.append(f"skipped {self.result['skipped']} errors {list(self.result['errors'])}")
        return " ".join(parts)


class LoopRunner:
    """`run_loop` on a fresh model, `steps` steps at a time from `start` of one real plan."""

    def __init__(
        self,
        model_dir: Path,
        label_names: list[str],
        data: Any,
        batch: int,
        device: torch.device,
        *,
        ddp: bool,
        precision: str = "auto",
        accumulation: int = 1,
    ) -> None:
        from modelloop_trainer.loop import (
            LoopResult,
            LoopSettings,
            Plan,
            build_optimizer,
            grad_scaler,
        )
        from modelloop_trainer.models import load_classifier

        world_type = DdpWorldOfOne if ddp else World
        self.world: World = world_type(rank=0, world_size=1, local_rank=0, device=device)
        self.settings = LoopSettings(
            epochs=50,  # enough steps for every round; the plan is cut short per call
            batch_size=batch,
            learning_rate=1e-4,
            weight_decay=0.01,
            warmup_ratio=0.1,
            gradient_accumulation_steps=accumulation,
            seed=42,
            precision=precision,
        )
        torch.manual_seed(42)
        self.model = load_classifier(model_dir, "bench", label_names).to(device)
        self.data = data
        self.plan = Plan(data, self.world, self.settings)
        self.optimizer, self.scheduler = build_optimizer(
            self.model, self.settings, self.plan.total_steps
        )
        self.scaler = grad_scaler(precision, device)
        self.last: LoopResult | None = None

    def __call__(self, start: int, steps: int) -> float:
        from modelloop_trainer.loop import run_loop
        from modelloop_trainer.progress import Progress

        self.plan.total_steps = start + steps  # run exactly these steps of the real plan
        self.last = run_loop(
            model=self.model,
            data=self.data,
            world=self.world,
            settings=self.settings,
            plan=self.plan,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            start_step=start,
            progress=Progress(command="bench", enabled=False),
            on_step_end=lambda _: None,
            scaler=self.scaler,
        )
        return self.last.samples_per_second


class PlainRunner:
    """The minimal loop: batches built beforehand, forward, backward, AdamW step."""

    def __init__(
        self,
        model_dir: Path,
        label_names: list[str],
        data: Any,
        batch: int,
        device: torch.device,
        *,
        fused: bool,
        bf16: bool,
    ) -> None:
        from modelloop_trainer.models import load_classifier

        torch.manual_seed(42)
        self.model = load_classifier(model_dir, "bench", label_names).to(device)
        self.model.train()
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-4, fused=fused)
        self.data, self.batch, self.device, self.bf16 = data, batch, device, bf16

    def __call__(self, start: int, steps: int) -> float:
        n = len(self.data)
        batches = [
            self.data.batch([(s * self.batch + j) % n for j in range(self.batch)], self.device)
            for s in range(start, start + steps)
        ]
        synchronize(self.device)
        begin = time.perf_counter()
        for batch in batches:
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                loss = self.model(**batch).loss
            loss.backward()
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        synchronize(self.device)
        return steps * self.batch / (time.perf_counter() - begin)


class DdpWorldOfOne(World):
    """A world of one that still takes the DistributedDataParallel path of run_loop."""

    @property
    def distributed(self) -> bool:
        return True


def init_group_of_one(device: torch.device) -> None:
    """A process group of one (nccl on a GPU, gloo on a CPU) for the DDP variants."""
    import torch.distributed as dist

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group(
        backend="nccl" if device.type == "cuda" else "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=0,
        world_size=1,
        device_id=device if device.type == "cuda" else None,
    )


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def batch_build_ms(data: Any, batch: int, device: torch.device, steps: int) -> float:
    """Host time to pad one batch and copy it to the device (part of every step of ours)."""
    n = len(data)
    synchronize(device)
    begin = time.perf_counter()
    for s in range(steps):
        data.batch([(s * batch + j) % n for j in range(batch)], device)
    synchronize(device)
    return (time.perf_counter() - begin) / steps * 1000


def checkpoint_roundtrip(
    model_dir: Path, label_names: list[str], data: Any, batch: int, device: torch.device, at: Path
) -> dict[str, Any]:
    """Save a checkpoint after 3 steps on the device, resume it into fresh objects, step on."""
    from modelloop_trainer.checkpoint import load_latest_checkpoint, save_checkpoint
    from modelloop_trainer.storage import parse_uri

    first = LoopRunner(model_dir, label_names, data, batch, device, ddp=False)
    first(0, 3)
    output = parse_uri(f"file://{at}")
    fingerprint = {"bench": True}
    save_checkpoint(
        output,
        step=3,
        model=first.model,
        optimizer=first.optimizer,
        scheduler=first.scheduler,
        fingerprint=fingerprint,
        scaler=None,
    )
    checkpoint = load_latest_checkpoint(output, fingerprint)
    assert checkpoint is not None
    state = checkpoint.trainer_state["optimizer"]["state"]
    devices = sorted(
        {str(v.device) for s in state.values() for v in s.values() if isinstance(v, torch.Tensor)}
    )
    second = LoopRunner(model_dir, label_names, data, batch, device, ddp=False)
    second.model.load_state_dict(checkpoint.model_state)
    second.optimizer.load_state_dict(checkpoint.trainer_state["optimizer"])
    second.scheduler.load_state_dict(checkpoint.trainer_state["scheduler"])
    first(3, 2)
    second(3, 2)
    a = first.last.final_loss if first.last else float("nan")
    b = second.last.final_loss if second.last else float("nan")
    # Equal up to GPU nondeterminism (atomic adds in the embedding backward, for one).
    return {
        "optimizerStateDevicesAsLoaded": devices,
        "lossAfterResume": b,
        "lossUninterrupted": a,
        "absoluteDifference": abs(a - b),
    }


def saved_dtypes(directory: Path) -> list[str]:
    from safetensors import safe_open

    dtypes: set[str] = set()
    for file in directory.glob("*.safetensors"):
        with safe_open(str(file), framework="pt") as f:
            dtypes.update(str(f.get_slice(k).get_dtype()) for k in f.keys())  # noqa: SIM118
    return sorted(dtypes)


def gpu_facts() -> dict[str, Any]:
    facts: dict[str, Any] = {"cudaAvailable": torch.cuda.is_available()}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        facts.update(
            gpuMemoryMiB=props.total_memory // 2**20,
            computeCapability=f"{props.major}.{props.minor}",
            multiprocessors=props.multi_processor_count,
            cudaRuntime=torch.version.cuda,
            nccl=".".join(str(v) for v in torch.cuda.nccl.version()),  # type: ignore[no-untyped-call]
            bf16Supported=torch.cuda.is_bf16_supported(),
        )
    try:
        query = "--query-gpu=driver_version,name"
        out = subprocess.run(
            ["nvidia-smi", query, "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
        facts["nvidiaSmi"] = out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        facts["nvidiaSmi"] = None
    return facts


class GpuMemorySampler:
    """Peak GPU memory in use while a child process runs (nvidia-smi every 200 ms)."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[str] | None = None
        self.peak_mib: int | None = None

    def __enter__(self) -> GpuMemorySampler:
        if torch.cuda.is_available() and shutil.which("nvidia-smi"):
            self.proc = subprocess.Popen(
                [
                    "nvidia-smi",
                    "--query-gpu=memory.used",
                    "--format=csv,noheader,nounits",
                    "-lms",
                    "200",
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        out, _ = self.proc.communicate(timeout=10)
        values = [int(v) for v in out.split() if v.strip().isdigit()]
        self.peak_mib = max(values) if values else None


if __name__ == "__main__":
    main()
