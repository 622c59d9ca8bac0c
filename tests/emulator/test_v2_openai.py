"""The unmodified `openai` client against the emulator's Foundry Agents v2 endpoints.

``AsyncOpenAI(base_url=f"{endpoint}/openai/v1")`` with the agent passed as
``extra_body={"agent_reference": ...}``, as Microsoft's migration guide shows. These tests pin
that a client no one here wrote parses what the emulator sends: responses, stream events,
conversations and items, function calls and errors.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import openai
import pytest
from openai import AsyncOpenAI, OpenAI

from agentrun.emulator import FaultRule

pytestmark = pytest.mark.anyio

Emu = Any
GENERAL = {"agent_reference": {"type": "agent_reference", "name": "general-assistant"}}
WEATHER = {"agent_reference": {"type": "agent_reference", "name": "weather-assistant"}}


@pytest.fixture
async def client(emulator: Emu) -> AsyncIterator[AsyncOpenAI]:
    c = AsyncOpenAI(
        base_url=f"{emulator.endpoint}/openai/v1", api_key=emulator.api_key, max_retries=0
    )
    yield c
    await c.close()


@pytest.fixture
def sync_client(emulator: Emu) -> Iterator[OpenAI]:
    c = OpenAI(base_url=f"{emulator.endpoint}/openai/v1", api_key=emulator.api_key, max_retries=0)
    yield c
    c.close()


async def test_responses_create(client: AsyncOpenAI) -> None:
    """responses.create with an agent_reference gives a completed Response whose output_text
    answers the question and whose usage is filled in."""
    resp = await client.responses.create(input="What is 12 * 12?", extra_body=GENERAL)
    assert resp.status == "completed"
    assert "144" in resp.output_text
    assert resp.usage is not None
    assert resp.usage.total_tokens == resp.usage.input_tokens + resp.usage.output_tokens


async def test_streaming_events_parse(client: AsyncOpenAI) -> None:
    """A streamed response parses into openai's typed events: created first, completed last,
    text deltas joining to the final output_text."""
    stream = await client.responses.create(
        input="Tell me about the mountain", stream=True, extra_body=GENERAL
    )
    events = [event async for event in stream]
    assert events[0].type == "response.created"
    assert events[-1].type == "response.completed"
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    final = events[-1]
    assert final.type == "response.completed"
    assert deltas == final.response.output_text
    assert [e.sequence_number for e in events] == list(range(len(events)))


async def test_conversations_and_items(client: AsyncOpenAI) -> None:
    """conversations.create, a turn in the conversation, items.create/list, retrieve and
    delete, all through openai's own resources."""
    conv = await client.conversations.create(metadata={"case": "openai"})
    await client.responses.create(
        input="My name is Linus.", conversation=conv.id, extra_body=GENERAL
    )
    await client.conversations.items.create(
        conv.id, items=[{"type": "message", "role": "user", "content": "What is my name?"}]
    )
    resp = await client.responses.create(input="", conversation=conv.id, extra_body=GENERAL)
    assert "Linus" in resp.output_text
    items = await client.conversations.items.list(conv.id, order="asc")
    assert [getattr(i, "role", None) for i in items.data] == [
        "user",
        "assistant",
        "user",
        "assistant",
    ]
    assert (await client.conversations.retrieve(conv.id)).metadata == {"case": "openai"}
    deleted = await client.conversations.delete(conv.id)
    assert deleted.deleted is True
    with pytest.raises(openai.NotFoundError):
        await client.conversations.retrieve(conv.id)


async def test_function_call_loop(client: AsyncOpenAI) -> None:
    """The function_call item parses as ResponseFunctionToolCall; its output sent back with
    previous_response_id gives a final text that used it."""
    first = await client.responses.create(input="Please get weather in Rome.", extra_body=WEATHER)
    [call] = [item for item in first.output if item.type == "function_call"]
    assert call.name == "get_weather"
    assert json.loads(call.arguments) == {"location": "Rome"}
    second = await client.responses.create(
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}],
        extra_body=WEATHER,
    )
    assert "sunny" in second.output_text


async def test_background_retrieve_and_cancel(client: AsyncOpenAI, emulator: Emu) -> None:
    """background=True answers queued; retrieve polls it to completed; cancel on a finished
    response is a BadRequestError."""
    resp = await client.responses.create(input="Hello", background=True, extra_body=GENERAL)
    assert resp.status == "queued"
    for _ in range(500):
        resp = await client.responses.retrieve(resp.id)
        if resp.status not in ("queued", "in_progress"):
            break
    assert resp.status == "completed"
    with pytest.raises(openai.BadRequestError):
        await client.responses.cancel(resp.id)


async def test_errors_map_to_openai_exceptions(client: AsyncOpenAI, emulator: Emu) -> None:
    """Agent-owned parameters are a BadRequestError naming the parameter; an unknown agent a
    NotFoundError; an injected 429 a RateLimitError whose response carries retry-after-ms."""
    with pytest.raises(openai.BadRequestError) as bad:
        await client.responses.create(input="x", instructions="be brief", extra_body=GENERAL)
    body = bad.value.body
    assert isinstance(body, dict)
    assert body["code"] == "invalid_payload"
    assert body["details"][0]["param"] == "instructions"
    with pytest.raises(openai.NotFoundError):
        await client.responses.create(
            input="x", extra_body={"agent_reference": {"type": "agent_reference", "name": "none"}}
        )
    emulator.inject(FaultRule(route="POST /openai/v1/responses", status=429, retry_after=0.5))
    with pytest.raises(openai.RateLimitError) as limited:
        await client.responses.create(input="x", extra_body=GENERAL)
    assert limited.value.response.headers["retry-after-ms"] == "500"


async def test_stream_error_event_parses(client: AsyncOpenAI) -> None:
    """A top-level `error` event (flat: code, message, param, sequence_number) parses as
    openai's typed ResponseErrorEvent and is the stream's last event."""
    stream = await client.responses.create(
        input="hi [emulator:stream_error]", stream=True, extra_body=GENERAL
    )
    events = [event async for event in stream]
    last = events[-1]
    assert last.type == "error"
    assert last.code == "server_error" and last.message
    assert last.sequence_number == len(events) - 1


def test_sync_client_streams(sync_client: OpenAI) -> None:
    """The sync OpenAI client streams the same events and the deltas make the text."""
    with sync_client.responses.create(input="Hello", stream=True, extra_body=GENERAL) as stream:
        events = list(stream)
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == "Hello! How can I help you today?"
    assert events[-1].type == "response.completed"
