"""The two halves of v2 agree: requests built by `agentrun._responses.wire`, sent over real
sockets to the emulator, and the emulator's answers read back by the same module's parsers
(responses, every stream event, conversations, items, agent versions, error bodies).

This is the contract the v2 protocol implementation behind the driver's seam will rely on.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from agentrun._errors import APIStatusError, BadRequestError
from agentrun._responses import wire
from agentrun._responses.wire import AgentReference
from agentrun._sse import SSEDecoder
from agentrun.emulator import Emulator, EmulatorSettings, FaultRule, Timing

pytestmark = pytest.mark.anyio

SETTINGS = EmulatorSettings(timing=Timing(0.01, 0.01, 0.001, 0.01))


class Sender:
    """Sends a wire.ApiRequest the way a transport would: project base + path, the request's
    own api-version (none on the /openai/v1 data plane), bearer token, JSON body."""

    def __init__(self, session: aiohttp.ClientSession, emu: Emulator) -> None:
        self.session = session
        self.emu = emu

    def _url(self, req: wire.ApiRequest) -> str:
        params = list(req.params)
        if req.api_version is not None:
            params.append(("api-version", req.api_version))
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        return f"{self.emu.endpoint}{req.path}{query}"

    async def json(self, req: wire.ApiRequest) -> Any:
        async with self.session.request(req.method, self._url(req), json=req.json) as resp:
            body = await resp.read()
            if resp.status >= 400:
                raise wire.error_from_body(resp.status, body, resp.headers)
            return await resp.json()

    async def events(self, req: wire.ApiRequest) -> list[wire.StreamEvent]:
        assert req.stream
        decoder = SSEDecoder()
        out: list[wire.StreamEvent] = []
        async with self.session.request(req.method, self._url(req), json=req.json) as resp:
            assert resp.status == 200
            async for chunk in resp.content.iter_any():
                for ev in decoder.feed(chunk):
                    parsed = wire.parse_stream_event(ev)
                    if parsed is not None:
                        out.append(parsed)
        return out


@pytest.fixture
async def send() -> AsyncIterator[Sender]:
    async with Emulator(SETTINGS) as emu:
        headers = {"Authorization": f"Bearer {emu.api_key}"}
        async with aiohttp.ClientSession(headers=headers) as session:
            yield Sender(session, emu)


async def test_streamed_turns_in_a_conversation(send: Sender) -> None:
    """A conversation made by create_conversation; two streamed turns; every event parses,
    the text deltas rebuild the final text, the last event is response.completed with usage,
    and the conversation's items list both turns."""
    route = wire.route_model("azure_ai/agents/general-assistant")
    assert isinstance(route, wire.V2Route)
    conv = wire.parse_conversation(await send.json(wire.create_conversation()))
    await send.events(
        wire.create_response(route.agent, "My name is Ada.", conversation=conv.id, stream=True)
    )
    events = await send.events(
        wire.create_response(route.agent, "What is my name?", conversation=conv.id, stream=True)
    )
    assert not any(isinstance(e, wire.UnknownEvent) for e in events)
    first, last = events[0], events[-1]
    assert isinstance(first, wire.ResponseEvent) and wire.run_state(first.response) == "in_progress"
    assert isinstance(last, wire.ResponseEvent) and last.type == "response.completed"
    text = "".join(e.delta for e in events if isinstance(e, wire.TextDelta))
    assert text == last.response.text == "Your name is Ada."
    assert last.response.conversation_id == conv.id
    assert last.response.usage is not None and last.response.usage.total_tokens > 0
    assert wire.run_state(last.response) == "completed"
    assert last.response.agent == AgentReference("general-assistant", "1")
    page = wire.parse_item_page(await send.json(wire.list_items(conv.id, order="asc")))
    assert len(page.items) == 4 and page.has_more is False
    assert [i.text for i in page.items if isinstance(i, wire.OutputMessage)] == [
        "Nice to meet you, Ada! How can I help you today?",
        "Your name is Ada.",
    ]


