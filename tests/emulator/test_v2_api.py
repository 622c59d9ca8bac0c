"""The emulator's Foundry Agents v2 endpoints over real sockets, with raw aiohttp: the JSON and
SSE shapes of responses, conversations and agent versions, errors, faults and stats."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from agentrun.emulator import Emulator, EmulatorSettings, FaultRule, Timing, V2AgentSpec

pytestmark = pytest.mark.anyio

FAST = Timing(queue_delay=0.01, run_duration=0.01, delta_interval=0.001, cancel_delay=0.01)
SLOW = Timing(queue_delay=0.05, run_duration=30.0, delta_interval=0.001, cancel_delay=0.01)
SETTINGS = EmulatorSettings(
    timing=FAST,
    v2_agents=(
        V2AgentSpec(name="slow-agent", instructions="Take your time.", timing=SLOW),
        V2AgentSpec(name="brief", version="7", instructions="Be concise."),
    ),
)
GENERAL = {"type": "agent_reference", "name": "general-assistant"}
WEATHER = {"type": "agent_reference", "name": "weather-assistant"}

RESPONSE_KEYS = {
    "id", "object", "created_at", "status", "background", "completed_at", "conversation",
    "error", "incomplete_details", "instructions", "model", "output", "previous_response_id",
    "usage", "metadata", "agent_reference", "tools", "temperature", "top_p", "store",
}  # fmt: skip


class Api:
    """A thin JSON client for the emulator's v2 routes that asserts every status."""

    def __init__(self, session: aiohttp.ClientSession, emu: Emulator) -> None:
        self.session = session
        self.emu = emu

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        status: int = 200,
        params: dict[str, str] | None = None,
    ) -> Any:
        if not path.startswith("/openai/"):
            params = {"api-version": "v1", **(params or {})}
        async with self.session.request(
            method, self.emu.endpoint + path, json=body, params=params
        ) as resp:
            data = await resp.json()
            assert resp.status == status, data
            return data

    async def respond(self, **body: Any) -> dict[str, Any]:
        result: dict[str, Any] = await self.call("POST", "/openai/v1/responses", body)
        return result

    async def events(self, **body: Any) -> list[dict[str, Any]]:
        """POST a streamed response and decode every SSE frame (event line and data)."""
        async with self.session.post(
            self.emu.endpoint + "/openai/v1/responses", json={**body, "stream": True}
        ) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/event-stream")
            raw = (await resp.read()).decode()
        events = []
        for frame in raw.strip().split("\n\n"):
            lines = dict(line.split(": ", 1) for line in frame.split("\n"))
            data = json.loads(lines["data"])
            assert data["type"] == lines["event"]
            events.append(data)
        return events

    async def wait(self, response_id: str) -> dict[str, Any]:
        deadline = asyncio.get_running_loop().time() + 10
        while True:
            resp: dict[str, Any] = await self.call("GET", f"/openai/v1/responses/{response_id}")
            if resp["status"] not in ("queued", "in_progress"):
                return resp
            assert asyncio.get_running_loop().time() < deadline, resp
            await asyncio.sleep(0.01)


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(SETTINGS) as emulator:
        yield emulator


@pytest.fixture
async def api(emu: Emulator) -> AsyncIterator[Api]:
    headers = {"Authorization": f"Bearer {emu.api_key}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        yield Api(session, emu)


def text_of(response: dict[str, Any]) -> str:
    return "".join(
        part["text"]
        for item in response["output"]
        if item["type"] == "message"
        for part in item["content"]
        if part["type"] == "output_text"
    )


async def test_plain_response_has_the_response_shape(api: Api) -> None:
    """A non-streaming request answers with a completed `response` object carrying the agent
    reference, one assistant message with an output_text part, and usage in Responses terms."""
    resp = await api.respond(agent_reference=GENERAL, input="What is 6 * 7?")
    assert set(resp) >= RESPONSE_KEYS
    assert resp["object"] == "response" and resp["id"].startswith("resp_")
    assert resp["status"] == "completed" and resp["background"] is False
    assert resp["agent_reference"] == {
        "type": "agent_reference",
        "name": "general-assistant",
        "version": "1",
    }
    assert resp["conversation"] is None and resp["error"] is None
    [item] = resp["output"]
    assert item["type"] == "message" and item["role"] == "assistant"
    assert item["id"].startswith("msg_") and item["status"] == "completed"
    assert item["content"][0]["type"] == "output_text"
    assert item["content"][0]["annotations"] == []
    assert "42" in text_of(resp)
    usage = resp["usage"]
    assert usage["input_tokens"] > 0 and usage["output_tokens"] > 0
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]


