"""`AsyncClient` with Foundry Agents v2 agents (`name[:version]`) against the emulator's
Responses API over real sockets: requests per invocation (counted at the emulator),
continuity, modes, tools, errors, faults, cancellation and deadlines."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

import agentrun
from agentrun import AsyncClient
from agentrun._machine import State
from agentrun._results import RunFinished, TextDelta, ToolCallDelta
from agentrun.emulator import Emulator, EmulatorSettings, FaultRule, Timing, V2AgentSpec

pytestmark = pytest.mark.anyio

FAST = Timing(queue_delay=0.01, run_duration=0.03, delta_interval=0.001, cancel_delay=0.01)
SLOW = Timing(queue_delay=0.01, run_duration=60.0, delta_interval=0.001, cancel_delay=0.01)
SETTINGS = EmulatorSettings(
    timing=FAST,
    v2_agents=(V2AgentSpec(name="slow-agent", instructions="Take your time.", timing=SLOW),),
)
RESPONSES = "POST /openai/v1/responses"
CONVERSATIONS = "POST /openai/v1/conversations"


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(SETTINGS) as e:
        yield e


@pytest.fixture
async def client(emu: Emulator) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(emu.endpoint, api_key=emu.api_key) as c:
        yield c


def requests(emu: Emulator) -> dict[str, int]:
    """Requests per route the emulator answered so far (all statuses)."""
    return {route: sum(by.values()) for route, by in emu.stats()["requests"].items()}


async def settled(emu: Emulator) -> dict[str, Any]:
    """The stats once no response is active (bounded wait; the emulator may be loaded)."""
    with anyio.fail_after(20):
        while emu.stats()["active_responses"]:
            await anyio.sleep(0.02)
    return emu.stats()


async def test_streamed_continuation_is_one_request_and_a_first_turn_two(
    client: AsyncClient, emu: Emulator
) -> None:
    """A first streamed turn creates the conversation (1 request) and streams one response
    (1 request); continuing it is exactly one `POST /openai/v1/responses` at the emulator.
    The thread_id is the conversation id and the agent remembers the name."""
    first = await client.run("general-assistant", "My name is Ada.", mode="stream")
    assert first.state is State.COMPLETED and first.mode == "stream"
    assert first.thread_id.startswith("conv_") and first.run_id.startswith("resp_")
    assert requests(emu) == {CONVERSATIONS: 1, RESPONSES: 1}
    assert first.requests == 2
    second = await client.run(
        "general-assistant", "What is my name?", thread_id=first.thread_id, mode="stream"
    )
    assert second.text == "Your name is Ada."
    assert second.thread_id == first.thread_id and second.run_id != first.run_id
    assert requests(emu) == {CONVERSATIONS: 1, RESPONSES: 2}
    assert second.requests == 1
    assert second.usage is not None and second.usage.total_tokens == (
        second.usage.prompt_tokens + second.usage.completion_tokens
    )
    assert [t.state.value for t in second.history] == [
        "pending",
        "run_queued",
        "in_progress",
        "completed",
    ]


async def test_polled_invocation_uses_background_mode(client: AsyncClient, emu: Emulator) -> None:
    """Poll mode creates a background response (it is `queued` first) and polls it with GET;
    the reply comes from the final response, so nothing else is requested."""
    result = await client.run("math-tutor:1", "What is 25 * 4?", mode="poll")
    assert result.state is State.COMPLETED and "100" in result.text
    assert result.run is not None and result.run.raw["background"] is True
    assert State.RUN_QUEUED in [t.state for t in result.history]
    seen = requests(emu)
    polls = seen.pop("GET /openai/v1/responses/{response_id}")
    assert seen == {CONVERSATIONS: 1, RESPONSES: 1}
    assert result.requests == 2 + polls
    assert result.run is not None and result.run.assistant_id == "math-tutor:1"


async def test_stream_events_and_citations(client: AsyncClient) -> None:
    """`stream()` yields text deltas that join to the reply, an annotation in the shape the
    OpenAI mapping reads, state changes, and the result last."""
    text = ""
    annotations: list[Any] = []
    async with client.stream(
        "general-assistant", "Tell me about Oslo [emulator:cite=https://oslo.example]"
    ) as events:
        async for event in events:
            if isinstance(event, TextDelta):
                text += event.text
                annotations.extend(event.annotations)
            elif isinstance(event, RunFinished):
                result = event.result
    assert text == result.text and "Oslo" in text
    [ann] = annotations
    assert ann["url_citation"]["url"] == "https://oslo.example"
    assert result.messages[0].annotations[0]["url"] == "https://oslo.example"


@pytest.mark.parametrize("mode", ["stream", "poll"])
async def test_function_tool_round_trip(client: AsyncClient, mode: str) -> None:
    """A function call ends in `requires_action` with its call; the outputs go back on the
    conversation as a new response, which completes with the tool's result."""
    first = await client.run("weather-assistant", "Please get weather in Paris.", mode=mode)  # type: ignore[arg-type]
    assert first.state is State.REQUIRES_ACTION
    [call] = first.tool_calls
    assert call.type == "function" and call.name == "get_weather"
    assert '"Paris"' in call.arguments
    second = await client.run(
        "weather-assistant",
        thread_id=first.thread_id,
        tool_outputs={call.id: "18 C"},
        mode=mode,  # type: ignore[arg-type]
    )
    assert second.state is State.COMPLETED
    assert second.text == "Here is what I found: get_weather returned 18 C."
    assert second.thread_id == first.thread_id and second.run_id != first.run_id


