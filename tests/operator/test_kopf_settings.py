"""kopf's settings are ours, not its demo defaults."""

from __future__ import annotations

import logging

import kopf
from modelloop_operator.config import OperatorConfig
from modelloop_operator.kopf_settings import LIST_CHUNK_SIZE, apply_kopf_settings


def configured(**config: object) -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    apply_kopf_settings(settings=settings, config=OperatorConfig.model_validate(config))
    return settings


def test_our_prefix_for_finalizer_progress_and_diff_base() -> None:
    settings = configured()
    assert settings.persistence.finalizer == "modelloop.dev/finalizer"
    assert isinstance(settings.persistence.progress_storage, kopf.AnnotationsProgressStorage)
    assert settings.persistence.progress_storage.prefix == "modelloop.dev"
    diffbase = settings.persistence.diffbase_storage
    assert isinstance(diffbase, kopf.AnnotationsDiffBaseStorage)
    assert diffbase.prefix == "modelloop.dev" and diffbase.key == "last-handled-configuration"


def test_watches_time_out_on_both_sides_and_back_off() -> None:
    settings = configured(watch_server_timeout=120, watch_client_timeout=150)
    assert settings.watching.server_timeout == 120
    assert settings.watching.client_timeout == 150
    assert settings.watching.connect_timeout is not None
    assert settings.watching.reconnect_backoff >= 1
    assert settings.watching.chunk_size == LIST_CHUNK_SIZE  # listings come in pages


def test_a_silently_dead_watch_is_reconnected_long_before_the_client_timeout() -> None:
    # The API server sends every watch a bookmark about once a minute: a shorter limit
    # would reconnect healthy idle watches, while a limit near the client timeout leaves
    # a black-holed watch hanging for minutes (tests/cluster/test_faults_controlplane.py).
    watching = configured().watching
    assert 60 < watching.inactivity_timeout <= 90
    assert watching.client_timeout is not None
    assert watching.inactivity_timeout < watching.client_timeout


def test_children_are_filtered_on_the_server() -> None:
    selectors = configured().watching.label_selectors
    # Jobs and pods (TrainingJob, OptimizationJob), Deployments (ModelDeployment).
    assert len(list(selectors)) == 3
    managed = "app.kubernetes.io/managed-by=modelloop"
    assert selectors["batch", "v1", "jobs"] == selectors["apps", "v1", "deployments"] == managed
    # Pods of training and optimization Jobs only: serving pods are read, not watched.
    assert selectors["v1", "pods"] == \
        f"{managed},app.kubernetes.io/component in (training,optimization)"


def test_only_warnings_become_kopf_events() -> None:
    settings = configured()
    assert settings.posting.level == logging.WARNING
    assert settings.posting.reporting_component == "modelloop-operator"


def test_replicas_with_default_priority_do_not_all_pause() -> None:
    # kopf pauses every replica that sees a live peer of equal priority: two replicas of
    # one Deployment (same env) must end up with different priorities.
    first = configured(peering_name="modelloop").peering.priority
    second = configured(peering_name="modelloop").peering.priority
    assert first > 0 and second > 0 and first != second


def test_explicit_peering_priority_is_kept() -> None:
    assert configured(peering_name="modelloop", peering_priority=7).peering.priority == 7


def test_peering_when_named_standalone_otherwise() -> None:
    assert configured().peering.standalone
    ha = configured(peering_name="modelloop", namespaces=("a",))
    assert not ha.peering.standalone and ha.peering.mandatory
    assert ha.peering.name == "modelloop" and not ha.peering.clusterwide


def test_deleting_an_object_does_not_wait_a_minute_for_its_timer() -> None:
    # kopf's default polls an exiting timer every 60 s, holding the object's finalizer
    # (seen in tests/cluster/test_modeldeployment.py as a deletion taking over a minute).
    background = configured().background
    assert background.instant_exit_timeout is not None
    assert background.cancellation_polling <= 5


def test_peering_lifetime_sets_how_fast_a_standby_takes_over() -> None:
    assert configured(peering_name="modelloop").peering.lifetime == 60
    fast = configured(peering_name="modelloop", peering_lifetime_seconds=20)
    assert fast.peering.lifetime == 20