async def test_stream_events_in_order_with_sequence_numbers(api: Api) -> None:
    """A streamed response sends the documented event order, every payload with its `type`
    and consecutive sequence numbers, deltas smaller than words that join to the final text,
    and ends with response.completed carrying usage."""
    events = await api.events(
        agent_reference=GENERAL, input="Tell me about deterministic emulators"
    )
    types = [e["type"] for e in events]
    assert types[:5] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
    ]
    assert types[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    deltas = [e["delta"] for e in events if e["type"] == "response.output_text.delta"]
    done = next(e for e in events if e["type"] == "response.output_text.done")
    assert "".join(deltas) == done["text"]
    assert any(d.strip() and not d.endswith((" ", ".", ",", '"', ":")) for d in deltas)
    assert any(len(d.strip()) < len(w) for d in deltas for w in done["text"].split())
    final = events[-1]["response"]
    assert final["status"] == "completed" and final["usage"]["output_tokens"] > 0
    assert text_of(final) == done["text"]
    assert events[0]["response"]["status"] == "in_progress"
    assert events[0]["response"]["output"] == []


async def test_citation_directive_adds_url_citation(api: Api) -> None:
    """`[emulator:cite=URL]` gives a url_citation annotation in the output_text part and a
    response.output_text.annotation.added event before output_text.done."""
    url = "https://example.org/facts"
    events = await api.events(agent_reference=GENERAL, input=f"Hello [emulator:cite={url}]")
    types = [e["type"] for e in events]
    added = types.index("response.output_text.annotation.added")
    assert added < types.index("response.output_text.done")
    annotation = events[added]["annotation"]
    assert annotation["type"] == "url_citation" and annotation["url"] == url
    final = events[-1]["response"]
    part = final["output"][0]["content"][0]
    assert part["annotations"] == [annotation]
    assert annotation["end_index"] == len(part["text"])


async def test_conversation_keeps_history_and_items(api: Api) -> None:
    """Responses in a conversation see its earlier turns; the conversation lists the user and
    assistant items of each turn; items can be added and fetched; delete answers
    conversation.deleted and a later use is 404."""
    conv = await api.call("POST", "/openai/v1/conversations", {"metadata": {"k": "v"}})
    assert conv["object"] == "conversation" and conv["id"].startswith("conv_")
    assert conv["metadata"] == {"k": "v"}
    first = await api.respond(
        agent_reference=GENERAL, conversation=conv["id"], input="My name is Ada."
    )
    assert first["conversation"] == {"id": conv["id"]}
    added = await api.call(
        "POST",
        f"/openai/v1/conversations/{conv['id']}/items",
        {"items": [{"type": "message", "role": "user", "content": "What is my name?"}]},
    )
    assert added["object"] == "list" and len(added["data"]) == 1
    second = await api.respond(agent_reference=GENERAL, conversation={"id": conv["id"]}, input="")
    assert "Ada" in text_of(second)
    page = await api.call(
        "GET", f"/openai/v1/conversations/{conv['id']}/items", params={"order": "asc"}
    )
    roles = [(i["type"], i["role"]) for i in page["data"]]
    assert roles == [
        ("message", "user"),
        ("message", "assistant"),
        ("message", "user"),
        ("message", "assistant"),
    ]
    assert page["first_id"] == page["data"][0]["id"] and page["has_more"] is False
    assert page["data"][0]["content"] == [{"type": "input_text", "text": "My name is Ada."}]
    newest = await api.call(
        "GET", f"/openai/v1/conversations/{conv['id']}/items", params={"limit": "1"}
    )
    assert newest["data"][0]["id"] == page["data"][-1]["id"] and newest["has_more"] is True
    one = await api.call(
        "GET", f"/openai/v1/conversations/{conv['id']}/items/{page['data'][0]['id']}"
    )
    assert one == page["data"][0]
    gone = await api.call("DELETE", f"/openai/v1/conversations/{conv['id']}")
    assert gone == {"id": conv["id"], "object": "conversation.deleted", "deleted": True}
    err = await api.call("GET", f"/openai/v1/conversations/{conv['id']}", status=404)
    assert err["error"]["code"] == "not_found"


async def test_previous_response_id_chains_history(api: Api) -> None:
    """previous_response_id makes the earlier turn visible; combining it with a conversation
    is a 400 naming the parameter; an unknown previous id is 404."""
    first = await api.respond(agent_reference=GENERAL, input="My name is Grace.")
    second = await api.respond(
        agent_reference=GENERAL, previous_response_id=first["id"], input="What is my name?"
    )
    assert "Grace" in text_of(second) and second["previous_response_id"] == first["id"]
    conv = await api.call("POST", "/openai/v1/conversations", {})
    err = await api.call(
        "POST",
        "/openai/v1/responses",
        {
            "agent_reference": GENERAL,
            "input": "x",
            "conversation": conv["id"],
            "previous_response_id": first["id"],
        },
        status=400,
    )
    assert err["error"]["param"] == "previous_response_id"
    await api.call(
        "POST",
        "/openai/v1/responses",
        {"agent_reference": GENERAL, "input": "x", "previous_response_id": "resp_nope"},
        status=404,
    )


async def test_function_call_round_trip(api: Api) -> None:
    """An agent with a function tool answers with a function_call item (status completed);
    its output sent as function_call_output with previous_response_id gives the final text;
    a call id the chain never issued is a 400."""
    first = await api.respond(agent_reference=WEATHER, input="Please get weather in Oslo.")
    assert first["status"] == "completed"
    [call] = first["output"]
    assert call["type"] == "function_call" and call["name"] == "get_weather"
    assert json.loads(call["arguments"]) == {"location": "Oslo"}
    assert call["call_id"].startswith("call_") and call["status"] == "completed"
    second = await api.respond(
        agent_reference=WEATHER,
        previous_response_id=first["id"],
        input=[{"type": "function_call_output", "call_id": call["call_id"], "output": "7 C"}],
    )
    assert "7 C" in text_of(second)
    err = await api.call(
        "POST",
        "/openai/v1/responses",
        {
            "agent_reference": WEATHER,
            "previous_response_id": first["id"],
            "input": [{"type": "function_call_output", "call_id": "call_other", "output": "x"}],
        },
        status=400,
    )
    assert "call_other" in err["error"]["message"]


async def test_function_call_streams_argument_deltas(api: Api) -> None:
    """A streamed function call: output_item.added with empty arguments, argument deltas that
    join to the arguments of function_call_arguments.done, then output_item.done."""
    events = await api.events(agent_reference=WEATHER, input="Please get weather in Lima.")
    added = next(e for e in events if e["type"] == "response.output_item.added")
    assert added["item"]["type"] == "function_call" and added["item"]["arguments"] == ""
    deltas = [e["delta"] for e in events if e["type"] == "response.function_call_arguments.delta"]
    done = next(e for e in events if e["type"] == "response.function_call_arguments.done")
    assert "".join(deltas) == done["arguments"] == '{"location": "Lima"}'
    assert events[-1]["type"] == "response.completed"


async def test_agent_owned_parameters_are_rejected(api: Api) -> None:
    """instructions, tools, temperature, top_p sent with an agent_reference: 400
    invalid_payload with one details entry per parameter, as the service answers."""
    err = await api.call(
        "POST",
        "/openai/v1/responses",
        {"agent_reference": GENERAL, "input": "x", "instructions": "y", "temperature": 0.2},
        status=400,
    )
    assert err["error"]["code"] == "invalid_payload"
    assert err["error"]["type"] == "invalid_request_error"
    assert [(d["param"], d["message"]) for d in err["error"]["details"]] == [
        ("instructions", "Not allowed when agent is specified."),
        ("temperature", "Not allowed when agent is specified."),
    ]
    old = await api.call(
        "POST", "/openai/v1/responses", {"agent": GENERAL, "input": "x"}, status=400
    )
    assert "agent_reference" in old["error"]["message"]


async def test_unknown_agent_and_version_are_404(api: Api) -> None:
    """An agent_reference naming no agent, or a version it does not have, is a 404 in the
    Responses error shape."""
    for ref in ({"type": "agent_reference", "name": "nobody"}, {**GENERAL, "version": "9"}):
        err = await api.call(
            "POST", "/openai/v1/responses", {"agent_reference": ref, "input": "x"}, status=404
        )
        assert set(err["error"]) >= {"code", "message", "param", "type"}
        assert err["error"]["code"] == "not_found"


async def test_failure_directive_and_incomplete(api: Api) -> None:
    """[emulator:fail=CODE] ends the response failed with that error code (streamed as
    response.failed); [emulator:incomplete] ends it incomplete with max_output_tokens."""
    failed = await api.respond(
        agent_reference=GENERAL, input="hi [emulator:fail=rate_limit_exceeded]"
    )
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "rate_limit_exceeded"
    events = await api.events(agent_reference=GENERAL, input="hi [emulator:fail=server_error]")
    assert events[-1]["type"] == "response.failed"
    assert events[-1]["response"]["error"]["code"] == "server_error"
    short = await api.respond(
        agent_reference=GENERAL, input="Tell me a story [emulator:incomplete]"
    )
    assert short["status"] == "incomplete"
    assert short["incomplete_details"] == {"reason": "max_output_tokens"}
    assert short["output"][0]["status"] == "incomplete"


async def test_stream_error_event(api: Api) -> None:
    """[emulator:stream_error] ends the stream with a top-level `error` event (code, message,
    param, sequence_number) and the response is failed."""
    events = await api.events(agent_reference=GENERAL, input="hi [emulator:stream_error]")
    last = events[-1]
    assert last["type"] == "error" and last["code"] == "server_error"
    assert set(last) >= {"message", "param", "sequence_number"}
    rid = events[0]["response"]["id"]
    assert (await api.wait(rid))["status"] == "failed"


async def test_background_queued_then_completed(api: Api, emu: Emulator) -> None:
    """background: true answers at once with status queued; polling GET shows it reach
    completed; stats count the response by status."""
    resp = await api.respond(agent_reference=GENERAL, input="hello", background=True)
    assert resp["status"] == "queued" and resp["background"] is True and resp["output"] == []
    final = await api.wait(resp["id"])
    assert final["status"] == "completed" and "Hello" in text_of(final)
    stats = emu.stats()
    assert stats["responses_created"] == 1
    assert stats["responses_by_status"] == {"completed": 1}
    assert stats["requests"]["POST /openai/v1/responses"] == {"200": 1}
    assert stats["active_responses"] == 0


async def test_cancel_background_response(api: Api, emu: Emulator) -> None:
    """POST /responses/{id}/cancel ends an active background response `cancelled` and
    returns it; cancelling again returns it again; a non-background response cannot be
    cancelled (400)."""
    resp = await api.respond(
        agent_reference={"type": "agent_reference", "name": "slow-agent"},
        input="hello",
        background=True,
    )
    cancelled = await api.call("POST", f"/openai/v1/responses/{resp['id']}/cancel")
    assert cancelled["status"] == "cancelled"
    again = await api.call("POST", f"/openai/v1/responses/{resp['id']}/cancel")
    assert again["status"] == "cancelled"
    assert emu.stats()["active_responses"] == 0
    plain = await api.respond(agent_reference=GENERAL, input="hello")
    await api.call("POST", f"/openai/v1/responses/{plain['id']}/cancel", status=400)


async def test_dropped_stream_cancels_a_foreground_response(api: Api, emu: Emulator) -> None:
    """A client that closes a non-background stream leaves no response running: the
    emulator cancels it, as the service does."""
    async with api.session.post(
        emu.endpoint + "/openai/v1/responses",
        json={
            "agent_reference": {"type": "agent_reference", "name": "slow-agent"},
            "input": "hello",
            "stream": True,
        },
    ) as resp:
        line = await resp.content.readline()
        assert line.startswith(b"event: response.created")
    deadline = asyncio.get_running_loop().time() + 10
    while emu.stats()["active_responses"]:
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.02)
    assert emu.stats()["responses_by_status"] == {"cancelled": 1}


