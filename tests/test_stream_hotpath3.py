"""The streaming phase's hot path, round 3 (issue 15): snapshots kept undecoded, deltas read
from their bytes.

Pins what the cheaper reading keeps and what it changes: a message's and a step's events
(``thread.message.*``, ``thread.run.step.*``) carry the whole object, so the driver keeps only
each object's latest frame while it reads the stream and decodes that one when the streaming
phase ends (`RunProtocol.snapshot_events`, `snapshot_id`). The result is the same (first-sight
order, the in-progress tool step at ``requires_action``, a failed run's partial message, a
malformed latest snapshot raising), but a snapshot that a later one replaced is never read.
The usual delta chunk is read through the stream's template from its bytes, a delta among
other frames through the template too, and anything the template does not take goes the
general way (escaped text, invalid UTF-8). A replay server on 127.0.0.1 plays the service.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

import pytest
from _web import serve
from aiohttp import web

import agentrun
from agentrun import AsyncClient
from agentrun._classic import wire
from agentrun._classic.protocol import ClassicProtocol
from agentrun._protocol import RunUpdated
from agentrun._results import RunFinished, StreamEvent, TextDelta

pytestmark = pytest.mark.anyio

AGENT = "asst_hot3"
THREAD = "thread_hot3"
RUN = "run_hot3"


def _run(status: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": RUN,
        "object": "thread.run",
        "created_at": 1795000000,
        "assistant_id": AGENT,
        "thread_id": THREAD,
        "status": status,
        "started_at": None,
        "expires_at": None,
        "cancelled_at": None,
        "failed_at": None,
        "completed_at": None,
        "required_action": None,
        "last_error": None,
        "model": "gpt-4o",
        "instructions": "Be brief.",
        "tools": [],
        "tool_resources": {},
        "metadata": {},
        "incomplete_details": None,
        "usage": None,
        **extra,
    }


def _message(mid: str, status: str, text: str = "", **extra: Any) -> dict[str, Any]:
    content = [{"type": "text", "text": {"value": text, "annotations": []}}] if text else []
    return {
        "id": mid,
        "object": "thread.message",
        "created_at": 1795000001,
        "assistant_id": AGENT,
        "thread_id": THREAD,
        "run_id": RUN,
        "status": status,
        "incomplete_details": None,
        "completed_at": None,
        "incomplete_at": None,
        "role": "assistant",
        "content": content,
        "attachments": [],
        "metadata": {},
        **extra,
    }


def _step(sid: str, status: str, details: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": sid,
        "object": "thread.run.step",
        "created_at": 1795000001,
        "run_id": RUN,
        "assistant_id": AGENT,
        "thread_id": THREAD,
        "type": details["type"],
        "status": status,
        "cancelled_at": None,
        "completed_at": None,
        "expires_at": None,
        "failed_at": None,
        "last_error": None,
        "step_details": details,
        "usage": None,
    }


def _delta(mid: str, text: str) -> dict[str, Any]:
    part = {"index": 0, "type": "text", "text": {"value": text}}
    return {"id": mid, "object": "thread.message.delta", "delta": {"content": [part]}}


def frame(name: str, data: Any) -> bytes:
    body = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"event: {name}\ndata: {body}\n\n".encode()


def opening() -> list[bytes]:
    return [
        frame("thread.created", {"id": THREAD, "object": "thread", "created_at": 1}),
        frame("thread.run.created", _run("queued")),
        frame("thread.run.in_progress", _run("in_progress")),
    ]


def closing(status: str = "completed", **extra: Any) -> list[bytes]:
    return [frame(f"thread.run.{status}", _run(status, **extra)), frame("done", "[DONE]")]


MESSAGE_STEP = {"type": "message_creation", "message_creation": {"message_id": "msg_a"}}


async def play(chunks: Sequence[bytes]) -> tuple[list[StreamEvent], BaseException | None]:
    """Stream one invocation from a server that writes `chunks` one write each; the events
    the caller saw and the error the stream raised (None when it finished)."""

    async def handler(request: web.Request) -> web.StreamResponse:
        if request.method == "GET":  # a listing after the stream: nothing more to list
            return web.json_response({"data": [], "has_more": False, "last_id": None})
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for chunk in chunks:
            await resp.write(chunk)
            await asyncio.sleep(0.002)  # most chunks arrive as they were written
        await resp.write_eof()
        return resp

    seen: list[StreamEvent] = []
    async with serve(handler) as url, AsyncClient(url, api_key="k", timeout=20) as client:
        try:
            async with client.stream(AGENT, "Hi") as events:
                async for ev in events:
                    seen.append(ev)
        except agentrun.AgentRunError as exc:
            return seen, exc
    return seen, None


def _result(seen: list[StreamEvent]) -> agentrun.RunResult:
    assert isinstance(seen[-1], RunFinished)
    return seen[-1].result


def _texts(seen: list[StreamEvent]) -> str:
    return "".join(e.text for e in seen if isinstance(e, TextDelta))


# -- snapshots: only each object's latest is decoded --------------------------------------------


async def test_a_malformed_snapshot_that_a_later_one_replaces_is_not_read() -> None:
    """A `thread.message.created` whose object is malformed (content not a list) followed by
    the same message's valid `completed`: the stream finishes with the completed message
    (before round 3 every snapshot was decoded and this raised `RemoteProtocolError`)."""
    chunks = [
        *opening(),
        frame("thread.message.created", _message("msg_a", "in_progress") | {"content": 5}),
        frame("thread.message.delta", _delta("msg_a", "Hello")),
        frame("thread.message.completed", _message("msg_a", "completed", "Hello")),
        *closing(),
    ]
    seen, error = await play(chunks)
    assert error is None
    result = _result(seen)
    assert [m.id for m in result.messages] == ["msg_a"]
    assert result.messages[0].status == "completed"
    assert result.text == "Hello"


async def test_a_malformed_latest_snapshot_still_raises() -> None:
    """The latest snapshot of a message is decoded when the streaming phase ends: a
    malformed one raises `RemoteProtocolError` naming the event, as before."""
    chunks = [
        *opening(),
        frame("thread.message.created", _message("msg_a", "in_progress")),
        frame("thread.message.completed", _message("msg_a", "completed", "Hi") | {"content": 5}),
        *closing(),
    ]
    seen, error = await play(chunks)
    assert isinstance(error, agentrun.RemoteProtocolError)
    assert "thread.message.completed event" in str(error)
    assert not any(isinstance(e, RunFinished) for e in seen)


async def test_messages_and_steps_keep_the_order_of_their_first_sight() -> None:
    """Two messages whose `completed` events come in the other order than their `created`:
    the result lists them in first-sight order, each with its latest snapshot; the same for
    steps."""
    chunks = [
        *opening(),
        frame("thread.run.step.created", _step("step_a", "in_progress", MESSAGE_STEP)),
        frame("thread.message.created", _message("msg_a", "in_progress")),
        frame("thread.run.step.created", _step("step_b", "in_progress", MESSAGE_STEP)),
        frame("thread.message.created", _message("msg_b", "in_progress")),
        frame("thread.message.completed", _message("msg_b", "completed", "second")),
        frame("thread.run.step.completed", _step("step_b", "completed", MESSAGE_STEP)),
        frame("thread.message.completed", _message("msg_a", "completed", "first")),
        frame("thread.run.step.completed", _step("step_a", "completed", MESSAGE_STEP)),
        *closing(),
    ]
    seen, error = await play(chunks)
    assert error is None
    result = _result(seen)
    assert [(m.id, m.status) for m in result.messages] == [
        ("msg_a", "completed"),
        ("msg_b", "completed"),
    ]
    assert [(s.id, s.status) for s in result.steps] == [
        ("step_a", "completed"),
        ("step_b", "completed"),
    ]


async def test_a_snapshot_whose_id_is_not_first_is_decoded_at_once_in_order() -> None:
    """A snapshot frame whose object does not start with its id is decoded as it arrives,
    after the frames kept before it: first-sight order holds across both kinds of frame."""
    late_id = _message("msg_b", "in_progress")
    late_id = {k: v for k, v in late_id.items() if k != "id"} | {"id": "msg_b"}
    done_b = _message("msg_b", "completed", "bee")
    done_b = {k: v for k, v in done_b.items() if k != "id"} | {"id": "msg_b"}
    chunks = [
        *opening(),
        frame("thread.message.created", _message("msg_a", "in_progress")),
        frame("thread.message.created", late_id),
        frame("thread.message.completed", done_b),
        frame("thread.message.completed", _message("msg_a", "completed", "ay")),
        *closing(),
    ]
    assert wire.snapshot_id(json.dumps(late_id, separators=(",", ":"))) is None
    seen, error = await play(chunks)
    assert error is None
    result = _result(seen)
    assert [(m.id, m.status) for m in result.messages] == [
        ("msg_a", "completed"),
        ("msg_b", "completed"),
    ]


async def test_the_in_progress_tool_step_is_kept_at_requires_action() -> None:
    """A function-call step seen only as `created`/`in_progress` before the run stops in
    `requires_action`: the result's steps hold it, in progress, with its call."""
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "lookup", "arguments": '{"q":"x"}'},
    }
    details = {"type": "tool_calls", "tool_calls": [call]}
    action = {"type": "submit_tool_outputs", "submit_tool_outputs": {"tool_calls": [call]}}
    chunks = [
        *opening(),
        frame("thread.run.step.created", _step("step_t", "in_progress", details)),
        frame("thread.run.step.in_progress", _step("step_t", "in_progress", details)),
        frame("thread.run.requires_action", _run("requires_action", required_action=action)),
        frame("done", "[DONE]"),
    ]
    seen, error = await play(chunks)
    assert error is None
    result = _result(seen)
    assert result.state is agentrun.State.REQUIRES_ACTION
    assert [(s.id, s.status) for s in result.steps] == [("step_t", "in_progress")]
    assert [c.id for c in result.steps[0].tool_calls] == ["call_1"]
    assert [c.id for c in result.tool_calls] == ["call_1"]


