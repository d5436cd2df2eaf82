"""The operator from its image (``make images``), against the real control plane, with the
chart's ServiceAccount and the chart pod's security settings: it reconciles a TrainingJob
end to end (Job, Service, status, Events, metrics) and is refused nothing.

It takes over from the session's operator for the test (stopped, then started again), as
a rollout replaces one operator pod with another.
"""

from __future__ import annotations

import pytest

from tests.cluster.conftest import RunningOperator
from tests.cluster.container_operator import ContainerOperator
from tests.cluster.objects import apply, condition, get, training_job
from tests.cluster.test_trainingjob import SUMMARY, event_reasons, wait_phase
from tests.harness.controlplane import ControlPlane

pytestmark = pytest.mark.cluster


def test_the_operator_image_reconciles_with_the_charts_permissions(
        cluster: ControlPlane, namespace: str, kwok_node: str, operator: RunningOperator,
        operator_image: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    contained = ContainerOperator(cluster=cluster, kubeconfig=operator.kubeconfig,
                                  log=tmp_path_factory.mktemp("image-op") / "operator.log",
                                  image=operator_image)
    assert contained.with_chart_permissions  # its 403s would fail the session too
    operator.stop()
    try:
        contained.start(timeout=90)
        apply(cluster, namespace, training_job(
            "img", node=kwok_node, annotations={"modelloop.dev/kwok-delay": "0s",
                                                "modelloop.dev/kwok-termination-message": SUMMARY}))
        done = wait_phase(contained, cluster, namespace, "img", "Succeeded", timeout=90)
        assert done["metrics"] == {"accuracy": 0.97, "f1_macro": 0.96}
        assert condition(done, "Ready")["status"] == "True"
        job = get(cluster, namespace, "job", "img-a1")
        assert job is not None and job["metadata"]["ownerReferences"][0]["kind"] == "TrainingJob"
        contained.wait_for("events Created/Succeeded", lambda: event_reasons(
            cluster, namespace, "img") >= {"Created", "Succeeded"})
        assert 'modelloop_reconcile_total{kind="TrainingJob"' in contained.metrics()
        contained.check_running()
    finally:
        contained.stop()
        operator.start()
    assert contained.forbidden_api_calls() == []
    assert "Traceback" not in contained.log.read_text()
