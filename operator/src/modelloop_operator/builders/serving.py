"""Manifests of a ModelDeployment: per track (stable, canary) a ConfigMap with TorchServe's
config and a Deployment of ``modelloop-serve``; one Service for inference, one for metrics,
and an optional HorizontalPodAutoscaler. Pure functions of typed inputs; no client.

Decisions encoded here, each for a reason:

* **Only the inference port** is on the inference Service; metrics have their own Service
  (and ``prometheus.io/*`` pod annotations); management and gRPC stay on loopback
  (:mod:`.torchserve_config`).
* **Readiness is a READY worker**: probes hit ``modelloop-serve``'s ``/readyz`` and
  ``/livez`` on the health port, never TorchServe's ``/ping`` (healthy before the model
  can answer). A startup probe covers the model load, so liveness cannot kill a slow load.
* **Addresses bind to the pod IP** (``$(POD_IP)`` from the downward API): the
  ``config.properties`` in the ConfigMap says ``0.0.0.0``, and the container renders its own
  copy with the pod IP before ``exec``-ing the server. In a cluster that changes nothing;
  on the local pod runner, where every pod shares the host network with its own loopback
  address, it lets two replicas use the same port.
* **The model reaches the model store** without the server knowing about storage:
  ``pvc://`` archives are mounted read-only (``subPath`` = the archive's directory);
  ``file://`` archives are read where they are; ``s3://`` archives are downloaded by an
  init container, the only container that sees the storage Secret. A model *directory*
  (a TrainingJob served unoptimized) is packaged into a ``.mar`` by an init container
  with the trainer's own packaging code. Init containers run the *trainer* image: it has
  the storage code with fsspec/s3fs, torch-model-archiver and the server's handler, which
  the server image deliberately leaves out.
* **A model or config change rolls the pods**: the pod template carries the archive URI,
  checksum and a hash of the config as annotations.
"""

from __future__ import annotations

import hashlib
import math
import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from ..api.common import pvc_claim, uri_scheme
from ..api.modeldeployment import ModelDeploymentSpec
from . import labels as lbl
from .job import GPU_RESOURCE, PVC_ROOT, RUN_AS, Owner, owner_reference
from .torchserve_config import TorchServeSettings, build_torchserve_config

COMPONENT: Final = "server"
CONTAINER: Final = "server"
SERVE_COMMAND: Final = "modelloop-serve"

INFERENCE_PORT: Final = 8080
MANAGEMENT_PORT: Final = 8081
METRICS_PORT: Final = 8082
HEALTH_PORT: Final = 8090
COLLECTOR_PORT: Final = 8080
INFERENCE_PORT_NAME: Final = "http"
METRICS_PORT_NAME: Final = "metrics"
HEALTH_PORT_NAME: Final = "health"

CONFIG_DIR: Final = "/etc/modelloop"
CONFIG_FILE: Final = "config.properties"
RENDERED_CONFIG: Final = "/tmp/modelloop/config.properties"
MODEL_STORE: Final = "/mnt/models"
TMP_DIR: Final = "/tmp"

MODEL_LOAD_SECONDS: Final = 300
"""How long a worker may take to load the model (TorchServe's startup timeout and
``modelloop-serve --startup-timeout``); the startup probe waits a little longer, so the
server's own clear failure message wins over a kubelet kill."""
PROBE_PERIOD_SECONDS: Final = 5
DEFAULT_MODEL_NAME: Final = "model"

MODEL_URI_ANNOTATION: Final = "modelloop.dev/model-uri"
MODEL_CHECKSUM_ANNOTATION: Final = "modelloop.dev/model-checksum"
CONFIG_HASH_ANNOTATION: Final = "modelloop.dev/config-hash"

