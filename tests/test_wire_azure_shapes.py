"""The wire parsers accept what the real service sends (shapes of the azure-sdk-assets
recordings), keep unknown tool-call, step and content types as raw values, and require only
what agentrun needs: ids, a run's status, a message's role and content."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agentrun._classic import wire as w
from agentrun._errors import RemoteProtocolError
from agentrun._sse import SSEEvent

FIXTURES = Path(__file__).parent / "replay" / "fixtures"


def ev(name: str, data: Any) -> list[w.StreamEvent]:
    return w.parse_stream_event(SSEEvent(name, data if isinstance(data, str) else json.dumps(data)))


def listed_message(**over: Any) -> dict[str, Any]:
    msg = {
        "id": "msg_1",
        "object": "thread.message",
        "created_at": 1764400000,
        "assistant_id": "asst_1",
        "thread_id": "thread_1",
        "run_id": "run_1",
        "role": "assistant",
        "content": [{"type": "text", "text": {"value": "Hi", "annotations": []}}],
        "attachments": [],
        "metadata": {},
    }
    msg.update(over)
    return msg


def step(**over: Any) -> dict[str, Any]:
    s: dict[str, Any] = {
        "id": "step_1",
        "object": "thread.run.step",
        "created_at": 1764400000,
        "run_id": "run_1",
        "assistant_id": "asst_1",
        "thread_id": "thread_1",
        "type": "tool_calls",
        "status": "in_progress",
        "step_details": {"type": "tool_calls", "tool_calls": []},
        "usage": None,
    }
    s.update(over)
    return s


def test_message_without_status_and_completion_fields() -> None:
    """A listed message without status/completed_at/incomplete_at/incomplete_details parses;
    its status reads None."""
    msg = w.parse_message(listed_message())
    assert (msg.status, msg.text, msg.incomplete_reason) == (None, "Hi", None)


def test_message_page_of_listed_messages() -> None:
    """A list page of such messages parses in the list's order."""
    page = w.parse_message_page(
        {
            "object": "list",
            "data": [listed_message(id="msg_b"), listed_message(id="msg_a")],
            "first_id": "msg_b",
            "last_id": "msg_a",
            "has_more": False,
        }
    )
    assert [m.id for m in page.data] == ["msg_b", "msg_a"]


def test_message_created_with_empty_content() -> None:
    """thread.message.created with `content: []` is a message with no parts."""
    (out,) = ev("thread.message.created", listed_message(status="in_progress", content=[]))
    assert isinstance(out, w.MessageEvent)
    assert (out.message.content, out.message.text, out.message.status) == ((), "", "in_progress")


def test_message_still_requires_role_and_content() -> None:
    """What agentrun needs stays required: a message without role or content is an error."""
    for key in ("role", "content", "id"):
        data = listed_message()
        del data[key]
        with pytest.raises(RemoteProtocolError, match=repr(key)):
            w.parse_message(data)


def test_unknown_and_odd_content_parts_are_kept() -> None:
    """Unknown part types, and image parts of an unexpected shape, become UnknownPart."""
    msg = w.parse_message(
        listed_message(
            content=[
                {"type": "refusal", "refusal": "no"},
                {"type": "image_file", "image_file": {}},
                {"type": "image_file", "image_file": {"file_id": "assistant-1"}},
            ]
        )
    )
    kinds = [type(p).__name__ for p in msg.content]
    assert kinds == ["UnknownPart", "UnknownPart", "ImageFilePart"]
    assert msg.content[0].raw["refusal"] == "no"  # type: ignore[union-attr]


def test_bad_annotation_items_are_dropped() -> None:
    """An annotation that is not an object is dropped, the others kept."""
    ann = {"type": "url_citation", "text": "x", "url_citation": {"url": "u"}}
    msg = w.parse_message(
        listed_message(content=[{"type": "text", "text": {"value": "a", "annotations": [1, ann]}}])
    )
    assert msg.annotations == (ann,)


