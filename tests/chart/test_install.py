"""The chart installed into the local control plane (cluster tier).

What the API server's RBAC authorizer decides for the operator's ServiceAccount is checked
exhaustively with SubjectAccessReviews (what `kubectl auth can-i --as` asks, batched into
one request), plus `kubectl auth can-i --as` itself for the headline answers. Then upgrade,
and uninstall, which must leave the CRDs (and so every user's objects) in place.

The operator pod itself cannot start here (its image is not built on this machine; kwok
only simulates pods). The operator process does run under this ServiceAccount's token: the
whole cluster tier starts it with the chart's RBAC and fails on any 403
(tests/cluster/conftest.py, docs/security.md).
"""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.helm import CHART, Helm
from tests.chart.test_render import CLUSTER_NEEDS, NAMESPACED_NEEDS, SCENARIOS, Triple
from tests.harness.controlplane import ControlPlane

pytestmark = pytest.mark.cluster

VERBS = ("get", "list", "watch", "create", "update", "patch", "delete", "deletecollection")
# Every namespaced resource the operator has any right on, plus ones it must never touch.
NAMESPACED_RESOURCES = sorted({(g, r) for g, r, _ in NAMESPACED_NEEDS} | {
    ("", "secrets"), ("", "serviceaccounts"), ("", "persistentvolumeclaims"),
    ("", "pods/exec"), ("", "pods/log"), ("apps", "statefulsets"), ("apps", "daemonsets"),
    ("rbac.authorization.k8s.io", "roles"), ("rbac.authorization.k8s.io", "rolebindings"),
    ("coordination.k8s.io", "leases"), ("kopf.dev", "kopfpeerings")})
CLUSTER_RESOURCES = sorted({(g, r) for g, r, _ in CLUSTER_NEEDS} | {
    ("", "namespaces"), ("", "nodes"), ("kopf.dev", "clusterkopfpeerings"),
    ("rbac.authorization.k8s.io", "clusterroles"),
    ("rbac.authorization.k8s.io", "clusterrolebindings"),
    ("admissionregistration.k8s.io", "validatingadmissionpolicies")})
MODELLOOP_CRDS = ("trainingjobs.modelloop.dev", "optimizationjobs.modelloop.dev",
                  "modeldeployments.modelloop.dev")


Ask = tuple[str, str, str, str | None, str | None]  # group, resource, verb, namespace, name


@dataclass(frozen=True)
class Release:
    name: str
    namespace: str

    @property
    def service_account(self) -> str:
        return f"{self.name}-modelloop"

    @property
    def user(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.service_account}"


def cluster_helm(cluster: ControlPlane, home: Path) -> Helm:
    return Helm(binary=cluster.helm_path, home=home)


def helm_env(cluster: ControlPlane) -> dict[str, str]:
    return {"KUBECONFIG": str(cluster.kubeconfig)}


def access_reviews(cluster: ControlPlane, release: Release,
                   asks: Iterable[Ask]) -> dict[Ask, bool]:
    """Ask the API server, for each (group, resource, verb, namespace, name), whether the
    release's ServiceAccount is allowed; one request for all of them."""
    asks = list(asks)
    items = []
    for group, resource, verb, namespace, name in asks:
        plain, _, subresource = resource.partition("/")
        attributes: dict[str, Any] = {"group": group, "resource": plain, "verb": verb}
        if subresource:
            attributes["subresource"] = subresource
        if namespace:
            attributes["namespace"] = namespace
        if name:
            attributes["name"] = name
        items.append({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
                      "spec": {"user": release.user,
                               "groups": ["system:serviceaccounts",
                                          f"system:serviceaccounts:{release.namespace}",
                                          "system:authenticated"],
                               "resourceAttributes": attributes}})
    listing = {"apiVersion": "v1", "kind": "List", "items": items}
    out = cluster.kubectl("create", "-f", "-", "-o", "json", input=json.dumps(listing)).stdout
    results = json_stream(out)  # kubectl prints one JSON document per created item
    assert len(results) == len(asks)
    return {ask: bool(r["status"].get("allowed")) for ask, r in zip(asks, results, strict=True)}


def json_stream(text: str) -> list[dict[str, Any]]:
    decoder, i = json.JSONDecoder(), 0
    docs: list[dict[str, Any]] = []
    while i < len(text):
        if text[i].isspace():
            i += 1
            continue
        doc, i = decoder.raw_decode(text, i)
        docs.extend(doc["items"] if doc.get("kind") == "List" else [doc])
    return docs


