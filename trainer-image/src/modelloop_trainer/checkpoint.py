"""Training checkpoints under `<output>/checkpoints/step-NNNNNNNN/`, and resuming from them.

A checkpoint holds the model weights (safetensors), the optimizer and scheduler state
(`torch.save`, read back with `weights_only=True`, which refuses anything but tensors and
plain containers), and `state.json` with the step and a fingerprint of the run's
configuration. A `COMPLETE` marker is written last, so a pod killed while writing leaves a
directory that resuming ignores. Only rank 0 writes; every rank reads (multi-node runs need
shared output storage: an RWX volume or S3).

Where in the data a step falls is derived from the step number (epoch = step // steps per
epoch; the shuffled order of an epoch is a function of seed and epoch), so the checkpoint
does not need to hold a data-loader position, and a resumed run continues mid-epoch with
exactly the batches that would have come next.
"""

from __future__ import annotations

import json
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from modelloop_trainer.errors import InputError
from modelloop_trainer.storage import Location, fetch, list_names, publish, remove

CHECKPOINTS_DIR = "checkpoints"
COMPLETE_MARKER = "COMPLETE"
KEEP_LAST = 2
_NAME = re.compile(r"^step-(\d{8})$")


@dataclass(frozen=True)
class Checkpoint:
    step: int
    model_state: dict[str, torch.Tensor]
    trainer_state: dict[str, Any]
    location: Location


def checkpoint_name(step: int) -> str:
    return f"step-{step:08d}"


def save_checkpoint(
    output: Location,
    *,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    fingerprint: dict[str, Any],
    scaler: torch.amp.GradScaler | None = None,
) -> Location:
    """Write a checkpoint for `step` and delete all but the newest KEEP_LAST complete ones."""
    root = output.child(CHECKPOINTS_DIR)
    target = root.child(checkpoint_name(step))
    with tempfile.TemporaryDirectory(prefix="modelloop-ckpt-") as tmp:
        staging = Path(tmp) / checkpoint_name(step)
        staging.mkdir()
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(staging / "model.safetensors"))
        trainer_state: dict[str, Any] = {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
        }
        if scaler is not None:
            trainer_state["scaler"] = scaler.state_dict()
        torch.save(trainer_state, staging / "trainer_state.pt")
        (staging / "state.json").write_text(
            json.dumps({"step": step, "fingerprint": fingerprint}, indent=2)
        )
        # Everything but the marker first, then the marker: a reader that sees the marker
        # sees a whole checkpoint, on a local volume and on S3 alike.
        remove(target)
        publish(staging, target)
        marker = staging / COMPLETE_MARKER
        marker.write_text(str(step))
        publish(marker, target.child(COMPLETE_MARKER))
    for old in complete_steps(root)[:-KEEP_LAST]:
        remove(root.child(checkpoint_name(old)))
    return target


def complete_steps(root: Location) -> list[int]:
    """Steps of the complete checkpoints under `root`, ascending."""
    steps = []
    for name in list_names(root):
        match = _NAME.match(name)
        if match and root.child(name).child(COMPLETE_MARKER).exists():
            steps.append(int(match.group(1)))
    return sorted(steps)


def load_latest_checkpoint(output: Location, fingerprint: dict[str, Any]) -> Checkpoint | None:
    """The newest complete checkpoint, or None; refuses one from a different configuration."""
    root = output.child(CHECKPOINTS_DIR)
    steps = complete_steps(root)
    if not steps:
        return None
    location = root.child(checkpoint_name(steps[-1]))
    with tempfile.TemporaryDirectory(prefix="modelloop-resume-") as tmp:
        local = fetch(location, Path(tmp))
        state = json.loads((local / "state.json").read_text())
        if state.get("fingerprint") != fingerprint:
            differences = sorted(
                key
                for key in set(fingerprint) | set(state.get("fingerprint", {}))
                if fingerprint.get(key) != state.get("fingerprint", {}).get(key)
            )
            raise InputError(
                f"{location.uri}: checkpoint was written by a run with different settings "
                f"({', '.join(differences)}); use a new --output-uri or delete its checkpoints/"
            )
        model_state = load_file(str(local / "model.safetensors"))
        # Onto the CPU, not the device it was saved from (rank 0's GPU): load_state_dict
        # moves each tensor to its parameter's device, so every rank takes its own GPU and
        # a CPU-only machine can read a GPU run's checkpoint.
        trainer_state = torch.load(
            local / "trainer_state.pt", map_location="cpu", weights_only=True
        )
    return Checkpoint(
        step=int(state["step"]),
        model_state=model_state,
        trainer_state=trainer_state,
        location=location,
    )


def remove_checkpoints(output: Location) -> None:
    """Called after the final model is written: it supersedes every checkpoint."""
    remove(output.child(CHECKPOINTS_DIR))
