"""The emulator's REST API over real sockets: objects, errors, paging, lifecycle, model."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from agentrun.emulator import AgentSpec, Emulator, EmulatorSettings, Timing

pytestmark = pytest.mark.anyio

FAST = Timing(queue_delay=0.01, run_duration=0.02, delta_interval=0.001, cancel_delay=0.02)
SLOW = Timing(queue_delay=0.01, run_duration=5.0, delta_interval=0.001, cancel_delay=0.05)
SETTINGS = EmulatorSettings(
    timing=FAST,
    agents=(
        AgentSpec(id="asst_slow", name="slow", instructions="Take your time.", timing=SLOW),
        AgentSpec(id="asst_brief", name="brief", instructions="Be concise."),
        AgentSpec(
            id="asst_tools",
            name="weather",
            instructions="Use tools.",
            tools=(
                {
                    "type": "function",
                    "function": {
                        "name": "get_weather",
                        "description": "Weather for a city",
                        "parameters": {
                            "type": "object",
                            "properties": {
                                "location": {"type": "string"},
                                "days": {"type": "integer"},
                            },
                            "required": ["location"],
                        },
                    },
                },
                {
                    "type": "function",
                    "function": {
                        "name": "get_time",
                        "parameters": {
                            "type": "object",
                            "properties": {"timezone": {"type": "string"}},
                            "required": ["timezone"],
                        },
                    },
                },
            ),
        ),
    ),
)

RUN_KEYS = {
    "id", "object", "thread_id", "assistant_id", "status", "required_action", "last_error",
    "model", "instructions", "tools", "created_at", "expires_at", "started_at", "completed_at",
    "cancelled_at", "failed_at", "incomplete_details", "usage", "temperature", "top_p",
    "max_prompt_tokens", "max_completion_tokens", "truncation_strategy", "tool_choice",
    "response_format", "metadata", "tool_resources", "parallel_tool_calls",
}  # fmt: skip
MESSAGE_KEYS = {
    "id", "object", "created_at", "thread_id", "role", "content", "assistant_id", "run_id",
    "attachments", "metadata",
}  # fmt: skip
STEP_KEYS = {
    "id", "object", "type", "assistant_id", "thread_id", "run_id", "status", "step_details",
    "last_error", "created_at", "expires_at", "completed_at", "cancelled_at", "failed_at",
    "usage",
}  # fmt: skip


class Api:
    """A thin JSON client for the emulator that asserts the status of every call."""

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
        **kwargs: Any,
    ) -> Any:
        query = {"api-version": "v1", **(params or {})}
        async with self.session.request(
            method, self.emu.endpoint + path, json=body, params=query, **kwargs
        ) as resp:
            data = await resp.json()
            assert resp.status == status, data
            return data

    async def thread(self, *messages: str) -> str:
        body = {"messages": [{"role": "user", "content": m} for m in messages]}
        thread: dict[str, Any] = await self.call("POST", "/threads", body)
        return str(thread["id"])

    async def wait(self, thread_id: str, run_id: str, timeout: float = 5.0) -> dict[str, Any]:
        """Poll a run until it leaves queued/in_progress/cancelling."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            run: dict[str, Any] = await self.call("GET", f"/threads/{thread_id}/runs/{run_id}")
            if run["status"] not in ("queued", "in_progress", "cancelling"):
                return run
            assert asyncio.get_running_loop().time() < deadline, run
            await asyncio.sleep(0.01)

    async def run(self, thread_id: str, agent: str = "asst_abc123", **body: Any) -> dict[str, Any]:
        run = await self.call("POST", f"/threads/{thread_id}/runs", {"assistant_id": agent, **body})
        return await self.wait(thread_id, run["id"])

    async def reply(self, thread_id: str) -> dict[str, Any]:
        page = await self.call("GET", f"/threads/{thread_id}/messages", params={"limit": "1"})
        message: dict[str, Any] = page["data"][0]
        assert message["role"] == "assistant"
        return message


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(SETTINGS) as emulator:
        yield emulator


