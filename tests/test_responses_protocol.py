"""The v2 protocol mapping (`agentrun._responses.protocol`) driving the real `RunMachine`.

Pure tests, no I/O: recorded-shape Responses objects and stream events (the shapes of the
azure-ai-projects 2.x recordings, with our own ids and texts) are folded and fed to the
machine; the requests it asks for are built and checked field by field.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from agentrun._errors import BadRequestError, ConfigurationError
from agentrun._inputs import InputMessage, RunOptions, ToolOutput
from agentrun._machine import Finish, Op, ReadStream, RunMachine, Send, Sleep, State
from agentrun._model import Message, Run
from agentrun._protocol import (
    Invocation,
    MessageSeen,
    RunUpdated,
    StreamEnded,
    StreamFailed,
    TextDelta,
    ToolCallDelta,
)
from agentrun._responses import protocol as p
from agentrun._responses import wire
from agentrun._sse import SSEEvent

AGENT = wire.AgentReference("trip-planner", "2")


def resp(status: str, **over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": "resp_p1",
        "object": "response",
        "created_at": 1770000100,
        "status": status,
        "background": False,
        "conversation": {"id": "conv_p1"},
        "agent_reference": {"type": "agent_reference", "name": "trip-planner", "version": "2"},
        "error": None,
        "incomplete_details": None,
        "output": [],
        "usage": None,
    }
    base.update(over)
    return base


MSG_ID = "msg_p1"
AT = {"item_id": MSG_ID, "output_index": 0, "content_index": 0}
FINAL_MSG = {
    "type": "message",
    "id": MSG_ID,
    "status": "completed",
    "role": "assistant",
    "content": [
        {
            "type": "output_text",
            "text": "Pack a raincoat.",
            "annotations": [
                {
                    "type": "url_citation",
                    "url": "https://weather.example/bergen",
                    "title": "Bergen",
                    "start_index": 7,
                    "end_index": 15,
                }
            ],
        }
    ],
}
USAGE = {
    "input_tokens": 12,
    "input_tokens_details": {"cached_tokens": 0},
    "output_tokens": 5,
    "output_tokens_details": {"reasoning_tokens": 0},
    "total_tokens": 17,
}
TEXT_STREAM: list[dict[str, Any]] = [
    {"type": "response.created", "response": resp("in_progress")},
    {"type": "response.in_progress", "response": resp("in_progress")},
    {
        "type": "response.output_item.added",
        "output_index": 0,
        "item": {**FINAL_MSG, "status": "in_progress", "content": []},
    },
    {
        "type": "response.content_part.added",
        **AT,
        "part": {"type": "output_text", "text": "", "annotations": [], "logprobs": []},
    },
    {"type": "response.output_text.delta", **AT, "delta": "Pack a rain", "logprobs": []},
    {"type": "response.output_text.delta", **AT, "delta": "coat.", "logprobs": []},
    {
        "type": "response.output_text.annotation.added",
        **AT,
        "annotation_index": 0,
        "annotation": FINAL_MSG["content"][0]["annotations"][0],
    },
    {"type": "response.output_text.done", **AT, "text": "Pack a raincoat.", "logprobs": []},
    {"type": "response.content_part.done", **AT, "part": FINAL_MSG["content"][0]},
    {"type": "response.output_item.done", "output_index": 0, "item": FINAL_MSG},
    {
        "type": "response.completed",
        "response": resp("completed", output=[FINAL_MSG], usage=USAGE),
    },
]


def sse_frames(raw: list[dict[str, Any]]) -> list[SSEEvent]:
    return [
        SSEEvent(event["type"], json.dumps({**event, "sequence_number": seq}))
        for seq, event in enumerate(raw)
    ]


class Fed:
    """What a driver keeps while feeding a stream's neutral events to the machine."""

    def __init__(self) -> None:
        self.run: Run | None = None
        self.messages: list[Message] = []
        self.deltas: list[TextDelta | ToolCallDelta] = []
        self.failed: list[StreamFailed] = []


