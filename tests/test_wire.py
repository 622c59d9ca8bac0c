"""The wire layer: request builders, response parsers and stream-event parsing.

Shapes come from ``reference/agents-rest-api.md``; the parsers must turn any malformed input
into `RemoteProtocolError`, and the builders any bad caller input into `ConfigurationError`.
"""

from __future__ import annotations

import ast
import contextlib
import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentrun import _inputs, _machine, _model, _sse
from agentrun._classic import wire as w
from agentrun._errors import ConfigurationError, RemoteProtocolError
from agentrun._sse import SSEEvent

# -- fixtures: objects as the service sends them -----------------------------------------------


def run_json(**overrides: Any) -> dict[str, Any]:
    """A complete ThreadRun in requires_action with one function tool call."""
    run: dict[str, Any] = {
        "id": "run_01",
        "object": "thread.run",
        "thread_id": "thread_01",
        "assistant_id": "asst_01",
        "status": "requires_action",
        "required_action": {
            "type": "submit_tool_outputs",
            "submit_tool_outputs": {
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "weather", "arguments": '{"city":"Oslo"}'},
                    },
                    {"id": "call_2", "type": "azure_function", "azure_function": {}},
                ]
            },
        },
        "last_error": None,
        "model": "gpt-4o",
        "instructions": "be brief",
        "tools": [],
        "created_at": 1700000000,
        "expires_at": 1700000600,
        "started_at": 1700000001,
        "completed_at": None,
        "cancelled_at": None,
        "failed_at": None,
        "incomplete_details": None,
        "usage": None,
        "temperature": 1.0,
        "top_p": 1.0,
        "max_prompt_tokens": None,
        "max_completion_tokens": None,
        "truncation_strategy": {"type": "auto", "last_messages": None},
        "tool_choice": "auto",
        "response_format": "auto",
        "metadata": {"job": "7"},
        "tool_resources": {},
        "parallel_tool_calls": True,
    }
    run.update(overrides)
    return run


def message_json(**overrides: Any) -> dict[str, Any]:
    """A completed assistant ThreadMessage with two text parts and an image."""
    message: dict[str, Any] = {
        "id": "msg_01",
        "object": "thread.message",
        "created_at": 1700000002,
        "thread_id": "thread_01",
        "status": "completed",
        "incomplete_details": None,
        "completed_at": 1700000003,
        "incomplete_at": None,
        "role": "assistant",
        "content": [
            {"type": "text", "text": {"value": "Hello", "annotations": []}},
            {"type": "image_file", "image_file": {"file_id": "file_1"}},
            {
                "type": "text",
                "text": {
                    "value": "See [1]",
                    "annotations": [
                        {
                            "type": "url_citation",
                            "text": "[1]",
                            "start_index": 4,
                            "end_index": 7,
                            "url_citation": {"url": "https://example.org"},
                        }
                    ],
                },
            },
        ],
        "assistant_id": "asst_01",
        "run_id": "run_01",
        "attachments": [],
        "metadata": {},
    }
    message.update(overrides)
    return message


def sse(event: str, data: Any) -> SSEEvent:
    return SSEEvent(event, data if isinstance(data, str) else json.dumps(data))


# -- constants ---------------------------------------------------------------------------------


def test_status_sets_partition_the_nine_statuses() -> None:
    """Terminal and active statuses are disjoint and together are exactly the nine statuses."""
    assert w.TERMINAL_STATUSES.isdisjoint(w.ACTIVE_STATUSES)
    assert w.TERMINAL_STATUSES | w.ACTIVE_STATUSES == w.RUN_STATUSES
    nine = {"queued", "in_progress", "requires_action", "cancelling"}
    nine |= {"cancelled", "failed", "completed", "expired", "incomplete"}
    assert set(w.RUN_STATUSES) == nine
    terminal = {"completed", "failed", "cancelled", "expired", "incomplete"}
    assert set(w.TERMINAL_STATUSES) == terminal


@pytest.mark.parametrize("module", [w, _sse, _model, _inputs, _machine], ids=lambda m: m.__name__)
def test_module_is_pure(module: Any) -> None:
    """The pure core imports only the stdlib, attrs and agentrun's own pure modules."""
    tree = ast.parse(Path(module.__file__).read_text())
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
    allowed_stdlib = {
        "__future__",
        "collections.abc",
        "json",
        "math",
        "re",
        "typing",
        "urllib.parse",
    }
    pure = {"agentrun._errors", "agentrun._sse", "agentrun._machine", "agentrun._fields"}
    pure |= {"agentrun._model", "agentrun._inputs"}
    assert imported <= allowed_stdlib | {"attrs", "enum", "itertools"} | pure


# -- runs --------------------------------------------------------------------------------------


