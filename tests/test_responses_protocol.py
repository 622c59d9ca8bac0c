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
from agentrun._machine import Finish, Op, ReadStream, RunMachine, Send, Sleep, State
from agentrun._responses import protocol as p
from agentrun._responses import wire
from agentrun._results import TextDelta, ToolCallDelta
from agentrun._sse import SSEEvent
from agentrun._wire import InputMessage, RunOptions, ToolOutput

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


def events(raw: list[dict[str, Any]]) -> list[wire.StreamEvent]:
    out = []
    for seq, event in enumerate(raw):
        parsed = wire.parse_stream_event(
            SSEEvent(event["type"], json.dumps({**event, "sequence_number": seq}))
        )
        assert parsed is not None
        out.append(parsed)
    return out


def feed_stream(
    m: RunMachine, fold: p.StreamFold, raw: list[dict[str, Any]], now: float = 1.0
) -> tuple[Any, list[TextDelta | ToolCallDelta]]:
    """Feed a stream to the machine as a driver would; the last action and the deltas."""
    action: Any = ReadStream()
    deltas: list[TextDelta | ToolCallDelta] = []
    for ev in events(raw):
        step = fold.feed(ev)
        deltas.extend(step.deltas)
        if step.response is not None:
            r = step.response
            action = m.run_update(
                p.machine_status(r),
                run_id=r.id,
                thread_id=r.conversation_id or m.thread_id or "",
                now=now,
                via="stream",
            )
        if isinstance(action, Finish):
            break
    if not isinstance(action, Finish):
        action = m.stream_done(now)
    return action, deltas


def states(m: RunMachine) -> list[str]:
    return [t.state.value for t in m.history]


def test_first_turn_creates_a_conversation_then_streams_one_response() -> None:
    """A new conversation is `POST /openai/v1/conversations` (empty, no api-version), then one
    streamed `POST /openai/v1/responses` with the conversation, the agent and the input; the
    events walk the machine to `completed`, text deltas join to the reply, the annotation
    arrives in the neutral (classic) shape, and the final response gives messages, usage and
    the conversation id as thread_id."""
    call = p.build_call("trip-planner:2", [InputMessage("user", "Bergen tomorrow?")], RunOptions())
    assert call.new_conversation and call.agent == AGENT
    m = RunMachine(mode="stream", now=0.0, separate_thread=call.new_conversation)
    first = m.start(0.0)
    assert first == Send(Op.CREATE_THREAD)
    conv_req = p.request_for(first.op, call, thread_id=None, run_id=None, stream=first.stream)
    assert conv_req is not None
    assert (conv_req.method, conv_req.path, conv_req.api_version) == (
        "POST",
        "/openai/v1/conversations",
        None,
    )
    nxt = m.thread_ready(p.conversation_id_of({"id": "conv_p1", "object": "conversation"}), 0.1)
    assert nxt == Send(Op.CREATE_RUN, stream=True)
    req = p.request_for(nxt.op, call, thread_id=m.thread_id, run_id=None, stream=True)
    assert req is not None and req.stream and req.api_version is None
    assert req.path == "/openai/v1/responses"
    assert req.json == {
        "agent_reference": {"type": "agent_reference", "name": "trip-planner", "version": "2"},
        "input": [{"type": "message", "role": "user", "content": "Bergen tomorrow?"}],
        "conversation": "conv_p1",
        "stream": True,
    }
    fold = p.StreamFold()
    action, deltas = feed_stream(m, fold, TEXT_STREAM)
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
    text = "".join(d.text for d in deltas if isinstance(d, TextDelta))
    assert text == "Pack a raincoat."
    [annotated] = [d for d in deltas if isinstance(d, TextDelta) and d.annotations]
    assert annotated.message_id == MSG_ID
    assert annotated.annotations[0]["url_citation"] == {
        "url": "https://weather.example/bergen",
        "title": "Bergen",
    }
    final = fold.response
    assert final is not None
    run = p.to_run(final, call.agent)
    assert run.status == "completed" and run.thread_id == "conv_p1"
    assert run.usage is not None
    assert (run.usage.prompt_tokens, run.usage.completion_tokens, run.usage.total_tokens) == (
        12,
        5,
        17,
    )
    [msg] = p.to_messages(final, call.agent)
    assert (msg.id, msg.run_id, msg.thread_id, msg.text) == (
        MSG_ID,
        "resp_p1",
        "conv_p1",
        "Pack a raincoat.",
    )
    assert msg.annotations[0]["url"] == "https://weather.example/bergen"
    assert msg.annotations[0]["url_citation"]["title"] == "Bergen"


