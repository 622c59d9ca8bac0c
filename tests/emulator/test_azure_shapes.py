"""The emulator sends the real service's shapes by default (real-service.md H1, H3, H4, L1-L5,
L7, L13), speaks Azure's error vocabulary (M1-M5, M8) and survives odd input.

Every test talks raw HTTP to a real emulator on 127.0.0.1 and asserts field presence and
absence, event order, fragmentation and error bodies as the Azure SDK recordings show them.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from agentrun._classic import wire as _wire
from agentrun.emulator import AgentSpec, Emulator, EmulatorSettings, FaultRule, Timing

pytestmark = pytest.mark.anyio

LOOKUP = {
    "type": "function",
    "function": {
        "name": "lookup",
        "parameters": {
            "type": "object",
            "properties": {"path": {"type": "string"}},
            "required": ["path"],
        },
    },
}
SETTINGS = EmulatorSettings(
    timing=Timing(queue_delay=0.01, run_duration=0.01, delta_interval=0.0, cancel_delay=0.01),
    agents=(
        AgentSpec(id="asst_lookup", name="lookup", tools=(LOOKUP,)),
        AgentSpec(
            id="asst_paced",
            name="paced",
            timing=Timing(queue_delay=0.01, run_duration=0.01, delta_interval=0.05),
        ),
    ),
)
MESSAGE_KEYS = {
    "id", "object", "created_at", "assistant_id", "thread_id", "run_id", "role", "content",
    "attachments", "metadata",
}  # fmt: skip
EVENT_MESSAGE_KEYS = MESSAGE_KEYS | {
    "status",
    "completed_at",
    "incomplete_at",
    "incomplete_details",
}
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


async def stream(session: aiohttp.ClientSession, url: str, body: Any) -> list[tuple[str, Any]]:
    async with session.post(url, json=body, params=V1) as resp:
        assert resp.status == 200, await resp.text()
        assert resp.headers["Content-Type"] == "text/event-stream; charset=utf-8"
        return frames_of(await resp.read())


async def call(
    session: aiohttp.ClientSession, method: str, url: str, body: Any = None, status: int = 200
) -> Any:
    async with session.request(method, url, json=body, params=V1) as resp:
        assert resp.status == status, await resp.text()
        assert resp.headers["Content-Type"] == "application/json"
        return await resp.json()


async def thread_with(session: aiohttp.ClientSession, emu: Emulator, text: str) -> str:
    body = {"messages": [{"role": "user", "content": text}]}
    return str((await call(session, "POST", f"{emu.endpoint}/threads", body))["id"])


async def wait_terminal(session: aiohttp.ClientSession, emu: Emulator, tid: str, rid: str) -> Any:
    for _ in range(500):
        run = await call(session, "GET", f"{emu.endpoint}/threads/{tid}/runs/{rid}")
        if run["status"] not in ("queued", "in_progress", "cancelling"):
            return run
        await asyncio.sleep(0.01)
    raise AssertionError("run did not end")


# -- bullet 1: shapes ------------------------------------------------------------------------


async def test_messages_outside_a_stream_have_no_status(
    session: aiohttp.ClientSession, emu: Emulator
) -> None:
    """create, get and list give message objects without status, completed_at, incomplete_at
    and incomplete_details (H1); JSON is `application/json` without charset (L2), and each
    answer has a UUID apim-request-id and a different 32-hex x-request-id (L1)."""
    tid = await thread_with(session, emu, "Hello")
    url = f"{emu.endpoint}/threads/{tid}/messages"
    async with session.post(url, json={"role": "user", "content": "More"}, params=V1) as resp:
        created = await resp.json()
        apim, xrid = resp.headers["apim-request-id"], resp.headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", apim)
    assert re.fullmatch(r"[0-9a-f]{32}", xrid)
    assert xrid != apim.replace("-", "")
    assert set(created) == MESSAGE_KEYS
    got = await call(session, "GET", f"{url}/{created['id']}")
    assert set(got) == MESSAGE_KEYS
    run = await call(
        session, "POST", f"{emu.endpoint}/threads/{tid}/runs", {"assistant_id": "asst_abc123"}
    )
    await wait_terminal(session, emu, tid, run["id"])
    listing = await call(session, "GET", url)
    assert [m["role"] for m in listing["data"]] == ["assistant", "user", "user"]
    for message in listing["data"]:
        assert set(message) == MESSAGE_KEYS


async def test_text_stream_has_azure_shapes(session: aiohttp.ClientSession, emu: Emulator) -> None:
    """message.created/in_progress carry `content: []` (H3); the first delta opens block 0 and
    alone carries `annotations: []`; deltas are sub-word (L3); stream events carry status;
    steps have no metadata (L7); usage has prompt_token_details (L4)."""
    tid = await thread_with(session, emu, "Hello")
    frames = await stream(
        session,
        f"{emu.endpoint}/threads/{tid}/runs",
        {"assistant_id": "asst_abc123", "stream": True},
    )
    data = dict(frames)
    for name in ("thread.message.created", "thread.message.in_progress"):
        assert data[name]["content"] == []
        assert set(data[name]) == EVENT_MESSAGE_KEYS
        assert data[name]["status"] == "in_progress"
    deltas = [d["delta"]["content"] for e, d in frames if e == "thread.message.delta"]
    assert all(len(c) == 1 and c[0]["index"] == 0 and c[0]["type"] == "text" for c in deltas)
    assert deltas[0][0]["text"]["annotations"] == []
    assert all("annotations" not in c[0]["text"] for c in deltas[1:])
    pieces = [c[0]["text"]["value"] for c in deltas]
    text = "Hello! How can I help you today?"
    assert "".join(pieces) == text
    assert len(pieces) > len(text.split())  # some words come in several pieces
    assert any(not p.startswith(" ") for p in pieces[1:])
    completed = data["thread.message.completed"]
    assert completed["status"] == "completed" and completed["completed_at"] is not None
    for name in ("thread.run.step.created", "thread.run.step.completed"):
        assert "metadata" not in data[name]
    assert data["thread.run.step.completed"]["usage"]["prompt_token_details"] == {
        "cached_tokens": 0
    }
    assert data["thread.run.completed"]["usage"]["prompt_token_details"] == {"cached_tokens": 0}


async def test_function_step_streams_the_azure_way(
    session: aiohttp.ClientSession, emu: Emulator
) -> None:
    """A function-call step: created and in_progress with `tool_calls: []` (H4); the call
    only through deltas: first {index, id, type, function{name, arguments "", output null}},
    then many small argument fragments, one cut inside an escape sequence; after the
    outputs, the run's started_at is stamped again (L5)."""
    tid = await thread_with(session, emu, 'Please lookup "C:\\temp\\notes.txt" now')
    frames = await stream(
        session,
        f"{emu.endpoint}/threads/{tid}/runs",
        {"assistant_id": "asst_lookup", "stream": True},
    )
    events = [e for e, _ in frames]
    assert events[3:5] == ["thread.run.step.created", "thread.run.step.in_progress"]
    assert frames[3][1]["step_details"] == {"type": "tool_calls", "tool_calls": []}
    assert frames[4][1]["step_details"] == {"type": "tool_calls", "tool_calls": []}
    deltas = [d["delta"]["step_details"]["tool_calls"][0] for e, d in frames if e.endswith("delta")]
    action = frames[-2][1]
    assert frames[-2][0] == "thread.run.requires_action"
    call_ = action["required_action"]["submit_tool_outputs"]["tool_calls"][0]
    assert deltas[0] == {
        "index": 0,
        "id": call_["id"],
        "type": "function",
        "function": {"name": "lookup", "arguments": "", "output": None},
    }
    fragments = [d["function"]["arguments"] for d in deltas[1:]]
    assert all(set(d) == {"index", "type", "function"} for d in deltas[1:])
    assert len(fragments) >= 5
    assert "".join(fragments) == call_["function"]["arguments"]
    assert json.loads(call_["function"]["arguments"]) == {"path": "C:\\temp\\notes.txt"}
    assert any(f.endswith("\\") for f in fragments)  # an escape sequence split in two
    first_start = action["started_at"]
    while int(time.time()) <= first_start:
        await asyncio.sleep(0.05)
    url = f"{emu.endpoint}/threads/{tid}/runs/{action['id']}/submit_tool_outputs"
    body = {"stream": True, "tool_outputs": [{"tool_call_id": call_["id"], "output": "ok"}]}
    after = dict(await stream(session, url, body))
    assert after["thread.run.in_progress"]["started_at"] > first_start