def test_parse_run_reads_every_field() -> None:
    """A full run object maps onto the Run value, tool calls included."""
    run = w.parse_run(run_json())
    assert run.id == "run_01"
    assert run.thread_id == "thread_01"
    assert run.assistant_id == "asst_01"
    assert run.status == "requires_action"
    assert (run.created_at, run.started_at, run.expires_at) == (1700000000, 1700000001, 1700000600)
    assert (run.completed_at, run.failed_at, run.cancelled_at) == (None, None, None)
    assert run.last_error is None
    assert run.usage is None
    assert run.required_tool_calls == (
        w.ToolCall("call_1", "function", "weather", '{"city":"Oslo"}'),
        w.ToolCall("call_2", "azure_function", None, ""),
    )
    assert run.incomplete_reason is None
    assert run.metadata == {"job": "7"}
    assert run.model == "gpt-4o"
    assert run.raw["instructions"] == "be brief"
    assert not run.is_terminal


def test_parse_run_terminal_details() -> None:
    """Usage, last_error and incomplete_details of finished runs are parsed."""
    failed = w.parse_run(
        run_json(
            status="failed",
            required_action=None,
            failed_at=1700000009,
            last_error={"code": "rate_limit_exceeded", "message": "Try again in 60 seconds."},
            usage={"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
        )
    )
    assert failed.last_error == w.LastError("rate_limit_exceeded", "Try again in 60 seconds.")
    assert failed.usage == w.Usage(10, 5, 15)
    assert failed.failed_at == 1700000009
    assert failed.required_tool_calls == ()
    assert failed.is_terminal
    incomplete = w.parse_run(
        run_json(status="incomplete", incomplete_details={"reason": "max_completion_tokens"})
    )
    assert incomplete.incomplete_reason == "max_completion_tokens"


def test_parse_run_tolerates_absent_optional_keys() -> None:
    """Nullable keys may be missing altogether; metadata null becomes an empty mapping."""
    minimal = {
        "id": "run_1",
        "thread_id": "t",
        "assistant_id": "a",
        "status": "queued",
        "created_at": 1,
        "metadata": None,
    }
    run = w.parse_run(minimal)
    assert run.started_at is None
    assert run.expires_at is None
    assert run.model is None
    assert run.metadata == {}
    assert run.required_tool_calls == ()


def test_parse_run_accepts_integral_float_timestamps_only() -> None:
    """1.7e9 is an integer written as a float; 1.5 and true are not timestamps."""
    assert w.parse_run(run_json(created_at=1.7e9)).created_at == 1700000000
    with pytest.raises(RemoteProtocolError, match="created_at"):
        w.parse_run(run_json(created_at=1.5))
    with pytest.raises(RemoteProtocolError, match="created_at"):
        w.parse_run(run_json(created_at=True))


def test_preview_tool_approval_calls_are_read() -> None:
    """A submit_tool_approval action's calls are reported like submit_tool_outputs ones."""
    action = {
        "type": "submit_tool_approval",
        "submit_tool_approval": {"tool_calls": [{"id": "call_9", "type": "mcp"}]},
    }
    run = w.parse_run(run_json(required_action=action))
    assert run.required_tool_calls == (w.ToolCall("call_9", "mcp", None, ""),)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"id": None}, "'id'"),
        ({"status": "paused"}, "'status' has unknown value 'paused'"),
        ({"status": 3}, "'status' must be a string"),
        ({"created_at": "yesterday"}, "'created_at' must be an integer"),
        ({"started_at": "x"}, "'started_at'"),
        ({"usage": []}, "'usage' must be an object"),
        ({"last_error": {"code": 5}}, "run.last_error from the service: 'code'"),
        ({"required_action": {"type": "submit_tool_outputs"}}, "'submit_tool_outputs' is missing"),
        (
            {
                "required_action": {
                    "type": "submit_tool_outputs",
                    "submit_tool_outputs": {"tool_calls": [{"id": "c", "type": "function"}]},
                }
            },
            "tool_calls[0].function",
        ),
        (
            {"incomplete_details": {"reason": 1}},
            "run.incomplete_details from the service: 'reason'",
        ),
    ],
)
def test_parse_run_errors_name_the_field(change: dict[str, Any], field: str) -> None:
    """Each malformed field gives a RemoteProtocolError whose message names it."""
    data = run_json(**change)
    with pytest.raises(RemoteProtocolError, match="malformed run") as info:
        w.parse_run(data)
    assert field in str(info.value)


def test_parse_run_missing_key_says_missing() -> None:
    """A missing required key is reported as missing, not as a type error."""
    data = run_json()
    del data["thread_id"]
    with pytest.raises(RemoteProtocolError, match="'thread_id' is missing"):
        w.parse_run(data)


@pytest.mark.parametrize("data", [None, [], "run", 3])
def test_parse_run_rejects_non_objects(data: Any) -> None:
    """A run that is not a JSON object is a protocol error."""
    with pytest.raises(RemoteProtocolError, match="expected a JSON object"):
        w.parse_run(data)


def test_parse_run_page() -> None:
    """A run list envelope parses into its runs and cursors; an empty last_id means none."""
    page = w.parse_run_page(
        {"data": [run_json()], "first_id": "run_01", "last_id": "run_01", "has_more": False}
    )
    assert [r.id for r in page.data] == ["run_01"]
    assert (page.first_id, page.last_id, page.has_more) == ("run_01", "run_01", False)
    empty = w.parse_run_page({"data": [], "last_id": "", "has_more": False})
    assert (empty.data, empty.first_id, empty.last_id) == ((), None, None)


