"""ModelDeployment children deleted by hand, over an in-memory API: each child that status
says was there is recreated with a ChildrenDeleted Warning; first creations and the
canary's coming and going are not reported as deletions."""

from __future__ import annotations

from typing import Any

import pytest
from modelloop_operator.config import OperatorConfig
from modelloop_operator.kube import SERVICES
from modelloop_operator.metrics import OperatorMetrics
from modelloop_operator.reconcilers.modeldeployment import (
    AUTOSCALERS,
    CONFIG_MAPS,
    DEPLOYMENTS,
    MODEL_DEPLOYMENTS,
    reconcile_model_deployment,
)
from modelloop_operator.reconcilers.runtime import Runtime

from .memory_kube import MemoryKube

NS = "team-a"
NAME = "bbc"
CHILDREN = ((DEPLOYMENTS, NAME), (CONFIG_MAPS, f"{NAME}-config"), (SERVICES, NAME),
            (SERVICES, f"{NAME}-metrics"))


@pytest.fixture
def kube() -> MemoryKube:
    return MemoryKube()


@pytest.fixture
def runtime(kube: MemoryKube) -> Runtime:
    return Runtime(config=OperatorConfig(), kube=kube, metrics=OperatorMetrics())


def create(kube: MemoryKube, **spec: Any) -> None:
    kube.put(MODEL_DEPLOYMENTS, {
        "apiVersion": "modelloop.dev/v1alpha1", "kind": "ModelDeployment",
        "metadata": {"name": NAME, "namespace": NS, "generation": 1},
        "spec": {"model": {"archiveUri": "file:///models/v1/bbc.mar"}, "replicas": 2,
                 **spec}})


async def reconcile(runtime: Runtime) -> None:
    await reconcile_model_deployment(runtime=runtime, namespace=NS, name=NAME, trigger="test")


def deleted_events(kube: MemoryKube) -> list[tuple[str, str]]:
    return [e for e in kube.events if e[1] == "ChildrenDeleted"]


async def test_the_first_creation_is_not_reported_as_a_deletion(
        runtime: Runtime, kube: MemoryKube) -> None:
    create(kube)
    await reconcile(runtime)
    await reconcile(runtime)
    for resource, name in CHILDREN:
        assert kube.stored(resource, NS, name) is not None, (resource.kind, name)
    assert deleted_events(kube) == []


@pytest.mark.parametrize(("resource", "name"), CHILDREN,
                         ids=[f"{r.kind}-{n}" for r, n in CHILDREN])
async def test_a_child_deleted_by_hand_is_recreated_with_a_warning(
        runtime: Runtime, kube: MemoryKube, resource: Any, name: str) -> None:
    create(kube)
    await reconcile(runtime)
    del kube.objects[(resource.plural, NS, name)]
    await reconcile(runtime)
    assert kube.stored(resource, NS, name) is not None
    assert deleted_events(kube) == [("Warning", "ChildrenDeleted")]
    await reconcile(runtime)  # once recreated, nothing more to report
    assert len(deleted_events(kube)) == 1


async def test_a_deleted_autoscaler_is_recreated_but_a_newly_requested_one_is_not_a_deletion(
        runtime: Runtime, kube: MemoryKube) -> None:
    create(kube)
    await reconcile(runtime)
    md = kube.stored(MODEL_DEPLOYMENTS, NS, NAME)
    assert md is not None
    md["spec"]["autoscaling"] = {"minReplicas": 1, "maxReplicas": 3}
    md["metadata"]["generation"] = 2
    await reconcile(runtime)
    assert kube.stored(AUTOSCALERS, NS, NAME) is not None
    assert deleted_events(kube) == []
    del kube.objects[(AUTOSCALERS.plural, NS, NAME)]
    await reconcile(runtime)
    assert kube.stored(AUTOSCALERS, NS, NAME) is not None
    assert deleted_events(kube) == [("Warning", "ChildrenDeleted")]


async def test_a_child_the_api_server_refuses_fails_the_deployment_with_its_words(
        runtime: Runtime, kube: MemoryKube) -> None:
    """A Deployment refused with 422 (an admission policy, a validation the schema cannot
    express) shows in status, and the next pass after the cause is gone recovers."""
    kube.refused[DEPLOYMENTS.plural] = "apply Deployment team-a/bbc: denied by policy (422)"
    create(kube)
    await reconcile(runtime)
    stored = kube.stored(MODEL_DEPLOYMENTS, NS, NAME)
    assert stored is not None
    assert stored["status"]["phase"] == "Failed"
    assert any("denied by policy" in (c.get("message") or "")
               for c in stored["status"]["conditions"])
    assert kube.stored(DEPLOYMENTS, NS, NAME) is None

    kube.refused.clear()  # the policy is lifted
    await reconcile(runtime)
    stored = kube.stored(MODEL_DEPLOYMENTS, NS, NAME)
    assert stored is not None and stored["status"]["phase"] != "Failed"
    assert kube.stored(DEPLOYMENTS, NS, NAME) is not None