async def test_background_stream_resumes_after_sequence_number(api: Api) -> None:
    """GET /responses/{id}?stream=true&starting_after=N replays a streamed background
    response's events after N, to the terminal event."""
    events = await api.events(agent_reference=GENERAL, input="hello", background=True)
    rid = events[0]["response"]["id"]
    assert events[0]["response"]["status"] == "queued"
    async with api.session.get(
        api.emu.endpoint + f"/openai/v1/responses/{rid}",
        params={"stream": "true", "starting_after": "3"},
    ) as resp:
        raw = (await resp.read()).decode()
    numbers = [
        json.loads(f.split("data: ", 1)[1])["sequence_number"] for f in raw.strip().split("\n\n")
    ]
    assert numbers == list(range(4, len(events)))


async def test_injected_429_carries_both_retry_headers(api: Api, emu: Emulator) -> None:
    """A 429 fault on the responses route carries Retry-After and retry-after-ms (what
    openai-python and Azure Core read) and is counted in the route's stats."""
    emu.inject(FaultRule(route="POST /openai/v1/responses", status=429, retry_after=2))
    async with api.session.post(
        emu.endpoint + "/openai/v1/responses", json={"agent_reference": GENERAL, "input": "x"}
    ) as resp:
        assert resp.status == 429
        assert resp.headers["Retry-After"] == "2"
        assert resp.headers["retry-after-ms"] == "2000"
        body = await resp.json()
    assert body["error"]["code"] == "rate_limit_exceeded"
    assert emu.stats()["requests"]["POST /openai/v1/responses"] == {"429": 1}


