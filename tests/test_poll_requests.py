"""Poll mode against the real emulator over 127.0.0.1: how many requests a polled call takes.

Behaviour, not speed: the counts come from each result's `requests` and the emulator's own
request counters, and the bounds leave room for a loaded machine (late timers spread the runs'
ends, which costs a follower a second poll now and then).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import pytest

from agentrun import AsyncClient
from agentrun._machine import State
from agentrun.emulator import Emulator, EmulatorSettings, Timing

pytestmark = pytest.mark.anyio

#: Runs of ~0.4 s: long enough that polling before the end is a real risk.
TIMING = Timing(queue_delay=0.02, run_duration=0.4, delta_interval=0.02)


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(EmulatorSettings(timing=TIMING)) as e:
        yield e


async def test_a_polled_batch_takes_about_three_requests_per_call(emu: Emulator) -> None:
    """After one warm-up call, a batch of 20 polled calls averages at most 3.5 requests each
    (create, the poll that sees the run ended, the reply; a few probes poll more), and every
    call completes with its reply."""
    async with AsyncClient(emu.endpoint, api_key=emu.api_key, mode="poll") as client:
        warm = await client.run("asst_abc123", "Tell me about item -1.")
        assert warm.state is State.COMPLETED
        results = []

        async def one(i: int) -> None:
            results.append(await client.run("asst_abc123", f"Tell me about item {i}."))

        before = emu.stats()["requests_total"]
        async with anyio.create_task_group() as tg:
            for i in range(20):
                tg.start_soon(one, i)
        sent = emu.stats()["requests_total"] - before
    assert len(results) == 20
    assert all(r.state is State.COMPLETED and r.text for r in results)
    assert all(r.mode == "poll" for r in results)
    per_call = sum(r.requests for r in results) / 20
    assert 3.0 <= per_call <= 3.5
    assert sent == sum(r.requests for r in results)


async def test_lone_polled_calls_take_few_requests(emu: Emulator) -> None:
    """Calls one after the other (nothing to share the end with): the first few are probes
    that poll finely to learn the runs' length (at most 16 requests each: 4-13 measured, the
    most on a loaded machine, whose late timers lengthen the runs past what was learned);
    once five are known, the next average at most 3.5 requests each."""
    async with AsyncClient(emu.endpoint, api_key=emu.api_key, mode="poll") as client:
        counts = []
        for i in range(12):
            r = await client.run("asst_abc123", f"Tell me about item {i}.")
            assert r.state is State.COMPLETED
            counts.append(r.requests)
    assert max(counts[1:6]) <= 16
    assert sum(counts[6:]) / len(counts[6:]) <= 3.5


async def test_auto_after_a_streamed_call_polls_a_slower_burst_as_little_as_poll_does(
    emu: Emulator,
) -> None:
    """`auto` streams a lone call (it fits the pool) and polls a burst larger than the pool.
    The streamed call teaches the agent's schedule one exact run; the burst's runs take twice
    as long (as a service under load does: here by the emulator's sleep directive). Taken as
    a lower bound for a burst that much larger, the lone run does not make the followers poll
    before the burst's runs end and every 10% after: at most 4.5 requests per polled call
    (3.4-4.1 on a loaded machine; 6.3 when the lone run's length was trusted; the rest are
    the burst's few probes)."""
    async with AsyncClient(emu.endpoint, api_key=emu.api_key, mode="auto", pool_limit=10) as client:
        warm = await client.run("asst_abc123", "Tell me about item -1.")
        assert warm.state is State.COMPLETED and warm.mode == "stream"
        results = []

        async def one(i: int) -> None:
            prompt = f"[emulator:sleep=0.9] Tell me about item {i}."
            results.append(await client.run("asst_abc123", prompt))

        async with anyio.create_task_group() as tg:
            for i in range(40):
                tg.start_soon(one, i)
    assert len(results) == 40
    assert all(r.state is State.COMPLETED and r.text for r in results)
    assert all(r.mode == "poll" for r in results)
    assert sum(r.requests for r in results) / 40 <= 4.5
