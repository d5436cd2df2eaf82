"""Fixtures for the operator's unit tests: real API models and builders, no cluster."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from modelloop_operator.api.trainingjob import TrainingJobSpec
from modelloop_operator.builders.job import GangJobTemplate, Owner
from modelloop_operator.builders.training import build_training_template

from .local_api import Recorder, serving


def training_spec(**changes: Any) -> TrainingJobSpec:
    """A small valid TrainingJob spec (camelCase keys, as a user writes it), changed."""
    raw: dict[str, Any] = {
        "model": {"uri": "builtin://all-minilm-l6-v2"},
        "dataset": {"uri": "builtin://bbc-news", "maxSamples": 200},
        "output": {"uri": "pvc://models/bbc/run1"},
    }
    raw.update(changes)
    return TrainingJobSpec.model_validate(raw)


@pytest.fixture
def owner() -> Owner:
    return Owner(api_version="modelloop.dev/v1alpha1", kind="TrainingJob", name="bbc",
                 namespace="team-a", uid="0000-1111")


def training_template(owner: Owner, spec: TrainingJobSpec, *, attempt: int = 1
                      ) -> GangJobTemplate:
    return build_training_template(owner=owner, spec=spec, attempt=attempt,
                                   default_image="registry.example/trainer:1",
                                   default_cpu="2", default_memory="8Gi", master_port=29500)


@pytest.fixture
async def local_api() -> AsyncIterator[tuple[Recorder, str]]:
    """A recording stand-in for the API server (local_api.py) and its URL."""
    async with serving() as running:
        yield running
