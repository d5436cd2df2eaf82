"""Reconciles woken by a child, a source or a resync run in the background.

kopf hands each object's events to one worker, in order, and keeps each event (a whole
Job, pod or Deployment body) until the handler for it returns. When a Job event's
handler waited for its owner's reconcile slot, every later event of that Job queued
behind it, body and all: at 1,000 TrainingJobs and 500 ModelDeployments created at once,
thousands of bodies waited (bench/operator_scale.py: 437 MiB peak). Such a handler now
only submits ``(reconcile, namespace, name, trigger)`` and returns; the reconcile reads
everything afresh when its slot comes (:mod:`.slots`), as in controller-runtime's work
queue.

The object's own changes (create, update, resume) still wait for their reconcile in the
handler: kopf writes its bookkeeping annotations when that handler returns, and letting
every new object's handler return at once sent those writes to the API server all
together (it answered many with 429).

A background reconcile retries the way kopf retries a handler: a conflict (409) at once,
up to :data:`CONFLICT_RETRIES` times; waiting (:class:`.errors.WaitingError`) after its
delay; a retryable API error after :data:`API_RETRY_SECONDS`; a 403 after
:data:`FORBIDDEN_RETRY_SECONDS`; anything unexpected after :data:`ERROR_RETRY_SECONDS`
(kopf's default). An invalid spec or a 422 is logged and not retried: status says so, and
only a new spec (an update, which reconciles in the handler) helps.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable
from typing import Final

from .errors import ConflictError, ForbiddenError, InvalidSpecError, KubeError, WaitingError
from .reconcilers.runtime import Runtime
from .slots import Priority, ReconcileSlots, Trigger

logger = logging.getLogger(__name__)

Reconcile = Callable[..., Awaitable[object]]

CONFLICT_RETRIES: Final = 3
"""A 409 on status means the object changed under us (often kopf's own annotation
write): re-read and reconcile again at once instead of waiting for the next event."""

FORBIDDEN_RETRY_SECONDS: Final = 30.0
"""Delay before retrying a reconcile the API server refused with 403: RBAC is fixed
without restarting the operator, and an API server that has just restarted refuses
requests until its authorizer caches are synced."""

API_RETRY_SECONDS: Final = 5.0
"""Delay before retrying after a retryable API error (unreachable, 429, 5xx)."""

ERROR_RETRY_SECONDS: Final = 60.0
"""Delay before retrying after an unexpected exception (a bug): kopf's default."""


def retry_delay(exc: BaseException) -> float | None:
    """Seconds after which a reconcile that raised ``exc`` is retried; None: never (only
    a change of the object helps)."""
    if isinstance(exc, WaitingError):
        return float(exc.delay)
    if isinstance(exc, InvalidSpecError):
        return None
    if isinstance(exc, ForbiddenError):
        return FORBIDDEN_RETRY_SECONDS
    if isinstance(exc, KubeError):
        return API_RETRY_SECONDS if exc.retryable else None
    return ERROR_RETRY_SECONDS


class ReconcileRunner:
    """Runs reconciles through :class:`ReconcileSlots`: awaited (:meth:`run`) or in the
    background (:meth:`submit`)."""

    def __init__(self, *, runtime: Runtime, slots: ReconcileSlots) -> None:
        self.runtime = runtime
        self.slots = slots
        self._tasks: set[asyncio.Task[None]] = set()
        self._timers: set[asyncio.TimerHandle] = set()
        self._closed = False

    def _duplicate(self, key: Hashable, priority: Priority, trigger: Trigger) -> bool:
        # A reconcile of this object is on its way and will read everything.
        return self.slots.queued(key, priority) or (trigger is Trigger.TIMER
                                                    and self.slots.pending(key))

    async def run(self, reconcile: Reconcile, *, namespace: str, name: str,
                  trigger: Trigger) -> None:
        """Reconcile now (when a slot is free) and raise what it raises; nothing when a
        reconcile of the object is already waiting."""
        key: Hashable = (reconcile, namespace, name)
        priority = trigger.priority
        if self._duplicate(key, priority, trigger):
            return
        async with self.slots.hold(key, priority):
            await self._attempt(reconcile, namespace=namespace, name=name, trigger=trigger)

    def submit(self, reconcile: Reconcile, *, namespace: str, name: str,
               trigger: Trigger) -> bool:
        """Queue a reconcile in the background; returns whether it was queued (not a
        duplicate of one already waiting, and the runner not closed)."""
        key: Hashable = (reconcile, namespace, name)
        priority = trigger.priority
        if self._closed or self._duplicate(key, priority, trigger):
            return False
        self.slots.enter(key, priority)  # counted as queued before the task even starts
        task = asyncio.get_running_loop().create_task(
            self._background(reconcile, key=key, priority=priority, namespace=namespace,
                             name=name, trigger=trigger))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _background(self, reconcile: Reconcile, *, key: Hashable, priority: Priority,
                          namespace: str, name: str, trigger: Trigger) -> None:
        try:
            async with self.slots.entered(key, priority):
                await self._attempt(reconcile, namespace=namespace, name=name, trigger=trigger)
        except Exception as exc:  # logged and, if it can pass, retried: like kopf
            delay = retry_delay(exc)
            _log_failure(exc, what=f"{namespace}/{name} ({trigger})", delay=delay)
            if delay is not None and not self._closed:
                self._retry_later(delay, reconcile, namespace=namespace, name=name,
                                  trigger=trigger)

    async def _attempt(self, reconcile: Reconcile, *, namespace: str, name: str,
                       trigger: Trigger) -> None:
        for attempt in range(CONFLICT_RETRIES):
            try:
                await reconcile(runtime=self.runtime, namespace=namespace, name=name,
                                trigger=trigger)
                return
            except ConflictError:
                if attempt == CONFLICT_RETRIES - 1:
                    raise

    def _retry_later(self, delay: float, reconcile: Reconcile, *, namespace: str, name: str,
                     trigger: Trigger) -> None:
        def fire() -> None:
            self._timers.discard(handle)
            self.submit(reconcile, namespace=namespace, name=name, trigger=trigger)
        handle = asyncio.get_running_loop().call_later(delay, fire)
        self._timers.add(handle)

    @property
    def in_flight(self) -> int:
        """Background reconciles submitted and not finished (waiting or running)."""
        return len(self._tasks)

    async def drain(self) -> None:
        """Wait until every background reconcile has finished (retries scheduled for
        later are not waited for)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        """Stop: no new work, pending retries dropped, background reconciles cancelled
        (each is idempotent; the next start of the operator redoes what was cut short)."""
        self._closed = True
        for handle in self._timers:
            handle.cancel()
        self._timers.clear()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _log_failure(exc: Exception, *, what: str, delay: float | None) -> None:
    then = f"retrying in {delay:g} s" if delay is not None else "not retried"
    if isinstance(exc, WaitingError):
        logger.info("%s: %s; %s", what, exc, then)
    elif isinstance(exc, ForbiddenError):
        logger.warning("%s: %s; %s (check the operator's RBAC if this repeats)", what, exc,
                       then)
    elif isinstance(exc, KubeError | InvalidSpecError):
        logger.warning("%s: %s; %s", what, exc, then)
    else:
        logger.error("%s: reconcile failed; %s", what, then, exc_info=exc)
