"""The images' sizes, what makes them big, and what an unchanged rebuild costs.

    .venv/bin/python bench/image_sizes.py [--images operator trainer server]

Runs `hack/images.sh` once per image (`rebuildSeconds`: with nothing changed, the script's
input-digest check alone), reads each image's size from podman, and measures the largest
parts of the torch images' Python environment inside the image (`du`). Cold build times
are what `hack/images.sh` printed on the first build (bench/README.md), not measured here:
a cold build needs empty layer caches.

Writes bench/results/image_sizes.json and prints one summary line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
REPO = ROOT.parent
sys.path.insert(0, str(REPO))

from tests.harness.images import SCRIPT, podman, podman_env  # noqa: E402

RESULTS = ROOT / "results"
SITE = "/opt/venv/lib/python3.11/site-packages"
PARTS = ("nvidia", "torch", "triton", "transformers")


def tag_of(name: str) -> str:
    out = subprocess.run(["bash", str(SCRIPT), "--tags", name], capture_output=True,
                         text=True, check=True).stdout
    return out.strip().split("=", 1)[1]


def measure(name: str) -> dict[str, Any]:
    started = time.monotonic()
    subprocess.run(["bash", str(SCRIPT), name], check=True, env=podman_env())
    seconds = time.monotonic() - started
    tag = tag_of(name)
    size = int(podman("image", "inspect", "--format={{.Size}}", tag).stdout.strip())
    figures: dict[str, Any] = {"tag": tag, "sizeBytes": size, "rebuildSeconds": round(seconds, 1)}
    if name != "operator":
        paths = [f"{SITE}/{part}" for part in PARTS]
        du = podman("run", "--rm", "--network=none", "--entrypoint=du", tag, "-s", "-B1", *paths)
        figures["partsBytes"] = {Path(path).name: int(size) for size, path in
                                 (line.split("\t") for line in du.stdout.splitlines())}
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--images", nargs="+", default=["operator", "trainer", "server"])
    parser.add_argument("--out", type=Path, default=RESULTS / "image_sizes.json")
    args = parser.parse_args()
    images = {name: measure(name) for name in args.images}
    result = {
        "images": images,
        "machine": {"cores": os.cpu_count(), "load1": round(os.getloadavg()[0], 2)},
        "podman": podman("--version").stdout.strip(),
        "date": time.strftime("%Y-%m-%d"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print("image sizes: " + ", ".join(
        f"{name} {figures['sizeBytes'] / 1e6:.0f} MB (rebuild {figures['rebuildSeconds']} s)"
        for name, figures in images.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
