"""Scripted agents (built-in tool steps, annotations, several messages per run, failures after
partial text) and gateway-level faults (stall, HTML error pages, a mid-stream error event).

Raw HTTP against a real emulator on 127.0.0.1; shapes modelled on the Azure SDK recordings
(real-service.md sections 1 and 3).
"""

from __future__ import annotations

import asyncio
import json
import pathlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from agentrun.emulator import (
    AgentSpec,
    Emulator,
    EmulatorSettings,
    FaultRule,
    SettingsError,
    Timing,
)

pytestmark = pytest.mark.anyio

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
SETTINGS = EmulatorSettings(
    timing=Timing(queue_delay=0.01, run_duration=0.01, delta_interval=0.0, cancel_delay=0.01),
    agents=(
        AgentSpec(id="asst_mixed", name="mixed", tools=(WEATHER,), script="text_then_function"),
    ),
    stall_limit=0.5,
)
V1 = {"api-version": "v1"}


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(SETTINGS) as emulator:
        yield emulator


@pytest.fixture
async def session(emu: Emulator) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {emu.api_key}"}) as s:
        yield s


def frames_of(raw: bytes) -> list[tuple[str, Any]]:
    out = []
    for frame in raw.split(b"\n\n")[:-1]:
        event, data = frame.split(b"\n")
        name = event[len(b"event: ") :].decode()
        text = data[len(b"data: ") :].decode()
        out.append((name, text if name == "done" else json.loads(text)))
    return out


async def run_stream(
    session: aiohttp.ClientSession, emu: Emulator, agent: str, text: str
) -> list[tuple[str, Any]]:
    body = {
        "assistant_id": agent,
        "stream": True,
        "thread": {"messages": [{"role": "user", "content": text}]},
    }
    async with session.post(f"{emu.endpoint}/threads/runs", json=body, params=V1) as resp:
        assert resp.status == 200
        return frames_of(await resp.read())


async def get(session: aiohttp.ClientSession, url: str) -> Any:
    async with session.get(url, params=V1) as resp:
        assert resp.status == 200
        return await resp.json()


def message_text(frames: list[tuple[str, Any]], message_id: str, index: int = 0) -> str:
    return "".join(
        c["text"].get("value", "")
        for e, d in frames
        if e == "thread.message.delta" and d["id"] == message_id
        for c in d["delta"]["content"]
        if c["index"] == index and c["type"] == "text"
    )


def annotation_deltas(frames: list[tuple[str, Any]]) -> list[dict[str, Any]]:
    return [
        a
        for e, d in frames
        if e == "thread.message.delta"
        for c in d["delta"]["content"]
        if c["type"] == "text"
        for a in c["text"].get("annotations", [])
    ]


def tool_step_completed(frames: list[tuple[str, Any]]) -> dict[str, Any]:
    return next(
        d for e, d in frames if e == "thread.run.step.completed" and d["type"] == "tool_calls"
    )


# -- bullet 2: scripted agents ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("agent", "text"),
    [
        ("asst_websearch01", "Tell me about rivers"),
        ("asst_abc123", "[emulator:script=web_search] Tell me about rivers"),
    ],
)
async def test_web_search_cites_urls(
    session: aiohttp.ClientSession, emu: Emulator, agent: str, text: str
) -> None:
    """web_search (preloaded agent or directive): a bing_grounding tool step streamed with
    empty tool_calls first, then a message whose text keeps the 【n:m†source】 markers and
    whose url_citation annotations (streamed with their index) point at them exactly."""
    frames = await run_stream(session, emu, agent, text)
    names = [e for e, _ in frames]
    assert names[-2:] == ["thread.run.completed", "done"]
    step_created = next(d for e, d in frames if e == "thread.run.step.created")
    assert step_created["step_details"] == {"type": "tool_calls", "tool_calls": []}
    step = tool_step_completed(frames)
    [bing] = step["step_details"]["tool_calls"]
    assert bing["type"] == "bing_grounding"
    assert bing["bing_grounding"]["requesturl"].startswith("https://api.bing.microsoft.com/")
    assert "rivers" in bing["bing_grounding"]["requesturl"]
    assert "market" in bing["bing_grounding"]["response_metadata"]
    assert names.index("thread.run.step.completed") < names.index("thread.message.created")
    done = next(d for e, d in frames if e == "thread.message.completed")
    block = done["content"][0]["text"]
    value = block["value"]
    assert "【3:0†source】" in value and "【3:1†source】" in value
    assert [a["index"] for a in annotation_deltas(frames)] == [0, 1]
    assert len(block["annotations"]) == 2
    for annotation in block["annotations"]:
        assert annotation["type"] == "url_citation"
        assert value[annotation["start_index"] : annotation["end_index"]] == annotation["text"]
        assert set(annotation["url_citation"]) == {"url", "title"}
    assert message_text(frames, done["id"]) == value
    tid = frames[0][1]["id"]
    listed = (await get(session, f"{emu.endpoint}/threads/{tid}/messages"))["data"][0]
    assert listed["content"] == done["content"]