async def test_run_failed_fault_rule_applies_to_responses(api: Api, emu: Emulator) -> None:
    """A run_failed fault rule on the responses route makes the next response fail with the
    rule's code."""
    emu.inject(FaultRule(route="POST /openai/v1/responses", kind="run_failed", code="server_error"))
    resp = await api.respond(agent_reference=GENERAL, input="hello")
    assert resp["status"] == "failed" and resp["error"]["code"] == "server_error"


async def test_auth_is_required(emu: Emulator) -> None:
    """Without a bearer token the v2 routes answer 401, like classic."""
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            emu.endpoint + "/openai/v1/responses", json={"agent_reference": GENERAL, "input": "x"}
        ) as resp,
    ):
        assert resp.status == 401


async def test_agent_versions_api(api: Api) -> None:
    """POST /agents/{name}/versions creates numbered immutable versions (agent.version
    objects); the latest is what an unpinned agent_reference runs; versions list, get and
    delete; /agents lists agents; invalid names are 400."""
    body = {
        "definition": {"kind": "prompt", "model": "gpt-4o", "instructions": "Be concise."},
        "description": "test agent",
        "metadata": {"team": "qa"},
    }
    v1 = await api.call("POST", "/agents/qa-bot/versions", body)
    assert v1["object"] == "agent.version" and v1["id"] == "qa-bot:1"
    assert v1["version"] == "1" and v1["definition"]["kind"] == "prompt"
    assert v1["metadata"] == {"team": "qa"}
    v2 = await api.call(
        "POST", "/agents/qa-bot/versions", {"definition": {"kind": "prompt", "model": "gpt-4o"}}
    )
    assert v2["version"] == "2"
    agent = await api.call("GET", "/agents/qa-bot")
    assert agent["object"] == "agent" and agent["versions"]["latest"]["version"] == "2"
    resp = await api.respond(
        agent_reference={"type": "agent_reference", "name": "qa-bot"}, input="x"
    )
    assert resp["agent_reference"]["version"] == "2"
    pinned = await api.respond(
        agent_reference={"type": "agent_reference", "name": "qa-bot", "version": "1"},
        input="Hello there",
    )
    assert text_of(pinned) == "Hello!"  # version 1 is concise
    versions = await api.call("GET", "/agents/qa-bot/versions", params={"order": "asc"})
    assert [v["version"] for v in versions["data"]] == ["1", "2"]
    assert (await api.call("GET", "/agents/qa-bot/versions/1"))["id"] == "qa-bot:1"
    listed = await api.call("GET", "/agents", params={"limit": "100"})
    names = {a["name"] for a in listed["data"]}
    assert {"general-assistant", "math-tutor", "weather-assistant", "qa-bot", "brief"} <= names
    deleted = await api.call("DELETE", "/agents/qa-bot/versions/1")
    assert deleted["object"] == "agent.version.deleted" and deleted["deleted"] is True
    await api.call("GET", "/agents/qa-bot/versions/1", status=404)
    assert (await api.call("DELETE", "/agents/qa-bot"))["deleted"] is True
    await api.call("GET", "/agents/qa-bot", status=404)
    for bad in ("-bad", "bad-", "a" * 64, "has_underscore"):
        await api.call("POST", f"/agents/{bad}/versions", body, status=400)


