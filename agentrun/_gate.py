"""Admission to the connection pool, with the requests about runs that exist first.

aiohttp's connector queues every request that finds its pool full in one first-come line. When
a batch starts thousands of invocations at once, the creates of the last ones fill that line,
and the polls and reply requests of runs that are already going wait behind them: at 10,000
invocations on a pool of 100, a poll waited 8–10 s for a connection (benchmarks/analysis.md,
"Poll schedule"), so finished runs were noticed many seconds late. `PoolGate` admits at most
`limit` requests to the pool and serves its waiters in three lines, each first come first
served: *finishing* requests (a run's message and step lists, which build the reply of a run
seen ended, and cancels), then the other *urgent* ones (about a run that exists: polls), then
requests that start new work (creates). Finishing first is the classic rule of serving the
jobs nearest completion first: when a burst's runs end together, the replies of the runs
already seen ended do not wait behind polls of runs that may still be going (at 1,000 polled
invocations on a pool of 100, the reply's list waited ~0.25 s in the first-come line:
benchmarks/analysis.md, "Poll lag at 1,000"). A request admitted here finds a free connection
in aiohttp's pool (both have the same limit), so aiohttp's own line stays empty.

A run's cancel must not wait behind streams: with a small pool, streams of other invocations
can hold every connection for minutes, longer than a cleanup may take (`CANCEL_GRACE`), and the
run would be left going. So one more connection is kept for cancels (`acquire_for_cancel`): a
cancel that finds every regular slot taken uses it (the connector's limit is `limit + 1`).

A waiter cancelled in line is skipped when its turn comes; a waiter cancelled just as its turn
came passes the slot on, so no slot is lost. Pure asyncio (the transport is aiohttp, so asyncio,
already): one future per request that has to wait, nothing per request that does not.
"""

from __future__ import annotations

import asyncio
import collections

__all__ = ["PoolGate"]


class PoolGate:
    """At most `limit` requests at once (0: no limit); finishing waiters go first, then urgent.

    `acquire(urgent, finishing=...)` waits for a slot (cancellable; nothing is held after a
    cancel), and every
    successful `acquire` must be matched by one `release()`; `acquire_for_cancel()` returns
    whether it took the slot kept for cancels, to be given back with `release(reserved=True)`.
    """

    __slots__ = ("_in_use", "_limit", "_lines", "_reserve_in_use")

    #: Connections kept for cancels beyond `limit` (the connector's limit is `limit + RESERVE`).
    RESERVE = 1

    def __init__(self, limit: int) -> None:
        if limit < 0:
            raise ValueError(f"limit must be >= 0 (0 means no limit), got {limit}")
        self._limit = limit
        self._in_use = 0
        self._reserve_in_use = 0
        # Index 0: finishing (a reply's lists, cancels), 1: urgent (a run that exists), 2: new
        # work. Cancelled waiters stay in their line until their turn comes (skipped then), so
        # that a cancel costs no O(n) removal.
        self._lines: tuple[collections.deque[asyncio.Future[None]], ...] = (
            collections.deque(),
            collections.deque(),
            collections.deque(),
        )

    @property
    def in_use(self) -> int:
        """Requests admitted and not yet released."""
        return self._in_use

    @property
    def waiting(self) -> int:
        """Requests waiting in line (cancelled ones not counted)."""
        return sum(1 for line in self._lines for fut in line if not fut.done())

    async def acquire(self, urgent: bool, *, finishing: bool = False) -> None:
        """Wait for a slot: `finishing` requests first, then `urgent` ones, then the others,
        each in arrival order."""
        # A free slot means nobody alive is in line: a release hands its slot to the first
        # live waiter before it frees it.
        if self._limit == 0 or self._in_use < self._limit:
            self._in_use += 1
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._lines[0 if finishing else 1 if urgent else 2].append(fut)
        try:
            await fut
        except BaseException:
            if fut.done() and not fut.cancelled():
                # Handed a slot just as this waiter was cancelled: pass it on.
                self.release()
            else:
                fut.cancel()  # skipped when its turn comes
            raise

    async def acquire_for_cancel(self) -> bool:
        """A slot for a run's cancel: a regular one if free, else the one kept for cancels,
        else the first place in the finishing line. Returns whether the kept slot was taken."""
        if self._limit == 0 or self._in_use < self._limit:
            self._in_use += 1
            return False
        if self._reserve_in_use < self.RESERVE:
            self._reserve_in_use += 1
            return True
        await self.acquire(True, finishing=True)
        return False

    def release(self, reserved: bool = False) -> None:
        """Give a slot back: to the first live waiter (finishing line first, then urgent),
        else to the pool.
        `reserved`: the slot kept for cancels (`acquire_for_cancel` returned True)."""
        if reserved:
            self._reserve_in_use -= 1
            return
        if self._limit == 0:
            self._in_use -= 1
            return
        for line in self._lines:
            while line:
                fut = line.popleft()
                if not fut.done():
                    fut.set_result(None)  # the slot changes hands; `in_use` stays
                    return
        self._in_use -= 1
