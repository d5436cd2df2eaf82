"""The operator's one door to Prometheus: instant queries over the HTTP API.

A client layer beside :mod:`.kube`: the monitoring reconciler asks it for numbers, the
pure analysis (:mod:`.monitor`) decides what they mean. Every failure (unreachable,
timeout, a PromQL error, an answer that is not one number) becomes a
:class:`PrometheusError` with Prometheus' own message, which the analysis turns into an
Inconclusive check rather than a crash or, worse, a healthy one.

Values arrive as strings (``"0.25"``, ``"NaN"``, ``"+Inf"``); they are returned as floats,
NaN and infinities included, because only the analysis knows that ``0/0`` means "no
traffic".
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Final

import aiohttp

from .errors import OperatorError

QUERY_TIMEOUT_SECONDS: Final = 10.0
"""Limit on one query, client side; Prometheus gets the same limit server side."""


class PrometheusError(OperatorError):
    """A query could not be answered with a number."""


@dataclass(frozen=True)
class Sample:
    """One series of an instant vector (or the scalar, with no labels)."""

    labels: Mapping[str, str]
    value: float


def _value(pair: Any, *, query: str) -> float:
    try:
        return float(pair[1])
    except (TypeError, ValueError, IndexError) as exc:
        raise PrometheusError(f"unreadable sample {pair!r} for {query!r}") from exc


def parse_result(body: Mapping[str, Any], *, query: str) -> list[Sample]:
    """The samples of a ``/api/v1/query`` answer (vector or scalar)."""
    if body.get("status") != "success":
        raise PrometheusError(
            f"{body.get('errorType') or 'error'}: {body.get('error') or 'no reason given'}"
            f" (query {query!r})")
    data = body.get("data") or {}
    kind, result = data.get("resultType"), data.get("result")
    if kind == "vector" and isinstance(result, list):
        return [Sample(labels=dict(item.get("metric") or {}),
                       value=_value(item.get("value"), query=query)) for item in result]
    if kind == "scalar":
        return [Sample(labels={}, value=_value(result, query=query))]
    raise PrometheusError(f"query {query!r} returned a {kind}, not a number; "
                          f"use an instant vector or scalar expression")


class PrometheusClient:
    """Instant queries against one Prometheus server. Open with :meth:`open`."""

    def __init__(self, *, session: aiohttp.ClientSession, url: str,
                 timeout: float = QUERY_TIMEOUT_SECONDS) -> None:
        self._session = session
        self._endpoint = url.rstrip("/") + "/api/v1/query"
        self._timeout = timeout

    @classmethod
    @asynccontextmanager
    async def open(cls, url: str, *, query_seconds: float = QUERY_TIMEOUT_SECONDS
                   ) -> AsyncIterator[PrometheusClient]:
        """A client with its own connection pool, closed on exit (one evaluation's
        worth of queries: evaluations are minutes apart, a pool would sit idle)."""
        limit = aiohttp.ClientTimeout(total=query_seconds)
        async with aiohttp.ClientSession(timeout=limit) as session:
            yield cls(session=session, url=url, timeout=query_seconds)

    async def query(self, promql: str) -> list[Sample]:
        """Evaluate ``promql`` now. POST keeps long queries out of URL limits."""
        form = {"query": promql, "timeout": f"{self._timeout:g}s"}
        try:
            async with self._session.post(self._endpoint, data=form) as response:
                try:
                    body = await response.json(content_type=None)
                except ValueError as exc:
                    raise PrometheusError(
                        f"HTTP {response.status} from {self._endpoint}: not JSON") from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise PrometheusError(f"Prometheus unreachable at {self._endpoint}: "
                                  f"{exc!r}") from exc
        if not isinstance(body, dict):
            raise PrometheusError(f"HTTP {response.status} from {self._endpoint}: "
                                  f"unexpected answer")
        return parse_result(body, query=promql)

    async def value(self, promql: str) -> float | None:
        """The one number ``promql`` returns; None when it returns no series. Several
        series are an error: the check must aggregate (``max``, ``sum``) to be judged."""
        samples = await self.query(promql)
        if not samples:
            return None
        if len(samples) > 1:
            shown = ", ".join(str(dict(s.labels)) for s in samples[:3])
            raise PrometheusError(f"query returned {len(samples)} series ({shown}...), "
                                  f"one number needed: aggregate it, e.g. max(...)")
        return samples[0].value