async def test_agent_routes_need_api_version(api: Api, emu: Emulator) -> None:
    """Agent management takes ?api-version (like the rest of the project API); the /openai/v1
    data plane works without one."""
    async with api.session.get(emu.endpoint + "/agents/general-assistant") as resp:
        assert resp.status == 400
    async with api.session.get(emu.endpoint + "/agents", params={"api-version": "v1"}) as resp:
        assert resp.status == 200


async def test_settings_agents_and_reset(api: Api, emu: Emulator) -> None:
    """Agents from settings are served by name and version (a configured agent pinned by its
    version); reset drops responses and API-created agents and restores the configured ones."""
    resp = await api.respond(
        agent_reference={"type": "agent_reference", "name": "brief", "version": "7"},
        input="Hello",
    )
    assert text_of(resp) == "Hello!"
    await api.call("POST", "/agents/temp-agent/versions", {"definition": {"model": "gpt-4o"}})
    emu.reset()
    await api.call("GET", "/agents/temp-agent", status=404)
    await api.call("GET", f"/openai/v1/responses/{resp['id']}", status=404)
    assert (await api.call("GET", "/agents/brief"))["versions"]["latest"]["version"] == "7"
    assert emu.stats()["responses_created"] == 0


async def test_bad_input_is_400(api: Api) -> None:
    """Malformed input items and types are 400 with the offending parameter named."""
    err = await api.call(
        "POST",
        "/openai/v1/responses",
        {
            "agent_reference": GENERAL,
            "input": [{"type": "message", "role": "robot", "content": "x"}],
        },
        status=400,
    )
    assert err["error"]["param"] == "input[0].role"
    err = await api.call(
        "POST", "/openai/v1/responses", {"agent_reference": GENERAL, "input": 5}, status=400
    )
    assert err["error"]["param"] == "input"
    err = await api.call(
        "POST",
        "/openai/v1/responses",
        {"agent_reference": GENERAL, "input": "x", "stream": "yes"},
        status=400,
    )
    assert err["error"]["param"] == "stream"


