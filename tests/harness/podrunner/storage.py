"""Local-directory PersistentVolumes for the harness's real PV controller to bind.

A PV here is a `hostPath` directory (so no node affinity is needed and kwok nodes never
get such pods by accident: the StorageClass is only used by tests and demos that pin pods
to the runner's node). The StorageClass has no provisioner and binds Immediately, so the
controller-manager's PV binder matches a claim to a PV of its class with enough capacity;
`claim_ref` pre-binds a PV to one claim when a test needs a deterministic pairing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

Json = dict[str, Any]
LOCAL_STORAGE_CLASS = "local-dir"


def local_storage_class_manifest(name: str = LOCAL_STORAGE_CLASS) -> Json:
    return {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {"name": name},
        "provisioner": "kubernetes.io/no-provisioner",
        "volumeBindingMode": "Immediate",
        "reclaimPolicy": "Retain",
    }


def local_pv_manifest(
    name: str,
    path: str | Path,
    *,
    capacity: str = "1Gi",
    storage_class: str = LOCAL_STORAGE_CLASS,
    claim_ref: tuple[str, str] | None = None,
    access_modes: tuple[str, ...] = ("ReadWriteOnce", "ReadWriteMany"),
) -> Json:
    """A hostPath PV on `path` (created by the runner on first use if missing)."""
    spec: Json = {
        "capacity": {"storage": capacity},
        "accessModes": list(access_modes),
        "persistentVolumeReclaimPolicy": "Retain",
        "storageClassName": storage_class,
        "volumeMode": "Filesystem",
        "hostPath": {"path": str(Path(path).resolve()), "type": "DirectoryOrCreate"},
    }
    if claim_ref is not None:
        spec["claimRef"] = {"namespace": claim_ref[0], "name": claim_ref[1]}
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": name, "labels": {"modelloop.dev/local-dir": "true"}},
        "spec": spec,
    }
