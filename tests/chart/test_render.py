"""The Helm chart, rendered without a cluster: lint, schema, RBAC, security, wiring.

Each scenario is a set of values a real installation would use; every one must lint with
--strict and render, and the rendered objects are checked as data.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
import yaml
from modelloop_operator import cli
from modelloop_operator.api import ModelDeployment
from modelloop_operator.builders.job import Owner
from modelloop_operator.builders.serving import ServingContext, build_metrics_service
from modelloop_operator.config import OperatorConfig

from tests.chart.helm import CHART, REPO, Helm, Manifest, of_kind, one

SCENARIOS: dict[str, dict[str, Any]] = {
    "default": {},
    "ha": {"replicaCount": 2, "peering": {"enabled": True}},
    "watch-namespaces": {"watchNamespaces": ["team-a", "team-b"]},
    "watch-namespaces-ha": {"watchNamespaces": ["team-a", "team-b"], "replicaCount": 3,
                            "peering": {"enabled": True, "name": "ml-peers"}},
    "monitoring": {"metrics": {"serviceMonitor": {"enabled": True,
                                                  "labels": {"release": "prometheus"}},
                               "modelsServiceMonitor": {"enabled": True},
                               "prometheusRule": {"enabled": True}}},
    "network-policy": {"networkPolicy": {
        "enabled": True, "apiServerCIDRs": ["10.96.0.1/32", "172.18.0.2/32"],
        "metricsFrom": [{"namespaceSelector": {
            "matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
        "extraEgress": [{"to": [{"namespaceSelector": {
            "matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
            "ports": [{"port": 9090, "protocol": "TCP"}]}]}},
    "crds-disabled": {"crds": {"enabled": False}},
    "crds-not-kept": {"crds": {"keep": False}},
    "dashboards": {"dashboards": {"enabled": True, "namespace": "grafana"}},
    "own-serviceaccount": {"serviceAccount": {"create": False, "name": "platform-sa"},
                           "rbac": {"create": False}},
    "pinned": {"image": {"digest": "sha256:" + "ab" * 32},
               "operator": {"trainerImage": "registry.example/trainer@sha256:" + "cd" * 32,
                            "logFormat": "json", "extraArgs": ["--verbose"],
                            "extraEnv": [{"name": "MODELLOOP_RESYNC_SECONDS", "value": "60"}]},
               "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ml",
                                "effect": "NoSchedule"}],
               "nodeSelector": {"kubernetes.io/os": "linux"}},
}
NAMESPACE = "modelloop-system"
SA = "ml-modelloop"
CRD_NAMES = {"trainingjobs.modelloop.dev", "optimizationjobs.modelloop.dev",
             "modeldeployments.modelloop.dev"}

Triple = tuple[str, str, str]  # (apiGroup, resource, verb)

ALL_CHILD_VERBS = ("get", "list", "watch", "create", "update", "patch", "delete")
NAMESPACED_NEEDS: frozenset[Triple] = frozenset(
    {("modelloop.dev", r, v) for r in ("trainingjobs", "optimizationjobs")
     for v in ("get", "list", "watch", "create", "patch", "update")}
    | {("modelloop.dev", "modeldeployments", v)
       for v in ("get", "list", "watch", "patch", "update")}
    | {("modelloop.dev", f"{r}/status", v)
       for r in ("trainingjobs", "optimizationjobs", "modeldeployments")
       for v in ("get", "patch", "update")}
    | {(g, r, v) for g, r in (("batch", "jobs"), ("apps", "deployments"),
                              ("apps", "statefulsets"), ("", "services"),
                              ("", "configmaps"), ("autoscaling", "horizontalpodautoscalers"))
       for v in ALL_CHILD_VERBS}
    | {("", "pods", v) for v in ("get", "list", "watch")}
    | {(g, "events", v) for g in ("", "events.k8s.io") for v in ("create", "patch")}
)
CLUSTER_NEEDS: frozenset[Triple] = frozenset(
    ("apiextensions.k8s.io", "customresourcedefinitions", v) for v in ("get", "list", "watch"))


_RENDERED: dict[str, list[Manifest]] = {}


def render(helm: Helm, workdir: Path, scenario: str) -> list[Manifest]:
    """The scenario's objects (rendered once per session; each caller gets its own copy)."""
    if scenario not in _RENDERED:
        _RENDERED[scenario] = helm.template(SCENARIOS[scenario], workdir=workdir,
                                            namespace=NAMESPACE)
    return copy.deepcopy(_RENDERED[scenario])


