"""Manifests for a gang of trainer-image pods: an indexed batch/v1 Job per attempt and,
for a gang of several nodes, a headless Service for rendezvous.

Generic on purpose: TrainingJob and OptimizationJob differ only in the command and a few
env variables (:class:`GangJobTemplate`), so gang semantics, security, storage mounts and
scheduling are written once. Names are deterministic (``<name>-a<attempt>`` for the Job,
``<name>`` for the Service), which makes creation idempotent across operator restarts.

Gang rules encoded here:
* ``completions = parallelism = numNodes``, ``completionMode: Indexed``: pod i is rank i
  and gets ``JOB_COMPLETION_INDEX=i`` and the hostname ``<job>-<i>``;
* ``backoffLimit: 0``: a failed pod fails the attempt; retrying the *whole* gang is the
  operator's run policy (a lone replacement rank cannot join a running torchrun);
* a ``podFailurePolicy`` that ignores pods with condition ``DisruptionTarget``
  (preemption, eviction, node drain), so a disruption is never mistaken for a failure;
* pod ``subdomain`` = Service name and ``publishNotReadyAddresses``, so rank 0 is
  reachable as ``<job>-0.<svc>.<ns>.svc`` before any readiness;
* a single node has no Service: its rank 0 is the pod itself (``127.0.0.1``), and a
  Service per job cost the API server a dozen requests (the Service, its Endpoints and
  EndpointSlices, the reads and the deletion at the end; bench/operator_scale.py).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from ..api.common import NodeResources, PodMetadata, Scheduling, StorageSpec
from ..errors import InvalidSpecError
from . import labels as lbl

GPU_RESOURCE: Final = "nvidia.com/gpu"
PVC_ROOT: Final = "/mnt/pvc"
TERMINATION_LOG: Final = "/dev/termination-log"
RUN_AS: Final = 1000
DNS_LABEL_MAX: Final = 63
RENDEZVOUS_PORT_NAME: Final = "rendezvous"
MANIFEST_HASH: Final = "modelloop.dev/manifest-hash"
"""Annotation on an applied child: the digest of the manifest we applied, so an
unchanged child is not re-applied on every reconcile."""


@dataclass(frozen=True)
class Owner:
    """The custom resource that owns the children (garbage collection deletes them with
    it)."""

    api_version: str
    kind: str
    name: str
    namespace: str
    uid: str


@dataclass(frozen=True)
class GangJobTemplate:
    """Everything that differs between kinds running a gang of trainer-image pods."""

    owner: Owner
    owner_label: str
    """Label key naming the owner on every child (``modelloop.dev/trainingjob``)."""
    component: str
    """``app.kubernetes.io/component`` value (``training``, ``optimization``)."""
    container: str
    image: str
    command: tuple[str, ...]
    num_nodes: int
    resources: NodeResources
    default_cpu: str
    default_memory: str
    rendezvous_port: int
    scheduling: Scheduling = field(default_factory=Scheduling)
    storage: StorageSpec = field(default_factory=StorageSpec)
    pod_metadata: PodMetadata = field(default_factory=PodMetadata)
    env: Mapping[str, str] = field(default_factory=dict)
    pvc_claims: tuple[str, ...] = ()


def job_name(*, name: str, attempt: int) -> str:
    """The Job of one attempt: ``<name>-a<attempt>``."""
    return f"{name}-a{attempt}"


def service_name(*, name: str) -> str:
    """The rendezvous Service: the owner's own name."""
    return name


LOCAL_MASTER_ADDRESS: Final = "127.0.0.1"
"""Rank 0 of a single-node gang: the pod itself."""


def needs_rendezvous_service(num_nodes: int) -> bool:
    """Whether a gang of ``num_nodes`` needs the headless Service (several nodes do)."""
    return num_nodes > 1


def master_address(*, name: str, namespace: str, attempt: int, num_nodes: int) -> str:
    """Where rank 0 of an attempt listens: its stable DNS name ``<job>-0.<svc>.<ns>.svc``
    for a gang of several nodes, else the pod itself."""
    if not needs_rendezvous_service(num_nodes):
        return LOCAL_MASTER_ADDRESS
    return f"{job_name(name=name, attempt=attempt)}-0.{service_name(name=name)}.{namespace}.svc"