# Inline programs run by init containers in the trainer image. They call the trainer
# package's own storage and packaging code, so URIs and archives have exactly one
# implementation.
FETCH_SCRIPT: Final = (
    "import shutil, sys\n"
    "from modelloop_trainer.storage import fetch, parse_uri\n"
    "uri, dest = sys.argv[1], sys.argv[2]\n"
    "shutil.copyfile(fetch(parse_uri(uri)), dest)\n"
    "print(f'fetched {uri} -> {dest}')\n"
)
PACKAGE_SCRIPT: Final = (
    "import sys\n"
    "from pathlib import Path\n"
    "from modelloop_trainer.optimize.package import ServingConfig, build_archive, "
    "default_handler_path\n"
    "from modelloop_trainer.storage import fetch, parse_uri\n"
    "uri, store, name = sys.argv[1], Path(sys.argv[2]), sys.argv[3]\n"
    "batch, workers, delay, timeout, startup, queue = (int(x) for x in sys.argv[4:10])\n"
    "handler = default_handler_path()\n"
    "if handler is None:\n"
    "    sys.exit('modelloop_server is not installed: cannot package ' + uri)\n"
    "mar = build_archive(artifact_dir=fetch(parse_uri(uri)), handler=handler, name=name,\n"
    "                    version='1.0', export_dir=store, serving=ServingConfig(\n"
    "                        batch_size=batch, workers=workers, max_batch_delay_ms=delay,\n"
    "                        response_timeout_s=timeout, startup_timeout_s=startup,\n"
    "                        job_queue_size=queue))\n"
    "print(f'packaged {uri} -> {mar}')\n"
)
# Renders the pod's own config (pod IP instead of 0.0.0.0; IPv6 in brackets) and becomes
# the server, so signals reach modelloop-serve directly.
START_SCRIPT: Final = (
    'set -e\n'
    'case "$POD_IP" in *:*) addr="[$POD_IP]" ;; *) addr="$POD_IP" ;; esac\n'
    f'mkdir -p {posixpath.dirname(RENDERED_CONFIG)}\n'
    f'sed "s#//0\\.0\\.0\\.0:#//$addr:#" {CONFIG_DIR}/{CONFIG_FILE} > {RENDERED_CONFIG}\n'
    f'exec {SERVE_COMMAND}\n'
)


class Track(StrEnum):
    """Which Deployment a pod belongs to; both are behind the same Service."""

    STABLE = "stable"
    CANARY = "canary"


@dataclass(frozen=True)
class ModelRef:
    """The model one track serves: where it is, a short version, its checksum."""

    uri: str
    version: str
    checksum: str | None = None


@dataclass(frozen=True)
class ServingContext:
    """Everything the builders need besides the model and the track."""

    owner: Owner
    spec: ModelDeploymentSpec
    default_image: str
    init_image: str
    """The trainer image, for the init containers that fetch or package the model."""
    default_cpu: str
    default_memory: str


@dataclass(frozen=True)
class ModelLayout:
    """How a model gets into the model store of a pod."""

    model_store: str
    mar_file: str
    model_name: str
    volumes: tuple[dict[str, Any], ...] = ()
    server_mounts: tuple[dict[str, Any], ...] = ()
    init_containers: tuple[dict[str, Any], ...] = ()


# --- names and labels -------------------------------------------------------------------

def deployment_name(*, name: str, track: Track) -> str:
    """``<name>`` for stable, ``<name>-canary`` for canary."""
    return name if track is Track.STABLE else f"{name}-canary"


def config_map_name(*, name: str, track: Track) -> str:
    """The TorchServe config of a track."""
    return f"{deployment_name(name=name, track=track)}-config"


def service_name(*, name: str) -> str:
    """The inference Service: the ModelDeployment's own name."""
    return name


def metrics_service_name(*, name: str) -> str:
    """The metrics Service."""
    return f"{name}-metrics"


def collector_name(*, name: str) -> str:
    """The capture collector's StatefulSet (builders/collector.py)."""
    return f"{name}-collector"