async def test_code_then_text_writes_two_messages_around_a_code_step(
    session: aiohttp.ClientSession, emu: Emulator
) -> None:
    """code_then_text: message 1 completes before the code_interpreter step is created; the
    code's input streams in fragments, outputs are logs and an image; message 2 has an
    image_file block and text with a file_path annotation; the list keeps that order."""
    frames = await run_stream(session, emu, "asst_coder01", "Add up some numbers")
    names = [e for e, _ in frames]
    completed = [d for e, d in frames if e == "thread.message.completed"]
    assert len(completed) == 2
    first_done = names.index("thread.message.completed")
    tool_created = next(
        i
        for i, (e, d) in enumerate(frames)
        if e == "thread.run.step.created" and d["type"] == "tool_calls"
    )
    assert first_done < tool_created
    deltas = [
        d["delta"]["step_details"]["tool_calls"][0]
        for e, d in frames
        if e == "thread.run.step.delta"
    ]
    assert deltas[0]["code_interpreter"] == {"input": "", "outputs": []}
    step = tool_step_completed(frames)
    [code] = step["step_details"]["tool_calls"]
    inputs = [d["code_interpreter"].get("input", "") for d in deltas[1:]]
    assert len([i for i in inputs if i]) > 3
    assert "".join(inputs) == code["code_interpreter"]["input"]
    outputs = code["code_interpreter"]["outputs"]
    assert [o["type"] for o in outputs] == ["logs", "image"]
    second = completed[1]
    assert [c["type"] for c in second["content"]] == ["image_file", "text"]
    assert second["content"][0]["image_file"]["file_id"] == outputs[1]["image"]["file_id"]
    text = second["content"][1]["text"]
    [path] = text["annotations"]
    assert path["type"] == "file_path" and "file_id" in path["file_path"]
    assert text["value"][path["start_index"] : path["end_index"]] == path["text"]
    tid = frames[0][1]["id"]
    listing = await get(session, f"{emu.endpoint}/threads/{tid}/messages?order=asc")
    assert [m["id"] for m in listing["data"][1:]] == [m["id"] for m in completed]


async def test_connected_agent_step(session: aiohttp.ClientSession, emu: Emulator) -> None:
    """connected_agent: a tool step with {name, arguments, output, run_id, thread_id,
    assistant_id} whose arguments streamed in fragments, then the answer."""
    frames = await run_stream(session, emu, "asst_connected01", "Check the weather station")
    [call] = tool_step_completed(frames)["step_details"]["tool_calls"]
    assert call["type"] == "connected_agent"
    body = call["connected_agent"]
    assert set(body) == {"name", "arguments", "output", "run_id", "thread_id", "assistant_id"}
    fragments = [
        d["delta"]["step_details"]["tool_calls"][0]["connected_agent"]["arguments"]
        for e, d in frames
        if e == "thread.run.step.delta"
    ]
    assert fragments[0] == "" and len(fragments) > 2
    assert "".join(fragments) == body["arguments"]
    reply = next(d for e, d in frames if e == "thread.message.completed")
    assert body["output"] in reply["content"][0]["text"]["value"]