def owner_reference(owner: Owner) -> dict[str, Any]:
    """A controller ownerReference: the garbage collector deletes the child with its
    owner, and ``blockOwnerDeletion`` keeps foreground deletion honest."""
    return {"apiVersion": owner.api_version, "kind": owner.kind, "name": owner.name,
            "uid": owner.uid, "controller": True, "blockOwnerDeletion": True}


def child_labels(template: GangJobTemplate, *, attempt: int | None = None) -> dict[str, str]:
    """Labels on every child: how watches find them and map them back to their owner."""
    out = {lbl.MANAGED_BY: lbl.MANAGED_BY_VALUE, lbl.PART_OF: "modelloop",
           lbl.COMPONENT: template.component, template.owner_label: template.owner.name}
    if attempt is not None:
        out[lbl.ATTEMPT] = str(attempt)
    return out


def check_names(template: GangJobTemplate, *, attempt: int) -> None:
    """Pod hostnames ``<job>-<index>`` must be DNS labels; fail clearly, not at the API."""
    longest = f"{job_name(name=template.owner.name, attempt=attempt)}-{template.num_nodes - 1}"
    if len(longest) > DNS_LABEL_MAX:
        raise InvalidSpecError(
            f"name {template.owner.name!r} is too long: pod hostname {longest!r} would exceed "
            f"{DNS_LABEL_MAX} characters")


def _quantity(value: int | str | None, default: str) -> str:
    return default if value is None else str(value)


def _resources(template: GangJobTemplate) -> dict[str, Any]:
    """Requests equal limits (Guaranteed QoS: a gang is not torn apart by eviction)."""
    amounts: dict[str, str] = {
        "cpu": _quantity(template.resources.cpu, template.default_cpu),
        "memory": _quantity(template.resources.memory, template.default_memory),
    }
    if template.resources.gpus > 0:
        amounts[GPU_RESOURCE] = str(template.resources.gpus)
    return {"requests": dict(amounts), "limits": dict(amounts)}


def _env(template: GangJobTemplate) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        # Also injected by the Job controller; explicit so $(JOB_COMPLETION_INDEX) in the
        # command expands whatever the cluster version does.
        {"name": "JOB_COMPLETION_INDEX", "valueFrom": {"fieldRef": {
            "fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}}},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
    ]
    if template.pvc_claims:
        env.append({"name": "MODELLOOP_PVC_ROOT", "value": PVC_ROOT})
    env.extend({"name": key, "value": value} for key, value in sorted(template.env.items()))
    return env


def _volumes(template: GangJobTemplate) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """One volume per referenced claim, at ``/mnt/pvc/<claim>`` (docs/contracts.md), plus
    a memory-backed /dev/shm: torch's data loaders and NCCL need more than the default
    64 MiB."""
    volumes: list[dict[str, Any]] = [{"name": "dshm", "emptyDir": {"medium": "Memory"}}]
    mounts: list[dict[str, Any]] = [{"name": "dshm", "mountPath": "/dev/shm"}]
    for i, claim in enumerate(sorted(set(template.pvc_claims))):
        volumes.append({"name": f"pvc-{i}", "persistentVolumeClaim": {"claimName": claim}})
        mounts.append({"name": f"pvc-{i}", "mountPath": f"{PVC_ROOT}/{claim}"})
    return volumes, mounts


def _container(template: GangJobTemplate, mounts: list[dict[str, Any]]) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": template.container,
        "image": template.image,
        "command": list(template.command),
        "env": _env(template),
        "resources": _resources(template),
        "volumeMounts": mounts,
        "ports": [{"name": RENDEZVOUS_PORT_NAME, "containerPort": template.rendezvous_port,
                   "protocol": "TCP"}],
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "File",
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "runAsNonRoot": True,
        },
    }
    if template.storage.secret_name:
        # Only a reference: the secret's values never leave the Secret object.
        container["envFrom"] = [{"secretRef": {"name": template.storage.secret_name}}]
    return container