def collector_pod_name(*, name: str) -> str:
    """The collector's only pod (ordinal 0 of its StatefulSet)."""
    return f"{collector_name(name=name)}-0"


def feedback_service_name(*, name: str) -> str:
    return f"{name}-feedback"


def capture_url(*, name: str, namespace: str) -> str:
    """Where the servers send captures: the collector pod's own DNS name (headless)."""
    return (f"http://{collector_pod_name(name=name)}.{feedback_service_name(name=name)}."
            f"{namespace}.svc:{COLLECTOR_PORT}/v1/capture")


def service_url(*, name: str, namespace: str) -> str:
    """The in-cluster inference URL written to status."""
    return f"http://{service_name(name=name)}.{namespace}.svc:{INFERENCE_PORT}"


def label_value(text: str) -> str:
    """``text`` made into a valid label value (63 characters, alphanumeric ends)."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "-", text)[:63]
    return cleaned.strip("._-") or "unknown"


def base_labels(owner: Owner) -> dict[str, str]:
    """Labels on every child of a ModelDeployment (watches map them back to it)."""
    return {lbl.MANAGED_BY: lbl.MANAGED_BY_VALUE, lbl.PART_OF: "modelloop",
            lbl.COMPONENT: COMPONENT, lbl.MODEL_DEPLOYMENT: owner.name}


def service_selector(owner: Owner) -> dict[str, str]:
    """Both tracks' pods: the canary gets traffic in proportion to its replicas."""
    return {lbl.MODEL_DEPLOYMENT: owner.name, lbl.COMPONENT: COMPONENT}


def track_selector(owner: Owner, track: Track) -> dict[str, str]:
    """One track's pods (a Deployment's immutable selector)."""
    return {**service_selector(owner), lbl.TRACK: track.value}


def _metadata(owner: Owner, name: str, labels: Mapping[str, str]) -> dict[str, Any]:
    return {"name": name, "namespace": owner.namespace, "labels": dict(labels),
            "ownerReferences": [owner_reference(owner)]}


# --- the model in the store -------------------------------------------------------------

def model_name_for(uri: str) -> str:
    """The TorchServe model name (``/predictions/<name>``): the archive's file name
    without ``.mar`` (``modelloop-optimize`` names it after ``packaging.archiveName``)."""
    base = posixpath.basename(uri.rstrip("/"))
    if not base.endswith(".mar"):
        return DEFAULT_MODEL_NAME
    cleaned = re.sub(r"[^A-Za-z0-9_-]", "-", base.removesuffix(".mar"))[:63].lstrip("_-")
    return cleaned or DEFAULT_MODEL_NAME


def _pvc_parts(uri: str) -> tuple[str, str]:
    """(claim, path inside the claim) of a ``pvc://`` URI."""
    rest = uri.removeprefix("pvc://")
    claim, _, path = rest.partition("/")
    return claim, path.strip("/")


def _init_container(*, ctx: ServingContext, name: str, args: list[str],
                    mounts: list[dict[str, Any]], extra_env: Mapping[str, str]) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": name,
        "image": ctx.init_image,
        "command": ["python", "-c"],
        "args": args,
        "env": [{"name": "HOME", "value": TMP_DIR}, {"name": "PYTHONUNBUFFERED", "value": "1"},
                *({"name": k, "value": v} for k, v in sorted(extra_env.items()))],
        "resources": _resources(ctx.spec, ctx, gpus=False),
        "volumeMounts": mounts,
        "securityContext": container_security_context(),
    }
    if ctx.spec.storage.secret_name:
        # Only the step that downloads sees the credentials; the server never does.
        container["envFrom"] = [{"secretRef": {"name": ctx.spec.storage.secret_name}}]
    return container


