"""PoolGate: admission to the connection pool, requests about existing runs first."""

from __future__ import annotations

import asyncio

import pytest

from agentrun._gate import PoolGate

pytestmark = pytest.mark.anyio


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_admits_up_to_the_limit_then_queues() -> None:
    """Requests beyond the limit wait; a release admits the next one."""
    gate = PoolGate(2)
    await gate.acquire(False)
    await gate.acquire(False)
    third = asyncio.ensure_future(gate.acquire(False))
    await _settle()
    assert not third.done() and gate.waiting == 1
    gate.release()
    await _settle()
    assert third.done() and gate.in_use == 2 and gate.waiting == 0
    gate.release()
    gate.release()
    assert gate.in_use == 0


async def test_urgent_waiters_go_before_new_work_each_line_in_order() -> None:
    """Polls of existing runs overtake queued creates; within a line, first come first served."""
    gate = PoolGate(1)
    await gate.acquire(False)
    order: list[str] = []

    async def take(name: str, urgent: bool) -> None:
        await gate.acquire(urgent)
        order.append(name)
        gate.release()

    tasks = [
        asyncio.ensure_future(take(name, urgent))
        for name, urgent in [
            ("create1", False),
            ("poll1", True),
            ("create2", False),
            ("poll2", True),
        ]
    ]
    await _settle()
    assert order == []
    gate.release()
    await asyncio.gather(*tasks)
    assert order == ["poll1", "poll2", "create1", "create2"]
    assert gate.in_use == 0


async def test_a_waiter_cancelled_in_line_is_skipped_and_holds_nothing() -> None:
    """A cancelled waiter never gets a slot; the next live waiter does."""
    gate = PoolGate(1)
    await gate.acquire(False)
    first = asyncio.ensure_future(gate.acquire(False))
    second = asyncio.ensure_future(gate.acquire(False))
    await _settle()
    first.cancel()
    await _settle()
    assert first.cancelled() and gate.waiting == 1
    gate.release()
    await _settle()
    assert second.done() and gate.in_use == 1
    gate.release()
    assert gate.in_use == 0


async def test_a_waiter_cancelled_as_its_turn_comes_passes_the_slot_on() -> None:
    """The slot handed to a waiter cancelled before it resumed goes to the next waiter."""
    gate = PoolGate(1)
    await gate.acquire(False)
    first = asyncio.ensure_future(gate.acquire(False))
    second = asyncio.ensure_future(gate.acquire(True))
    await _settle()
    gate.release()  # hands the slot to `second` (urgent) ...
    second.cancel()  # ... which is cancelled before it runs
    await _settle()
    assert second.cancelled()
    assert first.done() and not first.cancelled()
    assert gate.in_use == 1
    gate.release()
    assert gate.in_use == 0


async def test_limit_zero_means_no_limit() -> None:
    """`limit=0` (an unbounded pool) never makes a request wait."""
    gate = PoolGate(0)
    for _ in range(1000):
        await gate.acquire(False)
    assert gate.in_use == 1000 and gate.waiting == 0
    for _ in range(1000):
        gate.release()
    assert gate.in_use == 0


def test_a_negative_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="limit"):
        PoolGate(-1)


async def test_a_cancel_finds_a_slot_when_every_regular_one_is_held() -> None:
    """Streams holding every regular slot cannot make a run's cancel wait: it takes the slot
    kept for cancels; a second cancel at that moment waits first in line."""
    gate = PoolGate(2)
    await gate.acquire(False)
    await gate.acquire(False)
    assert await asyncio.wait_for(gate.acquire_for_cancel(), 1) is True
    second = asyncio.ensure_future(gate.acquire_for_cancel())
    create = asyncio.ensure_future(gate.acquire(False))
    await _settle()
    assert not second.done() and not create.done()
    gate.release(reserved=True)  # the kept slot goes back to the reserve, not to a waiter
    await _settle()
    assert not second.done()
    gate.release()  # a regular slot: the waiting cancel goes before the create
    await _settle()
    assert second.done() and second.result() is False and not create.done()
    gate.release()
    await _settle()
    assert create.done()
    gate.release()
    gate.release()
    assert gate.in_use == 0


async def test_a_cancel_takes_a_regular_slot_when_one_is_free() -> None:
    gate = PoolGate(2)
    await gate.acquire(False)
    assert await gate.acquire_for_cancel() is False
    assert gate.in_use == 2


async def test_finishing_waiters_go_before_urgent_ones_and_those_before_the_rest() -> None:
    """Three lines, each first come first served: finishing (a reply's lists, cancels), then
    urgent (polls), then new work (creates)."""
    gate = PoolGate(1)
    await gate.acquire(False)
    order: list[str] = []

    async def wait(name: str, urgent: bool, finishing: bool = False) -> None:
        await gate.acquire(urgent, finishing=finishing)
        order.append(name)

    tasks = [
        asyncio.ensure_future(wait("create", False)),
        asyncio.ensure_future(wait("poll1", True)),
        asyncio.ensure_future(wait("list1", True, finishing=True)),
        asyncio.ensure_future(wait("poll2", True)),
        asyncio.ensure_future(wait("list2", True, finishing=True)),
    ]
    await _settle()
    for _ in tasks:
        gate.release()
        await _settle()
    assert order == ["list1", "list2", "poll1", "poll2", "create"]
    assert gate.in_use == 1
    gate.release()
    assert gate.in_use == 0
