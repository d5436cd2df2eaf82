"""Checkpoints written on one device resume on another."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from modelloop_trainer.checkpoint import load_latest_checkpoint, save_checkpoint
from modelloop_trainer.storage import parse_uri
from torch import nn


def test_a_checkpoint_written_on_a_gpu_is_read_onto_the_cpu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # On a GPU, AdamW's state lives on cuda:N and torch.save records that device. Read back
    # as saved, every rank of a multi-GPU run would first put the whole optimizer state on
    # rank 0's GPU, and a CPU-only machine could not read the file at all. The tag of every
    # saved tensor is faked to cuda:0 here, so that this runs on machines without a GPU.
    model = nn.Linear(4, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1, fused=True)
    model(torch.ones(3, 4)).sum().backward()
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    output = parse_uri(f"file://{tmp_path}")
    with monkeypatch.context() as patch:
        patch.setattr(torch.serialization, "location_tag", lambda _: "cuda:0")
        save_checkpoint(
            output,
            step=1,
            model=model,
            optimizer=optimizer,
            scheduler=scheduler,
            fingerprint={"run": 1},
        )

    checkpoint = load_latest_checkpoint(output, {"run": 1})

    assert checkpoint is not None
    state = checkpoint.trainer_state["optimizer"]["state"]
    devices = {v.device.type for s in state.values() for v in s.values() if torch.is_tensor(v)}
    assert devices == {"cpu"}
    fresh = torch.optim.AdamW(nn.Linear(4, 2).parameters(), lr=0.1, fused=True)
    fresh.load_state_dict(checkpoint.trainer_state["optimizer"])
    assert fresh.state_dict()["state"][0]["exp_avg"].equal(state[0]["exp_avg"])