def model_layout(*, ctx: ServingContext, model: ModelRef) -> ModelLayout:
    """Volumes, mounts and init containers that put ``model`` into the model store."""
    uri = model.uri
    scheme = uri_scheme(uri)
    is_mar = uri.rstrip("/").endswith(".mar")
    name = model_name_for(uri)
    store_volume = {"name": "model-store", "emptyDir": {}}
    store_mount = {"name": "model-store", "mountPath": MODEL_STORE}
    if is_mar and scheme == "file":
        path = uri.removeprefix("file://")
        return ModelLayout(model_store=posixpath.dirname(path) or "/",
                           mar_file=posixpath.basename(path), model_name=name)
    if is_mar and scheme == "pvc":
        claim, path = _pvc_parts(uri)
        directory = posixpath.dirname(path)
        mount: dict[str, Any] = {"name": "model-source", "mountPath": MODEL_STORE,
                                 "readOnly": True}
        if directory:
            mount["subPath"] = directory
        volume = {"name": "model-source",
                  "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}
        return ModelLayout(model_store=MODEL_STORE, mar_file=posixpath.basename(path),
                           model_name=name, volumes=(volume,), server_mounts=(mount,))
    tmp_mount = {"name": "tmp", "mountPath": TMP_DIR}
    if is_mar:
        mar = posixpath.basename(uri.rstrip("/"))
        init = _init_container(ctx=ctx, name="fetch-model",
                               args=[FETCH_SCRIPT, uri, f"{MODEL_STORE}/{mar}"],
                               mounts=[store_mount, tmp_mount], extra_env={})
        return ModelLayout(model_store=MODEL_STORE, mar_file=mar, model_name=name,
                           volumes=(store_volume,), server_mounts=(store_mount,),
                           init_containers=(init,))
    # A model directory (a TrainingJob's output): package it in the pod.
    volumes: list[dict[str, Any]] = [store_volume]
    mounts: list[dict[str, Any]] = [store_mount, tmp_mount]
    env: dict[str, str] = {}
    source_claim = pvc_claim(uri)
    if source_claim is not None:
        volumes.append({"name": "model-source", "persistentVolumeClaim": {
            "claimName": source_claim, "readOnly": True}})
        mounts.append({"name": "model-source", "mountPath": f"{PVC_ROOT}/{source_claim}",
                       "readOnly": True})
        env["MODELLOOP_PVC_ROOT"] = PVC_ROOT
    server = ctx.spec.server
    # Every per-model setting the ConfigMap gives TorchServe, so that the archive agrees
    # with it and modelloop-serve has nothing to replace (no copy of the archive at start).
    tuning = [str(v) for v in (server.batch_size, server.workers, server.max_batch_delay_ms,
                               server.response_timeout_seconds, MODEL_LOAD_SECONDS,
                               server.job_queue_size)]
    init = _init_container(ctx=ctx, name="package-model",
                           args=[PACKAGE_SCRIPT, uri, MODEL_STORE, name, *tuning],
                           mounts=mounts, extra_env=env)
    return ModelLayout(model_store=MODEL_STORE, mar_file=f"{name}.mar", model_name=name,
                       volumes=tuple(volumes), server_mounts=(store_mount,),
                       init_containers=(init,))


# --- ConfigMap --------------------------------------------------------------------------

def torchserve_settings(*, spec: ModelDeploymentSpec, layout: ModelLayout) -> TorchServeSettings:
    """The spec's server tuning as TorchServe settings for this model."""
    server = spec.server
    return TorchServeSettings(
        model_name=layout.model_name, mar_file=layout.mar_file,
        model_store=layout.model_store, inference_port=INFERENCE_PORT,
        management_port=MANAGEMENT_PORT, metrics_port=METRICS_PORT,
        workers=server.workers, batch_size=server.batch_size,
        max_batch_delay_ms=server.max_batch_delay_ms,
        response_timeout_s=server.response_timeout_seconds,
        startup_timeout_s=MODEL_LOAD_SECONDS, job_queue_size=server.job_queue_size,
        max_request_size_bytes=server.max_request_size_bytes)


def render_config(*, ctx: ServingContext, model: ModelRef) -> str:
    """The ``config.properties`` text of a track serving ``model``."""
    layout = model_layout(ctx=ctx, model=model)
    return build_torchserve_config(torchserve_settings(spec=ctx.spec, layout=layout))


def config_hash(text: str) -> str:
    """Short hash of a config, put on the pod template so a config change rolls pods."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def build_config_map(*, ctx: ServingContext, track: Track, model: ModelRef) -> dict[str, Any]:
    """The ConfigMap holding one track's ``config.properties``."""
    owner = ctx.owner
    labels = {**base_labels(owner), lbl.TRACK: track.value}
    return {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": _metadata(owner, config_map_name(name=owner.name, track=track), labels),
        "data": {CONFIG_FILE: render_config(ctx=ctx, model=model)},
    }


# --- Deployment -------------------------------------------------------------------------

def image_of(ctx: ServingContext) -> str:
    """The server image: the spec's, else the operator's default."""
    return ctx.spec.image or ctx.default_image


def _resources(spec: ModelDeploymentSpec, ctx: ServingContext, *, gpus: bool) -> dict[str, Any]:
    """Requests equal limits (Guaranteed QoS: a latency-bound server is not throttled
    below what it asked for, nor evicted first)."""
    res = spec.resources
    amounts: dict[str, str] = {
        "cpu": str(res.cpu) if res.cpu is not None else ctx.default_cpu,
        "memory": str(res.memory) if res.memory is not None else ctx.default_memory,
    }
    if gpus and res.gpus > 0:
        amounts[GPU_RESOURCE] = str(res.gpus)
    return {"requests": dict(amounts), "limits": dict(amounts)}


def container_security_context() -> dict[str, Any]:
    """What PodSecurity ``restricted`` asks of a container, plus a read-only root: the
    server writes only to its emptyDirs."""
    return {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
            "runAsNonRoot": True, "readOnlyRootFilesystem": True}


def _http_probe(path: str, *, period: int, failures: int) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": HEALTH_PORT_NAME, "scheme": "HTTP"},
            "periodSeconds": period, "timeoutSeconds": 3, "failureThreshold": failures,
            "successThreshold": 1}


