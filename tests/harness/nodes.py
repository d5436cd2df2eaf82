"""Fake nodes for kwok: manifests only (pure), so tests can also check what they ask for."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

# kwok is started with --manage-nodes-with-annotation-selector for exactly this annotation:
# it must leave alone nodes such as the local pod runner's `local-0`.
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
KWOK_NODE_VALUE = "fake"
# Label too, so that tests and users can select kwok nodes (`kubectl get nodes -l type=kwok`).
KWOK_NODE_LABEL = "type"
KWOK_NODE_LABEL_VALUE = "kwok"
GPU_RESOURCE = "nvidia.com/gpu"


def node_manifest(
    name: str,
    *,
    gpus: int = 0,
    cpu: str = "32",
    memory: str = "256Gi",
    pods: int = 110,
    labels: Mapping[str, str] | None = None,
    taints: Sequence[Mapping[str, str]] | None = None,
    annotations: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A Node that kwok will manage, with capacity (and allocatable) set up front.

    Status can be set on create for Nodes; kwok's node-initialize stage keeps the given
    capacity and allocatable instead of its "1k CPUs" defaults, so the scheduler sees real
    limits. ``taints`` are ``{"key", "value", "effect"}`` mappings (value optional).
    """
    if gpus < 0:
        raise ValueError(f"gpus must be >= 0, got {gpus}")
    capacity: dict[str, str] = {"cpu": cpu, "memory": memory, "pods": str(pods)}
    if gpus:
        capacity[GPU_RESOURCE] = str(gpus)
    all_labels = {
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        KWOK_NODE_LABEL: KWOK_NODE_LABEL_VALUE,
        **(labels or {}),
    }
    all_annotations = {
        KWOK_NODE_ANNOTATION: KWOK_NODE_VALUE,
        "node.alpha.kubernetes.io/ttl": "0",
        **(annotations or {}),
    }
    spec: dict[str, Any] = {}
    if taints:
        for taint in taints:
            if "key" not in taint or "effect" not in taint:
                raise ValueError(f"a taint needs 'key' and 'effect': {dict(taint)}")
        spec["taints"] = [dict(t) for t in taints]
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": all_labels, "annotations": all_annotations},
        "spec": spec,
        "status": {"capacity": capacity, "allocatable": dict(capacity)},
    }