def test_parse_run_page_names_the_bad_item() -> None:
    """An error inside a listed run says which item it was."""
    with pytest.raises(RemoteProtocolError, match=r"run list data\[1\]"):
        w.parse_run_page({"data": [run_json(), {"id": 1}], "has_more": False})


# -- messages and threads ----------------------------------------------------------------------


def test_parse_message_parts_and_text() -> None:
    """Content parts become typed values; text joins text parts with a blank line."""
    msg = w.parse_message(message_json())
    assert msg.content == (
        w.TextPart("Hello", ()),
        w.ImageFilePart("file_1"),
        w.TextPart("See [1]", msg.content[2].annotations),  # type: ignore[union-attr]
    )
    assert w.TEXT_PART_SEPARATOR == "\n\n"
    assert msg.text == "Hello\n\nSee [1]"
    assert (msg.role, msg.status, msg.run_id, msg.assistant_id) == (
        "assistant",
        "completed",
        "run_01",
        "asst_01",
    )


def test_message_annotations_are_shifted_into_joined_text() -> None:
    """Annotation indices point into `text`, so the slice they name is the annotated text."""
    msg = w.parse_message(message_json())
    (ann,) = msg.annotations
    assert msg.text[ann["start_index"] : ann["end_index"]] == "[1]"
    # The raw part keeps its own, part-relative indices.
    assert msg.content[2].annotations[0]["start_index"] == 4  # type: ignore[union-attr]


def test_message_without_text_has_empty_text() -> None:
    """A message with only an image has text "" and no annotations."""
    msg = w.parse_message(message_json(content=[{"type": "image_url", "image_url": {"url": "u"}}]))
    assert msg.content == (w.ImageUrlPart("u"),)
    assert msg.text == ""
    assert msg.annotations == ()


def test_unknown_content_part_is_kept() -> None:
    """A content type this version does not know is kept as UnknownPart, not an error."""
    part = {"type": "audio", "audio": {"id": "x"}}
    msg = w.parse_message(message_json(content=[part]))
    assert msg.content == (w.UnknownPart("audio", part),)
    assert msg.content[0].raw == part


def test_user_message_has_null_run_and_assistant() -> None:
    """Manually created messages carry run_id and assistant_id null."""
    msg = w.parse_message(message_json(role="user", run_id=None, assistant_id=None))
    assert (msg.run_id, msg.assistant_id) == (None, None)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"content": None}, "'content' must be an array"),
        (
            {"content": [{"type": "text", "text": {}}]},
            "message.content[0].text from the service: 'value'",
        ),
        ({"content": [{"text": "a"}]}, "message.content[0] from the service: 'type' is missing"),
        ({"role": None}, "'role'"),
        ({"run_id": 7}, "'run_id'"),
    ],
)
def test_parse_message_errors_name_the_field(change: dict[str, Any], field: str) -> None:
    """Malformed message fields raise RemoteProtocolError naming object and field."""
    with pytest.raises(RemoteProtocolError) as info:
        w.parse_message(message_json(**change))
    assert field in str(info.value)


def test_parse_message_page() -> None:
    """A message list envelope parses; last_id null means no further cursor."""
    page = w.parse_message_page(
        {
            "object": "list",
            "data": [message_json()],
            "first_id": "msg_01",
            "last_id": None,
            "has_more": True,
        }
    )
    assert [m.id for m in page.data] == ["msg_01"]
    assert (page.first_id, page.last_id, page.has_more) == ("msg_01", None, True)


def test_parse_message_page_requires_has_more() -> None:
    """has_more is a required boolean of the envelope."""
    with pytest.raises(RemoteProtocolError, match="has_more"):
        w.parse_message_page({"data": [], "last_id": None})
    with pytest.raises(RemoteProtocolError, match="has_more"):
        w.parse_message_page({"data": [], "has_more": "no"})


def test_parse_thread() -> None:
    """Thread metadata null becomes {}."""
    assert w.parse_thread(
        {"id": "thread_1", "object": "thread", "created_at": 5, "metadata": None}
    ) == w.Thread("thread_1", 5, {})


def test_decode_json_errors_name_the_body() -> None:
    """A body that is not JSON raises RemoteProtocolError naming what it was."""
    assert w.decode_json(b'{"a": 1}', "run") == {"a": 1}
    with pytest.raises(RemoteProtocolError, match="malformed run"):
        w.decode_json(b"<html>", "run")
    with pytest.raises(RemoteProtocolError):
        w.decode_json(b"\xff\xfe\x00", "run")


