"""Container env resolution: envFrom, env order, downward API, ConfigMap/Secret refs."""

from __future__ import annotations

from typing import Any

import pytest

from tests.harness.podrunner.envvars import (
    ContainerConfigError,
    PodRuntimeFields,
    Sources,
    expand_command,
    pod_field,
    referenced_objects,
    resolve_env,
)

RUNTIME = PodRuntimeFields(pod_ip="127.5.5.7", host_ip="127.0.0.1")
ALLOCATABLE = {"cpu": "4", "memory": "8Gi"}


def make_pod(container: dict[str, Any]) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "trainer-0-abcde",
            "namespace": "team-a",
            "uid": "u-1",
            "labels": {"app": "train"},
            "annotations": {"batch.kubernetes.io/job-completion-index": "3"},
        },
        "spec": {"nodeName": "local-0", "serviceAccountName": "sa", "containers": [container]},
    }


def resolve(container: dict[str, Any], sources: Sources | None = None) -> dict[str, str]:
    return resolve_env(make_pod(container), container, sources or Sources(), RUNTIME,
                       ALLOCATABLE)


def test_env_values_expand_only_earlier_variables() -> None:
    env = resolve({"name": "c", "env": [
        {"name": "LATER_REF", "value": "$(B)"},
        {"name": "B", "value": "b"},
        {"name": "C", "value": "$(B)-$(B)"},
    ]})
    assert env == {"LATER_REF": "$(B)", "B": "b", "C": "b-b"}


def test_downward_api_fields_include_pod_ip_and_completion_index() -> None:
    def ref(path: str) -> dict[str, Any]:
        return {"valueFrom": {"fieldRef": {"fieldPath": path}}}

    env = resolve({"name": "c", "env": [
        {"name": "POD_IP", **ref("status.podIP")},
        {"name": "POD_NAME", **ref("metadata.name")},
        {"name": "NS", **ref("metadata.namespace")},
        {"name": "IDX", **ref("metadata.annotations['batch.kubernetes.io/job-completion-index']")},
        {"name": "APP", **ref("metadata.labels['app']")},
        {"name": "NODE", **ref("spec.nodeName")},
        {"name": "HOST", **ref("status.hostIP")},
        {"name": "ADDR", "value": "$(POD_IP):8080"},
    ]})
    assert env == {"POD_IP": "127.5.5.7", "POD_NAME": "trainer-0-abcde", "NS": "team-a",
                   "IDX": "3", "APP": "train", "NODE": "local-0", "HOST": "127.0.0.1",
                   "ADDR": "127.5.5.7:8080"}


def test_unknown_field_path_is_a_config_error() -> None:
    with pytest.raises(ContainerConfigError):
        pod_field(make_pod({"name": "c"}), "status.phase", RUNTIME)


def test_env_from_order_prefix_invalid_names_and_env_override() -> None:
    sources = Sources(
        config_maps={"cfg": {"A": "from-cm", "B": "cm-b", "bad key": "skipped"}},
        secrets={"sec": {"A": "from-secret", "TOKEN": "s3cret"}},
    )
    env = resolve({"name": "c", "envFrom": [
        {"configMapRef": {"name": "cfg"}},
        {"secretRef": {"name": "sec"}},
        {"configMapRef": {"name": "cfg"}, "prefix": "CM_"},
    ], "env": [{"name": "B", "value": "env-wins"}]}, sources)
    assert env == {"A": "from-secret", "B": "env-wins", "TOKEN": "s3cret", "CM_A": "from-cm",
                   "CM_B": "cm-b"}


def test_key_refs_and_optional_sources() -> None:
    sources = Sources(config_maps={"cfg": {"k": "v"}}, secrets={"sec": {"p": "pw"}})
    env = resolve({"name": "c", "envFrom": [{"configMapRef": {"name": "nope", "optional": True}}],
                   "env": [
        {"name": "K", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "k"}}},
        {"name": "P", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "p"}}},
        {"name": "OPT", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "x",
                                                       "optional": True}}},
    ]}, sources)
    assert env == {"K": "v", "P": "pw"}


@pytest.mark.parametrize(
    ("value_from", "message"),
    [
        ({"configMapKeyRef": {"name": "missing", "key": "k"}}, 'configmap "missing" not found'),
        ({"configMapKeyRef": {"name": "cfg", "key": "nokey"}},
         "couldn't find key nokey in ConfigMap team-a/cfg"),
        ({"secretKeyRef": {"name": "missing", "key": "k"}}, 'secret "missing" not found'),
    ],
)
def test_missing_references_block_the_container(value_from: dict[str, Any], message: str) -> None:
    sources = Sources(config_maps={"cfg": {"k": "v"}, "missing": None},
                      secrets={"missing": None})
    with pytest.raises(ContainerConfigError, match=message):
        resolve({"name": "c", "env": [{"name": "X", "valueFrom": value_from}]}, sources)


def test_resource_field_refs_round_up_and_fall_back_to_allocatable() -> None:
    container = {"name": "c", "resources": {"limits": {"cpu": "500m"},
                                            "requests": {"memory": "1Gi"}},
                 "env": [
        {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
        {"name": "MCPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu",
                                                            "divisor": "1m"}}},
        {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory",
                                                           "divisor": "1Mi"}}},
        {"name": "REQ", "valueFrom": {"resourceFieldRef": {"resource": "requests.memory"}}},
    ]}
    env = resolve(container)
    assert env == {"CPU": "1", "MCPU": "500", "MEM": "8192", "REQ": str(2**30)}


def test_command_and_args_expand_against_final_env() -> None:
    container = {"name": "c", "command": ["sh", "-c", "echo $(MSG) $$(MSG) $(NOPE)"],
                 "args": ["--rank=$(IDX)"]}
    command, args = expand_command(container, {"MSG": "hi", "IDX": "2"})
    assert command == ["sh", "-c", "echo hi $(MSG) $(NOPE)"]
    assert args == ["--rank=2"]


def test_referenced_objects_lists_every_source() -> None:
    container = {"envFrom": [{"configMapRef": {"name": "a"}}, {"secretRef": {"name": "b"}}],
                 "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}},
                         {"name": "Y", "valueFrom": {"secretKeyRef": {"name": "d", "key": "k"}}}]}
    assert referenced_objects(container) == ({"a", "c"}, {"b", "d"})
