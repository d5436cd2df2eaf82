"""The gang Job and rendezvous Service manifests (builders/job.py)."""

from __future__ import annotations

from typing import Any

import pytest
from modelloop_operator.api.common import PodMetadata
from modelloop_operator.builders.job import (
    Owner,
    build_job,
    build_rendezvous_service,
    job_name,
    manifest_hash,
    master_address,
    needs_rendezvous_service,
    with_manifest_hash,
)
from modelloop_operator.errors import InvalidSpecError

from .conftest import training_spec, training_template


def _pod(job: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = job["spec"]["template"]["spec"]
    return spec


def _container(job: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = _pod(job)["containers"]
    assert len(containers) == 1
    return containers[0]


def _env(job: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in _container(job)["env"]}


class TestNames:
    def test_job_name_carries_the_attempt(self) -> None:
        assert job_name(name="bbc", attempt=3) == "bbc-a3"

    def test_master_address_is_pod_zero_of_the_attempt_under_the_service(self) -> None:
        assert master_address(name="bbc", namespace="team-a", attempt=2, num_nodes=2) == \
            "bbc-a2-0.bbc.team-a.svc"

    def test_a_single_node_is_its_own_master_and_needs_no_service(self) -> None:
        assert master_address(name="bbc", namespace="team-a", attempt=2, num_nodes=1) == \
            "127.0.0.1"
        assert not needs_rendezvous_service(1) and needs_rendezvous_service(2)

    def test_names_are_deterministic(self, owner: Owner) -> None:
        template = training_template(owner, training_spec(numNodes=2))
        first = build_job(template=template, attempt=1, suspend=False)
        again = build_job(template=template, attempt=1, suspend=False)
        assert first == again
        assert first["metadata"]["name"] == "bbc-a1"
        assert build_rendezvous_service(template=template)["metadata"]["name"] == "bbc"

    def test_too_long_a_name_for_pod_hostnames_is_an_invalid_spec(self) -> None:
        long_owner = Owner(api_version="modelloop.dev/v1alpha1", kind="TrainingJob",
                           name="x" * 58, namespace="ns", uid="u")
        template = training_template(long_owner, training_spec(numNodes=12))
        with pytest.raises(InvalidSpecError, match="exceed 63"):
            build_job(template=template, attempt=1, suspend=False)


class TestGangShape:
    @pytest.mark.parametrize("nodes", [1, 2, 8])
    def test_completions_equal_parallelism_equal_nodes(self, owner: Owner, nodes: int) -> None:
        job = build_job(template=training_template(owner, training_spec(numNodes=nodes)),
                        attempt=1, suspend=False)
        assert job["spec"]["completions"] == nodes
        assert job["spec"]["parallelism"] == nodes
        assert job["spec"]["completionMode"] == "Indexed"

    def test_the_gang_retry_is_ours_not_the_job_controllers(self, owner: Owner) -> None:
        job = build_job(template=training_template(owner, training_spec()), attempt=1,
                        suspend=False)
        assert job["spec"]["backoffLimit"] == 0
        assert _pod(job)["restartPolicy"] == "Never"

    def test_disruptions_are_ignored_by_the_pod_failure_policy(self, owner: Owner) -> None:
        job = build_job(template=training_template(owner, training_spec()), attempt=1,
                        suspend=False)
        assert job["spec"]["podFailurePolicy"] == {"rules": [{
            "action": "Ignore",
            "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}]}

    @pytest.mark.parametrize("suspend", [True, False])
    def test_suspend_is_passed_through(self, owner: Owner, suspend: bool) -> None:
        job = build_job(template=training_template(owner, training_spec()), attempt=1,
                        suspend=suspend)
        assert job["spec"]["suspend"] is suspend

    def test_pods_join_the_rendezvous_service_subdomain(self, owner: Owner) -> None:
        template = training_template(owner, training_spec())
        job = build_job(template=template, attempt=1, suspend=False)
        service = build_rendezvous_service(template=template)
        assert _pod(job)["subdomain"] == service["metadata"]["name"]

    def test_service_is_headless_publishes_unready_pods_and_selects_the_gang(
            self, owner: Owner) -> None:
        template = training_template(owner, training_spec())
        service = build_rendezvous_service(template=template)
        job = build_job(template=template, attempt=4, suspend=False)
        assert service["spec"]["clusterIP"] == "None"
        assert service["spec"]["publishNotReadyAddresses"] is True
        pod_labels = job["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= pod_labels.items()
        # Shared by every attempt: the selector must not pin one.
        assert "modelloop.dev/attempt" not in service["spec"]["selector"]
        assert service["spec"]["ports"][0]["port"] == 29500


class TestLabelsAndOwnership:
    def test_labels_on_job_and_pods(self, owner: Owner) -> None:
        job = build_job(template=training_template(owner, training_spec()), attempt=2,
                        suspend=False)
        expected = {"app.kubernetes.io/managed-by": "modelloop",
                    "modelloop.dev/trainingjob": "bbc", "modelloop.dev/attempt": "2"}
        assert expected.items() <= job["metadata"]["labels"].items()
        assert expected.items() <= job["spec"]["template"]["metadata"]["labels"].items()

    def test_controller_owner_reference(self, owner: Owner) -> None:
        template = training_template(owner, training_spec())
        for child in (build_job(template=template, attempt=1, suspend=False),
                      build_rendezvous_service(template=template)):
            assert child["metadata"]["ownerReferences"] == [{
                "apiVersion": "modelloop.dev/v1alpha1", "kind": "TrainingJob", "name": "bbc",
                "uid": "0000-1111", "controller": True, "blockOwnerDeletion": True}]
            assert child["metadata"]["namespace"] == "team-a"

    def test_user_pod_metadata_is_added_but_ours_wins(self, owner: Owner) -> None:
        spec = training_spec(podTemplate={"metadata": {
            "labels": {"team": "nlp", "modelloop.dev/trainingjob": "hijack"},
            "annotations": {"modelloop.dev/kwok-delay": "0s"}}})
        job = build_job(template=training_template(owner, spec), attempt=1, suspend=False)
        meta = job["spec"]["template"]["metadata"]
        assert meta["labels"]["team"] == "nlp"
        assert meta["labels"]["modelloop.dev/trainingjob"] == "bbc"
        assert meta["annotations"] == {"modelloop.dev/kwok-delay": "0s"}

    def test_kueue_queue_label_only_when_a_queue_is_named(self, owner: Owner) -> None:
        queued = build_job(template=training_template(
            owner, training_spec(scheduling={"queueName": "gpu"})), attempt=1, suspend=True)
        plain = build_job(template=training_template(owner, training_spec()), attempt=1,
                          suspend=False)
        assert queued["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu"
        assert "kueue.x-k8s.io/queue-name" not in plain["metadata"]["labels"]

    def test_no_user_annotations_means_no_annotations_key(self, owner: Owner) -> None:
        template = training_template(owner, training_spec())
        assert template.pod_metadata == PodMetadata()
        job = build_job(template=template, attempt=1, suspend=False)
        assert "annotations" not in job["spec"]["template"]["metadata"]


class TestSecurity:
    def test_restricted_pod_security(self, owner: Owner) -> None:
        job = build_job(template=training_template(owner, training_spec()), attempt=1,
                        suspend=False)
        assert _pod(job)["securityContext"] == {
            "runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 1000,
            "seccompProfile": {"type": "RuntimeDefault"}}
        assert _container(job)["securityContext"] == {
            "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
            "runAsNonRoot": True}
        assert _pod(job)["automountServiceAccountToken"] is False

    def test_termination_message_is_read_from_the_file(self, owner: Owner) -> None:
        container = _container(build_job(template=training_template(owner, training_spec()),
                                         attempt=1, suspend=False))
        assert container["terminationMessagePath"] == "/dev/termination-log"
        assert container["terminationMessagePolicy"] == "File"

    def test_s3_credentials_are_referenced_never_copied(self, owner: Owner) -> None:
        spec = training_spec(storage={"secretName": "s3-creds",
                                      "serviceAccountName": "trainer"},
                             output={"uri": "s3://bucket/run"})
        job = build_job(template=training_template(owner, spec), attempt=1, suspend=False)
        assert _container(job)["envFrom"] == [{"secretRef": {"name": "s3-creds"}}]
        assert _pod(job)["serviceAccountName"] == "trainer"
        assert "s3-creds" not in str(_container(job)["env"])

    def test_no_secret_means_no_env_from(self, owner: Owner) -> None:
        job = build_job(template=training_template(owner, training_spec()), attempt=1,
                        suspend=False)
        assert "envFrom" not in _container(job)
        assert "serviceAccountName" not in _pod(job)


class TestResources:
    def test_gpus_are_requested_and_limited(self, owner: Owner) -> None:
        spec = training_spec(resources={"gpus": 4, "cpu": "16", "memory": "64Gi"})
        resources = _container(build_job(template=training_template(owner, spec), attempt=1,
                                         suspend=False))["resources"]
        want = {"cpu": "16", "memory": "64Gi", "nvidia.com/gpu": "4"}
        assert resources == {"requests": want, "limits": want}

    def test_cpu_only_uses_the_operator_defaults_and_no_gpu(self, owner: Owner) -> None:
        resources = _container(build_job(template=training_template(owner, training_spec()),
                                         attempt=1, suspend=False))["resources"]
        assert resources["requests"] == {"cpu": "2", "memory": "8Gi"}
        assert resources["limits"] == resources["requests"]

    def test_integer_cpu_becomes_a_quantity_string(self, owner: Owner) -> None:
        spec = training_spec(resources={"cpu": 3})
        resources = _container(build_job(template=training_template(owner, spec), attempt=1,
                                         suspend=False))["resources"]
        assert resources["requests"]["cpu"] == "3"


class TestScheduling:
    def test_node_selector_tolerations_priority(self, owner: Owner) -> None:
        spec = training_spec(scheduling={
            "nodeSelector": {"pool": "gpu"},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists",
                             "effect": "NoSchedule"},
                            {"key": "spot", "value": "yes", "tolerationSeconds": 60,
                             "effect": "NoExecute"}],
            "priorityClassName": "ml-batch"})
        pod = _pod(build_job(template=training_template(owner, spec), attempt=1,
                             suspend=False))
        assert pod["nodeSelector"] == {"pool": "gpu"}
        assert pod["tolerations"] == [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
            {"key": "spot", "operator": "Equal", "value": "yes", "effect": "NoExecute",
             "tolerationSeconds": 60}]
        assert pod["priorityClassName"] == "ml-batch"

    def test_nothing_scheduled_means_no_scheduling_keys(self, owner: Owner) -> None:
        pod = _pod(build_job(template=training_template(owner, training_spec()), attempt=1,
                             suspend=False))
        assert not {"nodeSelector", "tolerations", "priorityClassName"} & pod.keys()


class TestVolumes:
    def test_each_claim_is_mounted_once_under_mnt_pvc(self, owner: Owner) -> None:
        spec = training_spec(model={"uri": "pvc://base/minilm"},
                             dataset={"uri": "pvc://data/bbc.jsonl",
                                      "validationUri": "pvc://data/val.jsonl"},
                             output={"uri": "pvc://models/out"})
        job = build_job(template=training_template(owner, spec), attempt=1, suspend=False)
        claims = {v["persistentVolumeClaim"]["claimName"]: v["name"]
                  for v in _pod(job)["volumes"] if "persistentVolumeClaim" in v}
        assert sorted(claims) == ["base", "data", "models"]
        mounts = {m["name"]: m["mountPath"] for m in _container(job)["volumeMounts"]}
        for claim, volume in claims.items():
            assert mounts[volume] == f"/mnt/pvc/{claim}"
        assert _env(job)["MODELLOOP_PVC_ROOT"] == "/mnt/pvc"

    def test_no_pvc_uri_means_no_claim_and_no_pvc_root(self, owner: Owner) -> None:
        spec = training_spec(output={"uri": "s3://bucket/out"})
        job = build_job(template=training_template(owner, spec), attempt=1, suspend=False)
        assert not [v for v in _pod(job)["volumes"] if "persistentVolumeClaim" in v]
        assert "MODELLOOP_PVC_ROOT" not in _env(job)

    def test_shared_memory_is_memory_backed(self, owner: Owner) -> None:
        job = build_job(template=training_template(owner, training_spec()), attempt=1,
                        suspend=False)
        assert {"name": "dshm", "emptyDir": {"medium": "Memory"}} in _pod(job)["volumes"]
        assert {"name": "dshm", "mountPath": "/dev/shm"} in _container(job)["volumeMounts"]


class TestEnv:
    def test_completion_index_comes_from_the_pod_annotation(self, owner: Owner) -> None:
        env = _env(build_job(template=training_template(owner, training_spec()), attempt=1,
                             suspend=False))
        assert env["JOB_COMPLETION_INDEX"] == {"fieldRef": {
            "fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}}


class TestManifestHash:
    def test_the_digest_follows_every_change_and_only_changes(self, owner: Owner) -> None:
        template = training_template(owner, training_spec())
        running = with_manifest_hash(build_job(template=template, attempt=1, suspend=False))
        again = with_manifest_hash(build_job(template=template, attempt=1, suspend=False))
        suspended = with_manifest_hash(build_job(template=template, attempt=1, suspend=True))
        assert manifest_hash(running) == manifest_hash(again)
        assert manifest_hash(running) != manifest_hash(suspended)
        assert manifest_hash(with_manifest_hash(running)) == manifest_hash(running)
        assert manifest_hash({"metadata": {}}) is None
