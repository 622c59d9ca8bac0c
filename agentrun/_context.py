"""`DriverContext`: what the run driver needs of the client that owns it, as one value.

`AsyncClient` builds one at the end of its `__init__`; every `RunStream` of the client gets it
instead of the client itself. It holds the transport, the protocol behind the seam, telemetry,
the poll schedules learned per agent (with the runs sleeping on them), the run counters behind
`statistics()`, and the tasks that must outlive a cancelled caller (creates already sent,
cleanups), which `aclose()` waits for.
"""

from __future__ import annotations

import asyncio
import weakref
from collections import Counter, deque
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import attrs

from agentrun import _otel
from agentrun._machine import RunMachine, State
from agentrun._protocol import Invocation, Mode, RunProtocol
from agentrun._results import percentiles
from agentrun._schedule import PollGroup
from agentrun._transport import Transport

if TYPE_CHECKING:
    from agentrun._driver import RunStream

__all__ = ["DriverContext"]

_T = TypeVar("_T")
#: How many durations per state `statistics()` keeps (the most recent).
_STATE_SAMPLES = 10_000


@attrs.define(eq=False)
class DriverContext:
    """What the driver needs of the client that owns it, and the state its invocations share.

    Built once by `AsyncClient`: the `transport` (connection pool, tokens, retries), the
    `protocol` behind the seam, `telemetry`, the `pool_limit` (auto mode streams while every
    invocation in flight fits in it), the `poll_groups` (schedule and sleeping runs) per agent,
    the run counters behind `statistics()`, and the tasks that must outlive a cancelled caller
    (`detach`).
    """

    transport: Transport
    protocol: RunProtocol
    telemetry: _otel.Telemetry
    pool_limit: int
    poll_groups: dict[str, PollGroup] = attrs.Factory(dict)
    closing: bool = False
    in_flight: int = 0
    streams_in_flight: int = 0
    #: Invocations starting (waiting one event-loop turn before choosing their mode).
    arriving: int = 0
    started: int = 0
    by_state: Counter[str] = attrs.Factory(Counter)
    state_time: dict[State, deque[float]] = attrs.Factory(dict)
    # Work that must outlive a cancelled caller: creates already sent, and cleanups.
    tasks: set[asyncio.Task[Any]] = attrs.Factory(set)
    live: weakref.WeakSet[RunStream] = attrs.Factory(weakref.WeakSet)
    #: Further protocols by `RunProtocol.name` (`protocol` serves every other invocation).
    protocols: dict[str, RunProtocol] = attrs.Factory(dict)

    def protocol_for(self, inv: Invocation) -> RunProtocol:
        """The protocol that serves `inv` (`Invocation.protocol`)."""
        return self.protocols.get(inv.protocol, self.protocol)

    def detach(self, coro: Coroutine[Any, Any, _T]) -> asyncio.Task[_T]:
        """Run `coro` in a task the context owns (and `AsyncClient.aclose` waits for)."""
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def wait_tasks(self) -> None:
        """Wait until every owned task finished (shield this from cancellation)."""
        while self.tasks:
            await asyncio.wait(set(self.tasks))

    def poll_group(self, agent: str) -> PollGroup:
        """The poll schedule of `agent` and its runs sleeping between polls (one per agent)."""
        group = self.poll_groups.get(agent)
        if group is None:
            group = self.poll_groups[agent] = PollGroup()
        return group

    def pick_mode(self, mode: Mode) -> Literal["stream", "poll"]:
        if mode != "auto":
            return mode
        # A streamed run holds a pooled connection for its whole life. Stream while every
        # invocation in flight, this one and those starting beside it included, can hold its
        # own connection; beyond that, poll (runs already streaming go on streaming), so a
        # large batch shares the pool between short requests instead of queueing behind its
        # own streams (docs/benchmarks.md has the measurements behind this rule).
        wanted = self.in_flight + self.arriving + 1
        return "stream" if wanted <= max(1, self.pool_limit) else "poll"

    def begin(self, mode: Mode) -> Literal["stream", "poll"]:
        chosen = self.pick_mode(mode)
        self.in_flight += 1
        self.started += 1
        if chosen == "stream":
            self.streams_in_flight += 1
        return chosen

    def end(self, m: RunMachine | None, mode: str) -> None:
        self.in_flight -= 1
        if mode == "stream":
            self.streams_in_flight -= 1
        if m is None:
            return
        self.by_state[m.state.value] += 1
        for state, seconds in m.durations().items():
            bucket = self.state_time.get(state)
            if bucket is None:
                bucket = self.state_time[state] = deque(maxlen=_STATE_SAMPLES)
            bucket.append(seconds)

    def state_percentiles(self) -> dict[str, dict[str, float]]:
        """Seconds per state (p50, p90, p99, ...) over the recent invocations."""
        return {s.value: percentiles(list(v)) for s, v in self.state_time.items()}