@pytest.fixture
async def api(emu: Emulator) -> AsyncIterator[Api]:
    headers = {"Authorization": f"Bearer {emu.api_key}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        yield Api(session, emu)


def text_of(message: dict[str, Any]) -> str:
    return "".join(c["text"]["value"] for c in message["content"] if c["type"] == "text")


# -- protocol: versions, auth, errors ----------------------------------------------------------


async def test_api_version_is_required_and_checked(api: Api) -> None:
    """Every API call needs a supported api-version; otherwise 400 with a JSON error body in
    Azure's vocabulary (`UnsupportedApiVersionValue` with the service's message, M8)."""
    url = api.emu.endpoint + "/threads"
    async with api.session.post(url) as resp:
        assert resp.status == 400
        assert resp.content_type == "application/json"
        body = await resp.json()
        assert body["error"]["code"] == "MissingApiVersionParameter"
        assert "api-version" in body["error"]["message"]
    async with api.session.post(url, params={"api-version": "2024-01-01"}) as resp:
        assert resp.status == 400
        error = (await resp.json())["error"]
        assert error["code"] == "UnsupportedApiVersionValue"
        assert error["message"] == (
            "Unsupported api version '2024-01-01'. The supported versions are "
            "'v1', '2025-05-01', '2025-05-15-preview'"
        )
    for version in ("v1", "2025-05-01", "2025-05-15-preview"):
        async with api.session.post(url, params={"api-version": version}) as resp:
            assert resp.status == 200, version


async def test_bearer_token_is_required_on_api_routes(emu: Emulator) -> None:
    """Missing or unknown bearer -> 401 unauthorized; token endpoint and /_emulator are open;
    a token from the emulator's token endpoint is accepted."""
    url = emu.endpoint + "/threads?api-version=v1"
    async with aiohttp.ClientSession() as session:
        for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic x"}):
            async with session.post(url, headers=headers) as resp:
                assert resp.status == 401
                body = await resp.json()
                assert body["error"]["code"] == "unauthorized"
                assert body["error"]["message"]
        async with session.get(emu.url + "/_emulator/stats") as resp:
            assert resp.status == 200
        form = {
            "client_id": emu.client_id,
            "client_secret": emu.client_secret,
            "grant_type": "client_credentials",
            "scope": "https://ai.azure.com/.default",
        }
        async with session.post(f"{emu.url}/{emu.tenant_id}/oauth2/v2.0/token", data=form) as r:
            assert r.status == 200
            token = (await r.json())["access_token"]
        async with session.post(url, headers={"Authorization": f"Bearer {token}"}) as resp:
            assert resp.status == 200
    assert emu.stats()["tokens_issued"] == 1


async def test_unknown_ids_are_404_with_json_bodies(api: Api) -> None:
    """Unknown thread, run, message, step, agent and route are 404 with {"error": {...}}."""
    tid = await api.thread("hi")
    run = await api.run(tid)
    for path in (
        "/threads/thread_nope",
        "/threads/thread_nope/messages",
        f"/threads/{tid}/runs/run_nope",
        f"/threads/{tid}/messages/msg_nope",
        f"/threads/{tid}/runs/{run['id']}/steps/step_nope",
        "/assistants/asst_nope",
        "/no/such/route",
    ):
        body = await api.call("GET", path, status=404)
        # unknown objects are not_found; an unknown route has the front door's code "404"
        assert body["error"]["code"] == ("404" if path == "/no/such/route" else "not_found")
        assert body["error"]["message"], path
    body = await api.call("POST", f"/threads/{tid}/runs", {"assistant_id": "asst_nope"}, status=404)
    assert "asst_nope" in body["error"]["message"]


async def test_malformed_bodies_are_400(api: Api) -> None:
    """Invalid JSON, a non-object body, wrong types and missing required fields are 400."""
    tid = await api.thread()
    url = f"{api.emu.endpoint}/threads/{tid}/messages?api-version=v1"
    for raw in (b"{not json", b"[1, 2]", b'"text"'):
        headers = {"Content-Type": "application/json"}
        async with api.session.post(url, data=raw, headers=headers) as resp:
            assert resp.status == 400
            error = (await resp.json())["error"]
            assert error["type"] == "invalid_request_error"
            assert error["code"] == "invalid_value"
    msgs, runs, agent = f"/threads/{tid}/messages", f"/threads/{tid}/runs", "asst_abc123"
    cases: list[tuple[str, dict[str, Any], str]] = [
        (msgs, {"content": "x"}, "role"),
        (msgs, {"role": "user"}, "content"),
        (msgs, {"role": "robot", "content": "x"}, "role"),
        (msgs, {"role": "user", "content": 5}, "content"),
        (msgs, {"role": "user", "content": "x", "metadata": {"a": 1}}, "metadata"),
        (runs, {}, "assistant_id"),
        (runs, {"assistant_id": 7}, "assistant_id"),
        (runs, {"assistant_id": agent, "stream": "yes"}, "stream"),
        (runs, {"assistant_id": agent, "temperature": "hot"}, "temperature"),
        (runs, {"assistant_id": agent, "top_p": 3}, "top_p"),
        (runs, {"assistant_id": agent, "max_completion_tokens": 10}, "max_completion_tokens"),
        (runs, {"assistant_id": agent, "tools": [{"x": 1}]}, "tools[0]"),
        ("/threads", {"messages": [{"role": "user"}]}, "messages[0].content"),
        ("/assistants", {"name": "no model"}, "model"),
    ]
    for path, body, param in cases:
        error = (await api.call("POST", path, body, status=400))["error"]
        assert error["type"] == "invalid_request_error", (path, body)
        assert error["code"] in ("invalid_value", "missing_required_parameter"), (path, error)
        assert error["param"] == param, (path, body, error)
    # nothing was created by the rejected requests
    listing = await api.call("GET", f"/threads/{tid}/messages")
    assert listing["data"] == []


# -- objects -------------------------------------------------------------------------------


async def test_thread_crud_with_empty_body(api: Api) -> None:
    """POST /threads with no body at all (LiteLLM) works; get/update/list/delete round-trip."""
    async with api.session.post(api.emu.endpoint + "/threads?api-version=2025-05-01") as resp:
        assert resp.status == 200
        thread = await resp.json()
    assert set(thread) == {"id", "object", "created_at", "tool_resources", "metadata"}
    assert thread["id"].startswith("thread_")
    assert thread["object"] == "thread"
    assert isinstance(thread["created_at"], int)
    tid = thread["id"]
    updated = await api.call("POST", f"/threads/{tid}", {"metadata": {"k": "v"}})
    assert updated["metadata"] == {"k": "v"}
    assert (await api.call("GET", f"/threads/{tid}"))["metadata"] == {"k": "v"}
    listing = await api.call("GET", "/threads")
    assert listing["data"][0]["id"] == tid
    deleted = await api.call("DELETE", f"/threads/{tid}")
    assert deleted == {"id": tid, "object": "thread.deleted", "deleted": True}
    await api.call("GET", f"/threads/{tid}", status=404)


async def test_agents_crud(api: Api) -> None:
    """Preloaded agents exist; agents can be created, updated, listed and deleted."""
    preloaded = await api.call("GET", "/assistants/asst_abc123")
    assert preloaded["object"] == "assistant"
    assert (await api.call("GET", "/assistants/asst_def456"))["name"] == "Math Tutor"
    agent = await api.call("POST", "/assistants", {"model": "gpt-4o-mini", "name": "mine"})
    assert agent["id"].startswith("asst_")
    assert agent["model"] == "gpt-4o-mini"
    aid = agent["id"]
    agent = await api.call("POST", f"/assistants/{aid}", {"instructions": "Be brief."})
    assert agent["instructions"] == "Be brief."
    ids = {a["id"] for a in (await api.call("GET", "/assistants", params={"limit": "100"}))["data"]}
    assert {"asst_abc123", "asst_def456", aid} <= ids
    deleted = await api.call("DELETE", f"/assistants/{aid}")
    assert deleted == {"id": aid, "object": "assistant.deleted", "deleted": True}
    tid = await api.thread("hi")
    await api.call("POST", f"/threads/{tid}/runs", {"assistant_id": aid}, status=404)


async def test_message_paging(api: Api) -> None:
    """limit/order/after/before paging; default order desc; empty page has last_id null."""
    tid = await api.thread(*(f"m{i}" for i in range(5)))
    full = await api.call("GET", f"/threads/{tid}/messages")
    assert [text_of(m) for m in full["data"]] == ["m4", "m3", "m2", "m1", "m0"]
    assert set(full["data"][0]) == MESSAGE_KEYS
    assert full["object"] == "list"
    assert full["has_more"] is False
    seen: list[str] = []
    after = None
    while True:
        params = {"limit": "2", "order": "asc"} | ({"after": after} if after else {})
        page = await api.call("GET", f"/threads/{tid}/messages", params=params)
        seen += [text_of(m) for m in page["data"]]
        if not page["last_id"]:
            assert page["data"] == []
            assert page["first_id"] is None
            assert page["has_more"] is False
            break
        assert page["first_id"] == page["data"][0]["id"]
        assert page["has_more"] == (len(seen) < 5)
        after = page["last_id"]
    assert seen == ["m0", "m1", "m2", "m3", "m4"]
    m2 = full["data"][2]["id"]
    before = await api.call("GET", f"/threads/{tid}/messages", params={"before": m2})
    assert [text_of(m) for m in before["data"]] == ["m4", "m3"]
    for bad in ({"limit": "0"}, {"limit": "101"}, {"limit": "x"}, {"order": "up"}):
        await api.call("GET", f"/threads/{tid}/messages", params=bad, status=400)
    run = await api.run(tid)
    by_run = await api.call("GET", f"/threads/{tid}/messages", params={"run_id": run["id"]})
    assert [m["role"] for m in by_run["data"]] == ["assistant"]
    message = await api.call("GET", f"/threads/{tid}/messages/{m2}")
    assert message["run_id"] is None
    updated = await api.call("POST", f"/threads/{tid}/messages/{m2}", {"metadata": {"a": "b"}})
    assert updated["metadata"] == {"a": "b"}


# -- runs ------------------------------------------------------------------------------------


async def test_run_lifecycle_fields_and_steps(api: Api) -> None:
    """A run is created queued with the reference's defaults, then completes with timestamps,
    usage, a completed message_creation step and an assistant message carrying run ids."""
    tid = await api.thread("Hello")
    created = await api.call("POST", f"/threads/{tid}/runs", {"assistant_id": "asst_abc123"})
    assert set(created) == RUN_KEYS
    assert created["status"] == "queued"
    assert created["object"] == "thread.run"
    assert created["expires_at"] == created["created_at"] + 600
    assert created["started_at"] is None
    assert created["usage"] is None
    assert created["temperature"] == 1.0
    assert created["top_p"] == 1.0
    assert created["truncation_strategy"] == {"type": "auto", "last_messages": None}
    assert created["response_format"] == "auto"
    assert created["tool_choice"] == "auto"
    assert created["parallel_tool_calls"] is True
    assert created["instructions"] == "You are a helpful assistant."
    assert created["model"] == "gpt-4o"
    run = await api.wait(tid, created["id"])
    assert run["status"] == "completed"
    assert run["started_at"] >= run["created_at"]
    assert run["completed_at"] >= run["started_at"]
    assert run["failed_at"] is None
    assert run["cancelled_at"] is None
    usage = run["usage"]
    assert usage["prompt_tokens"] > 0
    assert usage["completion_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    steps = await api.call("GET", f"/threads/{tid}/runs/{run['id']}/steps")
    assert len(steps["data"]) == 1
    step = steps["data"][0]
    assert set(step) == STEP_KEYS
    assert step["type"] == "message_creation"
    assert step["status"] == "completed"
    reply = await api.reply(tid)
    assert step["step_details"]["message_creation"]["message_id"] == reply["id"]
    assert "status" not in reply  # only the stream's thread.message.* events carry it
    assert reply["run_id"] == run["id"]
    assert reply["assistant_id"] == "asst_abc123"
    assert text_of(reply) == "Hello! How can I help you today?"
    again = await api.call("GET", f"/threads/{tid}/runs/{run['id']}/steps/{step['id']}")
    assert again == step
    runs = await api.call("GET", f"/threads/{tid}/runs")
    assert [r["id"] for r in runs["data"]] == [run["id"]]
    updated = await api.call("POST", f"/threads/{tid}/runs/{run['id']}", {"metadata": {"x": "1"}})
    assert updated["metadata"] == {"x": "1"}


async def test_one_active_run_per_thread(api: Api) -> None:
    """A second run, or a new message, on a thread with an active run is 400."""
    tid = await api.thread("hello")
    run = await api.call("POST", f"/threads/{tid}/runs", {"assistant_id": "asst_slow"})
    error = (
        await api.call("POST", f"/threads/{tid}/runs", {"assistant_id": "asst_slow"}, status=400)
    )["error"]
    assert error["message"] == f"Thread {tid} already has an active run {run['id']}."
    error = (
        await api.call(
            "POST", f"/threads/{tid}/messages", {"role": "user", "content": "x"}, status=400
        )
    )["error"]
    assert error["message"] == f"Can't add messages to {tid} while a run {run['id']} is active."
    await api.call("POST", f"/threads/{tid}/runs/{run['id']}/cancel")


async def test_cancel_goes_through_cancelling(api: Api) -> None:
    """Cancel -> cancelling at once, cancelled shortly after with cancelled_at; a second
    cancel of the now terminal run is 400; the thread accepts new runs again."""
    tid = await api.thread("hello")
    run = await api.call("POST", f"/threads/{tid}/runs", {"assistant_id": "asst_slow"})
    cancelling = await api.call("POST", f"/threads/{tid}/runs/{run['id']}/cancel")
    assert cancelling["status"] == "cancelling"
    final = await api.wait(tid, run["id"])
    assert final["status"] == "cancelled"
    assert final["cancelled_at"] is not None
    assert final["completed_at"] is None
    error = (await api.call("POST", f"/threads/{tid}/runs/{run['id']}/cancel", status=400))["error"]
    assert "cancelled" in error["message"]
    assert (await api.run(tid))["status"] == "completed"


async def test_run_options_are_applied(api: Api) -> None:
    """instructions override the agent's, additional_instructions are appended,
    additional_messages join the thread, explicit options are echoed."""
    tid = await api.thread()
    body: dict[str, Any] = {
        "instructions": "Answer briefly.",
        "additional_instructions": "Use metric units.",
        "additional_messages": [{"role": "user", "content": "What is 6 * 7?"}],
        "temperature": 0.5,
        "top_p": 0.9,
        "max_prompt_tokens": 1000,
        "max_completion_tokens": 500,
        "truncation_strategy": {"type": "last_messages", "last_messages": 3},
        "tool_choice": "none",
        "response_format": {"type": "text"},
        "parallel_tool_calls": False,
        "metadata": {"job": "7"},
        "model": "gpt-4o-mini",
    }
    run = await api.run(tid, **body)
    assert run["instructions"] == "Answer briefly.\n\nUse metric units."
    for key, value in body.items():
        if not key.startswith(("instructions", "additional_", "parallel")):
            assert run[key] == value, key
    assert run["parallel_tool_calls"] is False
    assert text_of(await api.reply(tid)) == "42"  # brief instructions -> just the number


# -- the scripted model ------------------------------------------------------------------------


async def test_arithmetic_and_math_tutor(api: Api) -> None:
    """Arithmetic questions get the right number, from both preloaded agents."""
    for question, answer in (
        ("What is 25 * 4?", "100"),
        ("What is (3 + 4) * 2 - 1?", "13"),
        ("what is 10 divided by 4", "2.5"),
    ):
        tid = await api.thread(question)
        await api.run(tid)
        assert f"The answer is {answer}." in text_of(await api.reply(tid)), question
    tid = await api.thread("What is 12 + 30?")
    await api.run(tid, "asst_def456")
    text = text_of(await api.reply(tid))
    assert "step by step" in text
    assert "42" in text


async def test_name_memory_across_runs(api: Api) -> None:
    """'My name is X' in one run, 'What's my name?' in a later run of the thread -> X."""
    tid = await api.thread("Hi, my name is Alice.")
    await api.run(tid)
    assert "Alice" in text_of(await api.reply(tid))
    await api.call(
        "POST", f"/threads/{tid}/messages", {"role": "user", "content": "What's my name?"}
    )
    await api.run(tid)
    assert text_of(await api.reply(tid)) == "Your name is Alice."


async def test_concise_instructions_and_usage_counts(api: Api) -> None:
    """Agent instructions asking for brevity give a short reply; usage counts are the regex
    token counts of instructions + messages (prompt) and of the reply (completion)."""
    tid = await api.thread("What is 2 + 3?")
    run = await api.run(tid, "asst_brief")
    assert text_of(await api.reply(tid)) == "5"
    # "Be concise." = 3 tokens; "What is 2 + 3?" = 6 tokens; "5" = 1 token
    assert run["usage"] == {
        "prompt_tokens": 9,
        "completion_tokens": 1,
        "total_tokens": 10,
        "prompt_token_details": {"cached_tokens": 0},
    }
    tid = await api.thread("Tell me about rivers and mountains in autumn")
    await api.run(tid, "asst_abc123", additional_instructions="Keep it brief.")
    assert len(text_of(await api.reply(tid)).split()) <= 10


async def test_long_reply_and_max_completion_tokens(api: Api) -> None:
    """'Write a long story' gives 400+ tokens; with max_completion_tokens=256 the run ends
    incomplete (max_completion_tokens) and the message is truncated and incomplete."""
    tid = await api.thread("Write a long story about the sea")
    run = await api.run(tid)
    assert run["status"] == "completed"
    assert run["usage"]["completion_tokens"] >= 400
    full = text_of(await api.reply(tid))
    tid = await api.thread("Write a long story about the sea")
    run = await api.run(tid, max_completion_tokens=256)
    assert run["status"] == "incomplete"
    assert run["incomplete_details"] == {"reason": "max_completion_tokens"}
    assert run["usage"]["completion_tokens"] <= 256
    assert run["completed_at"] is not None
    reply = await api.reply(tid)
    # outside a stream a message has no status (as Azure's); the stream events carry it
    assert "status" not in reply and "incomplete_details" not in reply
    assert full.startswith(text_of(reply))
    assert len(text_of(reply)) < len(full)


async def test_default_reply_is_deterministic(api: Api) -> None:
    """The same prompt gives the same reply in different threads; different prompts differ."""
    replies = []
    for prompt in ("Tell me about clouds", "Tell me about clouds", "Tell me about stones"):
        tid = await api.thread(prompt)
        await api.run(tid)
        replies.append(text_of(await api.reply(tid)))
    assert replies[0] == replies[1]
    assert replies[0] != replies[2]
    assert "Tell me about clouds" in replies[0]


async def test_function_tools_round_trip(api: Api) -> None:
    """A message naming a tool -> requires_action with a JSON tool call built from the schema;
    submitting the output resumes the run, which completes and uses the output."""
    tid = await api.thread("Call get_weather for the weather in Paris for 3 days")
    run = await api.run(tid, "asst_tools")
    assert run["status"] == "requires_action"
    action = run["required_action"]
    assert action["type"] == "submit_tool_outputs"
    (call,) = action["submit_tool_outputs"]["tool_calls"]
    assert call["id"].startswith("call_")
    assert call["type"] == "function"
    assert call["function"]["name"] == "get_weather"
    import json

    assert json.loads(call["function"]["arguments"]) == {"location": "Paris", "days": 3}
    path = f"/threads/{tid}/runs/{run['id']}"
    # wrong submissions are rejected
    await api.call("POST", path + "/submit_tool_outputs", {"tool_outputs": []}, status=400)
    bad = {"tool_outputs": [{"tool_call_id": "call_nope", "output": "x"}]}
    await api.call("POST", path + "/submit_tool_outputs", bad, status=400)
    await api.call("POST", f"/threads/{tid}/messages", {"role": "user", "content": "x"}, status=400)
    good = {"tool_outputs": [{"tool_call_id": call["id"], "output": "sunny, 21C"}]}
    resumed = await api.call("POST", path + "/submit_tool_outputs", good)
    assert resumed["status"] == "queued"
    assert resumed["required_action"] is None
    final = await api.wait(tid, run["id"])
    assert final["status"] == "completed"
    assert "sunny, 21C" in text_of(await api.reply(tid))
    steps = (await api.call("GET", path + "/steps", params={"order": "asc"}))["data"]
    assert [s["type"] for s in steps] == ["tool_calls", "message_creation"]
    assert steps[0]["status"] == "completed"
    assert steps[0]["step_details"]["tool_calls"][0]["function"]["output"] == "sunny, 21C"
    await api.call("POST", path + "/submit_tool_outputs", good, status=400)


async def test_parallel_tool_calls_and_run_level_tools(api: Api) -> None:
    """Naming two tools gives two parallel calls; tools passed on the run are used too."""
    tid = await api.thread("Use get_weather in Oslo and get_time for 'Europe/Oslo'")
    run = await api.run(tid, "asst_tools")
    calls = run["required_action"]["submit_tool_outputs"]["tool_calls"]
    assert [c["function"]["name"] for c in calls] == ["get_weather", "get_time"]
    outputs = [{"tool_call_id": c["id"], "output": f"out{i}"} for i, c in enumerate(calls)]
    await api.call(
        "POST", f"/threads/{tid}/runs/{run['id']}/submit_tool_outputs", {"tool_outputs": outputs}
    )
    await api.wait(tid, run["id"])
    text = text_of(await api.reply(tid))
    assert "out0" in text
    assert "out1" in text
    tool = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object",
            "properties": {"n": {"type": "number"}}, "required": ["n"]}}}  # fmt: skip
    tid = await api.thread("please lookup 12.5")
    run = await api.run(tid, tools=[tool])
    (call,) = run["required_action"]["submit_tool_outputs"]["tool_calls"]
    assert call["function"] == {"name": "lookup", "arguments": '{"n": 12.5}'}
    await api.call("POST", f"/threads/{tid}/runs/{run['id']}/cancel")


