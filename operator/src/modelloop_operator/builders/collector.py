"""The capture collector of a ModelDeployment: a StatefulSet of one pod and its Service.

One pod, because it is the single writer of the sink (segments and the request-id index);
a StatefulSet, because it guarantees at most one such pod even across node failures (a
Deployment's rolling update would briefly run two writers) and gives it a stable DNS name,
`<name>-collector-0.<name>-feedback.<ns>.svc`, that the model servers send captures to. The
Service is headless for that name; clients POST feedback to `<name>-feedback`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from ..api.capture import CaptureSpec
from ..api.common import uri_scheme
from . import labels as lbl
from .job import PVC_ROOT, RUN_AS, Owner, owner_reference
from .serving import (
    COLLECTOR_PORT,
    TMP_DIR,
    ServingContext,
    _pvc_parts,
    base_labels,
    collector_name,
    container_security_context,
    feedback_service_name,
    image_of,
    label_value,
)

COMPONENT: Final = "collector"
CONTAINER: Final = "collector"
COMMAND: Final = "modelloop-collect"
PORT: Final = COLLECTOR_PORT
PORT_NAME: Final = "http"
STATE_DIR: Final = "/var/lib/modelloop"
CPU: Final = "250m"
MEMORY: Final = "256Mi"
MEMORY_LIMIT: Final = "512Mi"
SINK_VOLUME: Final = "sink"


def feedback_url(*, name: str, namespace: str) -> str:
    return (f"http://{feedback_service_name(name=name)}.{namespace}.svc:{COLLECTOR_PORT}"
            f"/v1/models/{name}/feedback")


def selector(owner: Owner) -> dict[str, str]:
    return {lbl.MODEL_DEPLOYMENT: owner.name, lbl.COMPONENT: COMPONENT}


def metrics_version(version: str) -> str:
    """The model_version label value the servers report (their pod label's value)."""
    return label_value(version)


def _sink(ctx: ServingContext, capture: CaptureSpec) -> tuple[str, list[dict[str, Any]],
                                                               list[dict[str, Any]]]:
    """(sink URI as the container sees it, volumes, mounts)."""
    if uri_scheme(capture.sink) == "pvc":
        claim, _ = _pvc_parts(capture.sink)
        return (capture.sink,
                [{"name": SINK_VOLUME, "persistentVolumeClaim": {"claimName": claim}}],
                [{"name": SINK_VOLUME, "mountPath": f"{PVC_ROOT}/{claim}"}])
    return capture.sink, [], []


def _env(owner: Owner, capture: CaptureSpec, sink: str) -> list[dict[str, Any]]:
    values: Mapping[str, str] = {
        "MODELLOOP_COLLECT_SINK": sink,
        "MODELLOOP_COLLECT_DEPLOYMENT": owner.name,
        "MODELLOOP_COLLECT_PORT": str(PORT),
        "MODELLOOP_COLLECT_SEGMENT_BYTES": str(capture.segment_bytes()),
        "MODELLOOP_COLLECT_SEGMENT_SECONDS": str(capture.seconds(capture.max_segment_age)),
        "MODELLOOP_COLLECT_RETENTION_BYTES": str(capture.retention_bytes()),
        "MODELLOOP_COLLECT_RETENTION_SECONDS": str(capture.seconds(capture.retention)),
        "MODELLOOP_COLLECT_FEEDBACK_SECONDS": str(capture.seconds(capture.feedback_window)),
        "MODELLOOP_PVC_ROOT": PVC_ROOT,
        "HOME": TMP_DIR,
        "PYTHONUNBUFFERED": "1",
    }
    # Bound to the pod's own address, as the model servers are (pods that share a host's
    # network, like the local pod runner's, cannot all take 0.0.0.0:8080).
    env: list[dict[str, Any]] = [
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "MODELLOOP_COLLECT_ADDRESS", "value": "$(POD_IP)"},
        *({"name": k, "value": v} for k, v in values.items())]
    if uri_scheme(sink) not in ("pvc", "file"):
        env.append({"name": "MODELLOOP_COLLECT_STATE_DIR", "value": STATE_DIR})
    return env