# -- error bodies ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            b'{"error":{"code":"rate_limit_exceeded","message":"slow down",'
            b'"type":"t","param":"p"}}',
            w.ErrorInfo("rate_limit_exceeded", "slow down", "p", "t"),
        ),
        (b'{"error":"plain"}', w.ErrorInfo(None, "plain", None, None)),
        (
            b'{"statusCode":401,"message":"Access denied"}',
            w.ErrorInfo(None, "Access denied", None, None),
        ),
        (b'{"error":{"code":429}}', w.ErrorInfo("429", '{"error":{"code":429}}', None, None)),
        (b"Bad Gateway", w.ErrorInfo(None, "Bad Gateway", None, None)),
        (b"", w.ErrorInfo(None, "", None, None)),
        (b'"quoted"', w.ErrorInfo(None, "quoted", None, None)),
        (b"[1, 2]", w.ErrorInfo(None, "[1, 2]", None, None)),
        (b"\xff oops", w.ErrorInfo(None, "\ufffd oops", None, None)),
    ],
)
def test_parse_error_body_shapes(body: bytes, expected: w.ErrorInfo) -> None:
    """Every error body shape gives an ErrorInfo; the message falls back to the body text."""
    assert w.parse_error_body(body) == expected


def test_parse_error_body_truncates_long_text() -> None:
    """A huge non-JSON body (an HTML page) is cut to 500 characters plus an ellipsis."""
    info = w.parse_error_body(b"x" * 10_000)
    assert info.message == "x" * 500 + "…"


@given(st.binary(max_size=300))
def test_parse_error_body_never_raises(body: bytes) -> None:
    """Arbitrary bytes never make the error-body parser raise."""
    assert isinstance(w.parse_error_body(body).message, str)


# -- stream events -----------------------------------------------------------------------------


def test_run_event() -> None:
    """thread.run.* events carry the parsed run."""
    (event,) = w.parse_stream_event(sse("thread.run.requires_action", run_json()))
    assert isinstance(event, w.RunEvent)
    assert event.event == "thread.run.requires_action"
    assert event.run.required_tool_calls[0].name == "weather"


@pytest.mark.parametrize("status", [*sorted(w.RUN_STATUSES), "created"])
def test_every_run_event_name_is_known(status: str) -> None:
    """Each of the eleven thread.run.<x> events yields a RunEvent."""
    (event,) = w.parse_stream_event(sse(f"thread.run.{status}", run_json(status="queued")))
    assert isinstance(event, w.RunEvent)


def test_thread_created_event() -> None:
    """thread.created carries the new thread."""
    events = w.parse_stream_event(
        sse(
            "thread.created",
            {"id": "thread_9", "object": "thread", "created_at": 1, "metadata": {}},
        )
    )
    assert events == [w.ThreadCreated(w.Thread("thread_9", 1, {}))]


def test_message_event() -> None:
    """thread.message.completed carries the parsed message."""
    (event,) = w.parse_stream_event(sse("thread.message.completed", message_json()))
    assert isinstance(event, w.MessageEvent)
    assert event.message.text == "Hello\n\nSee [1]"


def test_step_event() -> None:
    """thread.run.step.* events report id, type and status and keep the raw step."""
    step = {
        "id": "step_1",
        "object": "thread.run.step",
        "type": "tool_calls",
        "status": "completed",
        "step_details": {"type": "tool_calls", "tool_calls": []},
    }
    (event,) = w.parse_stream_event(sse("thread.run.step.completed", step))
    assert event == w.StepEvent(
        "thread.run.step.completed", "step_1", "tool_calls", "completed", step
    )
    assert isinstance(event, w.StepEvent)
    assert event.raw["step_details"]["type"] == "tool_calls"


def test_message_delta_yields_one_text_delta_per_text_item() -> None:
    """A delta with several content items gives one TextDelta each; image items are skipped."""
    data = {
        "id": "msg_1",
        "object": "thread.message.delta",
        "delta": {
            "role": "assistant",
            "content": [
                {"index": 0, "type": "text", "text": {"value": "Hel"}},
                {"index": 1, "type": "image_file", "image_file": {"file_id": "f"}},
                {
                    "index": 2,
                    "type": "text",
                    "text": {"value": "lo", "annotations": [{"type": "x"}]},
                },
            ],
        },
    }
    assert w.parse_stream_event(sse("thread.message.delta", data)) == [
        w.TextDelta("msg_1", 0, "Hel", ()),
        w.TextDelta("msg_1", 2, "lo", ({"type": "x"},)),
    ]


def test_role_only_message_delta_is_empty() -> None:
    """A delta without content (only the role) yields no events."""
    data = {"id": "msg_1", "delta": {"role": "assistant"}}
    assert w.parse_stream_event(sse("thread.message.delta", data)) == []


def test_tool_call_step_deltas() -> None:
    """The first tool-call delta carries id/type/name; later ones only index and a fragment."""
    first = {
        "id": "step_1",
        "object": "thread.run.step.delta",
        "delta": {
            "step_details": {
                "type": "tool_calls",
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "weather", "arguments": "", "output": None},
                    }
                ],
            }
        },
    }
    later = {
        "id": "step_1",
        "delta": {
            "step_details": {
                "type": "tool_calls",
                "tool_calls": [{"index": 0, "function": {"arguments": '{"ci'}}],
            }
        },
    }
    assert w.parse_stream_event(sse("thread.run.step.delta", first)) == [
        w.ToolCallDelta("step_1", 0, "call_1", "function", "weather", "")
    ]
    assert w.parse_stream_event(sse("thread.run.step.delta", later)) == [
        w.ToolCallDelta("step_1", 0, None, None, None, '{"ci')
    ]


