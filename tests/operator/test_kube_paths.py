"""The pure parts of the client boundary: REST paths and error wrapping."""

from __future__ import annotations

import json

from modelloop_operator.errors import ConflictError, KubeError, NotFoundError, UnprocessableError
from modelloop_operator.kube import JOBS, PODS, Resource, _wrap


def test_rest_paths() -> None:
    tj = Resource("modelloop.dev", "v1alpha1", "trainingjobs", "TrainingJob")
    assert tj.path(namespace="ns", name="x", subresource="status") == \
        "/apis/modelloop.dev/v1alpha1/namespaces/ns/trainingjobs/x/status"
    assert JOBS.path(namespace="ns") == "/apis/batch/v1/namespaces/ns/jobs"
    assert PODS.path(namespace=None) == "/api/v1/pods"
    assert PODS.api_version == "v1" and tj.api_version == "modelloop.dev/v1alpha1"


def _api_error(status: int, body: object) -> KubeError:
    return _wrap(status=status, reason="reason", body=json.dumps(body).encode(),
                 what="patch TrainingJob ns/x")


def test_errors_are_typed_and_keep_the_servers_message() -> None:
    conflict = _api_error(409, {"message": "object was modified", "reason": "Conflict"})
    assert isinstance(conflict, ConflictError) and conflict.retryable
    assert str(conflict) == "patch TrainingJob ns/x: object was modified (409)"
    invalid = _api_error(422, {"message": "field is immutable"})
    assert isinstance(invalid, UnprocessableError) and not invalid.retryable
    assert isinstance(_api_error(404, {}), NotFoundError)


def test_a_non_json_body_still_wraps() -> None:
    wrapped = _wrap(status=503, reason="Service Unavailable", body=b"<html>", what="list")
    assert type(wrapped) is KubeError and wrapped.retryable and wrapped.status == 503