async def _read_into(resp: aiohttp.ClientResponse, chunks: list[bytes]) -> None:
    async for chunk in resp.content.iter_any():
        chunks.append(chunk)


async def test_stream_cut_fault_foreground_and_background(api: Api, emu: Emulator) -> None:
    """A stream_cut fault closes the stream after N frames: a foreground response is then
    cancelled (its client is gone), a background one completes and its events can be
    replayed from the last sequence number seen."""
    route = "POST /openai/v1/responses"
    emu.inject(FaultRule(route=route, kind="stream_cut", after_events=2))
    body = {"agent_reference": GENERAL, "input": "Tell me a long story", "stream": True}
    async with api.session.post(emu.endpoint + "/openai/v1/responses", json=body) as resp:
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()
    emu.inject(FaultRule(route=route, kind="stream_cut", after_events=3))
    async with api.session.post(
        emu.endpoint + "/openai/v1/responses", json={**body, "background": True}
    ) as resp:
        chunks: list[bytes] = []
        with pytest.raises(aiohttp.ClientPayloadError):
            await _read_into(resp, chunks)
        raw = b"".join(chunks)
    frames = [json.loads(f.split("data: ", 1)[1]) for f in raw.decode().strip().split("\n\n")]
    assert [f["type"] for f in frames] == [
        "response.created",
        "response.queued",
        "response.in_progress",
    ]
    rid = frames[0]["response"]["id"]
    assert (await api.wait(rid))["status"] == "completed"
    async with api.session.get(
        emu.endpoint + f"/openai/v1/responses/{rid}",
        params={"stream": "true", "starting_after": "2"},
    ) as resp:
        rest = (await resp.read()).decode()
    assert rest.startswith("event: response.output_item.added\ndata: ")
    assert '"type":"response.completed"' in rest
    deadline = asyncio.get_running_loop().time() + 10
    while emu.stats()["active_responses"]:
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.02)
    assert emu.stats()["responses_by_status"] == {"cancelled": 1, "completed": 1}