async def test_a_failed_run_keeps_its_partial_message() -> None:
    """A run that fails mid-message (its `completed` never comes): the error's result holds
    the message's latest snapshot, in progress, and the caller saw the text streamed."""
    chunks = [
        *opening(),
        frame("thread.message.created", _message("msg_a", "in_progress")),
        frame("thread.message.in_progress", _message("msg_a", "in_progress")),
        frame("thread.message.delta", _delta("msg_a", "Half ")),
        frame("thread.message.delta", _delta("msg_a", "done")),
        *closing("failed", last_error={"code": "server_error", "message": "boom"}),
    ]
    seen, error = await play(chunks)
    assert isinstance(error, agentrun.RunFailedError)
    assert error.code == "server_error"
    assert error.result is not None
    assert [(m.id, m.status) for m in error.result.messages] == [("msg_a", "in_progress")]
    assert _texts(seen) == "Half done"


def test_snapshot_id_reads_only_a_leading_plain_id() -> None:
    """`snapshot_id` gives the id of an object that starts with it (compact or spaced JSON),
    and None for anything it cannot read without decoding (escaped, not first, not a
    string, not an object)."""
    proto = ClassicProtocol()
    assert proto.snapshot_id('{"id":"msg_1","object":"thread.message"}') == "msg_1"
    assert proto.snapshot_id('{ "id" : "step_9", "x": 1}') == "step_9"
    assert proto.snapshot_id('{"id":"msg\\u005f1"}') is None
    assert proto.snapshot_id('{"object":"thread.message","id":"msg_1"}') is None
    assert proto.snapshot_id('{"id":7}') is None
    assert proto.snapshot_id('["id"]') is None
    assert set(proto.snapshot_events) == {
        *(f"thread.message.{s}" for s in ("created", "in_progress", "completed", "incomplete")),
        *(
            f"thread.run.step.{s}"
            for s in ("created", "in_progress", "completed", "failed", "cancelled", "expired")
        ),
    }