def probes() -> dict[str, dict[str, Any]]:
    """Startup (model load), readiness (a READY worker) and liveness (server alive)."""
    startup_failures = math.ceil((MODEL_LOAD_SECONDS + 60) / PROBE_PERIOD_SECONDS)
    return {
        "startupProbe": _http_probe("/readyz", period=PROBE_PERIOD_SECONDS,
                                    failures=startup_failures),
        "readinessProbe": _http_probe("/readyz", period=PROBE_PERIOD_SECONDS, failures=2),
        "livenessProbe": _http_probe("/livez", period=10, failures=3),
    }


def _server_env(layout: ModelLayout) -> list[dict[str, Any]]:
    return [
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "MODELLOOP_TS_CONFIG", "value": RENDERED_CONFIG},
        {"name": "MODELLOOP_MODEL_STORE", "value": layout.model_store},
        {"name": "MODELLOOP_HEALTH_ADDRESS", "value": "$(POD_IP)"},
        {"name": "MODELLOOP_HEALTH_PORT", "value": str(HEALTH_PORT)},
        {"name": "MODELLOOP_STARTUP_TIMEOUT", "value": str(MODEL_LOAD_SECONDS)},
        {"name": "HOME", "value": TMP_DIR},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
    ]


def _capture_env(ctx: ServingContext) -> list[dict[str, Any]]:
    """What a server needs to capture: where to send, how much, and who it is (pod name
    and model version from the downward API); nothing when capture is off."""
    capture = ctx.spec.capture
    if capture is None:
        return []
    owner = ctx.owner
    return [
        {"name": "MODELLOOP_CAPTURE_URL",
         "value": capture_url(name=owner.name, namespace=owner.namespace)},
        {"name": "MODELLOOP_CAPTURE_SAMPLE_RATE", "value": f"{capture.sample_rate:g}"},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "MODELLOOP_MODEL_VERSION", "valueFrom": {"fieldRef": {
            "fieldPath": f"metadata.labels['{lbl.MODEL_VERSION}']"}}},
    ]