def can_i(cluster: ControlPlane, release: Release, *args: str) -> bool:
    result = cluster.kubectl("auth", "can-i", *args, f"--as={release.user}", check=False)
    answer = result.stdout.strip()
    assert answer in ("yes", "no"), result.stderr
    return answer == "yes"


def expected(triples: frozenset[Triple], group: str, resource: str, verb: str) -> bool:
    return (group, resource, verb) in triples


@pytest.fixture
def release_namespace(cluster: ControlPlane) -> Iterator[str]:
    name = f"modelloop-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found",
                    check=False)


def test_install_grants_exactly_what_the_operator_needs_and_uninstall_keeps_crds(
        cluster: ControlPlane, release_namespace: str, tmp_path: Path) -> None:
    helm = cluster_helm(cluster, tmp_path / "helm")
    release = Release(name=f"ml{uuid.uuid4().hex[:4]}", namespace=release_namespace)
    # --take-ownership: another test in this session may have applied the CRDs already.
    helm.run("install", release.name, str(CHART), "--namespace", release.namespace,
             "--take-ownership", env=helm_env(cluster))

    for crd in MODELLOOP_CRDS:
        cluster.kubectl("get", "crd", crd)
    team = "team-x"  # rights are cluster-wide: any namespace, even one not created yet
    asks: list[Ask] = [(g, r, v, team, None) for g, r in NAMESPACED_RESOURCES for v in VERBS]
    asks += [(g, r, v, None, None) for g, r in CLUSTER_RESOURCES for v in VERBS]
    answers = access_reviews(cluster, release, asks)
    wrong = {ask: allowed for ask, allowed in answers.items()
             if allowed != expected(NAMESPACED_NEEDS | CLUSTER_NEEDS, *ask[:3])}
    assert wrong == {}

    assert can_i(cluster, release, "patch", "trainingjobs.modelloop.dev/status", "-n", team)
    assert can_i(cluster, release, "create", "jobs.batch", "-n", team)
    assert not can_i(cluster, release, "get", "secrets", "-n", team)
    assert not can_i(cluster, release, "list", "secrets", "-A")
    assert not can_i(cluster, release, "delete", "namespaces")
    assert not can_i(cluster, release, "create", "pods", "-n", team)

    helm.run("upgrade", release.name, str(CHART), "--namespace", release.namespace,
             "--set", "operator.logFormat=json", env=helm_env(cluster))
    deployment = json.loads(cluster.kubectl(
        "get", "deployment", release.service_account, "-n", release.namespace,
        "-o", "json").stdout)
    env = {e["name"]: e.get("value") for e in
           deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MODELLOOP_LOG_FORMAT"] == "json"
    assert deployment["spec"]["strategy"]["type"] == "Recreate"

    helm.run("uninstall", release.name, "--namespace", release.namespace, "--wait",
             env=helm_env(cluster))
    for crd in MODELLOOP_CRDS:
        kept = json.loads(cluster.kubectl("get", "crd", crd, "-o", "json").stdout)
        assert kept["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    gone = cluster.kubectl("get", "clusterrole", f"{release.service_account}-children",
                           check=False)
    assert gone.returncode != 0 and "NotFound" in gone.stderr
    assert not can_i(cluster, release, "create", "jobs.batch", "-n", team)


def test_watch_namespaces_install_grants_rights_only_in_those_namespaces(
        cluster: ControlPlane, release_namespace: str, tmp_path: Path) -> None:
    helm = cluster_helm(cluster, tmp_path / "helm")
    release = Release(name=f"ml{uuid.uuid4().hex[:4]}", namespace=release_namespace)
    watched = [f"{release_namespace}-a", f"{release_namespace}-b"]
    for ns in watched:
        cluster.kubectl("create", "namespace", ns)
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({
        "crds": {"enabled": False}, "watchNamespaces": watched,
        "replicaCount": 2, "peering": {"enabled": True}}))
    try:
        helm.run("install", release.name, str(CHART), "--namespace", release.namespace,
                 "--values", str(values), "--take-ownership", env=helm_env(cluster))
        asks: list[Ask] = [(g, r, v, ns, None) for ns in [*watched, "elsewhere"]
                           for g, r in NAMESPACED_RESOURCES for v in VERBS]
        asks += [(g, r, v, None, None) for g, r in CLUSTER_RESOURCES for v in VERBS]
        cluster_needs = CLUSTER_NEEDS | {("", "namespaces", "list"),
                                         ("", "namespaces", "watch")}
        peering = {("kopf.dev", "kopfpeerings", v) for v in ("list", "watch")}
        wrong: dict[Ask, bool] = {}
        for ask, allowed in access_reviews(cluster, release, asks).items():
            group, resource, verb, namespace, _ = ask
            if namespace in watched:
                want = expected(NAMESPACED_NEEDS | frozenset(peering), group, resource, verb)
            elif namespace == "elsewhere":
                want = False
            else:
                want = expected(cluster_needs, group, resource, verb)
            if allowed != want:
                wrong[ask] = allowed
        assert wrong == {}

        # The peering object itself may be read and patched, no other one.
        named = access_reviews(cluster, release, [
            ("kopf.dev", "kopfpeerings", "patch", watched[0], release.service_account),
            ("kopf.dev", "kopfpeerings", "patch", watched[0], "someone-else")])
        assert list(named.values()) == [True, False]
        for ns in watched:
            cluster.kubectl("get", "kopfpeering", release.service_account, "-n", ns)
        assert can_i(cluster, release, "list", "namespaces")
        assert not can_i(cluster, release, "create", "jobs.batch", "-n", "elsewhere")
    finally:
        helm.run("uninstall", release.name, "--namespace", release.namespace,
                 env=helm_env(cluster), check=False)
        for ns in watched:
            cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def test_every_rendered_configuration_is_accepted_by_the_api_server(
        cluster: ControlPlane, release_namespace: str, tmp_path: Path) -> None:
    """`helm template` only checks YAML; the API server checks every field of every object
    (server-side dry run) and, through Pod Security admission, that the operator's pod
    passes the restricted standard. Prometheus Operator kinds are left out: their CRDs are
    not part of the local control plane."""
    helm = cluster_helm(cluster, tmp_path / "helm")
    watched = [f"{release_namespace}-a", f"{release_namespace}-b"]
    for ns in watched:
        cluster.kubectl("create", "namespace", ns)
    cluster.kubectl("label", "namespace", release_namespace,
                    "pod-security.kubernetes.io/enforce=restricted")
    # Pods are admitted only with an existing ServiceAccount; the dry run creates none.
    cluster.kubectl("create", "serviceaccount", "pod-check", "-n", release_namespace)
    # The kopf peering CRDs (the chart's crds/ folder) must exist for peering objects.
    cluster.kubectl("apply", "--server-side", "-f",
                    str(CHART / "crds" / "kopf-peering.yaml"))
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                    "crd/clusterkopfpeerings.kopf.dev", "crd/kopfpeerings.kopf.dev")
    try:
        for scenario, values in SCENARIOS.items():
            values = copy.deepcopy(values)
            if "watchNamespaces" in values:
                values["watchNamespaces"] = watched
            if "dashboards" in values:
                values["dashboards"]["namespace"] = release_namespace
            objects = [o for o in helm.template(values, workdir=tmp_path,
                                                namespace=release_namespace)
                       if not o["apiVersion"].startswith("monitoring.coreos.com/")]
            listing = json.dumps({"apiVersion": "v1", "kind": "List", "items": objects})
            result = cluster.kubectl("apply", "--dry-run=server", "--server-side",
                                     "--force-conflicts", "-f", "-", input=listing,
                                     check=False)
            assert result.returncode == 0, f"{scenario}: {result.stderr}"

            pod = pod_of(objects, release_namespace)
            created = cluster.kubectl("create", "--dry-run=server", "-f", "-",
                                      input=json.dumps(pod), check=False)
            assert created.returncode == 0, f"{scenario}: {created.stderr}"

        # The check has teeth: the same pod allowed to escalate privileges is refused.
        pod = pod_of(helm.template({}, workdir=tmp_path, namespace=release_namespace),
                     release_namespace)
        pod["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
        refused = cluster.kubectl("create", "--dry-run=server", "-f", "-",
                                  input=json.dumps(pod), check=False)
        assert refused.returncode != 0 and "allowPrivilegeEscalation" in refused.stderr
    finally:
        for ns in watched:
            cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def pod_of(objects: list[dict[str, Any]], namespace: str) -> dict[str, Any]:
    """The Pod the operator Deployment's template would create (under the pod-check
    ServiceAccount, which exists; the chart's own is only dry-run)."""
    (deployment,) = [o for o in objects if o["kind"] == "Deployment"]
    template = deployment["spec"]["template"]
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {**template["metadata"], "name": "operator-dry-run",
                         "namespace": namespace},
            "spec": {**template["spec"], "serviceAccountName": "pod-check"}}
