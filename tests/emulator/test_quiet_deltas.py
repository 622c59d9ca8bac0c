"""A run nobody streams: the emulator adds its text deltas in batches, not one wake per delta.

Over real sockets on 127.0.0.1, with agentrun's client in poll and stream mode. The count of
the emulator's timer sleeps is read by wrapping `asyncio.sleep` as the emulator's run driver
sees it (the standard library's, not our code).
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest

from agentrun import AsyncClient
from agentrun._machine import State
from agentrun.emulator import Emulator, EmulatorSettings, Timing, _model, _runs

pytestmark = pytest.mark.anyio

TIMING = Timing(queue_delay=0.01, run_duration=0.05, delta_interval=0.005)
PROMPT = "Tell me about item 7 of the benchmark."


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Every `asyncio.sleep` the emulator's run driver awaits, in seconds."""
    seen: list[float] = []
    real = asyncio.sleep

    async def counted(delay: float, *args: Any) -> Any:
        seen.append(delay)
        return await real(delay, *args)

    monkeypatch.setattr(_runs.asyncio, "sleep", counted)
    return seen


async def _one(mode: str, sleeps: list[float]) -> tuple[str, list[float], dict[str, Any]]:
    async with Emulator(EmulatorSettings(timing=TIMING)) as emu:
        async with AsyncClient(emu.endpoint, api_key=emu.api_key, mode=mode) as client:
            sleeps.clear()
            result = await client.run("asst_abc123", PROMPT)
            assert result.state is State.COMPLETED
            taken = [s for s in sleeps if s < 1.0]  # not the emulator's housekeeping
        (run,) = emu.runs()
    return result.text, taken, run


async def test_a_polled_run_adds_its_deltas_in_batches_and_ends_on_time(
    sleeps: list[float],
) -> None:
    """Polled: the text is the same as streamed, the delta phase wakes once per 10 deltas
    instead of once per delta, and sleeps as long in total (the run ends when it would
    have). Streamed: one wake per delta, as before."""
    streamed, stream_sleeps, _ = await _one("stream", sleeps)
    polled, poll_sleeps, run = await _one("poll", sleeps)
    assert polled == streamed
    n = len(_model.split_deltas(streamed))
    assert n > 20
    # queue_delay, run_duration, then the deltas after the first.
    assert len(stream_sleeps) == 2 + (n - 1)
    assert len(poll_sleeps) == 2 + math.ceil((n - 1) / 10)
    assert sum(poll_sleeps) == pytest.approx(sum(stream_sleeps))
    phase = TIMING.queue_delay + TIMING.run_duration + (n - 1) * TIMING.delta_interval
    assert run["completed_at_ms"] - run["created_at_ms"] >= 1000 * phase - 1