async def test_file_search_cites_files(session: aiohttp.ClientSession, emu: Emulator) -> None:
    """file_search: a step with ranked results, then text with file_citation annotations."""
    frames = await run_stream(session, emu, "asst_filesearch01", "How much notice for leave?")
    [call] = tool_step_completed(frames)["step_details"]["tool_calls"]
    assert call["type"] == "file_search"
    assert {r["file_name"] for r in call["file_search"]["results"]} == {"handbook.md", "faq.md"}
    reply = next(d for e, d in frames if e == "thread.message.completed")
    text = reply["content"][0]["text"]
    [citation] = text["annotations"]
    assert citation["type"] == "file_citation"
    assert citation["file_citation"]["file_id"] == call["file_search"]["results"][0]["file_id"]
    assert text["value"][citation["start_index"] : citation["end_index"]] == "【4:0†handbook.md】"


async def test_two_messages_ids_do_not_follow_creation_order(
    session: aiohttp.ClientSession, emu: Emulator
) -> None:
    """two_messages: "Part one." then "Part two." in the same second, the first with the
    larger id; the service's list (and the stream) keep creation order."""
    frames = await run_stream(session, emu, "asst_abc123", "[emulator:script=two_messages] go")
    done = [d for e, d in frames if e == "thread.message.completed"]
    assert [d["content"][0]["text"]["value"] for d in done] == ["Part one.", "Part two."]
    assert done[0]["id"] > done[1]["id"]
    tid = frames[0][1]["id"]
    listing = await get(session, f"{emu.endpoint}/threads/{tid}/messages?order=asc")
    messages = listing["data"][1:]
    assert [m["id"] for m in messages] == [d["id"] for d in done]
    assert messages[0]["created_at"] == messages[1]["created_at"]


async def test_text_then_function_in_poll_mode(
    session: aiohttp.ClientSession, emu: Emulator
) -> None:
    """text_then_function (agent with AgentSpec.script): a text message is written, then the
    run waits in requires_action for a function call; after the outputs it writes more text
    and completes: three assistant-side messages and steps in that order."""
    body = {
        "assistant_id": "asst_mixed",
        "thread": {"messages": [{"role": "user", "content": "Weather in Paris?"}]},
    }
    async with session.post(f"{emu.endpoint}/threads/runs", json=body, params=V1) as resp:
        run = await resp.json()
    tid, rid = run["thread_id"], run["id"]
    url = f"{emu.endpoint}/threads/{tid}/runs/{rid}"
    while run["status"] in ("queued", "in_progress"):
        await asyncio.sleep(0.01)
        run = await get(session, url)
    assert run["status"] == "requires_action"
    [call] = run["required_action"]["submit_tool_outputs"]["tool_calls"]
    assert call["function"]["name"] == "get_weather"
    before = await get(session, f"{emu.endpoint}/threads/{tid}/messages?run_id={rid}")
    assert [m["content"][0]["text"]["value"] for m in before["data"]] == [
        "Let me look that up first."
    ]
    outputs = {"tool_outputs": [{"tool_call_id": call["id"], "output": "sunny"}]}
    async with session.post(f"{url}/submit_tool_outputs", json=outputs, params=V1) as resp:
        assert resp.status == 200
    while run["status"] not in ("completed", "failed"):
        await asyncio.sleep(0.01)
        run = await get(session, url)
    assert run["status"] == "completed"
    after = await get(session, f"{emu.endpoint}/threads/{tid}/messages?run_id={rid}&order=asc")
    texts = [m["content"][0]["text"]["value"] for m in after["data"]]
    assert texts[0] == "Let me look that up first." and "sunny" in texts[1]
    steps = await get(session, f"{url}/steps?order=asc")
    assert [s["type"] for s in steps["data"]] == [
        "message_creation",
        "tool_calls",
        "message_creation",
    ]


@pytest.mark.parametrize(
    ("text", "rule", "code"),
    [
        ("[emulator:fail_midway] hi", None, "server_error"),
        ("[emulator:fail_midway=invalid_engine_error] hi", None, "invalid_engine_error"),
        (
            "hi",
            FaultRule(kind="fail_after_text", code="rate_limit_exceeded"),
            "rate_limit_exceeded",
        ),
    ],
)
async def test_fail_after_partial_text(
    session: aiohttp.ClientSession,
    emu: Emulator,
    text: str,
    rule: FaultRule | None,
    code: str,
) -> None:
    """fail_midway (directive) and the fail_after_text fault: text deltas stream, then the
    message ends incomplete (run_failed), the step failed, and the run failed with the code."""
    if rule is not None:
        emu.inject(rule)
    frames = await run_stream(session, emu, "asst_abc123", text)
    names = [e for e, _ in frames if e != "thread.message.delta"]
    assert "thread.message.delta" in [e for e, _ in frames]
    assert names[-4:] == [
        "thread.message.incomplete",
        "thread.run.step.failed",
        "thread.run.failed",
        "done",
    ]
    data = dict(frames)
    assert data["thread.message.incomplete"]["incomplete_details"] == {"reason": "run_failed"}
    assert data["thread.run.failed"]["last_error"]["code"] == code
    assert data["thread.run.step.failed"]["last_error"]["code"] == code