def test_usage_with_extra_keys_and_missing_total() -> None:
    """usage with prompt_token_details parses; a missing count is 0, a missing total the sum."""
    run = {
        "id": "run_1",
        "thread_id": "thread_1",
        "status": "completed",
        "usage": {
            "prompt_tokens": 5,
            "completion_tokens": 2,
            "total_tokens": 7,
            "prompt_token_details": {"cached_tokens": 0},
        },
    }
    assert w.parse_run(run).usage == w.Usage(5, 2, 7, cached_tokens=0)
    run["usage"] = {"prompt_tokens": 5, "completion_tokens": 2}
    assert w.parse_run(run).usage == w.Usage(5, 2, 7)


def test_run_needs_only_ids_and_status() -> None:
    """A run object with only id, thread_id and status parses; status stays required."""
    run = w.parse_run({"id": "run_1", "thread_id": "thread_1", "status": "queued"})
    assert (run.status, run.created_at, run.assistant_id, run.metadata) == ("queued", 0, "", {})
    with pytest.raises(RemoteProtocolError, match="'status'"):
        w.parse_run({"id": "run_1", "thread_id": "thread_1"})


def test_non_string_metadata_values_are_kept_as_json() -> None:
    """Metadata values that are not strings are kept as their JSON text, not an error."""
    run = w.parse_run(
        {"id": "r", "thread_id": "t", "status": "queued", "metadata": {"a": 1, "b": "x"}}
    )
    assert run.metadata == {"a": "1", "b": "x"}


def test_required_action_with_mcp_call_keeps_raw() -> None:
    """A submit_tool_approval action with an mcp call is kept, raw included."""
    call = {"id": "call_1", "type": "mcp", "name": "search", "arguments": "{}"}
    run = w.parse_run(
        {
            "id": "r",
            "thread_id": "t",
            "status": "requires_action",
            "required_action": {
                "type": "submit_tool_approval",
                "submit_tool_approval": {"tool_calls": [call]},
            },
        }
    )
    (tc,) = run.required_tool_calls
    assert (tc.type, tc.name, tc.raw) == ("mcp", None, call)


def test_step_events_with_empty_tool_calls_and_no_metadata() -> None:
    """step.created and step.in_progress with `tool_calls: []` and no metadata parse."""
    for name in ("thread.run.step.created", "thread.run.step.in_progress"):
        (out,) = ev(name, step())
        assert isinstance(out, w.StepEvent)
        assert out.step is not None and out.step.tool_calls == ()
        assert (out.type, out.status) == ("tool_calls", "in_progress")


def test_step_delta_with_empty_tool_calls_gives_nothing() -> None:
    """A step delta with `tool_calls: []` carries no call."""
    data = {
        "id": "step_1",
        "object": "thread.run.step.delta",
        "delta": {"step_details": {"type": "tool_calls", "tool_calls": []}},
    }
    assert ev("thread.run.step.delta", data) == []


def test_first_function_delta_with_null_output() -> None:
    """The first function-call delta has `output: null` and `arguments: ""`."""
    item = {
        "index": 0,
        "id": "call_1",
        "type": "function",
        "function": {"name": "f", "arguments": "", "output": None},
    }
    data = {"id": "step_1", "delta": {"step_details": {"type": "tool_calls", "tool_calls": [item]}}}
    (out,) = ev("thread.run.step.delta", data)
    assert isinstance(out, w.ToolCallDelta)
    assert (out.id, out.type, out.name, out.arguments) == ("call_1", "function", "f", "")


def test_builtin_tool_delta_keeps_type_and_raw() -> None:
    """A code_interpreter delta is a ToolCallDelta of that type, its input in `raw`."""
    item = {"index": 0, "type": "code_interpreter", "code_interpreter": {"input": "print(1)"}}
    data = {"id": "step_1", "delta": {"step_details": {"type": "tool_calls", "tool_calls": [item]}}}
    (out,) = ev("thread.run.step.delta", data)
    assert isinstance(out, w.ToolCallDelta)
    assert (out.type, out.name, out.arguments, out.raw) == ("code_interpreter", None, "", item)


