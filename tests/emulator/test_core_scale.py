"""Scale: one emulator holds 10,000 concurrent in-flight runs and shuts down cleanly."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from agentrun.emulator import Emulator, EmulatorSettings, Timing

pytestmark = pytest.mark.anyio

N = 10_000


async def test_ten_thousand_concurrent_runs() -> None:
    """10,000 runs created over HTTP are all in flight at once (peak_active_runs == N), their
    threads answer, and leaving the context cancels every run task without warnings."""
    settings = EmulatorSettings(timing=Timing(queue_delay=0.05, run_duration=30.0))
    async with Emulator(settings) as emu:
        connector = aiohttp.TCPConnector(limit=100)
        headers = {"Authorization": f"Bearer {emu.api_key}"}
        async with aiohttp.ClientSession(headers=headers, connector=connector) as session:
            url = emu.endpoint + "/threads/runs?api-version=v1"
            gate = asyncio.Semaphore(100)

            async def create(i: int) -> str:
                body = {
                    "assistant_id": "asst_abc123",
                    "thread": {"messages": [{"role": "user", "content": f"What is {i} + 1?"}]},
                }
                async with gate, session.post(url, json=body) as resp:
                    assert resp.status == 200
                    return str((await resp.json())["status"])

            statuses = await asyncio.gather(*(create(i) for i in range(N)))
            assert set(statuses) == {"queued"}
            stats = emu.stats()
            assert stats["runs_created"] == N
            assert stats["active_runs"] == N
            assert stats["peak_active_runs"] == N
            assert len(emu.runs()) == N
        state = emu.state
    assert not state.engine.tasks