async def test_tool_call_deltas_are_streamed(client: AsyncClient) -> None:
    """A streamed function call yields ToolCallDelta pieces whose arguments join to the call's."""
    deltas: list[ToolCallDelta] = []
    async with client.stream("weather-assistant", "Please get weather in Oslo.") as events:
        async for event in events:
            if isinstance(event, ToolCallDelta):
                deltas.append(event)
            elif isinstance(event, RunFinished):
                result = event.result
    assert deltas[0].name == "get_weather" and deltas[0].id == result.tool_calls[0].id
    assert "".join(d.arguments for d in deltas) == result.tool_calls[0].arguments


async def test_previous_response_id_chain(client: AsyncClient, emu: Emulator) -> None:
    """With `run_id` (the previous response) and input, a v2 invocation continues that
    response without a conversation: one request, and the agent remembers."""
    first = await client.run("general-assistant", "My name is Grace.")
    before = requests(emu)
    second = await client.run("general-assistant", "What is my name?", run_id=first.run_id)
    assert second.text == "Your name is Grace."
    assert requests(emu)[RESPONSES] == before[RESPONSES] + 1
    assert requests(emu)[CONVERSATIONS] == before[CONVERSATIONS]


async def test_agent_owned_options_fail_before_any_request(
    client: AsyncClient, emu: Emulator
) -> None:
    """`instructions`, `tools`, `temperature`, ... for a v2 agent raise BadRequestError
    (invalid_payload) and a bad agent name ConfigurationError, with nothing sent."""
    with pytest.raises(agentrun.BadRequestError) as info:
        await client.run("general-assistant", "Hi", instructions="Be brief", temperature=0.1)
    assert info.value.code == "invalid_payload"
    with pytest.raises(agentrun.ConfigurationError):
        await client.run("bad_name!", "Hi")
    with pytest.raises(agentrun.ConfigurationError):
        await client.run("-leading-hyphen", "Hi")
    assert emu.stats()["requests"] == {}


async def test_service_errors_map_like_classic(client: AsyncClient, emu: Emulator) -> None:
    """An unknown agent is NotFoundError (404); a failed response RunFailedError with its
    code; an incomplete one RunIncompleteError; a 429 with retry-after-ms is retried."""
    with pytest.raises(agentrun.NotFoundError):
        await client.run("no-such-agent", "Hi", thread_id=None)
    with pytest.raises(agentrun.RunFailedError) as failed:
        await client.run("general-assistant", "Hi [emulator:fail=rate_limit_exceeded]")
    assert failed.value.code == "rate_limit_exceeded"
    with pytest.raises(agentrun.RunIncompleteError) as incomplete:
        await client.run("general-assistant", "Tell me a story [emulator:incomplete]")
    assert incomplete.value.code == "max_output_tokens"
    emu.inject(FaultRule(route=RESPONSES, status=429, retry_after=0.05))
    ok = await client.run("general-assistant", "Hello")
    assert ok.state is State.COMPLETED
    assert emu.stats()["requests"][RESPONSES].get("429") == 1


@pytest.mark.parametrize("kind", ["stream_error", "fail_after_text"])
async def test_stream_faults_fail_the_invocation(
    client: AsyncClient, emu: Emulator, kind: str
) -> None:
    """A `stream_error` event or a response failing midway raises RunFailedError with the
    service's code, and leaves nothing running."""
    emu.inject(FaultRule(route=RESPONSES, kind=kind, after_events=2, code="server_error"))
    with pytest.raises(agentrun.RunFailedError) as info:
        await client.run("general-assistant", "Tell me about Bergen", mode="stream")
    assert info.value.code == "server_error"
    assert (await settled(emu))["active_responses"] == 0