def test_annotation_delta_with_index() -> None:
    """A text delta that carries only an annotation (with its own `index`) parses."""
    ann = {"index": 0, "type": "url_citation", "text": "【3:0†source】", "start_index": 4}
    data = {
        "id": "msg_1",
        "delta": {"content": [{"index": 0, "type": "text", "text": {"annotations": [ann]}}]},
    }
    (out,) = ev("thread.message.delta", data)
    assert isinstance(out, w.TextDelta)
    assert (out.text, out.annotations) == ("", (ann,))


def test_message_delta_without_index_and_with_image() -> None:
    """A text item without `index` takes its position; an image_file item is skipped."""
    data = {
        "id": "msg_1",
        "delta": {
            "content": [
                {"index": 0, "type": "image_file", "image_file": {"file_id": "f"}},
                {"type": "text", "text": {"value": "x"}},
            ]
        },
    }
    (out,) = ev("thread.message.delta", data)
    assert isinstance(out, w.TextDelta) and (out.index, out.text) == (1, "x")


@pytest.mark.parametrize(
    ("kind", "body", "name", "arguments", "output"),
    [
        (
            "code_interpreter",
            {"input": "print(1)", "outputs": [{"type": "logs", "logs": "1\n"}]},
            None,
            "print(1)",
            [{"type": "logs", "logs": "1\n"}],
        ),
        ("bing_grounding", {"requesturl": "https://b/s?q=x"}, None, "https://b/s?q=x", None),
        (
            "connected_agent",
            {"name": "bot", "arguments": '{"a":1}', "output": "done", "run_id": "run_2"},
            "bot",
            '{"a":1}',
            "done",
        ),
        ("file_search", {"results": [{"file_id": "f", "score": 0.5}]}, None, None, None),
        ("openapi", {"name": "op", "arguments": {"q": 1}, "output": "o"}, "op", '{"q":1}', "o"),
        ("brand_new_tool", {"whatever": 1}, None, None, None),
    ],
)
def test_completed_step_of_each_tool_type(
    kind: str, body: dict[str, Any], name: str | None, arguments: str | None, output: Any
) -> None:
    """A completed tool step of each built-in (and an unknown) type parses into
    StepToolCall with its name, arguments and output; the call object is kept in raw."""
    call = {"id": "call_1", "type": kind, kind: body}
    details = {"type": "tool_calls", "tool_calls": [call]}
    (out,) = ev("thread.run.step.completed", step(status="completed", step_details=details))
    assert isinstance(out, w.StepEvent) and out.step is not None
    (tc,) = out.step.tool_calls
    if kind == "file_search":
        output = body["results"]
    assert (tc.type, tc.name, tc.arguments, tc.output, tc.raw) == (
        kind,
        name,
        arguments,
        output,
        call,
    )


def test_message_creation_step_names_its_message() -> None:
    """A message_creation step gives the id of the message it wrote."""
    details = {"type": "message_creation", "message_creation": {"message_id": "msg_9"}}
    s = w.parse_run_step(step(type="message_creation", step_details=details))
    assert (s.type, s.message_id, s.tool_calls) == ("message_creation", "msg_9", ())


def test_error_event_with_error_object() -> None:
    """A mid-stream `event: error` with {"error": {...}} gives its code and message."""
    (out,) = ev("error", {"error": {"code": "server_error", "message": "Interrupted."}})
    assert out == w.StreamError("server_error", "Interrupted.")


@pytest.mark.parametrize("path", sorted(FIXTURES.glob("*.json")), ids=lambda p: p.stem)
def test_every_replay_fixture_parses(path: Path) -> None:
    """Every event and listed message of each recorded-shape fixture parses without error."""
    data = json.loads(path.read_text())
    for phase in data["phases"]:
        for name, payload in phase["events"]:
            ev(name, payload)
        page = {"data": phase["messages"], "first_id": None, "last_id": None, "has_more": False}
        assert len(w.parse_message_page(page).data) == len(phase["messages"])
        w.parse_run(phase["run"])