async def test_delete_response_and_reset_keep_counters_consistent(api: Api, emu: Emulator) -> None:
    """Deleting an active response counts it cancelled; a reset with active responses leaves
    no stale counts behind."""
    slow = {"type": "agent_reference", "name": "slow-agent"}
    resp = await api.respond(agent_reference=slow, input="hi", background=True)
    deleted = await api.call("DELETE", f"/openai/v1/responses/{resp['id']}")
    assert deleted == {"id": resp["id"], "object": "response", "deleted": True}
    await api.call("GET", f"/openai/v1/responses/{resp['id']}", status=404)
    assert emu.stats()["responses_by_status"] == {"cancelled": 1}
    await api.respond(agent_reference=slow, input="hi", background=True)
    emu.reset()
    await asyncio.sleep(0.05)  # let the cancelled task run its handler
    stats = emu.stats()
    assert stats["responses_by_status"] == {} and stats["active_responses"] == 0


async def test_store_false_keeps_nothing(api: Api) -> None:
    """store: false answers the response but keeps nothing: a later GET and a
    previous_response_id naming it are 404; background needs store (400)."""
    resp = await api.respond(agent_reference=GENERAL, input="Hello", store=False)
    assert resp["status"] == "completed" and resp["store"] is False
    await api.call("GET", f"/openai/v1/responses/{resp['id']}", status=404)
    await api.call(
        "POST",
        "/openai/v1/responses",
        {"agent_reference": GENERAL, "input": "x", "previous_response_id": resp["id"]},
        status=404,
    )
    err = await api.call(
        "POST",
        "/openai/v1/responses",
        {"agent_reference": GENERAL, "input": "x", "store": False, "background": True},
        status=400,
    )
    assert err["error"]["param"] == "background"


async def test_only_background_streams_resume(api: Api) -> None:
    """GET ?stream=true on a response that was not created background and streamed is 400."""
    events = await api.events(agent_reference=GENERAL, input="Hello")
    rid = events[0]["response"]["id"]
    err = await api.call(
        "GET", f"/openai/v1/responses/{rid}", params={"stream": "true"}, status=400
    )
    assert err["error"]["param"] == "stream"
