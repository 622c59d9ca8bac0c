"""The official azure-ai-agents SDK (aio) against the emulator, over TLS.

Authentication is azure-identity's aio ClientSecretCredential getting its token from the
emulator's token endpoint. Every client and credential is closed (pytest runs with -W error,
so a leaked aiohttp session fails the test).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest
from azure.ai.agents.models import (
    AsyncAgentEventHandler,
    AsyncFunctionTool,
    AsyncToolSet,
    ListSortOrder,
    MessageDeltaChunk,
    MessageRole,
    RunStatus,
    ThreadMessageOptions,
    ThreadRun,
)
from azure.core.exceptions import ClientAuthenticationError, ResourceNotFoundError

from agentrun.emulator import FaultRule

pytestmark = pytest.mark.anyio

POLL = 0.05
TOKEN_ROUTE_KEY = "POST /{tenant}/oauth2/v2.0/token"

Emu = Any
MakeClient = Callable[..., Any]


async def get_stock_price(symbol: str) -> str:
    """Get the latest price of a stock.

    :param symbol: The ticker symbol.
    :return: The price as JSON.
    """
    await asyncio.sleep(0)
    return json.dumps({"symbol": symbol, "price": 123.45})


async def test_create_thread_and_process_run(
    emulator_tls: Emu, make_aio_client: MakeClient
) -> None:
    """aio create_thread_and_process_run completes with the arithmetic answer, against the
    math tutor agent."""
    client = make_aio_client(emulator_tls)
    run = await client.create_thread_and_process_run(
        agent_id="asst_def456",
        thread={"messages": [{"role": "user", "content": "What is 25 * 4?"}]},
        polling_interval=POLL,
    )
    assert run.status == RunStatus.COMPLETED
    text = await client.messages.get_last_message_text_by_role(run.thread_id, MessageRole.AGENT)
    assert "100" in text.text.value


async def test_token_endpoint_hit_once_for_concurrent_calls(
    emulator_tls: Emu, make_aio_client: MakeClient
) -> None:
    """Twenty concurrent SDK calls on a cold client make one token request: the SDK's
    bearer policy single-flights azure-identity, and the emulator's token serves them all."""
    client = make_aio_client(emulator_tls)
    threads = await asyncio.gather(*(client.threads.create() for _ in range(20)))
    assert len({t.id for t in threads}) == 20
    for thread in threads[:3]:
        assert (await client.threads.get(thread.id)).id == thread.id
    stats = emulator_tls.stats()
    assert stats["tokens_issued"] == 1
    assert stats["requests"][TOKEN_ROUTE_KEY] == {"200": 1}
    assert stats["requests"]["POST /threads"] == {"200": 20}


async def test_stream_with_event_handler(emulator_tls: Emu, make_aio_client: MakeClient) -> None:
    """aio runs.stream with an AsyncAgentEventHandler: deltas concatenate to the final
    message, and the handler sees the run complete."""

    class Handler(AsyncAgentEventHandler[None]):
        def __init__(self) -> None:
            super().__init__()
            self.deltas: list[str] = []
            self.statuses: list[str] = []

        async def on_message_delta(self, delta: MessageDeltaChunk) -> None:
            self.deltas.append(delta.text)

        async def on_thread_run(self, run: ThreadRun) -> None:
            self.statuses.append(run.status)

    client = make_aio_client(emulator_tls)
    thread = await client.threads.create()
    await client.messages.create(thread_id=thread.id, role="user", content="Describe a forest")
    handler = Handler()
    async with await client.runs.stream(
        thread_id=thread.id, agent_id="asst_abc123", event_handler=handler
    ) as stream:
        await stream.until_done()
    final = await client.messages.get_last_message_text_by_role(thread.id, MessageRole.AGENT)
    assert len(handler.deltas) > 1
    assert "".join(handler.deltas) == final.text.value
    assert handler.statuses[-1] == "completed"


async def test_auto_function_calls_stream_and_poll(
    emulator_tls: Emu, make_aio_client: MakeClient
) -> None:
    """aio auto function calls: an async function tool runs on the chained stream and in
    create_and_process; both runs complete with replies that use the function's output."""
    client = make_aio_client(emulator_tls)
    functions = AsyncFunctionTool({get_stock_price})
    toolset = AsyncToolSet()
    toolset.add(functions)
    client.enable_auto_function_calls(toolset)
    agent = await client.create_agent(
        model="gpt-4o", name="stocks", instructions="Use tools.", toolset=toolset
    )
    thread = await client.threads.create()
    await client.messages.create(
        thread_id=thread.id, role="user", content="Use get_stock_price for 'MSFT'"
    )
    types: list[str] = []
    async with await client.runs.stream(thread_id=thread.id, agent_id=agent.id) as stream:
        async for event_type, _data, _ in stream:
            types.append(event_type)
    assert types.count("done") == 2
    assert types[types.index("thread.run.requires_action") + 1] == "done"
    assert types[-2:] == ["thread.run.completed", "done"]
    reply = await client.messages.get_last_message_text_by_role(thread.id, MessageRole.AGENT)
    assert "123.45" in reply.text.value

    await client.messages.create(
        thread_id=thread.id, role="user", content="Now call get_stock_price for 'NVDA'"
    )
    run = await client.runs.create_and_process(
        thread_id=thread.id, agent_id=agent.id, polling_interval=POLL
    )
    assert run.status == RunStatus.COMPLETED
    reply = await client.messages.get_last_message_text_by_role(thread.id, MessageRole.AGENT)
    assert "NVDA" in reply.text.value