def test_message_creation_step_delta_is_empty() -> None:
    """A message_creation step delta carries nothing a caller needs."""
    data = {
        "id": "step_1",
        "delta": {
            "step_details": {"type": "message_creation", "message_creation": {"message_id": "m"}}
        },
    }
    assert w.parse_stream_event(sse("thread.run.step.delta", data)) == []


def test_done_event() -> None:
    """`event: done` / `data: [DONE]` is StreamDone."""
    assert w.parse_stream_event(SSEEvent("done", "[DONE]")) == [w.StreamDone()]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ('{"code":"server_error","message":"Sorry"}', w.StreamError("server_error", "Sorry")),
        ('{"error":{"code":"c","message":"m"}}', w.StreamError("c", "m")),
        ("something broke", w.StreamError(None, "something broke")),
        ('"quoted"', w.StreamError(None, "quoted")),
    ],
)
def test_error_event_shapes(data: str, expected: w.StreamError) -> None:
    """The error event's data may be an object, a wrapped object or plain text."""
    assert w.parse_stream_event(SSEEvent("error", data)) == [expected]


def test_unknown_events_are_ignored() -> None:
    """Unknown names (even with invalid JSON) give no events: new events must not break us."""
    assert w.parse_stream_event(SSEEvent("thread.run.step.paused", "{not json")) == []
    assert w.parse_stream_event(SSEEvent("message", "[DONE]")) == []


@pytest.mark.parametrize(
    "name",
    [
        "thread.run.completed",
        "thread.message.delta",
        "thread.run.step.delta",
        "thread.created",
        "thread.message.completed",
        "thread.run.step.created",
    ],
)
def test_known_event_with_broken_json_is_an_error(name: str) -> None:
    """Malformed JSON in a known event raises RemoteProtocolError naming the event."""
    with pytest.raises(RemoteProtocolError, match=name.replace(".", r"\.")):
        w.parse_stream_event(SSEEvent(name, '{"id": "x"'))


def test_bad_run_in_event_names_event_and_field() -> None:
    """A run event whose run is malformed names both the event and the field."""
    with pytest.raises(RemoteProtocolError, match=r"thread\.run\.failed event: .*'status'"):
        w.parse_stream_event(sse("thread.run.failed", run_json(status="exploded")))


# -- requests ----------------------------------------------------------------------------------

HELLO = w.InputMessage("user", "Hello")


def test_create_thread_and_run_body() -> None:
    """POST /threads/runs carries assistant_id, the thread's messages, stream and options."""
    options = w.RunOptions(instructions="brief", temperature=0.5, metadata={"k": "v"})
    req = w.create_thread_and_run("asst_1", [HELLO], options, stream=True)
    assert (req.method, req.path, req.params, req.stream) == ("POST", "/threads/runs", (), True)
    assert req.json == {
        "assistant_id": "asst_1",
        "thread": {"messages": [{"role": "user", "content": "Hello"}]},
        "stream": True,
        "instructions": "brief",
        "temperature": 0.5,
        "metadata": {"k": "v"},
    }


def test_create_thread_and_run_refuses_additional_instructions() -> None:
    """/threads/runs has no additional_instructions: refused rather than silently dropped."""
    with pytest.raises(ConfigurationError, match="additional_instructions"):
        w.create_thread_and_run(
            "asst_1", [HELLO], w.RunOptions(additional_instructions="x"), stream=False
        )


def test_create_run_with_additional_messages() -> None:
    """Continuing a thread is one request: additional_messages ride on create-run."""
    req = w.create_run("thread_1", "asst_1", additional_messages=[HELLO], stream=False)
    assert (req.method, req.path, req.stream) == ("POST", "/threads/thread_1/runs", False)
    assert req.json == {
        "assistant_id": "asst_1",
        "additional_messages": [{"role": "user", "content": "Hello"}],
        "stream": False,
    }
    bare = w.create_run("thread_1", "asst_1", w.RunOptions(model="gpt-4o"), stream=True)
    assert bare.json == {"assistant_id": "asst_1", "stream": True, "model": "gpt-4o"}


def test_simple_run_and_thread_requests() -> None:
    """Get, cancel and list requests have the documented methods, paths and params."""
    assert w.get_run("t", "r") == w.ApiRequest("GET", "/threads/t/runs/r")
    assert w.cancel_run("t", "r") == w.ApiRequest("POST", "/threads/t/runs/r/cancel", (), None)
    assert w.list_runs("t") == w.ApiRequest(
        "GET", "/threads/t/runs", (("limit", "1"), ("order", "desc"))
    )
    assert w.list_messages("t", run_id="r", after="msg_5") == w.ApiRequest(
        "GET",
        "/threads/t/messages",
        (("limit", "100"), ("order", "asc"), ("after", "msg_5"), ("run_id", "r")),
    )


