"""Reconcile slots: bounded, most urgent first, oldest first within a priority, and
cancellation never loses a slot."""

from __future__ import annotations

import asyncio

import kopf
import pytest
from modelloop_operator.slots import Priority, ReconcileSlots, Trigger


async def assert_a_slot_is_free(slots: ReconcileSlots) -> None:
    """A new reconcile gets a slot at once: none was lost."""
    async with asyncio.timeout(1):
        async with slots.hold("next", Priority.RESYNC):
            pass


def test_priorities_of_triggers() -> None:
    first = (Trigger.CREATE, Trigger.UPDATE, Trigger.RESUME)
    assert [t.priority for t in first] == [Priority.FIRST] * 3
    children = (Trigger.JOB, Trigger.POD, Trigger.DEPLOYMENT, Trigger.SOURCE)
    assert [t.priority for t in children] == [Priority.CHILD] * 4
    assert Trigger.TIMER.priority is Priority.RESYNC
    assert {t.priority for t in Trigger} == set(Priority)  # every trigger is placed


def test_kopfs_reasons_are_triggers() -> None:
    assert [Trigger.of_reason(r) for r in kopf.Reason if r.value in set(Trigger)] == [
        Trigger.CREATE, Trigger.UPDATE, Trigger.RESUME]
    assert Trigger.of_reason(kopf.Reason.CREATE) == "create"  # the metric's label value


def test_a_limit_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        ReconcileSlots(0)


async def test_a_freed_slot_goes_to_the_most_urgent_then_the_oldest_waiter() -> None:
    slots = ReconcileSlots(1)
    order: list[str] = []
    release = asyncio.Event()

    async def run(key: str, priority: Priority) -> None:
        async with slots.hold(key, priority):
            order.append(key)
            if key == "busy":
                await release.wait()

    busy = asyncio.create_task(run("busy", Priority.FIRST))
    await asyncio.sleep(0)
    waiters = [asyncio.create_task(run(key, priority)) for key, priority in (
        ("timer-1", Priority.RESYNC), ("child-1", Priority.CHILD), ("new-1", Priority.FIRST),
        ("child-2", Priority.CHILD), ("new-2", Priority.FIRST))]
    await asyncio.sleep(0)
    assert slots.waiting == 5 and slots.pending("new-2") and not slots.pending("other")
    release.set()
    await asyncio.gather(busy, *waiters)
    assert order == ["busy", "new-1", "new-2", "child-1", "child-2", "timer-1"]
    assert slots.waiting == 0 and not slots.pending("busy")


async def test_never_more_than_the_limit_at_once() -> None:
    slots = ReconcileSlots(3)
    running = peak = 0

    async def run(i: int) -> None:
        nonlocal running, peak
        async with slots.hold(i, Priority(i % 3)):
            running += 1
            peak = max(peak, running)
            await asyncio.sleep(0.001)
            running -= 1

    await asyncio.gather(*(run(i) for i in range(50)))
    assert peak == 3


async def test_cancelled_waiters_and_holders_give_their_slot_back() -> None:
    slots = ReconcileSlots(1)
    gate = asyncio.Event()

    async def hold_until_gate() -> None:
        async with slots.hold("a", Priority.FIRST):
            await gate.wait()

    holder = asyncio.create_task(hold_until_gate())
    await asyncio.sleep(0)
    waiter = asyncio.create_task(hold_until_gate())
    await asyncio.sleep(0)
    waiter.cancel()  # cancelled while waiting
    holder.cancel()  # cancelled while holding
    for task in (holder, waiter):
        with pytest.raises(asyncio.CancelledError):
            await task
    assert not slots.pending("a")
    await assert_a_slot_is_free(slots)


async def test_a_slot_handed_to_a_waiter_cancelled_before_it_ran_is_not_lost() -> None:
    slots = ReconcileSlots(1)
    waiter: asyncio.Task[None] | None = None

    async def hold() -> None:
        async with slots.hold("k", Priority.CHILD):
            await asyncio.sleep(0)

    async def hold_then_cancel_the_waiter() -> None:
        async with slots.hold("k", Priority.CHILD):
            await asyncio.sleep(0.01)
        # The release just handed the slot to the waiter, which has not resumed yet.
        assert waiter is not None
        waiter.cancel()

    holder = asyncio.create_task(hold_then_cancel_the_waiter())
    await asyncio.sleep(0)
    waiter = asyncio.create_task(hold())
    await holder
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert not slots.pending("k")
    await assert_a_slot_is_free(slots)


async def test_queued_knows_waiting_reconciles_by_priority_but_not_running_ones() -> None:
    slots = ReconcileSlots(1)
    gate = asyncio.Event()

    async def hold(key: str, priority: Priority) -> None:
        async with slots.hold(key, priority):
            await gate.wait()

    running = asyncio.create_task(hold("run", Priority.FIRST))
    await asyncio.sleep(0)
    waiting = asyncio.create_task(hold("wait", Priority.CHILD))
    await asyncio.sleep(0)
    assert not slots.queued("run", Priority.RESYNC) and slots.pending("run")
    assert slots.queued("wait", Priority.CHILD) and slots.queued("wait", Priority.RESYNC)
    assert not slots.queued("wait", Priority.FIRST)  # a more urgent trigger still queues
    gate.set()
    await asyncio.gather(running, waiting)
    assert not slots.queued("wait", Priority.RESYNC) and not slots.pending("wait")