# -- deltas through the template ----------------------------------------------------------------


async def test_deltas_in_chunks_of_several_frames_read_like_single_ones() -> None:
    """After the template is learnt, deltas that share a chunk with other frames, deltas
    with escaped text (a newline, a quote, a non-ASCII character) and single-frame deltas all
    reach the caller with their exact text, in order, and the reply's text agrees."""
    texts = ["Hello", " wor", "ld", "\nnext", ' "q"', " caf\u00e9", " end"]
    deltas = [frame("thread.message.delta", _delta("msg_a", t)) for t in texts]
    # As the service's and the emulator's: the first delta also has `"annotations": []`.
    first = _delta("msg_a", texts[0])
    first["delta"]["content"][0]["text"]["annotations"] = []
    deltas[0] = frame("thread.message.delta", first)
    chunks = [
        *opening(),
        frame("thread.message.created", _message("msg_a", "in_progress")),
        deltas[0],  # a template is learnt here (it fits no later delta)
        deltas[1] + deltas[2],  # two frames in one chunk: learnt again from the first
        deltas[3],  # an escaped newline: the general way
        deltas[4] + deltas[5] + deltas[6],
        frame("thread.message.completed", _message("msg_a", "completed", "".join(texts))),
        *closing(),
    ]
    seen, error = await play(chunks)
    assert error is None
    got = [e for e in seen if isinstance(e, TextDelta)]
    assert [e.text for e in got] == texts
    assert {(e.message_id, e.index) for e in got} == {("msg_a", 0)}
    assert _result(seen).text == "".join(texts)