def test_list_parameters_are_validated() -> None:
    """limit is 1..100 and order asc/desc, checked before sending."""
    with pytest.raises(ConfigurationError, match="limit"):
        w.list_messages("t", limit=0)
    with pytest.raises(ConfigurationError, match="limit"):
        w.list_runs("t", limit=101)
    with pytest.raises(ConfigurationError, match="order"):
        w.list_messages("t", order="up")  # type: ignore[arg-type]


def test_submit_tool_outputs_body() -> None:
    """Tool outputs are sent as [{tool_call_id, output}] with the stream flag."""
    req = w.submit_tool_outputs("t", "r", [w.ToolOutput("call_1", "42")], stream=True)
    assert req.path == "/threads/t/runs/r/submit_tool_outputs"
    assert req.json == {
        "tool_outputs": [{"tool_call_id": "call_1", "output": "42"}],
        "stream": True,
    }
    with pytest.raises(ConfigurationError, match="empty"):
        w.submit_tool_outputs("t", "r", [], stream=False)
    with pytest.raises(ConfigurationError, match=r"outputs\[0\]"):
        w.submit_tool_outputs("t", "r", [{"tool_call_id": "c", "output": ""}], stream=False)  # type: ignore[list-item]


def test_create_thread() -> None:
    """create_thread with no messages sends {}; with messages, their role and content."""
    assert w.create_thread() == w.ApiRequest("POST", "/threads", (), {})
    assert w.create_thread([HELLO]).json == {"messages": [{"role": "user", "content": "Hello"}]}
    with pytest.raises(ConfigurationError, match=r"messages\[0\]"):
        w.create_thread([{"role": "user", "content": "x"}])  # type: ignore[list-item]


def test_ids_are_validated_as_whole_strings() -> None:
    """Ids cannot change the path or a header: the whole string must be an id (letters,
    digits, '_', '-', '.', ':'), so '/', '?', '#', spaces, a trailing newline, '.' and '..'
    are refused before any request is built."""
    assert w.get_run("thread_a-1", "run_b.2").path == "/threads/thread_a-1/runs/run_b.2"
    bad_ids = ("", ".", "..", None, 5, "a/b", "c?d", "e#f", "thread_1\n", "thread 1", "t\r\nx")
    for bad in (*bad_ids, "x" * 257, "th%2F"):
        with pytest.raises(ConfigurationError, match="thread_id"):
            w.get_run(bad, "run_1")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="run_id"):
        w.get_run("thread_1", "run_1\n")
    with pytest.raises(ConfigurationError, match="agent_id"):
        w.create_run("thread_1", "asst_1\n", stream=False)


def test_messages_argument_must_be_a_list_of_input_messages() -> None:
    """A single message or a string where a list belongs is a clear ConfigurationError."""
    with pytest.raises(ConfigurationError, match="sequence of InputMessage"):
        w.create_thread_and_run("a", HELLO, stream=True)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="sequence of InputMessage"):
        w.create_thread("hello")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="stream"):
        w.create_run("t", "a", stream="yes")  # type: ignore[arg-type]


# -- input messages ----------------------------------------------------------------------------


def test_input_message_parts_are_normalised_and_copied() -> None:
    """OpenAI-style parts are checked, the image_url shorthand expanded, and dicts copied."""
    parts: list[dict[str, Any]] = [
        {"type": "text", "text": "look"},
        {"type": "image_url", "image_url": "https://x/y.png"},
        {"type": "image_file", "image_file": {"file_id": "f", "detail": "low"}},
    ]
    msg = w.InputMessage("user", parts)
    parts[0]["text"] = "changed"
    assert msg.to_json() == {
        "role": "user",
        "content": [
            {"type": "text", "text": "look"},
            {"type": "image_url", "image_url": {"url": "https://x/y.png"}},
            {"type": "image_file", "image_file": {"file_id": "f", "detail": "low"}},
        ],
    }


@pytest.mark.parametrize(
    ("role", "content", "match"),
    [
        ("system", "x", "role"),
        ("user", 5, "content"),
        ("user", [], "empty"),
        ("user", b"x", "content"),
        ("user", [{"type": "audio"}], "type"),
        ("user", ["text"], r"content\[0\]"),
        ("user", [{"type": "text", "text": 1}], "text"),
        ("user", [{"type": "text", "text": "a", "cache_control": {}}], "cache_control"),
        ("user", [{"type": "image_url", "image_url": {"url": "u", "detail": "max"}}], "detail"),
        ("user", [{"type": "image_url", "image_url": {}}], "image_url"),
        ("user", [{"type": "image_file", "image_file": {"file_id": ""}}], "image_file"),
    ],
)
def test_input_message_validation(role: Any, content: Any, match: str) -> None:
    """Bad roles, content types and parts raise ConfigurationError naming the problem."""
    with pytest.raises(ConfigurationError, match=match):
        w.InputMessage(role, content)


# -- run options -------------------------------------------------------------------------------