def feed_stream(m: RunMachine, raw: list[dict[str, Any]], now: float = 1.0) -> tuple[Any, Fed]:
    """Feed a stream to the machine as the driver does; the last action and what was kept."""
    fed = Fed()
    action: Any = ReadStream()
    for sse in sse_frames(raw):
        for ev in p.ResponsesProtocol().stream_events(sse):
            if isinstance(ev, RunUpdated):
                fed.run = ev.run
                action = m.run_update(
                    ev.run.status,
                    run_id=ev.run.id,
                    thread_id=ev.run.thread_id,
                    now=now,
                    via="stream",
                )
            elif isinstance(ev, MessageSeen):
                fed.messages.append(ev.message)
            elif isinstance(ev, (TextDelta, ToolCallDelta)):
                fed.deltas.append(ev)
            elif isinstance(ev, StreamFailed):
                fed.failed.append(ev)
                action = m.stream_lost(now)
            elif isinstance(ev, StreamEnded):
                action = m.stream_done(now)
        if isinstance(action, (Finish, Send)):
            break
    else:
        action = m.stream_done(now)
    return action, fed


def inv(**over: Any) -> Invocation:
    base: dict[str, Any] = {
        "agent": "trip-planner:2",
        "messages": (InputMessage("user", "Bergen tomorrow?"),),
        "options": RunOptions(),
        "thread_id": None,
        "run_id": None,
        "tool_outputs": (),
        "timeout": None,
        "mode": "stream",
        "protocol": "responses",
    }
    base.update(over)
    return Invocation(**base)


def states(m: RunMachine) -> list[str]:
    return [t.state.value for t in m.history]


PROTO = p.ResponsesProtocol()


def test_first_turn_creates_a_conversation_then_streams_one_response() -> None:
    """A new conversation is `POST /openai/v1/conversations` (empty, no api-version), then one
    streamed `POST /openai/v1/responses` with the conversation, the agent and the input; the
    neutral events walk the machine to `completed`, text deltas join to the reply, the
    annotation arrives in the neutral (classic) shape, and the final snapshot gives messages,
    usage and the conversation id as thread_id."""
    first_turn = inv()
    assert PROTO.creates_thread_first(first_turn)
    m = RunMachine(mode="stream", now=0.0, separate_thread=True)
    first = m.start(0.0)
    assert first == Send(Op.CREATE_THREAD)
    conv_req = PROTO.request(first.op, first_turn, None, None, stream=False)
    assert (conv_req.method, conv_req.path, conv_req.api_version) == (  # type: ignore[attr-defined]
        "POST",
        "/openai/v1/conversations",
        None,
    )
    nxt = m.thread_ready(PROTO.parse_thread_id({"id": "conv_p1", "object": "conversation"}), 0.1)
    assert nxt == Send(Op.CREATE_RUN, stream=True)
    req = PROTO.request(nxt.op, first_turn, m.thread_id, None, stream=True)
    assert isinstance(req, wire.ApiRequest) and req.stream and req.api_version is None
    assert req.path == "/openai/v1/responses"
    assert req.json == {
        "agent_reference": {"type": "agent_reference", "name": "trip-planner", "version": "2"},
        "input": [{"type": "message", "role": "user", "content": "Bergen tomorrow?"}],
        "conversation": "conv_p1",
        "stream": True,
    }
    action, fed = feed_stream(m, TEXT_STREAM)
    assert action == Finish(State.COMPLETED)
    assert states(m) == [
        "pending",
        "thread_created",
        "message_posted",
        "run_queued",
        "in_progress",
        "completed",
    ]
    assert (m.thread_id, m.run_id) == ("conv_p1", "resp_p1")
    text = "".join(d.text for d in fed.deltas if isinstance(d, TextDelta))
    assert text == "Pack a raincoat."
    [annotated] = [d for d in fed.deltas if isinstance(d, TextDelta) and d.annotations]
    assert annotated.message_id == MSG_ID
    assert annotated.annotations[0]["url_citation"] == {
        "url": "https://weather.example/bergen",
        "title": "Bergen",
    }
    run = fed.run
    assert run is not None and run.status == "completed" and run.thread_id == "conv_p1"
    assert run.assistant_id == "trip-planner:2"
    assert run.usage is not None
    assert (run.usage.prompt_tokens, run.usage.completion_tokens, run.usage.total_tokens) == (
        12,
        5,
        17,
    )
    [msg] = fed.messages
    assert (msg.id, msg.run_id, msg.thread_id, msg.text) == (
        MSG_ID,
        "resp_p1",
        "conv_p1",
        "Pack a raincoat.",
    )
    assert msg.annotations[0]["url"] == "https://weather.example/bergen"
    assert msg.annotations[0]["url_citation"]["title"] == "Bergen"
    # The reply also reads from the final snapshot alone (what a polled run uses).
    assert PROTO.reply_of(run) == (msg,)