async def test_cancel_emits_step_and_message_events(
    session: aiohttp.ClientSession, emu: Emulator
) -> None:
    """Cancelling a run mid-message streams thread.message.incomplete (run_cancelled) and
    thread.run.step.cancelled before thread.run.cancelled (L13)."""
    tid = await thread_with(session, emu, "Write a long story about the sea")
    url = f"{emu.endpoint}/threads/{tid}/runs"
    events: list[tuple[str, Any]] = []
    async with session.post(
        url, json={"assistant_id": "asst_paced", "stream": True}, params=V1
    ) as resp:
        buffer = b""
        cancelled = False
        async for chunk in resp.content.iter_any():
            buffer += chunk
            while b"\n\n" in buffer:
                frame, buffer = buffer.split(b"\n\n", 1)
                events.extend(frames_of(frame + b"\n\n"))
                if events[-1][0] == "thread.message.delta" and not cancelled:
                    cancelled = True
                    run_id = next(d["id"] for e, d in events if e == "thread.run.created")
                    await call(session, "POST", f"{url}/{run_id}/cancel")
    names = [e for e, _ in events]
    tail = [n for n in names if n != "thread.message.delta"][-5:]
    assert tail == [
        "thread.run.cancelling",
        "thread.message.incomplete",
        "thread.run.step.cancelled",
        "thread.run.cancelled",
        "done",
    ]
    incomplete = dict(events)["thread.message.incomplete"]
    assert incomplete["incomplete_details"] == {"reason": "run_cancelled"}