async def test_message_paging(emulator_tls: Emu, make_aio_client: MakeClient) -> None:
    """aio paging walks every page in both orders."""
    client = make_aio_client(emulator_tls)
    contents = [f"line {i}" for i in range(5)]
    thread = await client.threads.create(
        messages=[ThreadMessageOptions(role="user", content=c) for c in contents]
    )
    asc = [
        m.content[0].text.value
        async for m in client.messages.list(
            thread_id=thread.id, limit=2, order=ListSortOrder.ASCENDING
        )
    ]
    assert asc == contents
    desc = [
        m.content[0].text.value
        async for m in client.messages.list(
            thread_id=thread.id, limit=2, order=ListSortOrder.DESCENDING
        )
    ]
    assert desc == contents[::-1]


async def test_errors(emulator_tls: Emu, make_aio_client: MakeClient) -> None:
    """aio: 404 -> ResourceNotFoundError with the error code; a wrong client secret fails
    in azure-identity with ClientAuthenticationError."""
    client = make_aio_client(emulator_tls)
    with pytest.raises(ResourceNotFoundError) as info:
        await client.runs.get(thread_id="thread_missing", run_id="run_missing")
    assert info.value.status_code == 404
    assert info.value.error.code

    bad = make_aio_client(emulator_tls, secret="wrong-secret")
    with pytest.raises(ClientAuthenticationError, match="invalid_client"):
        await bad.threads.create()
    assert emulator_tls.stats()["requests"][TOKEN_ROUTE_KEY] == {"200": 1, "401": 1}


async def test_dropped_connection_on_get_is_retried(
    emulator_tls: Emu, make_aio_client: MakeClient
) -> None:
    """A connection closed before any response on a GET is retried by the SDK and succeeds."""
    client = make_aio_client(emulator_tls)
    thread = await client.threads.create()
    emulator_tls.inject(FaultRule(route="GET /threads/{thread_id}", kind="drop"))
    assert (await client.threads.get(thread.id)).id == thread.id
    # the dropped attempt is counted with status "0"
    assert emulator_tls.stats()["requests"]["GET /threads/{thread_id}"] == {"0": 1, "200": 1}


async def test_seeded_fault_rates(
    emulator_factory: Callable[..., Emu], make_aio_client: MakeClient
) -> None:
    """Settings-level fault rates: with rate_run_failed=1 every run the SDK processes ends
    failed with a last_error code the service uses."""
    from agentrun.emulator import EmulatorSettings, Faults

    emu = emulator_factory(EmulatorSettings(faults=Faults(rate_run_failed=1.0)), tls=True)
    client = make_aio_client(emu)
    for _ in range(2):
        run = await client.create_thread_and_process_run(
            agent_id="asst_abc123",
            thread={"messages": [{"role": "user", "content": "hello"}]},
            polling_interval=POLL,
        )
        assert run.status == RunStatus.FAILED
        assert run.last_error["code"] in ("server_error", "rate_limit_exceeded")
    assert emu.stats()["runs_by_status"] == {"failed": 2}


async def test_timing_settings_seen_by_client(
    emulator_factory: Callable[..., Emu], make_aio_client: MakeClient
) -> None:
    """Per-agent timing is what a polling client observes: the run is still queued, then
    in progress, before it completes, and the recorded phases last at least as configured."""
    from agentrun.emulator import AgentSpec, EmulatorSettings, Timing

    slow = AgentSpec(
        id="asst_slow",
        name="slow",
        timing=Timing(queue_delay=0.3, run_duration=0.3, delta_interval=0.0),
    )
    emu = emulator_factory(EmulatorSettings(agents=(slow,)), tls=True)
    client = make_aio_client(emu)
    run = await client.create_thread_and_run(
        agent_id="asst_slow", thread={"messages": [{"role": "user", "content": "hi"}]}
    )
    seen = [run.status]
    while seen[-1] not in ("completed", "failed"):
        await asyncio.sleep(0.05)
        seen.append((await client.runs.get(thread_id=run.thread_id, run_id=run.id)).status)
    assert seen[0] == "queued"
    assert "in_progress" in seen
    assert seen[-1] == "completed"
    [record] = emu.runs()
    assert record["started_at_ms"] - record["created_at_ms"] >= 300
    assert record["completed_at_ms"] - record["started_at_ms"] >= 300
