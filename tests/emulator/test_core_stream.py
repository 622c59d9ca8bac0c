"""SSE streaming over real sockets: exact byte framing and event order of every stream kind."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from agentrun.emulator import AgentSpec, Emulator, EmulatorSettings, FaultRule, Timing

pytestmark = pytest.mark.anyio

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"location": {"type": "string"}},
            "required": ["location"],
        },
    },
}
SETTINGS = EmulatorSettings(
    timing=Timing(queue_delay=0.01, run_duration=0.02, delta_interval=0.001, cancel_delay=0.02),
    agents=(
        AgentSpec(id="asst_tools", name="weather", tools=(WEATHER,)),
        AgentSpec(
            id="asst_paced",
            name="paced",
            timing=Timing(queue_delay=0.01, run_duration=0.01, delta_interval=0.05),
        ),
        AgentSpec(
            id="asst_slow",
            name="slow",
            timing=Timing(queue_delay=0.01, run_duration=5.0, cancel_delay=0.02),
        ),
    ),
)
TEXT_RUN_HEAD = [
    "thread.run.created",
    "thread.run.queued",
    "thread.run.in_progress",
    "thread.run.step.created",
    "thread.run.step.in_progress",
    "thread.message.created",
    "thread.message.in_progress",
]
TEXT_RUN_TAIL = [
    "thread.message.completed",
    "thread.run.step.completed",
    "thread.run.completed",
    "done",
]


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(SETTINGS) as emulator:
        yield emulator


@pytest.fixture
async def session(emu: Emulator) -> AsyncIterator[aiohttp.ClientSession]:
    headers = {"Authorization": f"Bearer {emu.api_key}"}
    async with aiohttp.ClientSession(headers=headers) as s:
        yield s


def parse_frames(raw: bytes) -> list[tuple[str, Any]]:
    """Parse an SSE body strictly the way the official SDK needs it, asserting the framing."""
    assert raw.endswith(b"event: done\ndata: [DONE]\n\n"), raw[-200:]
    assert b"\r" not in raw
    frames = raw.split(b"\n\n")
    assert frames[-1] == b""
    out = []
    for frame in frames[:-1]:
        lines = frame.split(b"\n")
        assert len(lines) == 2, frame
        assert lines[0].startswith(b"event: "), frame
        assert lines[1].startswith(b"data: "), frame
        event = lines[0][len(b"event: ") :].decode()
        data = lines[1][len(b"data: ") :].decode()
        out.append((event, data if event == "done" else json.loads(data)))
    assert out[-1] == ("done", "[DONE]")
    return out


async def post_stream(
    session: aiohttp.ClientSession, url: str, body: dict[str, Any]
) -> list[tuple[str, Any]]:
    async with session.post(url, json=body, params={"api-version": "v1"}) as resp:
        assert resp.status == 200
        assert resp.content_type == "text/event-stream"
        return parse_frames(await resp.read())


async def new_thread(session: aiohttp.ClientSession, emu: Emulator, text: str) -> str:
    body = {"messages": [{"role": "user", "content": text}]}
    async with session.post(emu.endpoint + "/threads?api-version=v1", json=body) as resp:
        return str((await resp.json())["id"])


def deltas_text(frames: list[tuple[str, Any]]) -> str:
    return "".join(
        d["delta"]["content"][0]["text"].get("value", "")
        for e, d in frames
        if e == "thread.message.delta"
    )


async def test_text_run_stream_framing_and_order(
    session: aiohttp.ClientSession, emu: Emulator
) -> None:
    """create-run with stream:true: exact frames, the reference's event order, one delta per
    word that joins into the completed message, run statuses matching their events."""
    tid = await new_thread(session, emu, "What is 25 * 4?")
    frames = await post_stream(
        session,
        f"{emu.endpoint}/threads/{tid}/runs",
        {"assistant_id": "asst_abc123", "stream": True},
    )
    events = [e for e, _ in frames]
    n = events.count("thread.message.delta")
    assert events == TEXT_RUN_HEAD + ["thread.message.delta"] * n + TEXT_RUN_TAIL
    reply = "25 * 4 = 100. The answer is 100."
    assert n == len(reply.split()) + 1  # "answer" comes in two sub-word deltas
    assert deltas_text(frames) == reply
    data = dict(frames)
    assert data["thread.message.completed"]["content"][0]["text"]["value"] == reply
    assert data["thread.run.created"]["status"] == "queued"
    assert data["thread.run.in_progress"]["status"] == "in_progress"
    completed = data["thread.run.completed"]
    assert completed["status"] == "completed"
    assert completed["usage"]["total_tokens"] > 0
    delta = data["thread.message.delta"]
    assert delta["object"] == "thread.message.delta"
    assert delta["id"] == data["thread.message.created"]["id"]
    step = data["thread.run.step.completed"]
    assert step["step_details"]["message_creation"]["message_id"] == delta["id"]
    assert emu.runs()[0]["stream"] is True
    assert emu.runs()[0]["first_delta_at_ms"] is not None


async def test_thread_and_run_stream_starts_with_thread_created(
    session: aiohttp.ClientSession, emu: Emulator
) -> None:
    """POST /threads/runs with stream:true: thread.created first, then the text-run events."""
    body = {
        "assistant_id": "asst_abc123",
        "stream": True,
        "thread": {"messages": [{"role": "user", "content": "Hello"}]},
    }
    frames = await post_stream(session, f"{emu.endpoint}/threads/runs", body)
    events = [e for e, _ in frames]
    assert events[0] == "thread.created"
    assert events[1:8] == TEXT_RUN_HEAD
    assert events[-4:] == TEXT_RUN_TAIL
    thread = frames[0][1]
    assert thread["object"] == "thread"
    assert frames[1][1]["thread_id"] == thread["id"]


async def test_tool_run_stream_then_submit_stream(
    session: aiohttp.ClientSession, emu: Emulator
) -> None:
    """A tool run's stream ends requires_action + done; the submit_tool_outputs stream starts
    with the completed tool step (with outputs), then queued, in_progress, the reply, done."""
    tid = await new_thread(session, emu, "What does get_weather say in Rome?")
    frames = await post_stream(
        session,
        f"{emu.endpoint}/threads/{tid}/runs",
        {"assistant_id": "asst_tools", "stream": True},
    )
    events = [e for e, _ in frames]
    assert events == [
        "thread.run.created",
        "thread.run.queued",
        "thread.run.in_progress",
        "thread.run.step.created",
        "thread.run.step.in_progress",
    ] + ["thread.run.step.delta"] * (len(events) - 7) + [
        "thread.run.requires_action",
        "done",
    ]
    assert frames[3][1]["step_details"]["tool_calls"] == []
    assert frames[4][1]["step_details"]["tool_calls"] == []
    first, rest = frames[5][1], [f[1] for f in frames[6:-2]]
    call = frames[-2][1]["required_action"]["submit_tool_outputs"]["tool_calls"][0]
    assert first["delta"]["step_details"]["tool_calls"][0]["id"] == call["id"]
    assert first["delta"]["step_details"]["tool_calls"][0]["function"]["arguments"] == ""
    assert len(rest) > 2
    assert (
        "".join(r["delta"]["step_details"]["tool_calls"][0]["function"]["arguments"] for r in rest)
        == (call["function"]["arguments"])
    )
    assert json.loads(call["function"]["arguments"]) == {"location": "Rome"}
    run_id = frames[-2][1]["id"]
    body = {"stream": True, "tool_outputs": [{"tool_call_id": call["id"], "output": "warm"}]}
    frames = await post_stream(
        session, f"{emu.endpoint}/threads/{tid}/runs/{run_id}/submit_tool_outputs", body
    )
    events = [e for e, _ in frames]
    n = events.count("thread.message.delta")
    assert events == (
        ["thread.run.step.completed", "thread.run.queued"]
        + TEXT_RUN_HEAD[2:]
        + ["thread.message.delta"] * n
        + TEXT_RUN_TAIL
    )
    tool_step = frames[0][1]
    assert tool_step["type"] == "tool_calls"
    assert tool_step["step_details"]["tool_calls"][0]["function"]["output"] == "warm"
    assert "warm" in deltas_text(frames)


async def test_deltas_stream_in_real_time(session: aiohttp.ClientSession, emu: Emulator) -> None:
    """Deltas reach the client as they are produced (delta_interval apart), not at the end."""
    tid = await new_thread(session, emu, "Hello")
    url = f"{emu.endpoint}/threads/{tid}/runs?api-version=v1"
    arrivals = []
    buffer = b""
    async with session.post(url, json={"assistant_id": "asst_paced", "stream": True}) as resp:
        async for chunk in resp.content.iter_any():
            buffer += chunk
            while b"\n\n" in buffer:
                frame, buffer = buffer.split(b"\n\n", 1)
                if frame.startswith(b"event: thread.message.delta"):
                    arrivals.append(time.monotonic())
    assert len(arrivals) == 9  # "Hello! How can I help you today?" in sub-word deltas
    # 8 gaps of 0.05 s: the first and last deltas arrive well apart
    assert arrivals[-1] - arrivals[0] >= 0.2


async def test_client_disconnect_does_not_stop_the_run(
    session: aiohttp.ClientSession, emu: Emulator
) -> None:
    """A streaming client that goes away mid-run leaves the run to finish on the server."""
    tid = await new_thread(session, emu, "Hello")
    url = f"{emu.endpoint}/threads/{tid}/runs?api-version=v1"
    async with session.post(url, json={"assistant_id": "asst_paced", "stream": True}) as resp:
        await resp.content.readuntil(b"event: thread.message.delta")
        resp.close()
    await asyncio.sleep(0.6)
    (run,) = emu.runs()
    assert run["status"] == "completed"


async def test_stream_cut_fault_closes_mid_stream(
    session: aiohttp.ClientSession, emu: Emulator
) -> None:
    """A stream_cut rule closes the response after N frames; the run still completes."""
    emu.inject(FaultRule(route="POST /threads/{thread_id}/runs", kind="stream_cut", after_events=3))
    tid = await new_thread(session, emu, "Hello")
    url = f"{emu.endpoint}/threads/{tid}/runs?api-version=v1"
    received = bytearray()

    async def read_all() -> None:
        async with session.post(url, json={"assistant_id": "asst_abc123", "stream": True}) as r:
            async for chunk in r.content.iter_any():
                received.extend(chunk)

    with pytest.raises(aiohttp.ClientPayloadError):
        await read_all()
    assert received.count(b"\n\n") == 3
    assert b"event: done" not in received
    await asyncio.sleep(0.3)
    assert emu.runs()[0]["status"] == "completed"


async def test_cancel_while_streaming(session: aiohttp.ClientSession, emu: Emulator) -> None:
    """Cancelling a streamed run ends its stream with cancelling, cancelled, done."""
    tid = await new_thread(session, emu, "Hello")
    url = f"{emu.endpoint}/threads/{tid}/runs?api-version=v1"
    async with session.post(url, json={"assistant_id": "asst_slow", "stream": True}) as resp:
        await resp.content.readuntil(b"event: thread.run.in_progress")
        run_id = emu.runs()[0]["id"]
        cancel = f"{emu.endpoint}/threads/{tid}/runs/{run_id}/cancel?api-version=v1"
        async with session.post(cancel) as c:
            assert c.status == 200
        rest = await resp.read()
    frames = parse_frames(b"event: thread.run.in_progress" + rest)
    assert [e for e, _ in frames][1:] == ["thread.run.cancelling", "thread.run.cancelled", "done"]
    assert frames[2][1]["cancelled_at"] is not None


async def test_shutdown_ends_open_streams_cleanly() -> None:
    """Leaving the Emulator context with a stream open and a run in flight ends the stream,
    cancels the run task and leaves no warnings (the suite runs with -W error)."""
    emu = Emulator(SETTINGS)
    await emu.start()
    headers = {"Authorization": f"Bearer {emu.api_key}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        url = f"{emu.endpoint}/threads/runs?api-version=v1"
        async with session.post(url, json={"assistant_id": "asst_slow", "stream": True}) as resp:
            await resp.content.readuntil(b"event: thread.run.in_progress")
            state = emu.state
            await emu.stop()
            with contextlib.suppress(aiohttp.ClientPayloadError):
                await resp.read()
    assert not state.engine.tasks
    assert all(run.task is not None and run.task.done() for run in state.store.runs.values())
