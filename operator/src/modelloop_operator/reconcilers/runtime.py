"""What every reconcile needs from the running operator, passed explicitly (no globals):
configuration, the API client, metrics, and per-object locks."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from ..config import OperatorConfig
from ..kube import KubeClient
from ..metrics import OperatorMetrics


class ObjectLocks:
    """One asyncio lock per object, so that a watch event of a child, the object's own
    event and the resync timer never reconcile the same object concurrently (which
    could count one failed attempt twice). Locks vanish with their last holder."""

    def __init__(self) -> None:
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = (
            weakref.WeakValueDictionary())

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        """Hold the lock of ``key`` for the duration of the block."""
        lock = self._locks.get(key)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[key] = lock
        async with lock:
            yield


@dataclass
class Runtime:
    """The operator's long-lived collaborators, created at startup."""

    config: OperatorConfig
    kube: KubeClient
    metrics: OperatorMetrics
    locks: ObjectLocks = field(default_factory=ObjectLocks)
