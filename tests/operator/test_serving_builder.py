"""ModelDeployment children (builders/serving.py): every port, probe, env, volume,
security setting, selector, the HPA and the canary replica split."""

from __future__ import annotations

import json
from typing import Any

import pytest
from modelloop_operator.api.modeldeployment import ModelDeploymentSpec
from modelloop_operator.builders import labels as lbl
from modelloop_operator.builders.job import Owner
from modelloop_operator.builders.serving import (
    CONFIG_HASH_ANNOTATION,
    MODEL_CHECKSUM_ANNOTATION,
    MODEL_URI_ANNOTATION,
    ModelRef,
    ServingContext,
    Track,
    build_autoscaler,
    build_config_map,
    build_deployment,
    build_inference_service,
    build_metrics_service,
    label_value,
    model_name_for,
    service_url,
    split_replicas,
)
from modelloop_server.torchserve import read_properties

OWNER = Owner(api_version="modelloop.dev/v1alpha1", kind="ModelDeployment", name="bbc",
              namespace="team-a", uid="u-9")
PVC_MODEL = ModelRef(uri="pvc://models/bbc/opt1/bbc.mar", version="bbc-int8",
                     checksum="sha256:abc")


def deployment_spec(**changes: Any) -> ModelDeploymentSpec:
    raw: dict[str, Any] = {"model": {"optimizationJobRef": {"name": "bbc-int8"}}}
    raw.update(changes)
    return ModelDeploymentSpec.model_validate(raw)


def context(**changes: Any) -> ServingContext:
    return ServingContext(owner=OWNER, spec=deployment_spec(**changes),
                          default_image="registry.example/server:1",
                          init_image="registry.example/trainer:1", default_cpu="1",
                          default_memory="2Gi")


def deployment(model: ModelRef = PVC_MODEL, *, track: Track = Track.STABLE,
               replicas: int | None = 2, **changes: Any) -> dict[str, Any]:
    return build_deployment(ctx=context(**changes), track=track, model=model,
                            replicas=replicas)