def test_run_options_to_json_drops_none_and_copies() -> None:
    """Only set options are sent; tools and mappings go out as plain lists and dicts."""
    assert w.RunOptions().to_json() == {}
    tool = {"type": "function", "function": {"name": "f", "parameters": {}}}
    opts = w.RunOptions(
        tools=[tool],
        tool_choice={"type": "function", "function": {"name": "f"}},
        response_format={"type": "json_schema", "json_schema": {"name": "n", "schema": {}}},
        top_p=1,
        max_prompt_tokens=256,
        max_completion_tokens=1000,
        truncation_strategy={"type": "last_messages", "last_messages": 4},
        parallel_tool_calls=False,
    )
    assert opts.to_json() == {
        "tools": [tool],
        "tool_choice": {"type": "function", "function": {"name": "f"}},
        "response_format": {"type": "json_schema", "json_schema": {"name": "n", "schema": {}}},
        "top_p": 1,
        "max_prompt_tokens": 256,
        "max_completion_tokens": 1000,
        "truncation_strategy": {"type": "last_messages", "last_messages": 4},
        "parallel_tool_calls": False,
    }


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"temperature": -0.01}, "temperature"),
        ({"temperature": 2.01}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"temperature": True}, "temperature"),
        ({"temperature": "1"}, "temperature"),
        ({"top_p": 1.5}, "top_p"),
        ({"max_prompt_tokens": 255}, "max_prompt_tokens"),
        ({"max_completion_tokens": 1000.0}, "max_completion_tokens"),
        ({"metadata": {str(i): "v" for i in range(17)}}, "metadata"),
        ({"metadata": {"k": 1}}, "metadata"),
        ({"tools": [{"name": "f"}]}, r"tools\[0\]"),
        ({"tools": "code_interpreter"}, "tools"),
        ({"tools": [{"type": "function", "function": {}}]}, r"tools\[0\]\.function"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"response_format": "none"}, "response_format"),
        ({"response_format": {"type": "json_schema"}}, "json_schema"),
        ({"truncation_strategy": {"type": "last_messages"}}, "truncation_strategy"),
        ({"parallel_tool_calls": 1}, "parallel_tool_calls"),
        ({"instructions": 5}, "instructions"),
        ({"model": ""}, "model"),
    ],
)
def test_run_options_validation(kwargs: dict[str, Any], name: str) -> None:
    """Out-of-range or mistyped options raise ConfigurationError naming the parameter."""
    with pytest.raises(ConfigurationError, match=name):
        w.RunOptions(**kwargs)


def test_run_options_range_edges_are_allowed() -> None:
    """The documented limits themselves are valid values."""
    opts = w.RunOptions(
        temperature=2,
        top_p=0.0,
        max_prompt_tokens=256,
        metadata={str(i): "v" for i in range(16)},
        tool_choice="none",
        response_format="auto",
        truncation_strategy={"type": "auto"},
    )
    assert opts.to_json()["temperature"] == 2
    assert len(opts.to_json()["metadata"]) == 16


def test_tool_output_validation() -> None:
    """Tool outputs need a call id and a string output (results are stringified by callers)."""
    with pytest.raises(ConfigurationError, match="tool_call_id"):
        w.ToolOutput("", "x")
    with pytest.raises(ConfigurationError, match="must be a string"):
        w.ToolOutput("call_1", 42)  # type: ignore[arg-type]


# -- property tests: parsers raise only RemoteProtocolError ------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)

PARSERS = [
    w.parse_run,
    w.parse_message,
    w.parse_message_page,
    w.parse_run_page,
    w.parse_thread,
]


@pytest.mark.parametrize("parse", PARSERS, ids=lambda p: p.__name__)
@given(data=json_values)
def test_parsers_on_arbitrary_json(parse: Any, data: Any) -> None:
    """Any JSON value either parses or raises RemoteProtocolError, nothing else."""
    with contextlib.suppress(RemoteProtocolError):
        parse(data)