def test_continuing_a_conversation_is_one_request() -> None:
    """With a thread_id (a conversation id), the machine's first and only request is the
    streamed response create: one request for the whole invocation."""
    turn = inv(thread_id="conv_p1", messages=(InputMessage("user", "And Oslo?"),))
    assert not PROTO.creates_thread_first(turn)
    m = RunMachine(mode="stream", now=0.0, thread_id="conv_p1")
    assert m.start(0.0) == Send(Op.CREATE_RUN, stream=True)
    req = PROTO.request(Op.CREATE_RUN, turn, "conv_p1", None, stream=True)
    assert req.json is not None and req.json["conversation"] == "conv_p1"
    action, _ = feed_stream(m, TEXT_STREAM)
    assert action == Finish(State.COMPLETED)
    assert states(m)[0:2] == ["pending", "run_queued"]


def test_polled_invocation_uses_background_mode_and_lists_nothing() -> None:
    """Poll mode creates a background response (`background: true`, no stream), polls it with
    `GET /openai/v1/responses/{id}`, and the reply comes from the final response itself
    (`reply_of`): no listing request. Cancel is `POST .../cancel`."""
    turn = inv(thread_id="conv_p1", mode="poll")
    m = RunMachine(mode="poll", now=0.0, thread_id="conv_p1", poll_delay=lambda e: 0.5)
    first = m.start(0.0)
    req = PROTO.request(first.op, turn, "conv_p1", None, stream=first.stream)
    assert req.json is not None
    assert req.json["background"] is True and "stream" not in req.json
    queued = PROTO.parse_run(resp("queued", background=True))
    action = m.run_update(
        queued.status, run_id=queued.id, thread_id=queued.thread_id, now=0.1, via="response"
    )
    assert isinstance(action, Sleep)
    poll = m.timer(action.until)
    assert PROTO.request(poll.op, turn, "conv_p1", m.run_id, stream=False) == (
        wire.get_response("resp_p1")
    )
    done = PROTO.parse_run(resp("completed", background=True, output=[FINAL_MSG]))
    action = m.run_update("completed", run_id=done.id, thread_id="conv_p1", now=1.0, via="poll")
    assert action == Send(Op.LIST_MESSAGES)
    reply = PROTO.reply_of(done)
    assert reply is not None and [x.text for x in reply] == ["Pack a raincoat."]
    assert m.messages_fetched(1.0) == Finish(State.COMPLETED)
    assert states(m) == ["pending", "run_queued", "completed"]
    cancel = PROTO.request(Op.CANCEL_RUN, turn, "conv_p1", "resp_p1", stream=False)
    assert cancel == wire.cancel_response("resp_p1")