def pod_spec(dep: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = dep["spec"]["template"]["spec"]
    return spec


def server(dep: dict[str, Any]) -> dict[str, Any]:
    containers = pod_spec(dep)["containers"]
    assert [c["name"] for c in containers] == ["server"]
    container: dict[str, Any] = containers[0]
    return container


def env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


class TestConfigMap:
    def test_config_names_the_archive_in_the_model_store_with_the_spec_tuning(self) -> None:
        cm = build_config_map(ctx=context(server={"workers": 2, "batchSize": 4,
                                                  "jobQueueSize": 50}),
                              track=Track.STABLE, model=PVC_MODEL)
        assert cm["metadata"]["name"] == "bbc-config"
        props = read_properties(cm["data"]["config.properties"])
        assert props["load_models"] == "bbc=bbc.mar"
        assert props["model_store"] == "/mnt/models"
        assert props["default_workers_per_model"] == "2"
        assert props["job_queue_size"] == "50"
        assert props["inference_address"] == "http://0.0.0.0:8080"
        assert props["metrics_address"] == "http://0.0.0.0:8082"
        assert props["management_address"] == "http://127.0.0.1:8081"
        assert props["metrics_mode"] == "prometheus"

    def test_request_size_limit_comes_from_the_spec_with_a_1_mib_default(self) -> None:
        def limit(**server: Any) -> str:
            cm = build_config_map(ctx=context(server=server), track=Track.STABLE,
                                  model=PVC_MODEL)
            return read_properties(cm["data"]["config.properties"])["max_request_size"]

        assert limit() == "1048576"
        assert limit(maxRequestSizeBytes=65536) == "65536"

    def test_per_model_settings_are_the_specs(self) -> None:
        cm = build_config_map(ctx=context(server={
            "workers": 3, "batchSize": 16, "maxBatchDelayMs": 5, "responseTimeoutSeconds": 9}),
            track=Track.STABLE, model=PVC_MODEL)
        models = json.loads(read_properties(cm["data"]["config.properties"])["models"])
        entry = models["bbc"]["1.0"]
        assert {k: entry[k] for k in ("minWorkers", "maxWorkers", "batchSize",
                                      "maxBatchDelay", "responseTimeout")} == {
            "minWorkers": 3, "maxWorkers": 3, "batchSize": 16, "maxBatchDelay": 5,
            "responseTimeout": 9}

    def test_canary_has_its_own_config(self) -> None:
        cm = build_config_map(ctx=context(), track=Track.CANARY, model=PVC_MODEL)
        assert cm["metadata"]["name"] == "bbc-canary-config"
        assert cm["metadata"]["labels"][lbl.TRACK] == "canary"

    def test_model_name_comes_from_the_archive_file(self) -> None:
        assert model_name_for("s3://b/x/bbc.mar") == "bbc"
        assert model_name_for("pvc://models/bbc/run1") == "model"
        assert model_name_for("file:///m/v1.2.mar") == "v1-2"


class TestPorts:
    def test_container_declares_inference_metrics_and_health_only(self) -> None:
        ports = {p["name"]: p["containerPort"] for p in server(deployment())["ports"]}
        assert ports == {"http": 8080, "metrics": 8082, "health": 8090}

    def test_inference_service_exposes_only_the_inference_port(self) -> None:
        svc = build_inference_service(ctx=context())
        assert svc["metadata"]["name"] == "bbc"
        assert svc["spec"]["ports"] == [{"name": "http", "port": 8080, "targetPort": "http",
                                         "protocol": "TCP"}]

    def test_metrics_service_exposes_only_the_metrics_port(self) -> None:
        svc = build_metrics_service(ctx=context())
        assert svc["metadata"]["name"] == "bbc-metrics"
        assert [p["port"] for p in svc["spec"]["ports"]] == [8082]

    def test_url_is_the_service_dns_name_and_port(self) -> None:
        assert service_url(name="bbc", namespace="team-a") == "http://bbc.team-a.svc:8080"


class TestProbes:
    def test_readiness_is_a_ready_worker_not_ping(self) -> None:
        probe = server(deployment())["readinessProbe"]
        assert probe["httpGet"] == {"path": "/readyz", "port": "health", "scheme": "HTTP"}

    def test_liveness_checks_the_server_process(self) -> None:
        assert server(deployment())["livenessProbe"]["httpGet"]["path"] == "/livez"

    def test_startup_probe_covers_the_model_load(self) -> None:
        probe = server(deployment())["startupProbe"]
        assert probe["httpGet"]["path"] == "/readyz"
        startup_seconds = probe["periodSeconds"] * probe["failureThreshold"]
        assert startup_seconds >= 300 + 60  # server's own timeout first, then the kubelet
        assert env(server(deployment()))["MODELLOOP_STARTUP_TIMEOUT"] == "300"

    def test_no_probe_uses_torchserve_ping(self) -> None:
        container = server(deployment())
        for key in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert container[key]["httpGet"]["path"] != "/ping"


class TestAddresses:
    def test_pod_ip_comes_from_the_downward_api(self) -> None:
        values = env(server(deployment()))
        assert values["POD_IP"] == {"fieldRef": {"fieldPath": "status.podIP"}}
        assert values["MODELLOOP_HEALTH_ADDRESS"] == "$(POD_IP)"
        assert values["MODELLOOP_HEALTH_PORT"] == "8090"

    def test_the_server_renders_its_config_with_the_pod_ip_then_execs(self) -> None:
        container = server(deployment())
        assert container["command"][:2] == ["/bin/sh", "-c"]
        script = container["command"][2]
        assert 'sed "s#//0\\.0\\.0\\.0:#//$addr:#" /etc/modelloop/config.properties' in script
        assert script.rstrip().endswith("exec modelloop-serve")
        assert env(container)["MODELLOOP_TS_CONFIG"] == "/tmp/modelloop/config.properties"


class TestModelStore:
    def test_pvc_archive_is_mounted_read_only_at_its_directory(self) -> None:
        dep = deployment()
        volumes = {v["name"]: v for v in pod_spec(dep)["volumes"]}
        assert volumes["model-source"]["persistentVolumeClaim"] == {
            "claimName": "models", "readOnly": True}
        mount = next(m for m in server(dep)["volumeMounts"] if m["name"] == "model-source")
        assert mount == {"name": "model-source", "mountPath": "/mnt/models",
                         "readOnly": True, "subPath": "bbc/opt1"}
        assert "initContainers" not in pod_spec(dep)
        assert env(server(dep))["MODELLOOP_MODEL_STORE"] == "/mnt/models"

    def test_s3_archive_is_fetched_by_an_init_container_holding_the_secret(self) -> None:
        model = ModelRef(uri="s3://bucket/bbc/model.mar", version="v1")
        dep = deployment(model, storage={"secretName": "s3-creds"})
        inits = pod_spec(dep)["initContainers"]
        assert [c["name"] for c in inits] == ["fetch-model"]
        assert inits[0]["args"][1:] == ["s3://bucket/bbc/model.mar", "/mnt/models/model.mar"]
        assert inits[0]["envFrom"] == [{"secretRef": {"name": "s3-creds"}}]
        assert inits[0]["image"] == "registry.example/trainer:1"  # has fsspec and s3fs
        assert "envFrom" not in server(dep)  # the server never sees the credentials
        store = next(v for v in pod_spec(dep)["volumes"] if v["name"] == "model-store")
        assert store == {"name": "model-store", "emptyDir": {}}

    def test_a_model_directory_is_packaged_in_the_pod(self) -> None:
        model = ModelRef(uri="pvc://models/bbc/run1", version="bbc")
        dep = deployment(model, server={"batchSize": 4, "workers": 2, "maxBatchDelayMs": 10,
                                        "responseTimeoutSeconds": 30})
        inits = pod_spec(dep)["initContainers"]
        assert [c["name"] for c in inits] == ["package-model"]
        assert "build_archive" in inits[0]["args"][0]
        assert inits[0]["args"][1:4] == ["pvc://models/bbc/run1", "/mnt/models", "model"]
        assert {"name": "model-source", "mountPath": "/mnt/pvc/models",
                "readOnly": True} in inits[0]["volumeMounts"]
        # The archive carries every per-model setting of the ConfigMap (the spec's tuning, the
        # model-load timeout, the queue), so modelloop-serve has nothing to replace.
        assert inits[0]["args"][4:] == ["4", "2", "10", "30", "300", "100"]

    def test_file_archive_is_served_from_its_directory(self) -> None:
        dep = deployment(ModelRef(uri="file:///srv/models/bbc.mar", version="v"))
        assert env(server(dep))["MODELLOOP_MODEL_STORE"] == "/srv/models"
        assert "initContainers" not in pod_spec(dep)


class TestSecurity:
    def test_pod_is_restricted(self) -> None:
        pod = pod_spec(deployment())
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False

    def test_every_container_drops_everything(self) -> None:
        model = ModelRef(uri="s3://bucket/m.mar", version="v")
        pod = pod_spec(deployment(model))
        for container in [*pod["initContainers"], *pod["containers"]]:
            ctx = container["securityContext"]
            assert ctx["allowPrivilegeEscalation"] is False
            assert ctx["capabilities"] == {"drop": ["ALL"]}
            assert ctx["readOnlyRootFilesystem"] is True

    def test_writable_paths_are_emptydirs(self) -> None:
        mounts = {m["mountPath"]: m["name"] for m in server(deployment())["volumeMounts"]}
        assert mounts["/tmp"] == "tmp"
        assert mounts["/etc/modelloop"] == "config"


class TestResources:
    def test_requests_equal_limits_with_defaults(self) -> None:
        res = server(deployment())["resources"]
        assert res["requests"] == res["limits"] == {"cpu": "1", "memory": "2Gi"}

    def test_gpus_are_requested_on_the_server_only(self) -> None:
        dep = deployment(ModelRef(uri="s3://b/m.mar", version="v"),
                         resources={"gpus": 1, "cpu": 4, "memory": "16Gi"})
        assert server(dep)["resources"]["limits"] == {"cpu": "4", "memory": "16Gi",
                                                     "nvidia.com/gpu": "1"}
        assert "nvidia.com/gpu" not in pod_spec(dep)["initContainers"][0]["resources"]["limits"]

    def test_scheduling_and_service_account_are_copied(self) -> None:
        dep = deployment(scheduling={"nodeSelector": {"gpu": "a100"},
                                     "tolerations": [{"key": "nvidia.com/gpu",
                                                      "operator": "Exists"}],
                                     "priorityClassName": "serving"},
                         storage={"serviceAccountName": "reader"})
        pod = pod_spec(dep)
        assert pod["nodeSelector"] == {"gpu": "a100"}
        assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists"}]
        assert pod["priorityClassName"] == "serving"
        assert pod["serviceAccountName"] == "reader"

    def test_a_kueue_queue_labels_the_deployment_and_its_pods(self) -> None:
        dep = deployment(scheduling={"queueName": "serving"})
        assert dep["metadata"]["labels"][lbl.KUEUE_QUEUE] == "serving"
        assert dep["spec"]["template"]["metadata"]["labels"][lbl.KUEUE_QUEUE] == "serving"
        assert lbl.KUEUE_QUEUE not in dep["spec"]["selector"]["matchLabels"]
        plain = deployment()
        assert lbl.KUEUE_QUEUE not in plain["metadata"]["labels"]
        assert lbl.KUEUE_QUEUE not in plain["spec"]["template"]["metadata"]["labels"]


class TestLabelsAndRolls:
    def test_selector_is_per_track_and_the_service_selects_both(self) -> None:
        stable, canary = deployment(), deployment(track=Track.CANARY)
        assert stable["metadata"]["name"] == "bbc"
        assert canary["metadata"]["name"] == "bbc-canary"
        assert stable["spec"]["selector"]["matchLabels"][lbl.TRACK] == "stable"
        assert canary["spec"]["selector"]["matchLabels"][lbl.TRACK] == "canary"
        service_selector = build_inference_service(ctx=context())["spec"]["selector"]
        for dep in (stable, canary):
            pod_labels = dep["spec"]["template"]["metadata"]["labels"]
            assert service_selector.items() <= pod_labels.items()
            assert dep["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
        assert lbl.TRACK not in service_selector

    def test_pods_carry_the_model_version_and_scrape_annotations(self) -> None:
        meta = deployment()["spec"]["template"]["metadata"]
        assert meta["labels"][lbl.MODEL_DEPLOYMENT] == "bbc"
        assert meta["labels"][lbl.MODEL_VERSION] == "bbc-int8"
        assert meta["annotations"]["prometheus.io/scrape"] == "true"
        assert meta["annotations"]["prometheus.io/port"] == "8082"
        assert meta["annotations"][MODEL_URI_ANNOTATION] == PVC_MODEL.uri
        assert meta["annotations"][MODEL_CHECKSUM_ANNOTATION] == "sha256:abc"

    def test_a_new_model_or_config_changes_the_pod_template(self) -> None:
        base = deployment()["spec"]["template"]
        other = ModelRef(uri=PVC_MODEL.uri, version=PVC_MODEL.version, checksum="sha256:new")
        assert deployment(other)["spec"]["template"] != base
        tuned = deployment(server={"batchSize": 16})["spec"]["template"]["metadata"]
        assert tuned["annotations"][CONFIG_HASH_ANNOTATION] != \
            base["metadata"]["annotations"][CONFIG_HASH_ANNOTATION]

    def test_our_labels_win_over_the_users(self) -> None:
        dep = deployment(podTemplate={"metadata": {"labels": {lbl.TRACK: "mine", "team": "a"},
                                                   "annotations": {"sidecar": "yes"}}})
        meta = dep["spec"]["template"]["metadata"]
        assert meta["labels"][lbl.TRACK] == "stable" and meta["labels"]["team"] == "a"
        assert meta["annotations"]["sidecar"] == "yes"

    def test_rolling_update_never_goes_below_capacity(self) -> None:
        strategy = deployment()["spec"]["strategy"]
        assert strategy["rollingUpdate"]["maxUnavailable"] == 0

    def test_owner_reference_makes_children_go_with_the_modeldeployment(self) -> None:
        ref = deployment()["metadata"]["ownerReferences"][0]
        assert (ref["kind"], ref["uid"], ref["controller"]) == ("ModelDeployment", "u-9", True)

    def test_label_values_are_made_valid(self) -> None:
        assert label_value("uri-" + "x" * 80).__len__() == 63
        assert label_value("a/b:c") == "a-b-c"


class TestScaling:
    def test_replicas_are_left_to_the_autoscaler_when_none(self) -> None:
        assert "replicas" not in deployment(replicas=None)["spec"]
        assert deployment(replicas=3)["spec"]["replicas"] == 3

    def test_hpa_targets_the_stable_deployment_on_cpu(self) -> None:
        hpa = build_autoscaler(ctx=context(autoscaling={
            "minReplicas": 2, "maxReplicas": 5, "targetCPUUtilizationPercentage": 70}))
        assert hpa is not None
        assert hpa["apiVersion"] == "autoscaling/v2"
        assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                                 "name": "bbc"}
        assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 5)
        target = hpa["spec"]["metrics"][0]["resource"]
        assert target == {"name": "cpu", "target": {"type": "Utilization",
                                                    "averageUtilization": 70}}

    def test_no_autoscaling_no_hpa(self) -> None:
        assert build_autoscaler(ctx=context()) is None

    @pytest.mark.parametrize(("total", "weight", "expected"), [
        (10, 20, (8, 2)),
        (10, 25, (7, 3)),   # rounded up: the canary gets at least its share
        (4, 50, (2, 2)),
        (1, 10, (1, 1)),    # one replica: one of each, stable stays for a quick rollback
        (3, 90, (1, 3)),    # stable keeps one until the weight is 100
        (5, 100, (0, 5)),
        (5, 0, (5, 0)),
        (0, 50, (0, 0)),
    ])
    def test_canary_split(self, total: int, weight: int, expected: tuple[int, int]) -> None:
        assert split_replicas(total=total, weight=weight) == expected
