"""A ModelDeployment's status write against another writer, over an in-memory API: labels
and annotations changed during a pass do not cost the pass its status; someone else's
status or a new spec still does (the resourceVersion guard keeps its purpose)."""

from __future__ import annotations

import pytest
from modelloop_operator.config import OperatorConfig
from modelloop_operator.errors import ConflictError
from modelloop_operator.kube import Object, Resource
from modelloop_operator.metrics import OperatorMetrics
from modelloop_operator.reconcilers.modeldeployment import (
    DEPLOYMENTS,
    MODEL_DEPLOYMENTS,
    reconcile_model_deployment,
)
from modelloop_operator.reconcilers.runtime import Runtime

from .memory_kube import MemoryKube

NS = "team-a"
NAME = "bbc"


class OtherWriter(MemoryKube):
    """Changes the ModelDeployment whenever the reconciler reads a Deployment, that is,
    between its read of the ModelDeployment and its status write: its labels (as
    ``kubectl label`` or Argo CD would), and optionally its status or its spec."""

    def __init__(self, *, status: bool = False, spec: bool = False) -> None:
        super().__init__()
        self.writes_status, self.writes_spec = status, spec
        self.label_writes = 0

    async def get(self, *, resource: Resource, namespace: str | None,
                  name: str) -> Object | None:
        target = self.stored(MODEL_DEPLOYMENTS, NS, NAME)
        if resource.plural == DEPLOYMENTS.plural and target is not None:
            self.label_writes += 1
            target["metadata"].setdefault("labels", {})["other"] = str(self.label_writes)
            if self.writes_status:
                target.setdefault("status", {})["message"] = f"other {self.label_writes}"
            if self.writes_spec:
                target["metadata"]["generation"] += 1
            self.put(MODEL_DEPLOYMENTS, target)  # a new resourceVersion
        return await super().get(resource=resource, namespace=namespace, name=name)


def runtime(kube: MemoryKube) -> Runtime:
    kube.put(MODEL_DEPLOYMENTS, {
        "apiVersion": "modelloop.dev/v1alpha1", "kind": "ModelDeployment",
        "metadata": {"name": NAME, "namespace": NS, "generation": 1},
        "spec": {"model": {"archiveUri": "file:///models/v1/bbc.mar"}, "replicas": 2}})
    return Runtime(config=OperatorConfig(), kube=kube, metrics=OperatorMetrics())


async def reconcile(run: Runtime) -> None:
    await reconcile_model_deployment(runtime=run, namespace=NS, name=NAME, trigger="test")


async def test_labels_changed_during_a_pass_do_not_cost_it_its_status() -> None:
    kube = OtherWriter()
    await reconcile(runtime(kube))
    stored = kube.stored(MODEL_DEPLOYMENTS, NS, NAME)
    assert stored is not None and kube.label_writes > 0
    assert stored["status"]["observedGeneration"] == 1
    assert {c["type"] for c in stored["status"]["conditions"]} == {
        "Ready", "Progressing", "Degraded"}
    assert stored["metadata"]["labels"]["other"] == str(kube.label_writes)  # kept
    # Sent again against the new version, not recomputed.
    assert [w for w in kube.writes if w[0] == "patch/status"] == [
        ("patch/status", "modeldeployments", NAME)] * 2


@pytest.mark.parametrize("other", ["status", "spec"])
async def test_a_status_or_spec_changed_during_a_pass_is_still_a_conflict(other: str) -> None:
    kube = OtherWriter(status=other == "status", spec=other == "spec")
    with pytest.raises(ConflictError):
        await reconcile(runtime(kube))
    stored = kube.stored(MODEL_DEPLOYMENTS, NS, NAME)
    assert stored is not None and "observedGeneration" not in stored.get("status", {})