def _server_container(ctx: ServingContext, layout: ModelLayout) -> dict[str, Any]:
    mounts = [{"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
              {"name": "tmp", "mountPath": TMP_DIR}, *layout.server_mounts]
    return {
        "name": CONTAINER,
        "image": image_of(ctx),
        "command": ["/bin/sh", "-c", START_SCRIPT],
        "env": [*_server_env(layout), *_capture_env(ctx)],
        "ports": [
            {"name": INFERENCE_PORT_NAME, "containerPort": INFERENCE_PORT, "protocol": "TCP"},
            {"name": METRICS_PORT_NAME, "containerPort": METRICS_PORT, "protocol": "TCP"},
            {"name": HEALTH_PORT_NAME, "containerPort": HEALTH_PORT, "protocol": "TCP"},
        ],
        "resources": _resources(ctx.spec, ctx, gpus=True),
        "volumeMounts": mounts,
        **probes(),
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": container_security_context(),
    }


def _pod_spec(ctx: ServingContext, layout: ModelLayout, track: Track) -> dict[str, Any]:
    spec = ctx.spec
    volumes: list[dict[str, Any]] = [
        {"name": "config", "configMap": {
            "name": config_map_name(name=ctx.owner.name, track=track)}},
        {"name": "tmp", "emptyDir": {}},
        *layout.volumes,
    ]
    pod: dict[str, Any] = {
        "enableServiceLinks": False,
        "automountServiceAccountToken": False,
        "terminationGracePeriodSeconds": 30,
        "securityContext": {
            "runAsNonRoot": True, "runAsUser": RUN_AS, "runAsGroup": RUN_AS,
            "fsGroup": RUN_AS, "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [_server_container(ctx, layout)],
        "volumes": volumes,
    }
    if layout.init_containers:
        pod["initContainers"] = [dict(c) for c in layout.init_containers]
    scheduling = spec.scheduling
    if scheduling.node_selector:
        pod["nodeSelector"] = dict(scheduling.node_selector)
    if scheduling.tolerations:
        pod["tolerations"] = [t.model_dump(mode="json", exclude_none=True)
                              for t in scheduling.tolerations]
    if scheduling.priority_class_name:
        pod["priorityClassName"] = scheduling.priority_class_name
    if spec.storage.service_account_name:
        pod["serviceAccountName"] = spec.storage.service_account_name
    return pod


def pod_annotations(*, ctx: ServingContext, model: ModelRef, config: str) -> dict[str, str]:
    """The user's annotations, then ours (scraping, and what rolls the pods)."""
    out = dict(ctx.spec.pod_template.metadata.annotations)
    out.update({
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(METRICS_PORT),
        "prometheus.io/path": "/metrics",
        MODEL_URI_ANNOTATION: model.uri,
        CONFIG_HASH_ANNOTATION: config_hash(config),
    })
    if model.checksum:
        out[MODEL_CHECKSUM_ANNOTATION] = model.checksum
    return out


def build_deployment(*, ctx: ServingContext, track: Track, model: ModelRef,
                     replicas: int | None) -> dict[str, Any]:
    """One track's Deployment. ``replicas`` None leaves the count to the autoscaler."""
    owner = ctx.owner
    layout = model_layout(ctx=ctx, model=model)
    config = build_torchserve_config(torchserve_settings(spec=ctx.spec, layout=layout))
    selector = track_selector(owner, track)
    pod_labels = {**ctx.spec.pod_template.metadata.labels, **base_labels(owner), **selector,
                  lbl.MODEL_VERSION: label_value(model.version)}
    labels = {**base_labels(owner), lbl.TRACK: track.value,
              lbl.MODEL_VERSION: label_value(model.version)}
    if ctx.spec.scheduling.queue_name:  # Kueue's Deployment integration reads both
        labels[lbl.KUEUE_QUEUE] = pod_labels[lbl.KUEUE_QUEUE] = ctx.spec.scheduling.queue_name
    spec: dict[str, Any] = {
        "selector": {"matchLabels": selector},
        "revisionHistoryLimit": 3,
        # A new replica must load the model before an old one goes: never below capacity.
        "strategy": {"type": "RollingUpdate",
                     "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}},
        "progressDeadlineSeconds": MODEL_LOAD_SECONDS * 2,
        "template": {
            "metadata": {"labels": pod_labels,
                         "annotations": pod_annotations(ctx=ctx, model=model, config=config)},
            "spec": _pod_spec(ctx, layout, track),
        },
    }
    if replicas is not None:
        spec["replicas"] = replicas
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {**_metadata(owner, deployment_name(name=owner.name, track=track), labels),
                     "annotations": {MODEL_URI_ANNOTATION: model.uri}},
        "spec": spec,
    }


# --- Services and autoscaler ------------------------------------------------------------

def build_inference_service(*, ctx: ServingContext) -> dict[str, Any]:
    """The Service clients use: the inference port only, both tracks behind it."""
    owner = ctx.owner
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": _metadata(owner, service_name(name=owner.name), base_labels(owner)),
        "spec": {
            "type": "ClusterIP",
            "selector": service_selector(owner),
            "ports": [{"name": INFERENCE_PORT_NAME, "port": INFERENCE_PORT,
                       "targetPort": INFERENCE_PORT_NAME, "protocol": "TCP"}],
        },
    }


def build_metrics_service(*, ctx: ServingContext) -> dict[str, Any]:
    """A Service for Prometheus (or a ServiceMonitor) to find every server's metrics."""
    owner = ctx.owner
    labels = {**base_labels(owner), "modelloop.dev/metrics": "true"}
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {**_metadata(owner, metrics_service_name(name=owner.name), labels),
                     "annotations": {"prometheus.io/scrape": "true",
                                     "prometheus.io/port": str(METRICS_PORT)}},
        "spec": {
            "type": "ClusterIP",
            "selector": service_selector(owner),
            "ports": [{"name": METRICS_PORT_NAME, "port": METRICS_PORT,
                       "targetPort": METRICS_PORT_NAME, "protocol": "TCP"}],
        },
    }


