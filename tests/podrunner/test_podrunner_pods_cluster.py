"""Pods on the local runner's node run as real processes and report kubelet-like status."""

from __future__ import annotations

import base64
import ipaddress

from tests.harness.controlplane import ControlPlane
from tests.harness.podrunner import PodRunner
from tests.podrunner.kubehelpers import (
    apply,
    bare_pod,
    condition,
    pod,
    sh,
    terminated,
    wait_for,
    wait_phase,
)


def test_node_is_ready_labelled_and_not_kwok(cluster: ControlPlane,
                                             pod_runner: PodRunner) -> None:
    node = cluster.api_get("/api/v1/nodes/local-0")
    assert node["metadata"]["labels"]["modelloop.dev/local-runner"] == "true"
    assert "kwok.x-k8s.io/node" not in (node["metadata"].get("annotations") or {})
    assert node["status"]["allocatable"]["nvidia.com/gpu"] == "1"
    ready = [c for c in node["status"]["conditions"] if c["type"] == "Ready"]
    assert ready[0]["status"] == "True"
    lease = cluster.api_get(
        "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/local-0")
    assert lease["spec"]["holderIdentity"] == "local-0"


def test_command_expansion_downward_env_and_termination_message(
        cluster: ControlPlane, namespace: str, pod_runner: PodRunner) -> None:
    container = sh(
        "main", "echo $(MY_VAR) $POD_NAME $NS $(POD_IP) '$$(MY_VAR)' > /dev/termination-log",
        env=[
            {"name": "MY_VAR", "value": "hello"},
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        ])
    apply(cluster, namespace, bare_pod("echo", [container]))
    done = wait_phase(cluster, namespace, "echo", "Succeeded", "Failed")
    assert done["status"]["phase"] == "Succeeded"
    ip = done["status"]["podIP"]
    assert ipaddress.ip_address(ip) in ipaddress.ip_network(pod_runner.pod_cidr)
    state = terminated(done)
    assert (state["exitCode"], state["reason"]) == (0, "Completed")
    assert state["message"] == f"hello echo {namespace} {ip} $(MY_VAR)\n"
    assert condition(done, "Ready") == "False"
    assert condition(done, "Initialized") == "True"
    assert done["status"]["startTime"]
    log = pod_runner.log_path(namespace, "echo", "main")
    assert log is not None and log.exists()