def _pod_spec(template: GangJobTemplate) -> dict[str, Any]:
    volumes, mounts = _volumes(template)
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "subdomain": service_name(name=template.owner.name),
        "enableServiceLinks": False,
        "automountServiceAccountToken": False,
        # PodSecurity "restricted" admits exactly this.
        "securityContext": {
            "runAsNonRoot": True, "runAsUser": RUN_AS, "runAsGroup": RUN_AS,
            "fsGroup": RUN_AS, "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [_container(template, mounts)],
        "volumes": volumes,
    }
    scheduling = template.scheduling
    if scheduling.node_selector:
        spec["nodeSelector"] = dict(scheduling.node_selector)
    if scheduling.tolerations:
        spec["tolerations"] = [t.model_dump(mode="json", exclude_none=True)
                               for t in scheduling.tolerations]
    if scheduling.priority_class_name:
        spec["priorityClassName"] = scheduling.priority_class_name
    if template.storage.service_account_name:
        spec["serviceAccountName"] = template.storage.service_account_name
    return spec


def build_job(*, template: GangJobTemplate, attempt: int, suspend: bool) -> dict[str, Any]:
    """The indexed batch/v1 Job of one attempt of the gang."""
    check_names(template, attempt=attempt)
    owner = template.owner
    labels = child_labels(template, attempt=attempt)
    job_labels = dict(labels)
    if template.scheduling.queue_name:
        job_labels[lbl.KUEUE_QUEUE] = template.scheduling.queue_name
    # The user's pod labels first, so that ours win on a clash (they drive our watches).
    pod_labels = {**template.pod_metadata.labels, **labels}
    pod_meta: dict[str, Any] = {"labels": pod_labels}
    if template.pod_metadata.annotations:
        pod_meta["annotations"] = dict(template.pod_metadata.annotations)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(name=owner.name, attempt=attempt),
            "namespace": owner.namespace,
            "labels": job_labels,
            "ownerReferences": [owner_reference(owner)],
        },
        "spec": {
            "completions": template.num_nodes,
            "parallelism": template.num_nodes,
            "completionMode": "Indexed",
            "backoffLimit": 0,
            "suspend": suspend,
            "podFailurePolicy": {"rules": [{
                "action": "Ignore",
                "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
            }]},
            "template": {"metadata": pod_meta, "spec": _pod_spec(template)},
        },
    }


def build_rendezvous_service(*, template: GangJobTemplate) -> dict[str, Any]:
    """The headless Service giving rank 0 its stable DNS name, for every attempt."""
    owner = template.owner
    selector = {lbl.MANAGED_BY: lbl.MANAGED_BY_VALUE, template.owner_label: owner.name}
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": service_name(name=owner.name),
            "namespace": owner.namespace,
            "labels": child_labels(template),
            "ownerReferences": [owner_reference(owner)],
        },
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": selector,
            "ports": [{"name": RENDEZVOUS_PORT_NAME, "port": template.rendezvous_port,
                       "targetPort": template.rendezvous_port, "protocol": "TCP"}],
        },
    }


def with_manifest_hash(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """``manifest`` plus the :data:`MANIFEST_HASH` annotation: a digest of its canonical
    JSON. A child whose annotation matches needs no apply; any change to what we would
    write (suspend, labels, template) changes the digest."""
    out = json.loads(json.dumps(manifest))
    annotations = out["metadata"].get("annotations")
    if annotations is not None:
        annotations.pop(MANIFEST_HASH, None)
        if not annotations:
            del out["metadata"]["annotations"]
    digest = hashlib.sha256(json.dumps(out, sort_keys=True).encode()).hexdigest()[:16]
    out["metadata"].setdefault("annotations", {})[MANIFEST_HASH] = digest
    return dict(out)


def manifest_hash(obj: Mapping[str, Any]) -> str | None:
    """The digest an object was applied with, if any."""
    annotations = obj.get("metadata", {}).get("annotations") or {}
    value = annotations.get(MANIFEST_HASH)
    return value if isinstance(value, str) else None