def build_autoscaler(*, ctx: ServingContext) -> dict[str, Any] | None:
    """An autoscaling/v2 HPA on the stable Deployment's CPU; None without autoscaling."""
    scaling = ctx.spec.autoscaling
    if scaling is None:
        return None
    owner = ctx.owner
    return {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": _metadata(owner, owner.name, base_labels(owner)),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                               "name": deployment_name(name=owner.name, track=Track.STABLE)},
            "minReplicas": scaling.min_replicas,
            "maxReplicas": scaling.max_replicas,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {
                "type": "Utilization",
                "averageUtilization": scaling.target_cpu_utilization_percentage}}}],
        },
    }


def split_replicas(*, total: int, weight: int) -> tuple[int, int]:
    """(stable, canary) replicas for a canary at ``weight`` percent of ``total``.

    Without a traffic router the Service spreads requests over pods, so the weight is
    approximated by replica counts: the canary gets ``ceil(total * weight / 100)`` (at
    least one, so it is really tried), and stable keeps at least one while weight < 100 so
    a rollback is instant. With one replica that means one of each (50 %), the closest a
    pod count can get.
    """
    if weight <= 0 or total <= 0:
        return max(total, 0), 0
    if weight >= 100:
        return 0, max(total, 1)
    canary = min(max(math.ceil(total * weight / 100), 1), total)
    return max(total - canary, 1), canary