def test_continuing_a_conversation_is_one_request() -> None:
    """With a thread_id (a conversation id), the machine's first and only request is the
    streamed response create: one request for the whole invocation."""
    call = p.build_call(
        AGENT, [InputMessage("user", "And Oslo?")], RunOptions(), thread_id="conv_p1"
    )
    assert not call.new_conversation
    m = RunMachine(mode="stream", now=0.0, thread_id="conv_p1")
    sends = [m.start(0.0)]
    assert sends == [Send(Op.CREATE_RUN, stream=True)]
    req = p.request_for(Op.CREATE_RUN, call, thread_id="conv_p1", run_id=None, stream=True)
    assert req is not None and req.json is not None and req.json["conversation"] == "conv_p1"
    action, _ = feed_stream(m, p.StreamFold(), TEXT_STREAM)
    assert action == Finish(State.COMPLETED)
    assert states(m)[0:2] == ["pending", "run_queued"]


def test_polled_invocation_uses_background_mode_and_lists_nothing() -> None:
    """Poll mode creates a background response (`background: true`, no stream), polls it with
    `GET /openai/v1/responses/{id}`, and the machine's message listing needs no request:
    the final response holds the output."""
    call = p.build_call(AGENT, [InputMessage("user", "Hi")], RunOptions(), thread_id="conv_p1")
    m = RunMachine(mode="poll", now=0.0, thread_id="conv_p1", poll_delay=lambda e: 0.5)
    first = m.start(0.0)
    req = p.request_for(first.op, call, thread_id="conv_p1", run_id=None, stream=first.stream)
    assert req is not None and req.json is not None
    assert req.json["background"] is True and "stream" not in req.json and not req.stream
    queued = wire.parse_response(resp("queued", background=True))
    action = m.run_update(
        p.machine_status(queued), run_id=queued.id, thread_id="conv_p1", now=0.1, via="response"
    )
    assert isinstance(action, Sleep)
    poll = m.timer(action.until)
    poll_req = p.request_for(poll.op, call, thread_id="conv_p1", run_id=m.run_id, stream=False)
    assert poll_req == wire.get_response("resp_p1")
    done = wire.parse_response(resp("completed", background=True, output=[FINAL_MSG]))
    action = m.run_update("completed", run_id=done.id, thread_id="conv_p1", now=1.0, via="poll")
    assert action == Send(Op.LIST_MESSAGES)
    assert (
        p.request_for(Op.LIST_MESSAGES, call, thread_id="conv_p1", run_id="r", stream=False) is None
    )
    assert m.messages_fetched(1.0) == Finish(State.COMPLETED)
    assert states(m) == ["pending", "run_queued", "completed"]
    assert p.cancel_request("resp_p1", background=True) == wire.cancel_response("resp_p1")
    assert p.cancel_request("resp_p1", background=False) is None
    assert p.cancel_request(None, background=True) is None


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
    starts afresh: no submit-tool-outputs op)."""
    m = RunMachine(mode="stream", now=0.0, thread_id="conv_p1")
    m.start(0.0)
    fold = p.StreamFold()
    action, deltas = feed_stream(m, fold, TOOL_STREAM)
    assert action == Finish(State.REQUIRES_ACTION)
    assert deltas[0] == ToolCallDelta(0, "call_p1", "get_weather", "")
    assert (
        "".join(d.arguments for d in deltas if isinstance(d, ToolCallDelta))
        == (CALL_ITEM["arguments"])
    )
    assert fold.response is not None
    run = p.to_run(fold.response, AGENT)
    [call] = run.required_tool_calls
    assert (call.id, call.type, call.name, call.arguments) == (
        "call_p1",
        "function",
        "get_weather",
        '{"location":"Bergen"}',
    )
    assert fold.response.finish_reason == "tool_calls"

    follow = p.build_call(
        AGENT, [], RunOptions(), thread_id="conv_p1", tool_outputs=[ToolOutput("call_p1", "9 C")]
    )
    m2 = RunMachine(mode="stream", now=2.0, thread_id="conv_p1")
    assert m2.start(2.0) == Send(Op.CREATE_RUN, stream=True)
    req = p.request_for(Op.CREATE_RUN, follow, thread_id="conv_p1", run_id=None, stream=True)
    assert req is not None and req.json is not None
    assert req.json["input"] == [
        {"type": "function_call_output", "call_id": "call_p1", "output": "9 C"}
    ]
    assert req.json["conversation"] == "conv_p1" and "previous_response_id" not in req.json


def test_previous_response_id_continues_without_a_conversation() -> None:
    """With previous_response_id (no thread_id) nothing is created first: one response
    request carrying it, and no conversation."""
    call = p.build_call(
        AGENT,
        [],
        RunOptions(),
        previous_response_id="resp_p0",
        tool_outputs=[ToolOutput("call_p1", "9 C")],
    )
    m = RunMachine(mode="poll", now=0.0, separate_thread=call.new_conversation)
    first = m.start(0.0)
    assert first == Send(Op.CREATE_THREAD_AND_RUN)
    req = p.request_for(first.op, call, thread_id=None, run_id=None, stream=False)
    assert req is not None and req.json is not None
    assert req.json["previous_response_id"] == "resp_p0" and "conversation" not in req.json
    with pytest.raises(ConfigurationError, match="cannot be combined"):
        p.build_call(
            AGENT,
            [InputMessage("user", "x")],
            RunOptions(),
            thread_id="conv_1",
            previous_response_id="resp_1",
        )


def test_stream_error_event_fails_the_response_with_its_error() -> None:
    """A top-level `error` event after `response.created` fails the response with the event's
    code and message (no extra request); before any response it reports the failure alone."""
    raw = [
        {"type": "response.created", "response": resp("in_progress")},
        {"type": "error", "code": "server_error", "message": "boom", "param": None},
    ]
    m = RunMachine(mode="stream", now=0.0, thread_id="conv_p1")
    m.start(0.0)
    fold = p.StreamFold()
    action, _ = feed_stream(m, fold, raw)
    assert action == Finish(State.FAILED)
    assert fold.response is not None
    run = p.to_run(fold.response, AGENT)
    assert run.last_error is not None
    assert (run.last_error.code, run.last_error.message) == ("server_error", "boom")
    lone = p.StreamFold().feed(wire.StreamError(0, "rate_limit_exceeded", "slow", None))
    assert lone.failed and lone.response is None and lone.error is not None


def test_incomplete_and_failed_responses_map_like_classic_runs() -> None:
    """`incomplete` keeps its reason (finish_reason `length` / `content_filter`), `failed`
    its error; `cancelled` is a state of its own."""
    inc = wire.parse_response(
        resp("incomplete", incomplete_details={"reason": "max_output_tokens"}, usage=USAGE)
    )
    assert p.to_run(inc, AGENT).incomplete_reason == "max_output_tokens"
    assert inc.finish_reason == "length"
    failed = wire.parse_response(
        resp("failed", error={"code": "rate_limit_exceeded", "message": "Rate limit"})
    )
    err = p.to_run(failed, AGENT).last_error
    assert err is not None and err.code == "rate_limit_exceeded"
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
    msg = [InputMessage("user", "Hi")]
    with pytest.raises(BadRequestError) as info:
        p.build_call(AGENT, msg, RunOptions(instructions="Be brief", temperature=0.2))
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
            p.build_call(AGENT, msg, RunOptions(**option))
    with pytest.raises(ConfigurationError, match="truncation_strategy"):
        p.build_call(AGENT, msg, RunOptions(truncation_strategy={"type": "auto"}))
    call = p.build_call(
        AGENT,
        [
            InputMessage("user", [{"type": "text", "text": "Look"}]),
            InputMessage("assistant", "A cat."),
        ],
        RunOptions(additional_instructions="Answer in French.", max_completion_tokens=300),
    )
    assert call.items[0] == {"type": "message", "role": "system", "content": "Answer in French."}
    assert call.items[1]["content"] == [{"type": "input_text", "text": "Look"}]
    assert call.items[2] == {"type": "message", "role": "assistant", "content": "A cat."}
    req = p.request_for(Op.CREATE_THREAD_AND_RUN, call, thread_id=None, run_id=None, stream=False)
    assert req is not None and req.json is not None and req.json["max_output_tokens"] == 300
    with pytest.raises(ConfigurationError, match="input is empty"):
        p.build_call(AGENT, [], RunOptions(), thread_id="conv_1")
    with pytest.raises(ConfigurationError):
        p.build_call("bad_name!", msg, RunOptions())


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