@pytest.mark.parametrize("mode", ["stream", "poll"])
async def test_deadline_cancels_every_response(
    client: AsyncClient, emu: Emulator, mode: str
) -> None:
    """Many invocations of a slow agent in flight hit their deadline: each raises
    APITimeoutError and the emulator has 0 active responses left (foreground streams by
    closing the connection, background ones by POST .../cancel)."""
    n = 12

    async def one(i: int) -> None:
        with pytest.raises(agentrun.APITimeoutError):
            await client.run("slow-agent", f"Job {i}", mode=mode, timeout=1.5)  # type: ignore[arg-type]

    async with anyio.create_task_group() as tg:
        for i in range(n):
            tg.start_soon(one, i)
    stats = await settled(emu)
    assert stats["responses_created"] == n
    assert stats["responses_by_status"] == {"cancelled": n}


async def test_cancelling_the_caller_cancels_the_responses(
    client: AsyncClient, emu: Emulator
) -> None:
    """Cancelling callers (a task group's scope) mid-run leaves 0 active responses, streams
    and polls alike."""

    async def one(i: int) -> None:
        await client.run("slow-agent", f"Job {i}", mode="stream" if i % 2 else "poll")

    with anyio.move_on_after(10) as scope:
        async with anyio.create_task_group() as tg:
            for i in range(10):
                tg.start_soon(one, i)
            with anyio.fail_after(15):
                while emu.stats()["responses_created"] < 10:
                    await anyio.sleep(0.02)
            tg.cancel_scope.cancel()
    assert not scope.cancelled_caught
    stats = await settled(emu)
    assert stats["responses_by_status"] == {"cancelled": 10}


async def test_map_mixes_classic_and_v2(client: AsyncClient) -> None:
    """`map()` runs classic and v2 agents side by side through one client."""
    requests_ = [
        {"agent": "asst_def456", "input": "What is 2 + 2?", "key": "classic"},
        {"agent": "math-tutor", "input": "What is 3 + 3?", "key": "v2"},
    ]
    got = {}
    async with client.map(requests_, concurrency=2) as results:
        async for item in results:
            assert item.ok, item.error
            assert item.result is not None
            got[item.request.key] = item.result
    assert got["classic"].thread_id.startswith("thread_") and "4" in got["classic"].text
    assert got["v2"].thread_id.startswith("conv_") and "6" in got["v2"].text


async def test_multi_round_tool_loop_on_one_conversation(client: AsyncClient) -> None:
    """Two rounds of call -> output -> answer on one conversation: each round's call is new,
    each answer uses its own output, and every invocation is a response of its own."""
    thread: str | None = None
    run_ids = set()
    for city, weather in (("Paris", "18 C"), ("Rome", "25 C")):
        asked = await client.run(
            "weather-assistant", f"Please get weather in {city}.", thread_id=thread
        )
        thread = asked.thread_id
        [call] = asked.tool_calls
        assert f'"{city}"' in call.arguments
        answer = await client.run(
            "weather-assistant", thread_id=thread, tool_outputs={call.id: weather}
        )
        assert answer.text == f"Here is what I found: get_weather returned {weather}."
        run_ids.update((asked.run_id, answer.run_id))
    assert len(run_ids) == 4


async def test_a_response_without_a_conversation_echo_stays_on_the_conversation() -> None:
    """A service that answers `conversation: null` in its response objects (the Responses
    API allows it) is still driven on the invocation's conversation: a replay server of the
    recorded shapes, over a real socket."""
    from aiohttp import web

    def snapshot(status: str, output: list[Any]) -> dict[str, Any]:
        return {"id": "resp_r1", "object": "response", "status": status, "output": output,
                "conversation": None, "created_at": 1770000000}  # fmt: skip

    message = {
        "type": "message",
        "id": "msg_r1",
        "role": "assistant",
        "status": "completed",
        "content": [{"type": "output_text", "text": "Hello from v2.", "annotations": []}],
    }
    events = [
        {"type": "response.created", "response": snapshot("in_progress", [])},
        {"type": "response.completed", "response": snapshot("completed", [message])},
    ]
    seen: list[dict[str, Any]] = []

    async def conversations(request: web.Request) -> web.Response:
        return web.json_response({"id": "conv_r1", "object": "conversation"})

    async def responses(request: web.Request) -> web.StreamResponse:
        seen.append(await request.json())
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for seq, event in enumerate(events):
            data = json.dumps({**event, "sequence_number": seq})
            await resp.write(f"event: {event['type']}\ndata: {data}\n\n".encode())
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_post("/api/projects/p/openai/v1/conversations", conversations)
    app.router.add_post("/api/projects/p/openai/v1/responses", responses)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with AsyncClient(f"http://127.0.0.1:{port}/api/projects/p", api_key="k") as client:
            result = await client.run("replayed-agent", "Hi", mode="stream")
    finally:
        await runner.cleanup()
    assert result.state is State.COMPLETED and result.text == "Hello from v2."
    assert result.thread_id == "conv_r1" and result.run_id == "resp_r1"
    assert seen[0]["conversation"] == "conv_r1" and seen[0]["stream"] is True