CALL_ITEM = {
    "type": "function_call",
    "id": "fc_p1",
    "call_id": "call_p1",
    "name": "get_weather",
    "arguments": '{"location":"Bergen"}',
    "status": "completed",
}
TOOL_STREAM: list[dict[str, Any]] = [
    {"type": "response.created", "response": resp("in_progress")},
    {
        "type": "response.output_item.added",
        "output_index": 0,
        "item": {**CALL_ITEM, "arguments": "", "status": "in_progress"},
    },
    {
        "type": "response.function_call_arguments.delta",
        "item_id": "fc_p1",
        "output_index": 0,
        "delta": '{"location"',
    },
    {
        "type": "response.function_call_arguments.delta",
        "item_id": "fc_p1",
        "output_index": 0,
        "delta": ':"Bergen"}',
    },
    {
        "type": "response.function_call_arguments.done",
        "item_id": "fc_p1",
        "output_index": 0,
        "arguments": CALL_ITEM["arguments"],
    },
    {"type": "response.output_item.done", "output_index": 0, "item": CALL_ITEM},
    {"type": "response.completed", "response": resp("completed", output=[CALL_ITEM])},
]


def test_function_calls_mean_requires_action_and_outputs_start_a_new_response() -> None:
    """A completed response with function_call items ends the machine in `requires_action`
    with tool calls (id = call_id) and streamed tool-call deltas; the outputs go back as
    `function_call_output` items of a NEW response on the same conversation (the machine
    starts afresh: every v2 invocation is a run of its own)."""
    m = RunMachine(mode="stream", now=0.0, thread_id="conv_p1")
    m.start(0.0)
    action, fed = feed_stream(m, TOOL_STREAM)
    assert action == Finish(State.REQUIRES_ACTION)
    calls = [d for d in fed.deltas if isinstance(d, ToolCallDelta)]
    assert (calls[0].id, calls[0].name, calls[0].type, calls[0].index) == (
        "call_p1",
        "get_weather",
        "function",
        0,
    )
    assert "".join(d.arguments for d in calls) == CALL_ITEM["arguments"]
    assert fed.run is not None
    [call] = fed.run.required_tool_calls
    assert (call.id, call.type, call.name, call.arguments) == (
        "call_p1",
        "function",
        "get_weather",
        '{"location":"Bergen"}',
    )
    assert PROTO.new_run_per_invocation
    follow = inv(thread_id="conv_p1", messages=(), tool_outputs=(ToolOutput("call_p1", "9 C"),))
    req = PROTO.request(Op.CREATE_RUN, follow, "conv_p1", None, stream=True)
    assert req.json is not None
    assert req.json["input"] == [
        {"type": "function_call_output", "call_id": "call_p1", "output": "9 C"}
    ]
    assert req.json["conversation"] == "conv_p1" and "previous_response_id" not in req.json


def test_previous_response_id_continues_without_a_conversation() -> None:
    """An invocation's run_id with tool outputs (or input) is the previous_response_id:
    nothing is created first, one response request carries it and no conversation."""
    follow = inv(messages=(), run_id="resp_p0", tool_outputs=(ToolOutput("call_p1", "9 C"),))
    assert not PROTO.creates_thread_first(follow)
    m = RunMachine(mode="poll", now=0.0)
    first = m.start(0.0)
    assert first == Send(Op.CREATE_THREAD_AND_RUN)
    req = PROTO.request(first.op, follow, None, None, stream=False)
    assert req.json is not None
    assert req.json["previous_response_id"] == "resp_p0" and "conversation" not in req.json
    with pytest.raises(ConfigurationError, match="cannot be combined"):
        p.invocation_call(inv(thread_id="conv_1", run_id="resp_1"))


def test_stream_error_event_is_a_failure_the_driver_polls() -> None:
    """A top-level `error` event becomes `StreamFailed` with its code and message: the machine
    loses the stream and polls the named response for its final status."""
    raw = [
        {"type": "response.created", "response": resp("in_progress")},
        {"type": "error", "code": "server_error", "message": "boom", "param": None},
    ]
    m = RunMachine(mode="stream", now=0.0, thread_id="conv_p1")
    m.start(0.0)
    action, fed = feed_stream(m, raw)
    assert action == Send(Op.GET_RUN)
    assert [(f.code, f.message) for f in fed.failed] == [("server_error", "boom")]
    failed = PROTO.parse_run(resp("failed", error={"code": "server_error", "message": "boom"}))
    # A failed run may have written part of its reply: the machine asks for it, then finishes.
    assert m.run_update(
        failed.status, run_id=failed.id, thread_id="conv_p1", now=2, via="poll"
    ) == Send(Op.LIST_MESSAGES)
    assert m.messages_fetched(3) == Finish(State.FAILED)
    assert failed.last_error is not None and failed.last_error.code == "server_error"