# -- bullet 4: error vocabulary --------------------------------------------------------------


async def test_malformed_ids_are_invalid_value(
    session: aiohttp.ClientSession, emu: Emulator
) -> None:
    """An id without the service's prefix is 400 invalid_value with Azure's message (M2), in
    the path and in the body; a well-formed unknown id is still 404; every error body has
    code, message, param and type (M4)."""
    tid = await thread_with(session, emu, "hi")
    base = emu.endpoint
    body = await call(session, "GET", f"{base}/assistants/my-agent", status=400)
    assert body == {
        "error": {
            "code": "invalid_value",
            "message": "Invalid 'assistant_id': 'my-agent'. "
            "Expected an ID that begins with 'asst'.",
            "param": "assistant_id",
            "type": "invalid_request_error",
        }
    }
    body = await call(
        session, "POST", f"{base}/threads/{tid}/runs", {"assistant_id": "x"}, status=400
    )
    assert body["error"]["message"] == (
        "Invalid 'assistant_id': 'x'. Expected an ID that begins with 'asst'."
    )
    for path, param, prefix in (
        ("/threads/t1", "thread_id", "thread"),
        (f"/threads/{tid}/runs/r1", "run_id", "run"),
        (f"/threads/{tid}/messages/m1", "message_id", "msg"),
    ):
        error = (await call(session, "GET", base + path, status=400))["error"]
        assert error["code"] == "invalid_value"
        assert error["message"].endswith(f"Expected an ID that begins with '{prefix}'.")
        assert error["param"] == param
    error = (await call(session, "GET", f"{base}/threads/thread_unknown", status=404))["error"]
    assert set(error) == {"code", "message", "param", "type"}