async def test_magic_directives(api: Api) -> None:
    """[emulator:...] directives end runs failed, expired or incomplete on demand."""
    cases = {
        "[emulator:fail=rate_limit_exceeded] hi": ("failed", "rate_limit_exceeded"),
        "[emulator:fail=server_error] hi": ("failed", "server_error"),
        "[emulator:expire] hi": ("expired", None),
        "[emulator:incomplete] tell me a tale": ("incomplete", "max_completion_tokens"),
        "[emulator:content_filter] tell me a tale": ("incomplete", "content_filter"),
    }
    for prompt, (status, detail) in cases.items():
        tid = await api.thread(prompt)
        run = await api.run(tid)
        assert run["status"] == status, prompt
        assert run["usage"] is not None
        if status == "failed":
            assert run["last_error"]["code"] == detail
            assert run["failed_at"] is not None
        elif status == "incomplete":
            assert run["incomplete_details"] == {"reason": detail}
    tid = await api.thread("[emulator:sleep=0.3] hi")
    run = await api.call("POST", f"/threads/{tid}/runs", {"assistant_id": "asst_abc123"})
    await asyncio.sleep(0.15)
    assert (await api.call("GET", f"/threads/{tid}/runs/{run['id']}"))["status"] == "in_progress"
    assert (await api.wait(tid, run["id"]))["status"] == "completed"


async def test_thread_and_run_non_streaming(api: Api) -> None:
    """POST /threads/runs creates the thread with its messages and a run on it."""
    messages = [{"role": "user", "content": "What is 9 * 9?"}]
    body = {"assistant_id": "asst_abc123", "thread": {"messages": messages, "metadata": {"a": "b"}}}
    run = await api.call("POST", "/threads/runs", body)
    assert run["status"] == "queued"
    thread = await api.call("GET", f"/threads/{run['thread_id']}")
    assert thread["metadata"] == {"a": "b"}
    await api.wait(run["thread_id"], run["id"])
    assert "81" in text_of(await api.reply(run["thread_id"]))
    run = await api.call("POST", "/threads/runs", {"assistant_id": "asst_abc123"})
    assert (await api.wait(run["thread_id"], run["id"]))["status"] == "completed"
