"""Operator configuration: read once at startup from ``MODELLOOP_*`` environment variables.

Everything an installation may want to change without a new image lives here (default
images, which namespaces to serve, ports, peering). The Helm chart sets these variables;
the command line (:mod:`modelloop_operator.cli`) may override a few for local runs.
Nothing reads the environment after startup: the one :class:`OperatorConfig` instance is
passed down explicitly.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

LogFormat = Literal["plain", "full", "json"]


class OperatorConfig(BaseSettings):
    """Settings of one operator process."""

    model_config = SettingsConfigDict(env_prefix="MODELLOOP_", frozen=True, extra="ignore")

    trainer_image: str = "ghcr.io/modelloop/trainer:0.1.0"
    """Image for TrainingJob and OptimizationJob pods when the spec names none."""

    server_image: str = "ghcr.io/modelloop/server:0.1.0"
    """Image for ModelDeployment pods (TorchServe) when the spec names none."""

    namespaces: Annotated[tuple[str, ...], NoDecode] = ()
    """Namespaces to serve, comma-separated (``MODELLOOP_NAMESPACES=team-a,team-b``);
    empty means the whole cluster."""

    metrics_port: Annotated[int, Field(ge=0, le=65535)] = 8080
    """Port of the Prometheus ``/metrics`` endpoint; 0 disables it."""

    health_port: Annotated[int, Field(ge=0, le=65535)] = 8081
    """Port of the liveness endpoint ``/healthz``; 0 disables it."""

    peering_name: str = ""
    """kopf peering object for high availability (only one replica works at a time);
    empty runs standalone, which is right for a single replica."""

    peering_priority: Annotated[int, Field(ge=0, le=2**31 - 1)] = 0
    """This replica's peering priority: the live replica with the highest one works, the
    others pause. kopf pauses *every* replica that sees a peer of equal priority, so the
    default 0 means "pick a random one at startup": replicas of one Deployment, started
    from one pod template, then differ. Set it only to prefer one replica on purpose."""

    peering_lifetime_seconds: Annotated[int, Field(ge=10, le=3600)] = 60
    """How long this replica's peering record counts as alive without a refresh. A standby
    takes over this long after the working replica dies: lower it for faster failover
    (the record is refreshed 5-10 s before it expires, so keep it well above 10)."""

    log_format: LogFormat = "full"
    """``plain``, ``full`` (with time and logger) or ``json`` for log collectors."""

    resync_seconds: Annotated[float, Field(gt=0)] = 30.0
    """How often every unfinished object is reconciled even without events: the safety
    net for missed watch events and the clock for deadlines."""

    max_concurrent_reconciles: Annotated[int, Field(ge=1, le=10_000)] = 32
    """Reconciles running at once; the others wait their turn, most urgent first. Without
    a bound, a burst of new objects (or every resync timer firing together) queues every
    reconcile's request in the HTTP client at once, where they time out (30 s) before
    they are even sent, are retried, and the operator falls further behind
    (bench/operator_scale.py). Raise it for an API server with cores to spare."""

    api_connections: Annotated[int, Field(ge=1, le=1_000)] = 32
    """HTTP connections the operator's own client keeps to the API server (kopf's watches
    have their own). Each TLS connection costs about half a MiB of memory; with 100 (the
    client library's default), 1,500 new objects opened all of them and the operator's
    peak memory grew by a third, for no gain: requests beyond the connections wait
    briefly for one, and the API server is the bottleneck either way
    (bench/operator_scale.py)."""

    default_cpu: str = "1"
    """CPU request and limit per job pod when the spec names none."""

    default_memory: str = "4Gi"
    """Memory request and limit per job pod when the spec names none."""

    master_port: Annotated[int, Field(ge=1, le=65535)] = 29500
    """torch.distributed rendezvous port on pod 0 (docs/contracts.md)."""

    image_pull_grace_seconds: Annotated[float, Field(ge=0)] = 300.0
    """How long a job's pod may keep failing to pull its image (ErrImagePull,
    ImagePullBackOff), counted from when it was bound to its node, before the job fails
    with ImagePullFailed. The kubelet retries meanwhile, so a short registry outage heals;
    a wrong image does not, and its pod holds its GPUs while it waits. 0: fail at once."""

    watch_server_timeout: Annotated[int, Field(gt=0)] = 300
    """Seconds the API server keeps one watch request open before kopf reconnects
    (whole seconds: the API server rejects ``timeoutSeconds=300.0``)."""

    watch_client_timeout: Annotated[int, Field(gt=0)] = 360
    """Client-side limit on one watch request; longer than the server's so that the
    server ends the request cleanly in the normal case."""

    @field_validator("namespaces", mode="before")
    @classmethod
    def _split_namespaces(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @property
    def clusterwide(self) -> bool:
        """True when no namespace is named: the operator serves every namespace."""
        return not self.namespaces

    @property
    def standalone(self) -> bool:
        """True when no peering object is named."""
        return not self.peering_name