async def test_a_delta_with_invalid_utf8_after_the_template_raises() -> None:
    """A delta frame that fits the template but whose text is not UTF-8 goes the general
    way, which raises `RemoteProtocolError` (the template never hands out bad bytes)."""
    good = frame("thread.message.delta", _delta("msg_a", "ok"))
    bad = good.replace(b"ok", b"\xff\xfe")
    chunks = [
        *opening(),
        good,
        bad,
        frame("thread.message.completed", _message("msg_a", "completed", "ok")),
        *closing(),
    ]
    seen, error = await play(chunks)
    assert isinstance(error, agentrun.RemoteProtocolError)
    assert [e.text for e in seen if isinstance(e, TextDelta)] == ["ok"]


@pytest.mark.parametrize(
    "data",
    [
        json.dumps(_run("in_progress")),
        json.dumps(_run("completed", usage={"prompt_tokens": 3, "completion_tokens": 4})),
        json.dumps(_run("bogus")),  # an unknown status
        json.dumps(_run("queued") | {"created_at": "soon"}),
        "not json",
        "[1]",
    ],
)
def test_run_events_take_the_short_path_with_the_same_result(data: str) -> None:
    """`ClassicProtocol.stream_events` reads a ``thread.run.*`` event through
    `wire.parse_run_event`: the same run as the general parser's `RunEvent`, and for
    malformed data the same `RemoteProtocolError` message (naming the event once)."""
    sse = wire.SSEEvent("thread.run.in_progress", data)
    expected: str | None = None
    try:
        (general,) = wire.parse_stream_event(sse)
    except agentrun.RemoteProtocolError as exc:
        expected = str(exc)
    if expected is not None:
        with pytest.raises(agentrun.RemoteProtocolError) as info:
            ClassicProtocol().stream_events(sse)
        assert str(info.value) == expected
        assert expected.count("thread.run.in_progress event") == 1
        return
    assert isinstance(general, wire.RunEvent)
    (ev,) = ClassicProtocol().stream_events(sse)
    assert isinstance(ev, RunUpdated)
    assert ev.run == general.run
