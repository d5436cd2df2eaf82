"""spec.capture: its validation, the collector's StatefulSet and Service, what the model
servers get to capture, and the feedback checks' queries and sample rule."""

from __future__ import annotations

from typing import Any

import pytest
from modelloop_operator.api.capture import CaptureSpec, quantity_bytes
from modelloop_operator.api.modeldeployment import ModelDeploymentSpec
from modelloop_operator.api.monitoring import MonitoringSpec
from modelloop_operator.builders import labels as lbl
from modelloop_operator.builders.collector import build_service, build_statefulset, feedback_url
from modelloop_operator.builders.serving import Track, build_deployment, capture_url
from modelloop_operator.monitor.analysis import Observation, evaluate_checks
from modelloop_operator.monitor.builtin_checks import check_queries, feedback_selector
from modelloop_operator.reconcilers.modeldeployment import capture_status
from pydantic import ValidationError

from tests.operator.test_serving_builder import OWNER, PVC_MODEL, context

CAPTURE = {"sink": "pvc://models/captures/bbc", "sampleRate": 0.25,
           "maxSegmentSize": "1Mi", "maxSegmentAge": "2m", "retention": "48h",
           "feedbackWindow": "24h"}


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_byte_quantities() -> None:
    assert quantity_bytes("64Mi") == 64 * 2**20
    assert quantity_bytes("1G") == 10**9
    assert quantity_bytes(2048) == 2048
    with pytest.raises(ValueError):
        quantity_bytes("lots")


