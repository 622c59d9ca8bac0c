"""Run lifetime: `expires_at` is created_at + the configured lifetime (600 s by default), and a
run still waiting for tool outputs then ends `expired`."""

from __future__ import annotations

import anyio
import pytest

import agentrun
from agentrun import AsyncClient
from agentrun.emulator import Emulator, EmulatorSettings, Timing

pytestmark = pytest.mark.anyio

TOOL = {
    "type": "function",
    "function": {
        "name": "lookup",
        "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
    },
}


async def test_default_lifetime_is_600_seconds() -> None:
    """Without configuration, an active run's expires_at is its created_at + 600."""
    async with (
        Emulator(EmulatorSettings(timing=Timing(queue_delay=0.01, run_duration=0.02))) as emu,
        AsyncClient(emu.endpoint, api_key=emu.api_key) as client,
    ):
        result = await client.run("asst_abc123", "Please call lookup", tools=[TOOL])
        assert result.state is agentrun.State.REQUIRES_ACTION
        assert result.run is not None
        raw = result.run.raw
        assert raw["expires_at"] == raw["created_at"] + 600


async def test_run_waiting_for_tool_outputs_expires() -> None:
    """Past its lifetime, a run in requires_action ends expired; outputs are refused then."""
    settings = EmulatorSettings(timing=Timing(queue_delay=0.01, run_duration=0.02), run_lifetime=1)
    async with Emulator(settings) as emu, AsyncClient(emu.endpoint, api_key=emu.api_key) as c:
        asked = await c.run("asst_abc123", "Please call lookup", tools=[TOOL])
        assert asked.state is agentrun.State.REQUIRES_ACTION
        with anyio.fail_after(5):
            while not [r for r in emu.runs() if r["status"] == "expired"]:
                await anyio.sleep(0.05)
        with pytest.raises(agentrun.BadRequestError, match="no run waiting"):
            await c.run(
                "asst_abc123",
                thread_id=asked.thread_id,
                tool_outputs={asked.tool_calls[0].id: "42"},
            )