def _mutations(base: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """`base` with a few keys or items, at any depth, replaced by arbitrary JSON or dropped."""

    def paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        out = []
        if isinstance(obj, dict):
            for k, v in obj.items():
                out.append((*prefix, k))
                out.extend(paths(v, (*prefix, k)))
        elif isinstance(obj, list):
            for i, v in enumerate(obj):
                out.append((*prefix, i))
                out.extend(paths(v, (*prefix, i)))
        return out

    all_paths = paths(base)

    @st.composite
    def mutated(draw: st.DrawFn) -> dict[str, Any]:
        obj = copy.deepcopy(base)
        for path in draw(st.lists(st.sampled_from(all_paths), min_size=1, max_size=3)):
            parent: Any = obj
            try:
                for step in path[:-1]:
                    parent = parent[step]
                if draw(st.booleans()) and isinstance(parent, dict):
                    parent.pop(path[-1], None)
                else:
                    parent[path[-1]] = draw(json_values)
            except (KeyError, IndexError, TypeError):
                continue  # an earlier mutation removed or replaced this path
        return obj

    return mutated()


@given(
    data=_mutations(
        run_json(
            usage={"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
            last_error={"code": "c", "message": "m"},
        )
    )
)
def test_parse_run_on_mutated_runs(data: dict[str, Any]) -> None:
    """A nearly valid run with fields replaced or dropped parses, or raises RemoteProtocolError."""
    with contextlib.suppress(RemoteProtocolError):
        w.parse_run(data)


@given(data=_mutations(message_json()))
def test_parse_message_on_mutated_messages(data: dict[str, Any]) -> None:
    """A nearly valid message with fields replaced or dropped parses, or raises only our error."""
    try:
        msg = w.parse_message(data)
    except RemoteProtocolError:
        return
    assert isinstance(msg.text, str)
    assert isinstance(msg.annotations, tuple)


_DELTAS: dict[str, dict[str, Any]] = {
    "thread.message.delta": {
        "id": "msg_1",
        "delta": {
            "content": [{"index": 0, "type": "text", "text": {"value": "a", "annotations": [{}]}}]
        },
    },
    "thread.run.step.delta": {
        "id": "step_1",
        "delta": {
            "step_details": {
                "type": "tool_calls",
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "c",
                        "type": "function",
                        "function": {"name": "n", "arguments": ""},
                    }
                ],
            }
        },
    },
    "thread.run.step.completed": {"id": "s", "type": "tool_calls", "status": "completed"},
}


@pytest.mark.parametrize("name", sorted(_DELTAS))
@given(data=st.data())
def test_stream_events_on_mutated_data(name: str, data: st.DataObject) -> None:
    """Mutated event payloads parse or raise RemoteProtocolError, nothing else."""
    payload = data.draw(_mutations(_DELTAS[name]))
    try:
        events = w.parse_stream_event(SSEEvent(name, json.dumps(payload)))
    except RemoteProtocolError:
        return
    assert isinstance(events, list)


@given(
    name=st.sampled_from(
        [
            "thread.run.completed",
            "thread.message.delta",
            "thread.run.step.delta",
            "thread.created",
            "thread.message.completed",
            "thread.run.step.created",
            "error",
            "done",
            "other",
        ]
    ),
    payload=json_values,
)
def test_stream_events_on_arbitrary_json(name: str, payload: Any) -> None:
    """Every event name, with any JSON payload, parses or raises RemoteProtocolError only."""
    with contextlib.suppress(RemoteProtocolError):
        w.parse_stream_event(SSEEvent(name, json.dumps(payload)))


@given(name=st.sampled_from(["error", "done"]), text=st.text())
def test_error_and_done_never_raise(name: str, text: str) -> None:
    """error and done accept any data: a failure report must never fail to parse."""
    (event,) = w.parse_stream_event(SSEEvent(name, text))
    assert isinstance(event, (w.StreamError, w.StreamDone))


def _delta(*items: Any, mid: Any = "msg_1") -> dict[str, Any]:
    return {"id": mid, "delta": {"content": list(items)}}


def _text(value: Any = "hi", **extra: Any) -> dict[str, Any]:
    return {"index": 0, "type": "text", "text": {"value": value}} | extra


_DELTA_SHAPES: list[Any] = [
    # The usual shapes first (the fast path takes them).
    _delta(_text()),
    _delta({"type": "text", "text": {"value": "no index"}}),
    _delta(_text(index=2)),
    _delta(_text(text={"value": "a", "annotations": []})),
    # Anything else.
    _delta(_text(text={"value": "a", "annotations": [{"type": "url_citation"}]})),
    _delta(_text(index=None)),
    _delta(_text(index=True)),
    _delta({"index": 0, "type": "image_file", "image_file": {}}),
    _delta(_text(5)),
    _delta(_text(text="flat")),
    _delta(_text("a"), _text("b", index=1)),
    _delta(),
    {"id": "msg_1", "delta": {"role": "assistant"}},
    _delta(_text(), mid=7),
    {"id": "msg_1", "delta": {"content": {"k": 1}}},
    {"id": "msg_1", "delta": "text"},
    ["not", "an", "object"],
]


@pytest.mark.parametrize("i", range(len(_DELTA_SHAPES)))
def test_plain_text_delta_agrees_with_the_general_parser(i: int) -> None:
    """The fast path for message deltas returns exactly the general parser's one text delta,
    and takes the usual shapes (one text part, with or without `index`, no annotations); any
    other shape (several parts, annotations, another part type, nothing, malformed) gives None,
    leaving it to the general parser."""
    ev = SSEEvent("thread.message.delta", json.dumps(_DELTA_SHAPES[i]))
    try:
        general: Any = w.parse_stream_event(ev)
    except RemoteProtocolError:
        general = "error"
    fast = w.plain_text_delta(ev)
    if i < 4:
        assert fast is not None
    if fast is not None:
        assert general == [w.TextDelta(*fast)]
    else:
        assert general == "error" or len(general) != 1 or general[0].annotations or i >= 4
    assert w.plain_text_delta(SSEEvent("thread.message.delta", "{not json")) is None
