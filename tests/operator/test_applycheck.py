"""A restarted operator skips an apply only when the object itself shows the manifest
applied by us: values contained, no field of ours dropped, our Apply entry present."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from modelloop_operator.applycheck import already_applied, contains, owned_within

MANAGER = "modelloop-operator"
MANIFEST: dict[str, Any] = {
    "apiVersion": "v1", "kind": "Service",
    "metadata": {"name": "svc", "namespace": "team",
                 "labels": {"app.kubernetes.io/managed-by": "modelloop"},
                 "ownerReferences": [{"apiVersion": "modelloop.dev/v1alpha1",
                                      "kind": "ModelDeployment", "name": "m", "uid": "u1",
                                      "controller": True, "blockOwnerDeletion": True}]},
    "spec": {"selector": {"app": "m"},
             "ports": [{"name": "http", "port": 8080, "targetPort": 8080}]},
}
# What the API server answers after applying MANIFEST (defaults and managedFields added).
FIELDS: dict[str, Any] = {
    "f:metadata": {"f:labels": {"f:app.kubernetes.io/managed-by": {}},
                   "f:ownerReferences": {"k:{\"uid\":\"u1\"}": {}}},
    "f:spec": {"f:ports": {"k:{\"port\":8080,\"protocol\":\"TCP\"}": {
        ".": {}, "f:name": {}, "f:port": {}, "f:targetPort": {}}},
        "f:selector": {}},
}


def live() -> dict[str, Any]:
    obj = copy.deepcopy(MANIFEST)
    obj["metadata"].update(resourceVersion="7", uid="s1", managedFields=[
        {"manager": "kube-controller-manager", "operation": "Update", "apiVersion": "v1",
         "time": "2026-11-28T10:00:01Z", "fieldsType": "FieldsV1",
         "fieldsV1": {"f:metadata": {"f:annotations": {"f:note": {}}}}},
        {"manager": MANAGER, "operation": "Apply", "apiVersion": "v1",
         "time": "2026-11-28T10:00:00Z", "fieldsType": "FieldsV1",
         "fieldsV1": copy.deepcopy(FIELDS)}])
    obj["metadata"]["annotations"] = {"note": "someone else's"}
    obj["spec"].update(clusterIP="10.0.0.9", type="ClusterIP", sessionAffinity="None")
    obj["spec"]["ports"][0]["protocol"] = "TCP"
    obj["status"] = {"loadBalancer": {}}
    return obj


def test_an_object_as_we_applied_it_needs_no_apply() -> None:
    assert already_applied(MANIFEST, live(), manager=MANAGER)


@pytest.mark.parametrize("change", [
    "port changed", "port added", "label removed", "label changed", "selector changed",
    "owner changed", "not ours", "being deleted", "bool as int",
])
def test_any_difference_is_applied(change: str) -> None:
    obj = live()
    meta, spec = obj["metadata"], obj["spec"]
    if change == "port changed":
        spec["ports"][0]["targetPort"] = 9090
    elif change == "port added":
        spec["ports"].append({"name": "grpc", "port": 7070, "protocol": "TCP"})
    elif change == "label removed":
        del meta["labels"]["app.kubernetes.io/managed-by"]
    elif change == "label changed":
        meta["labels"]["app.kubernetes.io/managed-by"] = "someone"
    elif change == "selector changed":
        spec["selector"] = {"app": "other"}
    elif change == "owner changed":
        meta["ownerReferences"][0]["controller"] = False
    elif change == "not ours":
        meta["managedFields"] = meta["managedFields"][:1]
    elif change == "being deleted":
        meta["deletionTimestamp"] = "2026-11-28T11:00:00Z"
    elif change == "bool as int":
        meta["ownerReferences"][0]["controller"] = 1
    assert not already_applied(MANIFEST, obj, manager=MANAGER)


def test_a_field_we_no_longer_set_is_an_apply_that_removes_it() -> None:
    obj = live()
    fields = obj["metadata"]["managedFields"][1]["fieldsV1"]
    fields["f:metadata"]["f:annotations"] = {"f:old": {}}
    obj["metadata"]["annotations"]["old"] = "v"
    assert not already_applied(MANIFEST, obj, manager=MANAGER)


def test_contains_compares_lists_whole_and_maps_by_key() -> None:
    assert contains({"a": [{"x": 1}]}, {"a": [{"x": 1, "y": 2}], "b": 3})
    assert not contains({"a": [{"x": 1}]}, {"a": [{"x": 1}, {"x": 2}]})
    assert not contains({"a": {}}, {})
    assert not contains({"a": 1}, {"a": "1"})
    assert contains({"a": None}, {"a": None})


def test_owned_fields_are_compared_as_map_paths() -> None:
    assert owned_within(FIELDS, MANIFEST)
    assert not owned_within({"f:spec": {"f:type": {}}}, MANIFEST)
    assert owned_within({"f:spec": {".": {}, "f:ports": {"k:{}": {"f:anything": {}}}}},
                        MANIFEST)
