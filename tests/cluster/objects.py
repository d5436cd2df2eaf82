"""Small kubectl helpers and manifests shared by the cluster-tier tests: apply a manifest,
read an object, pick a condition, and a TrainingJob that runs on kwok nodes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tests.harness.controlplane import ControlPlane

Json = dict[str, Any]


def apply(cluster: ControlPlane, namespace: str, manifest: Json) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(manifest))


def get(cluster: ControlPlane, namespace: str, *what: str) -> Json | None:
    """``kubectl get -o json`` of ``what``, or None when it does not exist."""
    result = cluster.kubectl("get", "-n", namespace, *what, "-o", "json", check=False)
    if result.returncode != 0:
        return None
    obj: Json = json.loads(result.stdout)
    return obj


def condition(st: Json, type_: str) -> Json:
    """The condition of ``type_`` in a status, or {} when there is none."""
    return next((c for c in st.get("conditions", []) if c["type"] == type_), {})


@contextmanager
def tainted_gpu_nodes(cluster: ControlPlane, pool: str) -> Iterator[list[str]]:
    """Two kwok nodes with 4 GPUs each, labelled ``modelloop.dev/test-pool: <pool>`` and
    tainted ``nvidia.com/gpu``, so only pods that ask for the pool land there."""
    names = [f"{pool}-{i}" for i in range(2)]
    for name in names:
        cluster.add_node(name, gpus=4, cpu="32", memory="128Gi",
                         labels={"modelloop.dev/test-pool": pool},
                         taints=[{"key": "nvidia.com/gpu", "value": "present",
                                  "effect": "NoSchedule"}])
    try:
        yield names
    finally:
        for name in names:
            cluster.delete_node(name)


def training_job(name: str, *, annotations: dict[str, str], num_nodes: int = 1,
                 node: str | None = None, run_policy: Json | None = None,
                 **spec: Any) -> Json:
    """A small TrainingJob whose pods kwok plays (``annotations`` steer the kwok stages)."""
    body: Json = {
        "model": {"uri": "builtin://all-minilm-l6-v2"},
        "dataset": {"uri": "builtin://bbc-news", "maxSamples": 100},
        # No pvc:// here: a claim nobody binds would keep the pods Pending.
        "output": {"uri": "s3://models/bbc/run1"},
        "numNodes": num_nodes,
        "podTemplate": {"metadata": {"annotations": annotations}},
        "runPolicy": run_policy or {},
        **spec,
    }
    if node is not None:
        body.setdefault("scheduling", {})["nodeSelector"] = {"kubernetes.io/hostname": node}
    return {"apiVersion": "modelloop.dev/v1alpha1", "kind": "TrainingJob",
            "metadata": {"name": name}, "spec": body}