async def test_background_poll_and_cancel(send: Sender) -> None:
    """A background response reads as run_queued, polls to completed; cancel_response on a
    finished response is a BadRequestError from the error body."""
    agent = AgentReference("general-assistant")
    resp = wire.parse_response(
        await send.json(wire.create_response(agent, "Hello", background=True))
    )
    assert wire.run_state(resp) == "run_queued" and resp.background
    for _ in range(1000):
        resp = wire.parse_response(await send.json(wire.get_response(resp.id)))
        if resp.is_terminal:
            break
    assert wire.run_state(resp) == "completed" and resp.finish_reason == "stop"
    with pytest.raises(BadRequestError):
        await send.json(wire.cancel_response(resp.id))


async def test_function_calls_mean_requires_action(send: Sender) -> None:
    """The weather agent's function call parses as requires_action with finish_reason
    tool_calls (streamed: argument events too); its output sent back with
    previous_response_id completes the turn."""
    agent = AgentReference("weather-assistant", "1")
    events = await send.events(
        wire.create_response(agent, "Please get weather in Bern.", stream=True)
    )
    done = [e for e in events if isinstance(e, wire.FunctionCallArgumentsDone)]
    assert done and done[0].arguments == '{"location": "Bern"}'
    last = events[-1]
    assert isinstance(last, wire.ResponseEvent)
    assert wire.run_state(last.response) == "requires_action"
    [call] = last.response.function_calls
    item = wire.function_call_output_item(call.call_id, "mild")
    final = wire.parse_response(
        await send.json(wire.create_response(agent, [item], previous_response_id=last.response.id))
    )
    assert wire.run_state(final) == "completed" and "mild" in final.text


async def test_annotations_failures_and_stream_errors(send: Sender) -> None:
    """A citation arrives as AnnotationAdded and in Response.annotations; a failed response
    carries its error; a stream error is a StreamError; incomplete maps to length."""
    agent = AgentReference("general-assistant")
    events = await send.events(
        wire.create_response(agent, "Hi [emulator:cite=https://e.org]", stream=True)
    )
    [added] = [e for e in events if isinstance(e, wire.AnnotationAdded)]
    last = events[-1]
    assert isinstance(last, wire.ResponseEvent)
    assert last.response.annotations == (added.annotation,)
    failed = wire.parse_response(
        await send.json(wire.create_response(agent, "x [emulator:fail=server_error]"))
    )
    assert wire.run_state(failed) == "failed"
    assert failed.error == wire.ResponseError(
        "server_error", "The server had an error while processing your request."
    )
    events = await send.events(
        wire.create_response(agent, "x [emulator:stream_error]", stream=True)
    )
    assert isinstance(events[-1], wire.StreamError) and events[-1].code == "server_error"
    short = wire.parse_response(
        await send.json(wire.create_response(agent, "story [emulator:incomplete]"))
    )
    assert wire.run_state(short) == "incomplete" and short.finish_reason == "length"


async def test_errors_parse_into_typed_errors(send: Sender) -> None:
    """The emulator's 400 (agent-owned parameter, bypassing the client-side check), 404 and
    injected 429 answers become BadRequestError naming the parameter, NotFoundError and
    RateLimitError with retry_after."""
    agent = AgentReference("general-assistant")
    req = wire.create_response(agent, "x")
    assert req.json is not None
    with pytest.raises(BadRequestError, match="temperature") as bad:
        await send.json(
            wire.ApiRequest(req.method, req.path, json={**req.json, "temperature": 0.1})
        )
    assert bad.value.code == "invalid_payload"
    with pytest.raises(APIStatusError) as missing:
        await send.json(wire.create_response(AgentReference("nobody"), "x"))
    assert missing.value.status_code == 404
    send.emu.inject(FaultRule(route="POST /openai/v1/responses", status=429, retry_after=1.5))
    with pytest.raises(APIStatusError) as limited:
        await send.json(req)
    assert limited.value.status_code == 429 and limited.value.retry_after == 1.5


async def test_agent_lookups(send: Sender) -> None:
    """get_agent / get_agent_version (with api-version=v1) parse as AgentVersion."""
    latest = wire.parse_agent_version(await send.json(wire.get_agent("math-tutor")))
    assert (latest.name, latest.version, latest.model) == ("math-tutor", "1", "gpt-4o")
    pinned = wire.parse_agent_version(
        await send.json(wire.get_agent_version(AgentReference("math-tutor", "1")))
    )
    assert pinned.version == "1"