def deployment(objects: list[Manifest]) -> Manifest:
    return one(objects, "Deployment")


def container(objects: list[Manifest]) -> Manifest:
    containers = deployment(objects)["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def env_of(objects: list[Manifest]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container(objects)["env"] if "value" in e}


def rules_by_role(objects: list[Manifest]) -> dict[tuple[str, str, str], list[dict[str, Any]]]:
    """(kind, namespace, name) of each Role/ClusterRole -> its rules."""
    return {(o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]): o["rules"]
            for o in objects if o["kind"] in ("Role", "ClusterRole")}


def granted(objects: list[Manifest], *, namespace: str | None) -> set[Triple]:
    """What the operator's ServiceAccount may do: cluster-wide (namespace=None) or in one
    namespace, following the bindings as the API server's authorizer would."""
    roles = rules_by_role(objects)
    out: set[Triple] = set()
    for binding in objects:
        if binding["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        subjects = binding["subjects"]
        if not any(s["kind"] == "ServiceAccount" and s["name"] == SA
                   and s["namespace"] == NAMESPACE for s in subjects):
            continue
        if binding["kind"] == "RoleBinding" and binding["metadata"]["namespace"] != namespace:
            continue
        ref = binding["roleRef"]
        ref_ns = binding["metadata"]["namespace"] if ref["kind"] == "Role" else ""
        for rule in roles[(ref["kind"], ref_ns, ref["name"])]:
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    out.update((group, resource, verb) for verb in rule["verbs"])
    return out


# --- lint and render -------------------------------------------------------------------


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_lint_is_clean(helm: Helm, workdir: Path, scenario: str) -> None:
    result = helm.lint(SCENARIOS[scenario], workdir=workdir)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_renders_objects_with_valid_names_and_common_labels(
        helm: Helm, workdir: Path, scenario: str) -> None:
    objects = render(helm, workdir, scenario)
    assert objects
    for obj in objects:
        meta = obj["metadata"]
        assert obj["apiVersion"] and obj["kind"], obj
        assert len(meta["name"]) <= 253, meta["name"]
        if obj["kind"] != "CustomResourceDefinition":
            assert meta["labels"]["app.kubernetes.io/instance"] == "ml", obj["kind"]
        assert meta["labels"]["app.kubernetes.io/part-of"] == "modelloop"


def test_long_release_names_still_give_valid_service_names(helm: Helm, workdir: Path) -> None:
    release = "a-very-long-release-name-for-the-platform-team-x"
    objects = helm.template({}, workdir=workdir, release=release)
    for service in of_kind(objects, "Service"):
        name = service["metadata"]["name"]
        assert len(name) <= 63 and not name.endswith("-"), name


# --- values.schema.json -----------------------------------------------------------------


@pytest.mark.parametrize(("values", "named"), [
    ({"replicas": 2}, "replicas"),
    ({"crds": {"enabled": True, "kep": True}}, "kep"),
    ({"metrics": {"serviceMonitor": {"enabled": True, "intervall": "1m"}}}, "intervall"),
    ({"securityContext": {"privilegd": True}}, "privilegd"),
])
def test_schema_rejects_unknown_keys(helm: Helm, workdir: Path, values: dict[str, Any],
                                     named: str) -> None:
    error = helm.template_error(values, workdir=workdir)
    assert "additional properties" in error and named in error, error


@pytest.mark.parametrize(("values", "path"), [
    ({"replicaCount": "two"}, "/replicaCount"),
    ({"crds": {"enabled": "yes", "keep": True}}, "/crds/enabled"),
    ({"watchNamespaces": "team-a"}, "/watchNamespaces"),
    ({"metrics": {"port": 70000}}, "/metrics/port"),
    ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
    ({"operator": {"logFormat": "xml"}}, "/operator/logFormat"),
])
def test_schema_rejects_wrong_types_and_values(helm: Helm, workdir: Path,
                                               values: dict[str, Any], path: str) -> None:
    error = helm.template_error(values, workdir=workdir)
    assert path in error, error


def test_lint_fails_on_a_typo_too(helm: Helm, workdir: Path) -> None:
    result = helm.lint({"peering": {"enabeld": True}}, workdir=workdir)
    assert result.returncode != 0 and "enabeld" in result.stdout + result.stderr


def _object_schemas(node: Any, path: str = "#") -> Iterable[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        if node.get("type") == "object":
            yield path, node
        for key, value in node.items():
            yield from _object_schemas(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _object_schemas(value, f"{path}/{i}")


# Kubernetes types passed through untouched (validated by the API server, not by us).
PASS_THROUGH = {
    "#/properties/global",
    "#/definitions/envVar/properties/valueFrom",
    "#/definitions/networkPolicyPeer/properties/podSelector",
    "#/definitions/networkPolicyPeer/properties/namespaceSelector",
    "#/properties/affinity/properties/nodeAffinity",
    "#/properties/affinity/properties/podAffinity",
    "#/properties/affinity/properties/podAntiAffinity",
    "#/properties/networkPolicy/properties/extraEgress/items",
}


def test_every_schema_object_is_closed() -> None:
    """Our own objects list their keys (additionalProperties false); maps say what their
    values are; only Kubernetes types passed through verbatim are open, by name."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    open_ones = []
    for path, node in _object_schemas(schema):
        extra = node.get("additionalProperties")
        if "properties" in node and extra is False:
            continue
        if "properties" not in node and isinstance(extra, dict):
            continue  # a map with typed values
        if path in PASS_THROUGH:
            continue
        open_ones.append(path)
    assert open_ones == []


def test_every_schema_key_has_a_documented_default_in_values_yaml() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def missing(node: dict[str, Any], vals: dict[str, Any], prefix: str) -> list[str]:
        out = []
        for key, sub in node.get("properties", {}).items():
            if prefix + key in ("global", "affinity.nodeAffinity", "affinity.podAffinity",
                                "affinity.podAntiAffinity"):
                continue  # not ours (umbrella charts), or optional Kubernetes fields
            if key not in vals:
                out.append(prefix + key)
            elif "$ref" not in sub and sub.get("type") == "object" and "properties" in sub:
                out += missing(sub, vals[key], f"{prefix}{key}.")
        return out

    assert missing(schema, values, "") == []


# --- the operator Deployment ------------------------------------------------------------


def test_default_deployment_is_one_replica_recreated(helm: Helm, workdir: Path) -> None:
    spec = deployment(render(helm, workdir, "default"))["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}


def test_operator_command_and_arguments(helm: Helm, workdir: Path) -> None:
    c = container(render(helm, workdir, "default"))
    assert c["command"] == ["modelloop-operator"]
    assert c["args"] == ["--all-namespaces", "--liveness=http://0.0.0.0:8081/healthz",
                         "--standalone"]
    scoped = container(render(helm, workdir, "watch-namespaces-ha"))
    assert scoped["args"] == ["--namespace=team-a", "--namespace=team-b",
                              "--liveness=http://0.0.0.0:8081/healthz", "--peering=ml-peers"]
    assert container(render(helm, workdir, "pinned"))["args"][-1] == "--verbose"


@pytest.mark.parametrize("scenario", ["default", "ha", "watch-namespaces-ha", "pinned"])
def test_operator_reads_the_configuration_the_chart_means(
        helm: Helm, workdir: Path, scenario: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Deployment's arguments and MODELLOOP_* variables, fed to the operator's own
    command-line parser and settings, give the configuration the values asked for."""
    objects = render(helm, workdir, scenario)
    ours = {k: v for k, v in env_of(objects).items() if k.startswith("MODELLOOP_")}
    fields = set(OperatorConfig.model_fields)
    assert [k for k in ours if k.removeprefix("MODELLOOP_").lower() not in fields] == []
    for key in [k for k in os.environ if k.startswith("MODELLOOP_")]:
        monkeypatch.delenv(key)
    for key, value in ours.items():
        monkeypatch.setenv(key, value)
    args = cli.parse_args(container(objects)["args"])
    config = cli.load_config(args)

    values = SCENARIOS[scenario]
    assert config.namespaces == tuple(values.get("watchNamespaces", ()))
    assert config.clusterwide is (not values.get("watchNamespaces"))
    assert config.metrics_port == 8080 and config.health_port == 8081
    assert args.liveness == f"http://0.0.0.0:{config.health_port}/healthz"
    peering = values.get("peering", {})
    assert config.standalone is (not peering.get("enabled", False))
    if not config.standalone:
        assert config.peering_name == peering.get("name", "ml-modelloop")
    trainer = values.get("operator", {}).get("trainerImage", "ghcr.io/modelloop/trainer:0.1.0")
    assert config.trainer_image == trainer
    assert config.server_image == "ghcr.io/modelloop/server:0.1.0"
    assert config.log_format == values.get("operator", {}).get("logFormat", "full")
    assert args.verbose is ("--verbose" in values.get("operator", {}).get("extraArgs", []))


def test_pod_identity_for_kopf_peering(helm: Helm, workdir: Path) -> None:
    env = {e["name"]: e for e in container(render(helm, workdir, "ha"))["env"]}
    assert env["POD_ID"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}


def test_image_tag_defaults_to_app_version_and_a_digest_wins(helm: Helm, workdir: Path) -> None:
    assert container(render(helm, workdir, "default"))["image"] == \
        "ghcr.io/modelloop/operator:0.1.0"
    assert container(render(helm, workdir, "pinned"))["image"] == \
        "ghcr.io/modelloop/operator@sha256:" + "ab" * 32


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_pod_meets_the_restricted_pod_security_standard(
        helm: Helm, workdir: Path, scenario: str) -> None:
    pod = deployment(render(helm, workdir, scenario))["spec"]["template"]["spec"]
    assert not any(pod.get(k) for k in ("hostNetwork", "hostPID", "hostIPC"))
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for volume in pod.get("volumes", []):
        assert set(volume) - {"name"} <= {"emptyDir", "configMap", "secret", "projected",
                                          "downwardAPI", "persistentVolumeClaim", "ephemeral"}
    for c in pod["containers"]:
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["runAsNonRoot"] is True
        assert sc["capabilities"]["drop"] == ["ALL"] and not sc["capabilities"].get("add")
        assert not sc.get("privileged")
        assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
        assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "healthz"}
        assert {m["mountPath"] for m in c["volumeMounts"]} == {"/tmp"}


def test_more_than_one_replica_without_peering_is_refused(helm: Helm, workdir: Path) -> None:
    error = helm.template_error({"replicaCount": 2}, workdir=workdir)
    assert "replicaCount > 1 requires peering.enabled=true" in error


# --- RBAC ------------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_no_wildcards_and_no_secrets_in_any_rule(helm: Helm, workdir: Path,
                                                 scenario: str) -> None:
    for (_, _, name), rules in rules_by_role(render(helm, workdir, scenario)).items():
        for rule in rules:
            for field in ("apiGroups", "resources", "verbs", "resourceNames",
                          "nonResourceURLs"):
                assert not any("*" in item for item in rule.get(field, [])), (name, rule)
            assert "secrets" not in rule["resources"], (name, rule)
            assert "nonResourceURLs" not in rule


def test_cluster_wide_grants_exactly_what_the_operator_needs(helm: Helm,
                                                             workdir: Path) -> None:
    objects = render(helm, workdir, "default")
    assert granted(objects, namespace=None) == NAMESPACED_NEEDS | CLUSTER_NEEDS
    assert of_kind(objects, "Role") == [] and of_kind(objects, "RoleBinding") == []


def test_watch_namespaces_grant_namespaced_rights_only_there(helm: Helm,
                                                             workdir: Path) -> None:
    objects = render(helm, workdir, "watch-namespaces")
    namespaces = ("", "list"), ("", "watch")
    cluster_wide = granted(objects, namespace=None)
    assert cluster_wide == CLUSTER_NEEDS | {("", "namespaces", v) for _, v in namespaces}
    for ns in ("team-a", "team-b"):
        assert granted(objects, namespace=ns) - cluster_wide == NAMESPACED_NEEDS
    assert granted(objects, namespace=NAMESPACE) == cluster_wide
    assert {r["metadata"]["namespace"] for r in of_kind(objects, "Role")} == {"team-a",
                                                                              "team-b"}


def test_one_role_per_purpose(helm: Helm, workdir: Path) -> None:
    objects = render(helm, workdir, "ha")
    purposes = {r["metadata"]["labels"]["modelloop.dev/rbac-purpose"]
                for r in of_kind(objects, "ClusterRole")}
    assert purposes == {"resources", "children", "discovery", "peering"}
    status_rules = [rule for rule in rules_by_role(objects)[
        ("ClusterRole", "", "ml-modelloop-resources")]
        if any(r.endswith("/status") for r in rule["resources"])]
    assert len(status_rules) == 1
    assert all(r.endswith("/status") for r in status_rules[0]["resources"])


@pytest.mark.parametrize(("scenario", "resource"), [("ha", "clusterkopfpeerings"),
                                                    ("watch-namespaces-ha", "kopfpeerings")])
def test_peering_rights_write_only_the_release_peering_object(
        helm: Helm, workdir: Path, scenario: str, resource: str) -> None:
    objects = render(helm, workdir, scenario)
    name = "ml-peers" if scenario == "watch-namespaces-ha" else "ml-modelloop"
    peering_rules = [rule for rules in rules_by_role(objects).values() for rule in rules
                     if rule["apiGroups"] == ["kopf.dev"]]
    assert peering_rules
    for rule in peering_rules:
        assert rule["resources"] == [resource]
        if set(rule["verbs"]) - {"list", "watch"}:
            assert rule.get("resourceNames") == [name]
            assert set(rule["verbs"]) == {"get", "patch"}


def test_rbac_can_be_left_to_the_platform(helm: Helm, workdir: Path) -> None:
    objects = render(helm, workdir, "own-serviceaccount")
    kinds = {o["kind"] for o in objects}
    assert not kinds & {"Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding",
                        "ServiceAccount"}
    pod = deployment(objects)["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "platform-sa"


# --- peering ---------------------------------------------------------------------------


def test_peering_objects_and_crds(helm: Helm, workdir: Path) -> None:
    cluster = render(helm, workdir, "ha")
    assert [p["metadata"]["name"] for p in of_kind(cluster, "ClusterKopfPeering")] == \
        ["ml-modelloop"]
    crds = {c["metadata"]["name"] for c in of_kind(cluster, "CustomResourceDefinition")}
    assert {"clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"} <= crds  # from crds/
    scoped = render(helm, workdir, "watch-namespaces-ha")
    assert sorted((p["metadata"]["namespace"], p["metadata"]["name"])
                  for p in of_kind(scoped, "KopfPeering")) == [("team-a", "ml-peers"),
                                                               ("team-b", "ml-peers")]
    assert of_kind(render(helm, workdir, "default"), "ClusterKopfPeering") == []


# --- CRDs ------------------------------------------------------------------------------


def modelloop_crds(objects: list[Manifest]) -> dict[str, Manifest]:
    return {c["metadata"]["name"]: c for c in of_kind(objects, "CustomResourceDefinition")
            if c["spec"]["group"] == "modelloop.dev"}


def test_crds_are_installed_and_kept_by_default(helm: Helm, workdir: Path) -> None:
    crds = modelloop_crds(render(helm, workdir, "default"))
    assert set(crds) == CRD_NAMES
    for crd in crds.values():
        assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        # Argo CD prunes a CRD that leaves the chart unless told not to.
        assert crd["metadata"]["annotations"]["argocd.argoproj.io/sync-options"] == "Prune=false"


def test_crds_not_kept_when_asked(helm: Helm, workdir: Path) -> None:
    crds = modelloop_crds(render(helm, workdir, "crds-not-kept"))
    assert set(crds) == CRD_NAMES
    for crd in crds.values():
        assert "helm.sh/resource-policy" not in crd["metadata"].get("annotations", {})
        assert "argocd.argoproj.io/sync-options" not in crd["metadata"].get("annotations", {})


def test_crds_absent_when_disabled(helm: Helm, workdir: Path) -> None:
    assert modelloop_crds(render(helm, workdir, "crds-disabled")) == {}


# --- metrics, monitoring, network ------------------------------------------------------


def test_metrics_service_exposes_only_the_metrics_port(helm: Helm, workdir: Path) -> None:
    objects = render(helm, workdir, "default")
    service = one(objects, "Service")
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 8080,
                                         "targetPort": "metrics", "protocol": "TCP"}]
    pod_labels = deployment(objects)["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert of_kind(objects, "ServiceMonitor") == [] and of_kind(objects, "PrometheusRule") == []
    assert of_kind(objects, "NetworkPolicy") == []


def test_service_monitor_selects_the_metrics_service(helm: Helm, workdir: Path) -> None:
    objects = render(helm, workdir, "monitoring")
    (monitor,) = [m for m in of_kind(objects, "ServiceMonitor")
                  if m["metadata"]["name"] == "ml-modelloop"]
    service = one(objects, "Service")
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= \
        service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    alerts = [r["alert"] for g in one(objects, "PrometheusRule")["spec"]["groups"]
              for r in g["rules"]]
    assert alerts == ["ModelloopOperatorDown", "ModelloopReconcileErrors",
                      "ModelloopModelDeploymentDegraded"]


def test_network_policy_allows_metrics_in_and_api_dns_out(helm: Helm, workdir: Path) -> None:
    policy = one(render(helm, workdir, "network-policy"), "NetworkPolicy")["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    assert len(policy["ingress"]) == 1
    assert policy["ingress"][0]["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    assert policy["ingress"][0]["from"][0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "monitoring"}
    api, dns, prometheus = policy["egress"]
    assert [p["port"] for p in api["ports"]] == [443, 6443]
    assert [t["ipBlock"]["cidr"] for t in api["to"]] == ["10.96.0.1/32", "172.18.0.2/32"]
    assert {p["port"] for p in dns["ports"]} == {53}
    assert prometheus["ports"] == [{"port": 9090, "protocol": "TCP"}]


def test_dashboards_ship_as_configmaps_with_the_json_files(helm: Helm, workdir: Path) -> None:
    maps = of_kind(render(helm, workdir, "dashboards"), "ConfigMap")
    files = sorted((CHART / "dashboards").glob("*.json"))
    assert files, "no dashboards in charts/modelloop/dashboards"
    assert len(maps) == len(files)
    shipped = {k: v for m in maps for k, v in m["data"].items()}
    for path in files:
        assert json.loads(shipped[path.name]) == json.loads(path.read_text())
    for m in maps:
        assert m["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert m["metadata"]["namespace"] == "grafana"


def test_models_service_monitor_selects_the_operators_model_metrics_services(
        helm: Helm, workdir: Path) -> None:
    """The selector matches the metrics Service the operator builds for a ModelDeployment
    (built here by the operator's own builder from the repository's example)."""
    example = yaml.safe_load((REPO / "examples" / "modeldeployment.yaml").read_text())
    spec = ModelDeployment.model_validate(example).spec
    owner = Owner(api_version="modelloop.dev/v1alpha1", kind="ModelDeployment", name="news",
                  namespace="team-a", uid="0b7c1f5e-0000-4000-8000-000000000001")
    service = build_metrics_service(ctx=ServingContext(
        owner=owner, spec=spec, default_image="server:1", init_image="trainer:1",
        default_cpu="1", default_memory="2Gi"))
    for scenario, namespaces in (("monitoring", {"any": True}),
                                 ("watch-namespaces", None)):
        values = copy.deepcopy(SCENARIOS[scenario])
        values.setdefault("metrics", {})["modelsServiceMonitor"] = {"enabled": True}
        objects = helm.template(values, workdir=workdir, namespace=NAMESPACE)
        (monitor,) = [m for m in of_kind(objects, "ServiceMonitor")
                      if m["metadata"]["name"] == "ml-modelloop-models"]
        assert monitor["spec"]["selector"]["matchLabels"].items() <= \
            service["metadata"]["labels"].items()
        assert [e["port"] for e in monitor["spec"]["endpoints"]] == \
            [p["name"] for p in service["spec"]["ports"]]
        expected = namespaces or {"matchNames": SCENARIOS[scenario]["watchNamespaces"]}
        assert monitor["spec"]["namespaceSelector"] == expected