def test_script_setting_from_yaml_and_validation(tmp_path: pathlib.Path) -> None:
    """AgentSpec.script is read from YAML settings; an unknown script name is an error."""
    path = tmp_path / "emulator.yaml"
    path.write_text("agents:\n  - id: asst_web\n    script: web_search\n")
    settings = EmulatorSettings.from_yaml(path)
    assert settings.agents[0].script == "web_search"
    path.write_text("agents:\n  - id: asst_web\n    script: dance\n")
    with pytest.raises(SettingsError, match="script"):
        EmulatorSettings.from_yaml(path)
    with pytest.raises(SettingsError):
        AgentSpec(id="asst_x", script="dance")


# -- bullet 3: gateway faults ----------------------------------------------------------------


async def test_stall_sends_nothing_then_closes(
    session: aiohttp.ClientSession, emu: Emulator
) -> None:
    """stall: no status line reaches the client (its read times out); after stall_limit the
    emulator closes the connection; later requests are served."""
    emu.inject(FaultRule(route="POST /threads", kind="stall"))
    timeout = aiohttp.ClientTimeout(sock_read=0.2)
    with pytest.raises(asyncio.TimeoutError):
        async with session.post(f"{emu.endpoint}/threads", json={}, params=V1, timeout=timeout):
            pass
    emu.inject(FaultRule(route="POST /threads", kind="stall"))
    with pytest.raises(aiohttp.ServerDisconnectedError):
        async with session.post(f"{emu.endpoint}/threads", json={}, params=V1):
            pass
    async with session.post(f"{emu.endpoint}/threads", json={}, params=V1) as resp:
        assert resp.status == 200


async def test_stall_mid_stream(session: aiohttp.ClientSession, emu: Emulator) -> None:
    """stall with after_events=3 on a stream: three frames, then silence (no done) until the
    client gives up or the stall limit closes the connection."""
    emu.inject(FaultRule(route="POST /threads/runs", kind="stall", after_events=3))
    body = {
        "assistant_id": "asst_abc123",
        "stream": True,
        "thread": {"messages": [{"role": "user", "content": "hi"}]},
    }
    chunks: list[bytes] = []

    async def drain(resp: aiohttp.ClientResponse) -> None:
        async for chunk in resp.content.iter_any():
            chunks.append(chunk)

    async with session.post(f"{emu.endpoint}/threads/runs", json=body, params=V1) as resp:
        assert resp.status == 200
        with pytest.raises((aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError)):
            await drain(resp)
    got = b"".join(chunks)
    assert got.count(b"\n\n") == 3
    assert b"event: done" not in got


async def test_html_gateway_error(session: aiohttp.ClientSession, emu: Emulator) -> None:
    """html: a 502 (or 504) with a text/html page and no JSON body."""
    for status in (502, 504):
        emu.inject(FaultRule(route="GET /assistants", kind="html", status=status))
        async with session.get(f"{emu.endpoint}/assistants", params=V1) as resp:
            assert resp.status == status
            assert resp.content_type == "text/html"
            page = await resp.text()
            assert page.startswith("<html>") and str(status) in page


async def test_stream_error_event(session: aiohttp.ClientSession, emu: Emulator) -> None:
    """stream_error: after after_events frames the stream sends `event: error` with an
    {"error": {...}} payload and ends without `done`."""
    emu.inject(
        FaultRule(route="POST /threads/runs", kind="stream_error", after_events=4, code="boom")
    )
    frames = await run_stream(session, emu, "asst_abc123", "hi")
    assert len(frames) == 5
    name, data = frames[-1]
    assert name == "error"
    assert data["error"]["code"] == "boom"
    assert set(data["error"]) == {"code", "message", "param", "type"}
