"""Many concurrent invocations share one token and one pool: checked at the emulator over TLS."""

from __future__ import annotations

import anyio
import pytest

from agentrun import AsyncClient
from agentrun._machine import State
from agentrun.emulator import Emulator, EmulatorSettings, Timing

pytestmark = pytest.mark.anyio


async def test_1000_concurrent_runs_one_token_request_bounded_pool() -> None:
    """1,000 concurrent runs on a cold cache, through a real ClientSecretCredential over TLS,
    all complete with their own answers, make exactly one token request and use at most the
    pool limit of connections. No duration is asserted: on a loaded machine the creates just
    wait longer for a connection."""
    settings = EmulatorSettings(
        timing=Timing(queue_delay=0.01, run_duration=0.05, delta_interval=0.001)
    )
    async with Emulator(settings, tls=True) as emu:
        assert emu.ca_path is not None
        async with AsyncClient(
            emu.endpoint,
            tenant_id=emu.tenant_id,
            client_id=emu.client_id,
            client_secret=emu.client_secret,
            authority=emu.authority,
            verify=str(emu.ca_path),
            pool_limit=50,
        ) as client:
            states: list[State] = []

            async def one(i: int) -> None:
                result = await client.run("asst_def456", f"What is {i} + 1?")
                assert str(i + 1) in result.text
                states.append(result.state)

            # Behaviour, not speed: every call waits for the pool within its own deadline (the
            # client's 600 s), however loaded the machine; this bound only stops a hang.
            with anyio.fail_after(900):
                async with anyio.create_task_group() as tg:
                    for i in range(1000):
                        tg.start_soon(one, i)
            stats = client.statistics()
        emu_stats = emu.stats()
    assert states.count(State.COMPLETED) == 1000
    assert emu_stats["tokens_issued"] == 1
    assert stats.token_requests == 1
    assert stats.connections_opened <= 50
    # The credential's own connection to the token endpoint is the only other one.
    assert emu_stats["peak_connections"] <= 51
    assert emu_stats["runs_created"] == 1000