def test_incomplete_and_failed_responses_map_like_classic_runs() -> None:
    """`incomplete` keeps its reason (finish_reason `length` / `content_filter`), `failed`
    its error; `cancelled` is a state of its own."""
    inc = PROTO.parse_run(
        resp("incomplete", incomplete_details={"reason": "max_output_tokens"}, usage=USAGE)
    )
    assert inc.incomplete_reason == "max_output_tokens"
    failed = PROTO.parse_run(
        resp("failed", error={"code": "rate_limit_exceeded", "message": "Rate limit"})
    )
    assert failed.last_error is not None and failed.last_error.code == "rate_limit_exceeded"
    for status, state in (("cancelled", State.CANCELLED), ("incomplete", State.INCOMPLETE)):
        m = RunMachine(mode="poll", now=0.0, thread_id="conv_p1")
        m.start(0.0)
        m.run_update("queued", run_id="resp_p1", thread_id="conv_p1", now=0.1, via="response")
        action = m.run_update(status, run_id="resp_p1", thread_id="conv_p1", now=1, via="poll")
        if status == "incomplete":
            assert action == Send(Op.LIST_MESSAGES)
            action = m.messages_fetched(1.0)
        assert action == Finish(state)


def test_agent_owned_options_are_refused_before_sending() -> None:
    """Options the agent version owns raise the service's BadRequestError (code
    invalid_payload, every such option named); classic-only options raise
    ConfigurationError; `additional_instructions` (chat system messages) becomes a leading
    `system` item; max_completion_tokens becomes max_output_tokens."""
    with pytest.raises(BadRequestError) as info:
        p.invocation_call(inv(options=RunOptions(instructions="Be brief", temperature=0.2)))
    assert info.value.code == "invalid_payload"
    assert "'instructions'" in str(info.value) and "'temperature'" in str(info.value)
    for option in (
        {"tools": [{"type": "function", "function": {"name": "f"}}]},
        {"top_p": 0.5},
        {"response_format": {"type": "json_object"}},
        {"tool_choice": "auto"},
        {"model": "gpt-4o"},
    ):
        with pytest.raises(BadRequestError):
            p.invocation_call(inv(options=RunOptions(**option)))
    with pytest.raises(ConfigurationError, match="truncation_strategy"):
        p.invocation_call(inv(options=RunOptions(truncation_strategy={"type": "auto"})))
    call = p.invocation_call(
        inv(
            messages=(
                InputMessage("user", [{"type": "text", "text": "Look"}]),
                InputMessage("assistant", "A cat."),
            ),
            options=RunOptions(
                additional_instructions="Answer in French.", max_completion_tokens=300
            ),
        )
    )
    assert call.items[0] == {"type": "message", "role": "system", "content": "Answer in French."}
    assert call.items[1]["content"] == [{"type": "input_text", "text": "Look"}]
    assert call.items[2] == {"type": "message", "role": "assistant", "content": "A cat."}
    req = p.request_for(Op.CREATE_THREAD_AND_RUN, call, thread_id=None, run_id=None, stream=False)
    assert req is not None and req.json is not None and req.json["max_output_tokens"] == 300
    with pytest.raises(ConfigurationError, match="input is empty"):
        p.invocation_call(inv(messages=(), thread_id="conv_1"))
    with pytest.raises(ConfigurationError):
        p.invocation_call(inv(agent="bad_name!"))


def test_protocol_module_is_pure() -> None:
    """The protocol mapping imports no I/O or event-loop library."""
    import ast
    import pathlib

    source = pathlib.Path(p.__file__).read_text()
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & {"aiohttp", "anyio", "asyncio", "azure", "yaml", "rich", "socket"}
