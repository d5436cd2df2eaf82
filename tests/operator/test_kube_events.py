"""Events are best effort, like client-go's recorder: a refused Event is logged and never
stops the reconcile that posts it (status already says the same)."""

from __future__ import annotations

from typing import Any, cast

import pytest
from modelloop_operator.errors import ForbiddenError, KubeError
from modelloop_operator.kube import KubeClient

INVOLVED = {"apiVersion": "modelloop.dev/v1alpha1", "kind": "ModelDeployment",
            "metadata": {"name": "bbc", "namespace": "team", "uid": "u1"}}


class RecordingClient(KubeClient):
    def __init__(self, error: KubeError | None = None) -> None:
        super().__init__(transport=cast(Any, None))
        self.error = error
        self.sent: list[dict[str, Any]] = []

    async def _request(self, method: str, path: str, *, what: str,
                       query: list[tuple[str, str]] | None = None, body: Any = None,
                       content_type: str | None = None, **_: Any) -> Any:
        if self.error is not None:
            raise self.error
        self.sent.append(body)
        return body


async def test_an_event_is_posted_with_the_involved_object() -> None:
    kube = RecordingClient()
    assert await kube.post_event(involved=INVOLVED, type_="Warning", reason="Degraded",
                                 message="drift")
    [event] = kube.sent
    assert event["involvedObject"]["uid"] == "u1"
    assert (event["type"], event["reason"], event["message"]) == ("Warning", "Degraded", "drift")


async def test_a_refused_event_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    kube = RecordingClient(ForbiddenError("namespace team is being terminated (403)",
                                          status=403))
    assert not await kube.post_event(involved=INVOLVED, type_="Normal", reason="Ready",
                                     message="serving")
    assert "could not post event Ready on team/bbc" in caplog.text
