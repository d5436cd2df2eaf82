"""Pending pods through a whole TrainingJob reconcile over an in-memory API: the pods of
an attempt that is not all ready are read, and a stuck one reaches the job's status and
conditions (reconcilers/gangjob.py, pod_diagnosis.py, runpolicy.py)."""

from __future__ import annotations

from typing import Any

import pytest
from modelloop_operator.config import OperatorConfig
from modelloop_operator.kube import JOBS, PODS
from modelloop_operator.metrics import OperatorMetrics
from modelloop_operator.reconcilers.gangjob import pods_matter, starting
from modelloop_operator.reconcilers.runtime import Runtime
from modelloop_operator.reconcilers.trainingjob import TRAINING_JOBS, reconcile_training_job

from .memory_kube import MemoryKube

NS = "team-a"
IMAGE = "registry.example/trainer:nope"


def runtime_with(kube: MemoryKube, **config: Any) -> Runtime:
    return Runtime(config=OperatorConfig(**config), kube=kube, metrics=OperatorMetrics())


@pytest.fixture
def kube() -> MemoryKube:
    return MemoryKube()


async def create_and_start(runtime: Runtime, kube: MemoryKube) -> dict[str, Any]:
    """Create a one-node job, reconcile once (Job created), and play the Job controller:
    one active pod, not ready. Returns the Job."""
    kube.put(TRAINING_JOBS, {
        "apiVersion": "modelloop.dev/v1alpha1", "kind": "TrainingJob",
        "metadata": {"name": "bbc", "namespace": NS, "generation": 1},
        "spec": {"model": {"uri": "builtin://all-minilm-l6-v2"},
                 "dataset": {"uri": "builtin://bbc-news"}, "image": IMAGE,
                 "output": {"uri": "pvc://models/out"}, "numNodes": 1}})
    await reconcile_training_job(runtime=runtime, namespace=NS, name="bbc", trigger="test")
    job = kube.stored(JOBS, NS, "bbc-a1")
    assert job is not None
    job["status"] = {"active": 1, "ready": 0}
    return job


def put_pod(kube: MemoryKube, job: dict[str, Any], status: dict[str, Any]) -> None:
    labels = dict(job["spec"]["template"]["metadata"]["labels"])
    kube.put(PODS, {"metadata": {"name": "bbc-a1-0-abc", "namespace": NS, "labels": labels,
                                 "annotations": {
                                     "batch.kubernetes.io/job-completion-index": "0"}},
                    "status": status})


def tj_status(kube: MemoryKube) -> dict[str, Any]:
    obj = kube.stored(TRAINING_JOBS, NS, "bbc")
    assert obj is not None
    out: dict[str, Any] = obj["status"]
    return out


def reason(st: dict[str, Any], type_: str = "Progressing") -> str:
    return str(next(c["reason"] for c in st["conditions"] if c["type"] == type_))


def test_pods_are_read_while_the_gang_is_not_all_ready() -> None:
    assert starting({"spec": {}, "status": {"active": 1, "ready": 0}}, num_nodes=1)
    assert starting({"spec": {}, "status": {}}, num_nodes=1)  # no pod yet
    assert not starting({"spec": {}, "status": {"active": 1, "ready": 1}}, num_nodes=1)
    assert not starting({"spec": {"suspend": True}, "status": {}}, num_nodes=1)
    assert pods_matter({"spec": {}, "status": {"active": 1, "ready": 0}}, num_nodes=1)


async def test_an_unschedulable_pod_reaches_the_jobs_conditions(kube: MemoryKube) -> None:
    runtime = runtime_with(kube)
    job = await create_and_start(runtime, kube)
    message = "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."
    put_pod(kube, job, {"phase": "Pending", "conditions": [
        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
         "message": message, "lastTransitionTime": "2026-11-28T12:00:00Z"}]})
    await reconcile_training_job(runtime=runtime, namespace=NS, name="bbc", trigger="test")
    st = tj_status(kube)
    assert (st["phase"], reason(st), reason(st, "Ready")) == (
        "Pending", "Unschedulable", "Unschedulable")
    assert message in st["message"] and st["failedAttempts"] == 0
    assert kube.stored(JOBS, NS, "bbc-a1") is not None


async def test_an_image_that_cannot_be_pulled_past_the_grace_fails_and_stops_the_job(
        kube: MemoryKube) -> None:
    runtime = runtime_with(kube, image_pull_grace_seconds=0)
    job = await create_and_start(runtime, kube)
    put_pod(kube, job, {"phase": "Pending", "conditions": [
        {"type": "PodScheduled", "status": "True",
         "lastTransitionTime": "2026-11-28T12:00:00Z"}],
        "containerStatuses": [{"name": "trainer", "image": IMAGE, "state": {"waiting": {
            "reason": "ImagePullBackOff", "message": f'Back-off pulling image "{IMAGE}"'}}}]})
    await reconcile_training_job(runtime=runtime, namespace=NS, name="bbc", trigger="test")
    st = tj_status(kube)
    assert (st["phase"], reason(st, "Failed")) == ("Failed", "ImagePullFailed")
    assert IMAGE in st["message"] and st["failedAttempts"] == 0
    assert kube.stored(JOBS, NS, "bbc-a1") is None  # the pod stops holding its node