async def test_unknown_body_fields_are_unknown_parameter(
    session: aiohttp.ClientSession, emu: Emulator
) -> None:
    """A body key the endpoint does not take is 400 unknown_parameter with OpenAI's exact
    body (M3), nested thread keys included; nothing is created."""
    tid = await thread_with(session, emu, "hi")
    body = await call(
        session,
        "POST",
        f"{emu.endpoint}/threads/{tid}/runs",
        {"assistant_id": "asst_abc123", "max_tokens": 300},
        status=400,
    )
    assert body == {
        "error": {
            "message": "Unknown parameter: 'max_tokens'.",
            "type": "invalid_request_error",
            "param": "max_tokens",
            "code": "unknown_parameter",
        }
    }
    bad_thread = {"assistant_id": "asst_abc123", "thread": {"messages": [], "colour": "red"}}
    error = (await call(session, "POST", f"{emu.endpoint}/threads/runs", bad_thread, status=400))[
        "error"
    ]
    assert error["param"] == "thread.colour" and error["code"] == "unknown_parameter"
    runs = await call(session, "GET", f"{emu.endpoint}/threads/{tid}/runs")
    assert runs["data"] == []


async def test_state_errors_have_null_code(session: aiohttp.ClientSession, emu: Emulator) -> None:
    """Errors about an object's state (a run already active) are 400 with `code: null` and
    `type: invalid_request_error`, OpenAI's shape (M4)."""
    tid = await thread_with(session, emu, "[emulator:sleep=5] wait")
    url = f"{emu.endpoint}/threads/{tid}/runs"
    run = await call(session, "POST", url, {"assistant_id": "asst_abc123"})
    error = (await call(session, "POST", url, {"assistant_id": "asst_abc123"}, status=400))["error"]
    assert error["code"] is None and error["param"] is None
    assert error["type"] == "invalid_request_error"
    assert run["id"] in error["message"]
    await call(session, "POST", f"{url}/{run['id']}/cancel")


async def test_permission_denied_fault(session: aiohttp.ClientSession, emu: Emulator) -> None:
    """FaultRule(kind="permission_denied") answers 401 PermissionDenied worded like the
    service's RBAC failure (M1), naming the data action and the operation."""
    emu.inject(FaultRule(route="GET /assistants/{assistant_id}", kind="permission_denied"))
    body = await call(session, "GET", f"{emu.endpoint}/assistants/asst_abc123", status=401)
    error = body["error"]
    assert error["code"] == "PermissionDenied"
    assert "lacks the required data action" in error["message"]
    assert "Microsoft.CognitiveServices/accounts/AIServices/agents/read" in error["message"]
    assert "GET /api/projects/{projectName}/assistants/{assistant_id}" in error["message"]
    await call(session, "GET", f"{emu.endpoint}/assistants/asst_abc123")


async def test_any_run_failure_code(session: aiohttp.ClientSession, emu: Emulator) -> None:
    """`[emulator:fail=CODE]` and FaultRule(kind="run_failed", code=...) take any code, with
    the service's messages for the known ones (M5)."""
    expected = {
        "invalid_engine_error": "Failed to resolve model info for: gpt-4o",
        "rate_limit_exceeded": "Rate limit is exceeded. Try again in 60 seconds.",
        "server_error": "Sorry, something went wrong.",
        "tool_user_error": "The run failed with error code 'tool_user_error'.",
    }
    for code, message in expected.items():
        tid = await thread_with(session, emu, f"[emulator:fail={code}] hi")
        run = await call(
            session, "POST", f"{emu.endpoint}/threads/{tid}/runs", {"assistant_id": "asst_abc123"}
        )
        run = await wait_terminal(session, emu, tid, run["id"])
        assert run["status"] == "failed"
        assert run["last_error"] == {"code": code, "message": message}
    emu.inject(
        FaultRule(route="POST /threads/{thread_id}/runs", kind="run_failed", code="invalid_prompt")
    )
    tid = await thread_with(session, emu, "hi")
    run = await call(
        session, "POST", f"{emu.endpoint}/threads/{tid}/runs", {"assistant_id": "asst_abc123"}
    )
    run = await wait_terminal(session, emu, tid, run["id"])
    assert run["last_error"]["code"] == "invalid_prompt"


