"""kopf's settings, made explicit: applied once in the startup handler.

kopf's defaults are tuned for demos (its own ``kopf.zalando.org`` annotations, progress
kept in ``status.kopf``, watches that wait for the server to time out, every handler log
line posted as an Event). An operator that users install has to choose each of these.
"""

from __future__ import annotations

import logging
import secrets
from typing import Final

import kopf

from .builders import labels as lbl
from .builders import optimization, training
from .builders.labels import MANAGED_SELECTOR
from .config import OperatorConfig

PREFIX: Final = "modelloop.dev"
FINALIZER: Final = f"{PREFIX}/finalizer"
COMPONENT: Final = "modelloop-operator"
WATCH_INACTIVITY_TIMEOUT: Final = 70.0
"""Seconds of silence (not even a bookmark, sent every minute) before a watch is
considered dead and reconnected."""

JOB_PODS_SELECTOR: Final = (f"{MANAGED_SELECTOR},{lbl.COMPONENT} in "
                            f"({training.COMPONENT},{optimization.COMPONENT})")
"""The pods the operator watches: those of its training and optimization Jobs. Serving
pods are read when a ModelDeployment is reconciled, never watched: a busy service's
replicas would otherwise send every status change to the operator for nothing."""

LIST_CHUNK_SIZE: Final = 100
"""Objects per page of the listing that precedes each watch (``limit``/``continue``)."""


def apply_kopf_settings(*, settings: kopf.OperatorSettings, config: OperatorConfig) -> None:
    """Set every kopf setting the operator relies on."""
    # Our own names on users' objects. kopf only adds the finalizer while a resync timer
    # runs on an unfinished job (to stop it cleanly on deletion); children need none,
    # ownerReferences let the garbage collector remove them.
    settings.persistence.finalizer = FINALIZER
    # Handler progress and the last-handled spec (kopf's diff base for on.update) in
    # annotations with our prefix: status stays entirely ours, and nothing of kopf's
    # ends up in status where Argo CD or kubectl users would read it as ours.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=PREFIX, key="last-handled-configuration")

    # Watches: ask the server to end each request (so a silently dropped connection is
    # noticed), keep a client-side limit above it, and back off between reconnects so a
    # restarting API server is not hammered.
    settings.watching.server_timeout = config.watch_server_timeout
    settings.watching.client_timeout = config.watch_client_timeout
    settings.watching.connect_timeout = 10
    settings.watching.reconnect_backoff = 1.0
    # A connection that dies silently (a lost NAT or firewall entry: no FIN, no RST) ends
    # neither request: the watch would hang until the client timeout, minutes without
    # events. The API server sends every watch a bookmark at least once a minute, so a
    # longer silence means the stream is dead: reconnect (tests/cluster/
    # test_faults_controlplane.py black-holes the connection to prove it).
    settings.watching.inactivity_timeout = WATCH_INACTIVITY_TIMEOUT
    # Children are watched only if they are ours: filter on the server, not in Python
    # (a cluster has far more pods than we manage).
    settings.watching.label_selectors["batch", "v1", "jobs"] = MANAGED_SELECTOR
    settings.watching.label_selectors["v1", "pods"] = JOB_PODS_SELECTOR
    settings.watching.label_selectors["apps", "v1", "deployments"] = MANAGED_SELECTOR
    # The listing before each watch comes in pages: unpaged, a restart next to 1,000
    # TrainingJobs held every Job, pod and object of every watched kind in memory at
    # once (bench/operator_scale.py). kopf hands each page to its workers before asking
    # for the next.
    settings.watching.chunk_size = LIST_CHUNK_SIZE

    # Events: the reconcilers post their own for every transition; kopf posts only
    # warnings and errors from handlers (e.g. a retry after an API failure).
    settings.posting.enabled = True
    settings.posting.level = logging.WARNING
    settings.posting.reporting_component = COMPONENT
    settings.posting.event_name_prefix = "modelloop-event-"

    # Peering: with a name, only one replica works at a time (the others wait);
    # without one, run standalone (a single replica needs no peering objects).
    settings.peering.standalone = config.standalone
    if not config.standalone:
        settings.peering.name = config.peering_name
        settings.peering.mandatory = True
        settings.peering.clusterwide = config.clusterwide
        settings.peering.priority = config.peering_priority or _random_priority()
        settings.peering.lifetime = config.peering_lifetime_seconds

    # Deleting an object stops its resync timer; a timer caught mid-reconcile is checked
    # again only after cancellation_polling (60 s by default), and the object waits on
    # our finalizer all that time. A reconcile takes well under a second: wait for it
    # briefly, then poll often.
    settings.background.instant_exit_timeout = 5.0
    settings.background.cancellation_polling = 2.0

    settings.networking.request_timeout = 60
    settings.networking.connect_timeout = 10


def _random_priority() -> int:
    """A priority in [1, 2**31): two replicas collide with probability ~1e-9."""
    return 1 + secrets.randbelow(2**31 - 1)