def test_env_from_config_map_and_secret_and_their_volumes(
        cluster: ControlPlane, namespace: str, pod_runner: PodRunner) -> None:
    config_map = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"},
                  "data": {"GREETING": "hi", "settings.json": '{"a": 1}'}}
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "sec"},
              "data": {"TOKEN": base64.b64encode(b"s3cret").decode()}}
    container = sh(
        "main",
        "echo $GREETING $CM_GREETING $TOKEN $(PASSWORD) $(COPY)"
        " $(cat /etc/cfg/conf/settings.json) $(cat /etc/sec/TOKEN) > /dev/termination-log",
        envFrom=[{"configMapRef": {"name": "cfg"}},
                 {"configMapRef": {"name": "cfg"}, "prefix": "CM_"},
                 {"secretRef": {"name": "sec"}}],
        env=[{"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "TOKEN"}}},
             {"name": "COPY", "value": "$(GREETING)!"}],
        volumeMounts=[{"name": "cfg", "mountPath": "/etc/cfg"},
                      {"name": "sec", "mountPath": "/etc/sec", "readOnly": True}])
    volumes = [
        {"name": "cfg", "configMap": {"name": "cfg", "items": [
            {"key": "settings.json", "path": "conf/settings.json"}]}},
        {"name": "sec", "secret": {"secretName": "sec"}},
    ]
    apply(cluster, namespace, config_map, secret, bare_pod("envs", [container], volumes=volumes))
    done = wait_phase(cluster, namespace, "envs", "Succeeded", "Failed")
    assert terminated(done)["message"] == 'hi hi s3cret s3cret hi! {"a": 1} s3cret\n'


def test_missing_config_map_waits_then_starts(cluster: ControlPlane, namespace: str,
                                              pod_runner: PodRunner) -> None:
    container = sh("main", "echo $(K) > /dev/termination-log", env=[
        {"name": "K", "valueFrom": {"configMapKeyRef": {"name": "late", "key": "k"}}}])
    apply(cluster, namespace, bare_pod("late", [container]))

    def waiting_reason() -> str | None:
        statuses = pod(cluster, namespace, "late").get("status", {}).get("containerStatuses", [])
        waiting = statuses[0]["state"].get("waiting", {}) if statuses else {}
        return waiting.get("reason") if waiting.get("reason") == "CreateContainerConfigError" \
            else None

    wait_for("CreateContainerConfigError", waiting_reason, timeout=30)
    apply(cluster, namespace, {"apiVersion": "v1", "kind": "ConfigMap",
                               "metadata": {"name": "late"}, "data": {"k": "now"}})
    done = wait_phase(cluster, namespace, "late", "Succeeded", "Failed")
    assert terminated(done)["message"] == "now\n"


def test_init_containers_run_first_in_order(cluster: ControlPlane, namespace: str,
                                            pod_runner: PodRunner) -> None:
    mount = [{"name": "work", "mountPath": "/work"}]
    spec = bare_pod(
        "init",
        [sh("main", "cat /work/order > /dev/termination-log", volumeMounts=mount)],
        initContainers=[
            sh("first", "sleep 1; echo first >> /work/order", volumeMounts=mount),
            sh("second", "echo second >> /work/order", volumeMounts=mount),
        ],
        volumes=[{"name": "work", "emptyDir": {}}],
    )
    apply(cluster, namespace, spec)
    done = wait_phase(cluster, namespace, "init", "Succeeded", "Failed")
    assert terminated(done)["message"] == "first\nsecond\n"
    assert [s["state"]["terminated"]["reason"] for s in done["status"]["initContainerStatuses"]] \
        == ["Completed", "Completed"]


def test_failing_container_fails_the_pod_with_its_exit_code(
        cluster: ControlPlane, namespace: str, pod_runner: PodRunner) -> None:
    container = sh("main", "echo boom-from-logs; exit 3",
                   terminationMessagePolicy="FallbackToLogsOnError")
    apply(cluster, namespace, bare_pod("fail", [container]))
    done = wait_phase(cluster, namespace, "fail", "Succeeded", "Failed")
    assert done["status"]["phase"] == "Failed"
    state = terminated(done)
    assert (state["exitCode"], state["reason"]) == (3, "Error")
    assert state["message"] == "boom-from-logs"


def test_failing_init_container_with_restart_never_fails_the_pod(
        cluster: ControlPlane, namespace: str, pod_runner: PodRunner) -> None:
    spec = bare_pod("initfail", [sh("main", "echo never")],
                    initContainers=[sh("setup", "exit 5")])
    apply(cluster, namespace, spec)
    done = wait_phase(cluster, namespace, "initfail", "Succeeded", "Failed")
    assert done["status"]["phase"] == "Failed"
    assert terminated(done, "setup", init=True)["exitCode"] == 5
    assert "terminated" not in done["status"]["containerStatuses"][0]["state"]


def test_unknown_command_is_a_start_error(cluster: ControlPlane, namespace: str,
                                          pod_runner: PodRunner) -> None:
    container = {"name": "main", "image": "x", "command": ["no-such-binary-modelloop"]}
    apply(cluster, namespace, bare_pod("nocmd", [container]))
    done = wait_phase(cluster, namespace, "nocmd", "Succeeded", "Failed")
    state = terminated(done)
    assert (state["exitCode"], state["reason"]) == (128, "StartError")
    assert "executable file not found" in state["message"]


def test_on_failure_restarts_with_back_off_until_success(
        cluster: ControlPlane, namespace: str, pod_runner: PodRunner) -> None:
    # Fails on its first two runs (a counter on an emptyDir survives restarts), then succeeds.
    script = ("n=$(cat /w/n 2>/dev/null || echo 0); echo $((n+1)) > /w/n; "
              "[ $n -ge 2 ] && echo ok > /dev/termination-log; [ $n -ge 2 ]")
    spec = bare_pod("retry", [sh("main", script, volumeMounts=[{"name": "w", "mountPath": "/w"}])],
                    restart="OnFailure", volumes=[{"name": "w", "emptyDir": {}}])
    apply(cluster, namespace, spec)
    done = wait_phase(cluster, namespace, "retry", "Succeeded", "Failed", timeout=90)
    assert done["status"]["phase"] == "Succeeded"
    status = done["status"]["containerStatuses"][0]
    assert status["restartCount"] == 2
    assert status["lastState"]["terminated"]["exitCode"] == 1
    assert status["state"]["terminated"]["message"] == "ok\n"


def test_liveness_probe_failure_restarts_the_container(
        cluster: ControlPlane, namespace: str, pod_runner: PodRunner) -> None:
    probe = {"exec": {"command": ["sh", "-c", "test ! -f /w/started-once"]},
             "periodSeconds": 1, "failureThreshold": 2}
    container = sh("main", "if [ -f /w/started-once ]; then touch /w/second; fi; "
                   "touch /w/started-once; exec sleep 300",
                   livenessProbe=probe, volumeMounts=[{"name": "w", "mountPath": "/w"}])
    spec = bare_pod("live", [container], restart="Always", volumes=[{"name": "w",
                                                                    "emptyDir": {}}])
    apply(cluster, namespace, spec)

    def restarted() -> bool:
        statuses = pod(cluster, namespace, "live").get("status", {}).get("containerStatuses", [])
        return bool(statuses) and statuses[0]["restartCount"] >= 1

    wait_for("a liveness restart", restarted, timeout=60)
    status = pod(cluster, namespace, "live")["status"]["containerStatuses"][0]
    assert status["lastState"]["terminated"]["exitCode"] in (137, 143)


def test_runner_recovers_after_an_api_server_restart(cluster: ControlPlane, namespace: str,
                                                     pod_runner: PodRunner) -> None:
    # The watch breaks and heartbeats fail while the API server is down; the runner must
    # relist and keep going rather than crash or miss pods created afterwards.
    cluster.restart_apiserver()
    apply(cluster, namespace, bare_pod("after", [sh("main", "echo up > /dev/termination-log")]))
    done = wait_phase(cluster, namespace, "after", "Succeeded", "Failed", timeout=90)
    assert terminated(done)["message"] == "up\n"
    node = cluster.api_get("/api/v1/nodes/local-0")
    assert [c["status"] for c in node["status"]["conditions"] if c["type"] == "Ready"] == ["True"]