async def test_agentrun_request_bodies_are_accepted(
    session: aiohttp.ClientSession, emu: Emulator
) -> None:
    """Every body agentrun's request builders send, with every run option set, passes the
    emulator's unknown-parameter check."""
    options = _wire.RunOptions(
        instructions="Be brief.",
        tools=[LOOKUP],
        tool_choice="auto",
        response_format="auto",
        temperature=0.5,
        top_p=0.9,
        max_prompt_tokens=2000,
        max_completion_tokens=500,
        truncation_strategy={"type": "auto"},
        metadata={"k": "v"},
        parallel_tool_calls=True,
        model="gpt-4o",
    )
    hello = _wire.InputMessage(role="user", content="Hello")
    made = _wire.create_thread_and_run("asst_abc123", [hello], options, stream=False)
    run = await call(session, made.method, emu.endpoint + made.path, made.json)
    tid = run["thread_id"]
    await wait_terminal(session, emu, tid, run["id"])
    for req in (
        _wire.create_run(
            tid,
            "asst_abc123",
            _wire.RunOptions(additional_instructions="More.", metadata={"a": "b"}),
            additional_messages=[hello],
            stream=False,
        ),
        _wire.create_thread([hello]),
        _wire.create_thread(),
    ):
        result = await call(session, req.method, emu.endpoint + req.path, req.json)
        if result["object"] == "thread.run":
            await wait_terminal(session, emu, tid, result["id"])


# -- bullet 5: odd input ---------------------------------------------------------------------


async def test_lone_surrogate_does_not_kill_a_run(
    session: aiohttp.ClientSession, emu: Emulator
) -> None:
    """A message holding a lone surrogate (JSON "\\ud800") streams and completes, and the
    message list returns it escaped as valid JSON."""
    raw = (
        b'{"assistant_id":"asst_abc123","stream":true,'
        b'"thread":{"messages":[{"role":"user","content":"odd \\ud800 text"}]}}'
    )
    headers = {"Content-Type": "application/json"}
    async with session.post(
        f"{emu.endpoint}/threads/runs", data=raw, params=V1, headers=headers
    ) as resp:
        assert resp.status == 200
        frames = frames_of(await resp.read())
    names = [e for e, _ in frames]
    assert names[-2:] == ["thread.run.completed", "done"]
    tid = frames[0][1]["id"]
    listing = await call(session, "GET", f"{emu.endpoint}/threads/{tid}/messages", None)
    user = listing["data"][-1]
    assert user["content"][0]["text"]["value"] == "odd \ud800 text"


async def test_principal_without_role_is_permission_denied() -> None:
    """A static key listed in keys_without_role authenticates but gets 401 PermissionDenied
    on every API call (the service's answer to a missing role, M1), not `unauthorized`."""
    settings = EmulatorSettings(api_keys=("good-key",), keys_without_role=("no-role-key",))
    async with (
        Emulator(settings) as emu,
        aiohttp.ClientSession(headers={"Authorization": "Bearer no-role-key"}) as s,
    ):
        body = await call(s, "POST", f"{emu.endpoint}/threads", {}, status=401)
        assert body["error"]["code"] == "PermissionDenied"
        assert "agents/write" in body["error"]["message"]


async def test_unknown_route_body(session: aiohttp.ClientSession, emu: Emulator) -> None:
    """A path the service does not have answers 404 with the front door's body (L14)."""
    body = await call(session, "GET", f"{emu.endpoint}/nowhere/at/all", status=404)
    assert body["error"]["code"] == "404"
    assert body["error"]["message"] == "Resource not found"
