"""Typed errors shared by every layer of the operator.

Three families, because the handlers must react to each differently:

* :class:`InvalidSpecError` - the user's object can never work as written (a bad URI that
  slipped past admission, a name too long for pod hostnames). Retrying is pointless: the
  reconciler reports it in status and the handler maps it to ``kopf.PermanentError``.
* :class:`WaitingError` - something outside our control is not ready yet (a conflicting
  write, an object owned by someone else). The handler maps it to
  ``kopf.TemporaryError`` with the given delay, so kopf retries without a stack trace.
* :class:`KubeError` and its subclasses - the API server said no. They are raised only
  by :mod:`modelloop_operator.kube`, which wraps each answer exactly once, so callers
  never deal with HTTP.

:class:`CredentialsError` is apart: the operator cannot find or use its credentials
(:mod:`modelloop_operator.kubeconfig`), which only a person can fix.
"""

from __future__ import annotations


class OperatorError(Exception):
    """Base of every error the operator raises on purpose."""


class InvalidSpecError(OperatorError):
    """The spec cannot be run as written; a person has to change it."""


class WaitingError(OperatorError):
    """A condition outside the operator must change first; retry after ``delay`` seconds."""

    def __init__(self, message: str, *, delay: float) -> None:
        super().__init__(message)
        self.delay = delay


class CredentialsError(OperatorError):
    """No usable way to reach or authenticate to the API server (kubeconfig, service
    account, exec plugin); the message says what to fix."""


class KubeError(OperatorError):
    """The API server rejected a request, or could not be reached (``status`` 0)."""

    def __init__(self, message: str, *, status: int, reason: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason

    @property
    def retryable(self) -> bool:
        """Whether the same request may succeed later without anyone changing it.

        Conflicts (409), throttling (429), server errors (5xx) and transport failures
        (status 0) are transient; the other 4xx answers are about the request itself.
        """
        return self.status in (0, 409, 429) or self.status >= 500


class NotFoundError(KubeError):
    """404: the object (or its kind) does not exist."""


class ConflictError(KubeError):
    """409: a stale resourceVersion, or the object already exists."""


class UnprocessableError(KubeError):
    """422: the object failed validation (e.g. a change to an immutable field)."""


class ForbiddenError(KubeError):
    """403: RBAC or an admission policy (e.g. PodSecurity) refused the request."""