@pytest.mark.parametrize(("change", "message"), [
    ({"sampleRate": 1.5}, "less than or equal to 1"),
    ({"sampleRate": -0.1}, "greater than or equal to 0"),
    ({"maxSegmentSize": "10"}, "at least 1024 bytes"),
    ({"retention": "soon"}, "duration"),
    ({"sink": "ftp://x/y"}, "scheme"),
])
def test_bad_capture_settings_are_refused(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        CaptureSpec.model_validate({**CAPTURE, **change})


def test_feedback_checks_need_capture() -> None:
    monitoring = {"prometheusUrl": "http://p:9090", "accuracy": {"min": 0.8}}
    with pytest.raises(ValidationError, match=r"need spec\.capture"):
        ModelDeploymentSpec.model_validate({"model": {"archiveUri": "pvc://m/a.mar"},
                                            "monitoring": monitoring})
    ModelDeploymentSpec.model_validate({"model": {"archiveUri": "pvc://m/a.mar"},
                                        "monitoring": monitoring, "capture": CAPTURE})


def test_the_collector_is_one_pod_writing_the_sink() -> None:
    ctx = context(capture=CAPTURE)
    sts = build_statefulset(ctx=ctx, capture=ctx.spec.capture)  # type: ignore[arg-type]
    assert sts["kind"] == "StatefulSet" and sts["metadata"]["name"] == "bbc-collector"
    assert sts["spec"]["replicas"] == 1 and sts["spec"]["serviceName"] == "bbc-feedback"
    assert sts["metadata"]["ownerReferences"][0]["uid"] == OWNER.uid
    pod = sts["spec"]["template"]
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == "8080"
    assert pod["metadata"]["labels"][lbl.COMPONENT] == "collector"
    [container] = pod["spec"]["containers"]
    assert container["command"] == ["modelloop-collect"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    env = env_of(container)
    assert env["MODELLOOP_COLLECT_SINK"] == "pvc://models/captures/bbc"
    assert env["MODELLOOP_COLLECT_DEPLOYMENT"] == "bbc"
    assert env["MODELLOOP_COLLECT_ADDRESS"] == "$(POD_IP)"  # its own address, as the servers
    assert env["MODELLOOP_COLLECT_SEGMENT_BYTES"] == str(2**20)
    assert env["MODELLOOP_COLLECT_SEGMENT_SECONDS"] == "120"
    assert env["MODELLOOP_COLLECT_RETENTION_SECONDS"] == str(48 * 3600)
    assert env["MODELLOOP_COLLECT_FEEDBACK_SECONDS"] == str(24 * 3600)
    assert "MODELLOOP_COLLECT_STATE_DIR" not in env  # a local sink keeps its own index
    assert {"name": "sink", "persistentVolumeClaim": {"claimName": "models"}} in pod["spec"][
        "volumes"]
    assert {"name": "sink", "mountPath": "/mnt/pvc/models"} in container["volumeMounts"]
    service = build_service(ctx=ctx)
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["selector"] == sts["spec"]["selector"]["matchLabels"]


def test_an_s3_sink_stages_locally_with_the_deployments_credentials() -> None:
    ctx = context(capture={**CAPTURE, "sink": "s3://bucket/captures"},
                  storage={"secretName": "s3-keys"})
    sts = build_statefulset(ctx=ctx, capture=ctx.spec.capture)  # type: ignore[arg-type]
    [container] = sts["spec"]["template"]["spec"]["containers"]
    assert env_of(container)["MODELLOOP_COLLECT_STATE_DIR"] == "/var/lib/modelloop"
    assert container["envFrom"] == [{"secretRef": {"name": "s3-keys"}}]


def test_servers_capture_only_when_asked() -> None:
    plain = build_deployment(ctx=context(), track=Track.STABLE, model=PVC_MODEL, replicas=1)
    [server] = plain["spec"]["template"]["spec"]["containers"]
    assert "MODELLOOP_CAPTURE_URL" not in env_of(server)
    capturing = build_deployment(ctx=context(capture=CAPTURE), track=Track.STABLE,
                                 model=PVC_MODEL, replicas=1)
    [server] = capturing["spec"]["template"]["spec"]["containers"]
    env = env_of(server)
    assert env["MODELLOOP_CAPTURE_URL"] == capture_url(name="bbc", namespace="team-a") == (
        "http://bbc-collector-0.bbc-feedback.team-a.svc:8080/v1/capture")
    assert env["MODELLOOP_CAPTURE_SAMPLE_RATE"] == "0.25"
    assert env["MODELLOOP_MODEL_VERSION"] == {"fieldRef": {
        "fieldPath": f"metadata.labels['{lbl.MODEL_VERSION}']"}}


def test_status_says_where_feedback_goes() -> None:
    spec = context(capture=CAPTURE).spec
    ready = capture_status(spec=spec, name="bbc", namespace="team-a", old=None,
                           collector={"status": {"readyReplicas": 1}})
    assert ready is not None and ready.ready
    assert ready.feedback_url == feedback_url(name="bbc", namespace="team-a") == (
        "http://bbc-feedback.team-a.svc:8080/v1/models/bbc/feedback")
    assert capture_status(spec=context().spec, name="bbc", namespace="team-a", old=ready,
                          collector=None) is None


def test_feedback_checks_read_one_versions_counts_and_their_own_minimum() -> None:
    monitoring = MonitoringSpec.model_validate({
        "prometheusUrl": "http://p:9090", "minSamples": 300, "window": "10m",
        "accuracy": {"min": 0.8, "minSamples": 20}, "macroF1": {"min": 0.7},
        "inputDrift": {"max": 0.2}})
    feedback = feedback_selector(namespace="ml", collector_pod="bbc-collector-0",
                                 version="bbc-v2")
    queries = {q.name: q for q in check_queries(monitoring, selector='pod=~"x"',
                                                feedback=feedback)}
    assert list(queries) == ["inputDrift", "accuracy", "macroF1"]
    assert 'model_version="bbc-v2"' in queries["accuracy"].query
    assert "[10m]" in queries["macroF1"].query and "$" not in queries["macroF1"].query.replace(
        '"$1"', "")
    assert 'distribution="input"' in queries["inputDrift"].query
    statuses = evaluate_checks(list(queries.values()), {
        "accuracy": Observation(value=0.5, samples=25),
        "macroF1": Observation(value=0.9, samples=25),
        "inputDrift": Observation(value=0.1, samples=500)}, spec=monitoring)
    results = {s.name: s.result.value for s in statuses}
    # accuracy's own minSamples (20) lets 25 labels count; macroF1 needs 300
    assert results == {"inputDrift": "Healthy", "accuracy": "Unhealthy",
                       "macroF1": "Inconclusive"}