def _probe(path: str, *, failures: int) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": PORT_NAME, "scheme": "HTTP"},
            "periodSeconds": 5, "timeoutSeconds": 3, "failureThreshold": failures}


def build_statefulset(*, ctx: ServingContext, capture: CaptureSpec) -> dict[str, Any]:
    owner = ctx.owner
    sink, volumes, mounts = _sink(ctx, capture)
    labels = {**base_labels(owner), lbl.COMPONENT: COMPONENT}
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": image_of(ctx),
        "command": [COMMAND],
        "env": _env(owner, capture, sink),
        "ports": [{"name": PORT_NAME, "containerPort": PORT, "protocol": "TCP"}],
        "resources": {"requests": {"cpu": CPU, "memory": MEMORY},
                      "limits": {"memory": MEMORY_LIMIT}},
        "volumeMounts": [{"name": "tmp", "mountPath": TMP_DIR},
                         {"name": "state", "mountPath": STATE_DIR}, *mounts],
        "readinessProbe": _probe("/readyz", failures=2),
        "livenessProbe": _probe("/livez", failures=6),
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": container_security_context(),
    }
    if ctx.spec.storage.secret_name:  # an s3:// sink is written with the deployment's keys
        container["envFrom"] = [{"secretRef": {"name": ctx.spec.storage.secret_name}}]
    pod: dict[str, Any] = {
        "enableServiceLinks": False,
        "automountServiceAccountToken": False,
        # time to close (and publish) the open segments
        "terminationGracePeriodSeconds": 30,
        "securityContext": {"runAsNonRoot": True, "runAsUser": RUN_AS, "runAsGroup": RUN_AS,
                            "fsGroup": RUN_AS, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [container],
        "volumes": [{"name": "tmp", "emptyDir": {}}, {"name": "state", "emptyDir": {}},
                    *volumes],
    }
    scheduling = ctx.spec.scheduling
    if scheduling.node_selector:
        pod["nodeSelector"] = dict(scheduling.node_selector)
    if scheduling.tolerations:
        pod["tolerations"] = [t.model_dump(mode="json", exclude_none=True)
                              for t in scheduling.tolerations]
    if ctx.spec.storage.service_account_name:
        pod["serviceAccountName"] = ctx.spec.storage.service_account_name
    return {
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": collector_name(name=owner.name), "namespace": owner.namespace,
                     "labels": labels, "ownerReferences": [owner_reference(owner)]},
        "spec": {
            "replicas": 1,
            "serviceName": feedback_service_name(name=owner.name),
            "selector": {"matchLabels": selector(owner)},
            "podManagementPolicy": "OrderedReady",
            "updateStrategy": {"type": "RollingUpdate"},
            "template": {
                "metadata": {"labels": {**ctx.spec.pod_template.metadata.labels, **labels},
                             "annotations": {"prometheus.io/scrape": "true",
                                             "prometheus.io/port": str(PORT),
                                             "prometheus.io/path": "/metrics"}},
                "spec": pod,
            },
        },
    }


def build_service(*, ctx: ServingContext) -> dict[str, Any]:
    """Headless: it names the collector pod for the servers, and clients reach it by it."""
    owner = ctx.owner
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": feedback_service_name(name=owner.name), "namespace": owner.namespace,
                     "labels": {**base_labels(owner), lbl.COMPONENT: COMPONENT},
                     "ownerReferences": [owner_reference(owner)]},
        "spec": {
            "clusterIP": "None",
            "selector": selector(owner),
            "ports": [{"name": PORT_NAME, "port": PORT, "targetPort": PORT_NAME,
                       "protocol": "TCP"}],
        },
    }

