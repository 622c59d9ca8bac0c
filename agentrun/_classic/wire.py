"""The classic Agents API (threads/runs) wire format: request builders, and parsers from decoded
JSON to the neutral values of `agentrun._model`.

Pure code: no I/O, no clock, no event loop (stdlib, attrs and agentrun's pure core only).
The values runs produce (`Run`, `Message`, `RunStep`, ...) live in `agentrun._model` and the
caller's input values (`InputMessage`, `RunOptions`, `ToolOutput`) in `agentrun._inputs`; they
are re-exported here for the parsers' and builders' callers. The transport turns an
`ApiRequest` into HTTP and hands the decoded body (or each `SSEEvent`) back to the parsers
here. The shapes follow ``reference/agents-rest-api.md``.

Two error rules hold throughout:

* bad input from the caller (an invalid role, ``temperature=3``, an empty id) raises
  `ConfigurationError` naming the parameter, before anything is sent;
* anything malformed from the service (a missing key, a wrong type, an unknown run status,
  broken JSON in a known stream event) raises `RemoteProtocolError` naming the object and the
  field, never a bare ``KeyError``/``TypeError``/``AttributeError``.

Forward compatibility: unknown stream events, unknown content part types and unknown keys are
ignored or kept in ``raw``, so a new service feature does not break an old client.

Why one module of ~1,000 lines: it is the whole classic wire format (field readers, parsers
of every object and stream event, request builders with their id checks), the counterpart of
`agentrun._responses.wire`; its sections share the private field readers and id checks.
"""

from __future__ import annotations

import json as _json
import re
from collections.abc import Callable, Mapping, Sequence
from json import scanner as _json_scanner
from typing import Any, Literal, TypeAlias, TypeVar
from urllib.parse import quote

import attrs

from agentrun._errors import ConfigurationError, RemoteProtocolError
from agentrun._errors import parse_error_body as _parse_error_body
from agentrun._fields import _bad, _obj, _opt_list, _opt_obj, _opt_str, _str, _type_name
from agentrun._inputs import InputMessage, RunOptions, ToolOutput
from agentrun._machine import ACTIVE_STATES, STATUS_TO_STATE
from agentrun._model import (
    TERMINAL_STATUSES,
    TEXT_PART_SEPARATOR,
    ImageFilePart,
    ImageUrlPart,
    LastError,
    Message,
    Part,
    Run,
    RunStep,
    StepToolCall,
    TextPart,
    ToolCall,
    UnknownPart,
    Usage,
)
from agentrun._sse import SSEEvent

__all__ = [
    "ACTIVE_STATUSES",
    "RUN_EVENTS",
    "RUN_STATUSES",
    "SNAPSHOT_EVENTS",
    "TERMINAL_STATUSES",
    "TEXT_PART_SEPARATOR",
    "ApiRequest",
    "ErrorInfo",
    "ImageFilePart",
    "ImageUrlPart",
    "InputMessage",
    "LastError",
    "Message",
    "MessageEvent",
    "MessagePage",
    "Part",
    "Run",
    "RunEvent",
    "RunOptions",
    "RunPage",
    "RunStep",
    "StepEvent",
    "StepToolCall",
    "StreamDone",
    "StreamError",
    "StreamEvent",
    "TextDelta",
    "TextPart",
    "Thread",
    "ThreadCreated",
    "ToolCall",
    "ToolCallDelta",
    "ToolOutput",
    "UnknownPart",
    "Usage",
    "cancel_run",
    "create_run",
    "create_thread",
    "create_thread_and_run",
    "decode_json",
    "get_run",
    "list_messages",
    "list_run_steps",
    "list_runs",
    "parse_error_body",
    "parse_message",
    "parse_message_page",
    "parse_run",
    "parse_run_event",
    "parse_run_page",
    "parse_run_step",
    "parse_run_step_page",
    "parse_stream_event",
    "parse_thread",
    "plain_text_delta",
    "snapshot_id",
    "submit_tool_outputs",
]

# --------------------------------------------------------------------------------------------
# Run statuses

#: Statuses after which a run never changes again, of a run still alive, and every status the
#: service may report (anything else is a `RemoteProtocolError`): all derived from the run state
#: machine's `STATUS_TO_STATE`, the one place that knows run statuses.
ACTIVE_STATUSES: frozenset[str] = frozenset(
    status for status, state in STATUS_TO_STATE.items() if state in ACTIVE_STATES
)
RUN_STATUSES: frozenset[str] = frozenset(STATUS_TO_STATE)

#: Stream events whose data is a run object (``thread.run.<status>``, plus ``created``).
RUN_EVENTS: frozenset[str] = frozenset(
    {"thread.run.created"} | {f"thread.run.{s}" for s in RUN_STATUSES}
)
_STEP_EVENTS = frozenset(
    f"thread.run.step.{s}"
    for s in ("created", "in_progress", "completed", "failed", "cancelled", "expired")
)
_MESSAGE_EVENTS = frozenset(
    f"thread.message.{s}" for s in ("created", "in_progress", "completed", "incomplete")
)


_T = TypeVar("_T")

# --------------------------------------------------------------------------------------------
# Helpers that read decoded JSON and raise RemoteProtocolError naming object and field


def _int_value(value: Any) -> int | None:
    if type(value) is int:
        return value
    # JSON writers sometimes emit integral numbers as floats (1.7e9): accept those exactly.
    if type(value) is float and value.is_integer():
        return int(value)
    return None


def _int(d: dict[str, Any], key: str, where: str) -> int:
    value = _int_value(d.get(key))
    if value is None:
        found = d.get(key)
        _bad(
            where,
            key,
            "is missing" if key not in d else f"must be an integer, got {_type_name(found)}",
        )
    return value


def _opt_int(d: dict[str, Any], key: str, where: str) -> int | None:
    found = d.get(key)
    if found is None:
        return None
    value = _int_value(found)
    if value is None:
        _bad(where, key, f"must be an integer or null, got {_type_name(found)}")
    return value


def _list(d: dict[str, Any], key: str, where: str) -> list[Any]:
    value = d.get(key)
    if type(value) is not list:
        _bad(
            where,
            key,
            "is missing" if key not in d else f"must be an array, got {_type_name(value)}",
        )
    return value


def _metadata(d: dict[str, Any], where: str) -> dict[str, str]:
    value = d.get("metadata")
    if type(value) is not dict or not value:
        return {}  # absent (run steps have none), null or not an object: nothing to keep
    # Values are strings on the wire; anything else is kept as its JSON text, never an error.
    return {
        str(k): v if type(v) is str else _json.dumps(v, separators=(",", ":"))
        for k, v in value.items()
    }


def _annotations(d: dict[str, Any], where: str) -> tuple[Mapping[str, Any], ...]:
    items = d.get("annotations")
    if type(items) is not list:
        return ()
    # Annotations are extras of the text: one of an unexpected shape is dropped, not an error.
    return tuple(item for item in items if type(item) is dict)


def decode_json(body: bytes | str, what: str) -> Any:
    """Decode a JSON response body; `what` names it in the `RemoteProtocolError` if it is not."""
    try:
        return _json.loads(body)
    except (ValueError, RecursionError) as exc:
        # ValueError covers JSONDecodeError and UnicodeDecodeError; RecursionError absurd nesting.
        raise RemoteProtocolError(f"malformed {what} from the service: not JSON ({exc})") from None


# --------------------------------------------------------------------------------------------
# Response values


@attrs.frozen
class MessagePage:
    """One page of a message list. `last_id` is None when the service sent null or ""."""

    data: tuple[Message, ...]
    first_id: str | None
    last_id: str | None
    has_more: bool


@attrs.frozen
class RunPage:
    """One page of a run list."""

    data: tuple[Run, ...]
    first_id: str | None
    last_id: str | None
    has_more: bool


@attrs.frozen
class Thread:
    id: str
    created_at: int
    metadata: Mapping[str, str]


@attrs.frozen
class ErrorInfo:
    """What an HTTP error body said. `message` is never empty when the body was not."""

    code: str | None
    message: str
    param: str | None
    type: str | None


# --------------------------------------------------------------------------------------------
# Response parsers


def _parse_usage(d: dict[str, Any], where: str) -> Usage | None:
    u = _opt_obj(d, "usage", where)
    if u is None:
        return None
    w = f"{where}.usage"
    # Only the three counts are read; extra keys (`prompt_token_details`, ...) are ignored and
    # a count the service leaves out reads as 0.
    prompt = _opt_int(u, "prompt_tokens", w) or 0
    completion = _opt_int(u, "completion_tokens", w) or 0
    total = _opt_int(u, "total_tokens", w)
    details = u.get("prompt_token_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    return Usage(
        prompt,
        completion,
        prompt + completion if total is None else total,
        cached if type(cached) is int else None,
    )


def _parse_tool_call(value: Any, where: str) -> ToolCall:
    d = _obj(value, where)
    call_id = _str(d, "id", where)
    call_type = _str(d, "type", where)
    if call_type != "function":
        return ToolCall(call_id, call_type, None, "", d)
    # A function call is what the caller must answer: its name is required, its arguments
    # (a JSON text) default to "" when the service leaves them out.
    fn = _obj(d.get("function"), f"{where}.function")
    w = f"{where}.function"
    return ToolCall(call_id, call_type, _str(fn, "name", w), _opt_str(fn, "arguments", w) or "", d)


def _parse_required_calls(d: dict[str, Any], where: str) -> tuple[ToolCall, ...]:
    action = _opt_obj(d, "required_action", where)
    if action is None:
        return ()
    w = f"{where}.required_action"
    action_type = _str(action, "type", w)
    body = _opt_obj(action, action_type, w)
    if body is None:
        _bad(w, action_type, "is missing")
    w = f"{w}.{action_type}"
    calls = _list(body, "tool_calls", w)
    return tuple(_parse_tool_call(c, f"{w}.tool_calls[{i}]") for i, c in enumerate(calls))


def parse_run(data: Any) -> Run:
    """A ThreadRun object -> `Run`. Unknown statuses are a `RemoteProtocolError`."""
    where = "run"
    d = _obj(data, where)
    status = _str(d, "status", where)
    if status not in RUN_STATUSES:
        _bad(where, "status", f"has unknown value {status!r}")
    last = _opt_obj(d, "last_error", where)
    last_error = (
        None
        if last is None
        else LastError(
            _opt_str(last, "code", f"{where}.last_error"),
            _opt_str(last, "message", f"{where}.last_error"),
        )
    )
    incomplete = _opt_obj(d, "incomplete_details", where)
    return Run(
        id=_str(d, "id", where),
        thread_id=_str(d, "thread_id", where),
        assistant_id=_opt_str(d, "assistant_id", where) or "",
        status=status,
        created_at=_opt_int(d, "created_at", where) or 0,
        started_at=_opt_int(d, "started_at", where),
        completed_at=_opt_int(d, "completed_at", where),
        failed_at=_opt_int(d, "failed_at", where),
        cancelled_at=_opt_int(d, "cancelled_at", where),
        expires_at=_opt_int(d, "expires_at", where),
        last_error=last_error,
        usage=_parse_usage(d, where),
        required_tool_calls=_parse_required_calls(d, where),
        incomplete_reason=(
            None
            if incomplete is None
            else _opt_str(incomplete, "reason", f"{where}.incomplete_details")
        ),
        metadata=_metadata(d, where),
        model=_opt_str(d, "model", where),
        raw=d,
    )


def _parse_part(value: Any, where: str) -> Part:
    d = _obj(value, where)
    part_type = _str(d, "type", where)
    if part_type == "text":
        t = _obj(d.get("text"), f"{where}.text")
        w = f"{where}.text"
        return TextPart(_str(t, "value", w), _annotations(t, w))
    # Image parts of an unexpected shape are kept whole as UnknownPart, never an error.
    if part_type == "image_file":
        image = d.get("image_file")
        if type(image) is dict and type(image.get("file_id")) is str:
            return ImageFilePart(image["file_id"])
    elif part_type == "image_url":
        image = d.get("image_url")
        if type(image) is dict and type(image.get("url")) is str:
            return ImageUrlPart(image["url"])
    return UnknownPart(part_type, d)


def parse_message(data: Any) -> Message:
    """A ThreadMessage object -> `Message`."""
    where = "message"
    d = _obj(data, where)
    content = _list(d, "content", where)
    incomplete = _opt_obj(d, "incomplete_details", where)
    return Message(
        id=_str(d, "id", where),
        thread_id=_str(d, "thread_id", where),
        run_id=_opt_str(d, "run_id", where),
        assistant_id=_opt_str(d, "assistant_id", where),
        role=_str(d, "role", where),
        status=_opt_str(d, "status", where),
        created_at=_opt_int(d, "created_at", where) or 0,
        content=tuple(_parse_part(p, f"{where}.content[{i}]") for i, p in enumerate(content)),
        incomplete_reason=(
            None
            if incomplete is None
            else _opt_str(incomplete, "reason", f"{where}.incomplete_details")
        ),
        raw=d,
    )


def _page_ids(d: dict[str, Any], where: str) -> tuple[str | None, str | None, bool]:
    # Required: paging on without knowing whether more exists would lose or repeat items.
    has_more = d.get("has_more")
    if type(has_more) is not bool:
        _bad(
            where,
            "has_more",
            "is missing"
            if "has_more" not in d
            else f"must be a boolean, got {_type_name(has_more)}",
        )
    # Empty pages carry last_id null or "" (the SDK pages on a truthy last_id): both mean none.
    return (_opt_str(d, "first_id", where) or None, _opt_str(d, "last_id", where) or None, has_more)


def _page_items(d: dict[str, Any], where: str, parse: Callable[[Any], _T]) -> tuple[_T, ...]:
    items = _list(d, "data", where)
    out = []
    for i, item in enumerate(items):
        try:
            out.append(parse(item))
        except RemoteProtocolError as exc:
            raise RemoteProtocolError(f"{where} data[{i}]: {exc}") from None
    return tuple(out)


def parse_message_page(data: Any) -> MessagePage:
    """A list-messages envelope ``{"data": [...], "last_id", "has_more"}`` -> `MessagePage`."""
    where = "message list"
    d = _obj(data, where)
    return MessagePage(_page_items(d, where, parse_message), *_page_ids(d, where))


def parse_run_page(data: Any) -> RunPage:
    """A list-runs envelope -> `RunPage`."""
    where = "run list"
    d = _obj(data, where)
    return RunPage(_page_items(d, where, parse_run), *_page_ids(d, where))


def _text_of(value: Any) -> str | None:
    if value is None or type(value) is str:
        return value
    return _json.dumps(value, separators=(",", ":"))


def _step_tool_call(value: Any) -> StepToolCall | None:
    if type(value) is not dict:
        return None
    call_type = value.get("type")
    call_type = call_type if type(call_type) is str else ""
    body = value.get(call_type)
    body = body if type(body) is dict else {}
    name = body.get("name")
    arguments: Any = body.get("arguments")
    output: Any = body.get("output")
    if call_type == "code_interpreter":
        arguments, output = body.get("input"), body.get("outputs")
    elif call_type.startswith("bing_"):
        arguments = body.get("requesturl")
    elif "results" in body:
        output = body.get("results")
    call_id = value.get("id")
    return StepToolCall(
        call_id if type(call_id) is str else None,
        call_type,
        name if type(name) is str else None,
        _text_of(arguments),
        output,
        value,
    )


def parse_run_step(data: Any) -> RunStep:
    """A RunStep object (or a ``thread.run.step.*`` event's data) -> `RunStep`. Needs ``id``."""
    where = "run step"
    d = _obj(data, where)
    details = d.get("step_details")
    details = details if type(details) is dict else {}
    kind: str = ""
    for holder in (d, details):
        if type(holder.get("type")) is str:
            kind = holder["type"]
            break
    creation = details.get("message_creation")
    message_id = creation.get("message_id") if type(creation) is dict else None
    calls = details.get("tool_calls")
    status = d.get("status")
    return RunStep(
        id=_str(d, "id", where),
        type=kind,
        status=status if type(status) is str else None,
        message_id=message_id if type(message_id) is str else None,
        tool_calls=tuple(
            c for c in map(_step_tool_call, calls if type(calls) is list else []) if c is not None
        ),
        raw=d,
    )


@attrs.frozen
class RunStepPage:
    """One page of a run-step list."""

    data: tuple[RunStep, ...]
    first_id: str | None
    last_id: str | None
    has_more: bool


def parse_run_step_page(data: Any) -> RunStepPage:
    """A list-run-steps envelope -> `RunStepPage`."""
    where = "run step list"
    d = _obj(data, where)
    return RunStepPage(_page_items(d, where, parse_run_step), *_page_ids(d, where))


def parse_thread(data: Any) -> Thread:
    """An AgentThread object -> `Thread` (``metadata: null`` becomes ``{}``)."""
    where = "thread"
    d = _obj(data, where)
    return Thread(_str(d, "id", where), _opt_int(d, "created_at", where) or 0, _metadata(d, where))


def parse_error_body(body: bytes) -> ErrorInfo:
    """What an HTTP error response says (`agentrun._errors.parse_error_body`). Never raises."""
    return ErrorInfo(*_parse_error_body(body)[:4])


# --------------------------------------------------------------------------------------------
# Stream events


@attrs.frozen
class ThreadCreated:
    """``thread.created``: the thread of a create-thread-and-run stream."""

    thread: Thread


@attrs.frozen
class RunEvent:
    """``thread.run.<status>`` (and ``thread.run.created``): the run as of this event."""

    event: str
    run: Run


@attrs.frozen
class StepEvent:
    """``thread.run.step.<status>``: a run step changed state; `raw` is the RunStep object.

    `type` and `status` are "" when the service left them out; `step` is the parsed step.
    """

    event: str
    step_id: str
    type: str
    status: str
    raw: Mapping[str, Any] = attrs.field(repr=False, eq=False)
    step: RunStep | None = attrs.field(default=None, repr=False, eq=False)


@attrs.frozen
class MessageEvent:
    """``thread.message.<status>``: a message as of this event."""

    event: str
    message: Message


@attrs.frozen
class TextDelta:
    """One text content item of a ``thread.message.delta``; `index` is the part index."""

    message_id: str
    index: int
    text: str
    annotations: tuple[Mapping[str, Any], ...] = ()


@attrs.frozen
class ToolCallDelta:
    """One tool-call item of a ``thread.run.step.delta``.

    The first delta of a call carries `id`, `type` and `name`; later ones only `index` and an
    `arguments` fragment, so those fields are None there. Concatenate `arguments` per `index`.
    """

    step_id: str
    index: int
    id: str | None
    type: str | None
    name: str | None
    arguments: str
    #: The item as received (a built-in tool's ``input``/``outputs`` fragments are there).
    raw: Mapping[str, Any] = attrs.field(factory=dict, repr=False, eq=False)


@attrs.frozen
class StreamError:
    """The ``error`` event; `message` falls back to the raw event data."""

    code: str | None
    message: str


@attrs.frozen
class StreamDone:
    """The ``done`` event (data ``[DONE]``): the service ends the body after it."""


StreamEvent: TypeAlias = (
    ThreadCreated
    | RunEvent
    | StepEvent
    | MessageEvent
    | TextDelta
    | ToolCallDelta
    | StreamError
    | StreamDone
)


def _event_json(ev: SSEEvent) -> dict[str, Any]:
    data = ev.data
    try:
        # json's C scanner straight; anything it does not take whole (leading or trailing
        # whitespace, malformed data) goes through `decode_json` for its result or error.
        value, end = _scan_once(data, 0)
    except (StopIteration, ValueError, RecursionError):
        end = -1
    if end != len(data):
        value = decode_json(data, f"{ev.event} event")
    return _obj(value, f"{ev.event} event")


def _message_delta(ev: SSEEvent) -> list[StreamEvent]:
    where = "thread.message.delta event"
    d = _event_json(ev)
    message_id = _str(d, "id", where)
    delta = _obj(d.get("delta"), f"{where} delta")
    out: list[StreamEvent] = []
    # A role-only delta has no content: nothing to emit.
    for i, item in enumerate(_opt_list(delta, "content", f"{where} delta")):
        w = f"{where} delta.content[{i}]"
        if type(item) is not dict or item.get("type") != "text":
            continue  # image parts arrive whole in thread.message.completed
        index = _opt_int(item, "index", w)
        index = i if index is None else index
        text = item.get("text")
        if type(text) is not dict:
            out.append(TextDelta(message_id, index, ""))
            continue
        # Later annotation deltas carry their own `index` (the annotation's): kept in the item.
        value = text.get("value")
        out.append(
            TextDelta(
                message_id,
                index,
                value if type(value) is str else "",
                _annotations(text, f"{w}.text"),
            )
        )
    return out


#: json's scanner (C where available): `(value, end)` of the JSON document at an index.
_scan_once: Callable[[str, int], tuple[Any, int]] = _json_scanner.make_scanner(
    _json.JSONDecoder()  # type: ignore[arg-type]
)


def plain_text_delta(ev: SSEEvent) -> tuple[str, int, str] | None:
    """The fast path of `parse_stream_event` for the usual ``thread.message.delta``.

    For a delta with exactly one text part, an integer (or absent) ``index`` and no
    annotations, returns ``(message id, part index, text)``: the same values the general
    parser's one `TextDelta` holds. Returns None for any other shape, malformed data included;
    `parse_stream_event` then decides (and raises what it raises).
    """
    return text_delta_of(ev.data)


def text_delta_of(data: str) -> tuple[str, int, str] | None:
    """`plain_text_delta` for the data of a ``thread.message.delta`` frame."""
    try:
        # The C scanner straight, as `json.loads` does after its checks; a document with
        # anything after it (even whitespace) takes the general path.
        d, end = _scan_once(data, 0)
        if end != len(data):
            return None
        message_id = d["id"]
        (item,) = d["delta"]["content"]
        text = item["text"]
        value = text["value"]
        index = item.get("index", 0)
        annotations = text.get("annotations")
    except (StopIteration, ValueError, RecursionError, LookupError, TypeError, AttributeError):
        return None
    if (
        type(message_id) is str
        and item.get("type") == "text"
        and type(value) is str
        and type(index) is int
        and (not annotations or type(annotations) is not list)
    ):
        return message_id, index, value
    return None


def _step_delta(ev: SSEEvent) -> list[StreamEvent]:
    where = "thread.run.step.delta event"
    d = _event_json(ev)
    step_id = _str(d, "id", where)
    delta = _obj(d.get("delta"), f"{where} delta")
    details = delta.get("step_details")
    if type(details) is not dict or details.get("type") != "tool_calls":
        return []  # message_creation deltas carry nothing new
    calls = details.get("tool_calls")
    out: list[StreamEvent] = []
    # `tool_calls: []` (as on the first deltas of a step) gives no event.
    for i, item in enumerate(calls if type(calls) is list else []):
        w = f"{where} step_details.tool_calls[{i}]"
        if type(item) is not dict:
            continue
        index = _opt_int(item, "index", w)
        call_type = item.get("type")
        call_type = call_type if type(call_type) is str else None
        fn = item.get("function") if call_type in (None, "function") else None
        name: str | None = None
        arguments: str = ""
        if type(fn) is dict:  # the first delta has `output: null`, ignored
            if type(fn.get("name")) is str:
                name = fn["name"]
            if type(fn.get("arguments")) is str:
                arguments = fn["arguments"]
        call_id = item.get("id")
        out.append(
            ToolCallDelta(
                step_id,
                i if index is None else index,
                call_id if type(call_id) is str else None,
                call_type,
                name,
                arguments,
                item,
            )
        )
    return out


def _stream_error(ev: SSEEvent) -> StreamError:
    # The data may be JSON {"code","message"}, {"error": {...}}, a JSON string or plain text;
    # an error report must never itself fail to parse.
    info = parse_error_body(ev.data.encode("utf-8"))
    return StreamError(info.code, info.message or ev.data)


def _in_event(name: str, parse: Callable[[Any], _T], data: dict[str, Any]) -> _T:
    # Prefix the event name so a parse error says which stream event carried the bad object.
    try:
        return parse(data)
    except RemoteProtocolError as exc:
        raise RemoteProtocolError(f"{name} event: {exc}") from None


#: The events that carry a message's or a step's whole object (``{event name: kind}``): a
#: later one of the same kind and id supersedes an earlier (`RunProtocol.snapshot_events`).
SNAPSHOT_EVENTS: Mapping[str, str] = {name: "message" for name in _MESSAGE_EVENTS} | {
    name: "step" for name in _STEP_EVENTS
}

#: The first member of a JSON object when it is ``"id"`` with a string value free of escapes.
_LEADING_ID = re.compile(r'\{\s*"id"\s*:\s*"([^"\\]*)"')


def snapshot_id(data: str) -> str | None:
    """The ``id`` of the object in a snapshot event's data (`SNAPSHOT_EVENTS`), read from its
    first member without decoding the rest (the service writes ``id`` first); None when the
    data does not start so (an escaped id included), and the frame must be decoded."""
    found = _LEADING_ID.match(data)
    return None if found is None else found.group(1)


def parse_run_event(ev: SSEEvent) -> Run:
    """The run of a ``thread.run.*`` event (`RUN_EVENTS`): `parse_stream_event`'s one
    `RunEvent`'s run, without the event around it (the protocol's usual path)."""
    data = _event_json(ev)  # (its errors name the event already)
    try:
        return parse_run(data)
    except RemoteProtocolError as exc:
        raise RemoteProtocolError(f"{ev.event} event: {exc}") from None


def parse_stream_event(ev: SSEEvent) -> list[StreamEvent]:
    """One SSE frame -> the typed events it carries (several for a multi-part delta).

    Unknown event names give ``[]`` so that new service events do not break old clients;
    malformed data in a known event raises `RemoteProtocolError`.
    """
    name = ev.event
    # Most frequent first: a stream is mostly message deltas.
    if name == "thread.message.delta":
        return _message_delta(ev)
    if name in RUN_EVENTS:
        return [RunEvent(name, _in_event(name, parse_run, _event_json(ev)))]
    if name == "thread.run.step.delta":
        return _step_delta(ev)
    if name in _MESSAGE_EVENTS:
        return [MessageEvent(name, _in_event(name, parse_message, _event_json(ev)))]
    if name in _STEP_EVENTS:
        step = _in_event(name, parse_run_step, _event_json(ev))
        return [StepEvent(name, step.id, step.type, step.status or "", step.raw, step)]
    if name == "done":
        return [StreamDone()]
    if name == "error":
        return [_stream_error(ev)]
    if name == "thread.created":
        return [ThreadCreated(_in_event(name, parse_thread, _event_json(ev)))]
    return []


# --------------------------------------------------------------------------------------------
# Requests


@attrs.frozen
class ApiRequest:
    """One HTTP request to the Agents API, before the transport adds base URL and api-version.

    `path` is relative to the project base URL, with every id quoted as one path segment.
    `stream` tells the transport to expect ``text/event-stream`` instead of a JSON body.
    """

    method: str
    path: str
    params: tuple[tuple[str, str], ...] = ()
    json: Mapping[str, Any] | None = None
    stream: bool = False


#: What an id (thread, run, agent, message, tool call) may be, checked against the whole string
#: (`fullmatch`: a trailing newline fails): the service's ids (`thread_...`, `asst_...`,
#: `run_...`) and agent `name:version` references use letters, digits, `_`, `-`, `.`, `:`.
ID_PATTERN = re.compile(r"[A-Za-z0-9_\-.:]{1,256}")


def _id(value: Any, name: str) -> str:
    """`value` if it is a valid id (see `ID_PATTERN`); ConfigurationError otherwise."""
    if type(value) is not str or not value:
        raise ConfigurationError(f"{name} must be a non-empty string, got {value!r}")
    if value in (".", "..") or not ID_PATTERN.fullmatch(value):
        # "." and ".." would be collapsed by URL normalisation and address another resource;
        # anything else outside the pattern (spaces, line breaks, "/", "?", "%") has no place
        # in an id and could change the request's meaning.
        shown = value if len(value) <= 80 else value[:80] + "..."
        raise ConfigurationError(
            f"{name} {shown!r} is not a valid id (letters, digits, '_', '-', '.', ':'; at most 256)"
        )
    return value


def _seg(value: Any, name: str) -> str:
    """`value` checked as an id and quoted as exactly one path segment ("/" becomes %2F)."""
    return quote(_id(value, name), safe="")


_NO_OPTIONS = RunOptions()


def _items(value: Any, name: str, kind: type[_T]) -> list[_T]:
    # Type hints do not stop a caller passing one item (or a string) where a list belongs.
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ConfigurationError(
            f"{name} must be a sequence of {kind.__name__}, got {type(value).__name__}"
        )
    for i, item in enumerate(value):
        if not isinstance(item, kind):
            raise ConfigurationError(
                f"{name}[{i}] must be a {kind.__name__}, got {type(item).__name__}"
            )
    return list(value)


def _messages(messages: Any, name: str) -> list[dict[str, Any]]:
    return [m.to_json() for m in _items(messages, name, InputMessage)]


def _options(options: RunOptions | None) -> RunOptions:
    if options is None:
        return _NO_OPTIONS
    if not isinstance(options, RunOptions):
        raise ConfigurationError(f"options must be RunOptions, got {type(options).__name__}")
    return options


def _check_stream(stream: Any) -> bool:
    if type(stream) is not bool:
        raise ConfigurationError(f"stream must be a bool, got {stream!r}")
    return stream


def create_thread_and_run(
    agent_id: str,
    messages: Sequence[InputMessage],
    options: RunOptions | None = None,
    *,
    stream: bool,
) -> ApiRequest:
    """``POST /threads/runs``: a new thread holding `messages`, and a run on it, in one request.

    The endpoint has no ``additional_instructions`` (nor ``additional_messages``), so setting
    it is a `ConfigurationError`: use `instructions`, or create the thread first.
    """
    opts = _options(options)
    if opts.additional_instructions is not None:
        raise ConfigurationError(
            "additional_instructions is not accepted when creating a thread and run together; "
            "create the thread first, or use instructions"
        )
    body: dict[str, Any] = {
        "assistant_id": _id(agent_id, "agent_id"),
        "thread": {"messages": _messages(messages, "messages")},
        "stream": _check_stream(stream),
    }
    body.update(opts.to_json())
    return ApiRequest("POST", "/threads/runs", (), body, stream)


def create_run(
    thread_id: str,
    agent_id: str,
    options: RunOptions | None = None,
    *,
    additional_messages: Sequence[InputMessage] = (),
    stream: bool,
) -> ApiRequest:
    """``POST /threads/{thread_id}/runs``, adding `additional_messages` in the same request."""
    path = f"/threads/{_seg(thread_id, 'thread_id')}/runs"
    body: dict[str, Any] = {"assistant_id": _id(agent_id, "agent_id")}
    extra = _messages(additional_messages, "additional_messages")
    if extra:
        body["additional_messages"] = extra
    body["stream"] = _check_stream(stream)
    body.update(_options(options).to_json())
    return ApiRequest("POST", path, (), body, stream)


def get_run(thread_id: str, run_id: str) -> ApiRequest:
    """``GET /threads/{thread_id}/runs/{run_id}``."""
    return ApiRequest(
        "GET", f"/threads/{_seg(thread_id, 'thread_id')}/runs/{_seg(run_id, 'run_id')}"
    )


def cancel_run(thread_id: str, run_id: str) -> ApiRequest:
    """``POST /threads/{thread_id}/runs/{run_id}/cancel`` (no body)."""
    return ApiRequest(
        "POST", f"/threads/{_seg(thread_id, 'thread_id')}/runs/{_seg(run_id, 'run_id')}/cancel"
    )


def submit_tool_outputs(
    thread_id: str, run_id: str, outputs: Sequence[ToolOutput], *, stream: bool
) -> ApiRequest:
    """``POST …/runs/{run_id}/submit_tool_outputs`` with ``{"tool_outputs", "stream"}``."""
    path = (
        f"/threads/{_seg(thread_id, 'thread_id')}/runs/{_seg(run_id, 'run_id')}/submit_tool_outputs"
    )
    items = [o.to_json() for o in _items(outputs, "outputs", ToolOutput)]
    if not items:
        raise ConfigurationError("outputs must not be empty: the run waits for every tool call")
    body = {"tool_outputs": items, "stream": _check_stream(stream)}
    return ApiRequest("POST", path, (), body, stream)


def _list_params(limit: Any, order: Any, after: Any) -> list[tuple[str, str]]:
    if type(limit) is not int or not 1 <= limit <= 100:
        raise ConfigurationError(f"limit must be an integer from 1 to 100, got {limit!r}")
    if order not in ("asc", "desc"):
        raise ConfigurationError(f"order must be 'asc' or 'desc', got {order!r}")
    params = [("limit", str(limit)), ("order", order)]
    if after is not None:
        if type(after) is not str or not after:
            raise ConfigurationError(f"after must be a non-empty string, got {after!r}")
        params.append(("after", after))
    return params


def list_messages(
    thread_id: str,
    *,
    run_id: str | None = None,
    order: Literal["asc", "desc"] = "asc",
    limit: int = 100,
    after: str | None = None,
) -> ApiRequest:
    """``GET /threads/{thread_id}/messages``, optionally only the messages of `run_id`."""
    path = f"/threads/{_seg(thread_id, 'thread_id')}/messages"
    params = _list_params(limit, order, after)
    if run_id is not None:
        params.append(("run_id", _id(run_id, "run_id")))
    return ApiRequest("GET", path, tuple(params))


def list_run_steps(
    thread_id: str,
    run_id: str,
    *,
    order: Literal["asc", "desc"] = "asc",
    limit: int = 100,
    after: str | None = None,
) -> ApiRequest:
    """``GET /threads/{thread_id}/runs/{run_id}/steps`` (oldest first by default)."""
    path = f"/threads/{_seg(thread_id, 'thread_id')}/runs/{_seg(run_id, 'run_id')}/steps"
    return ApiRequest("GET", path, tuple(_list_params(limit, order, after)))


def list_runs(
    thread_id: str, *, limit: int = 1, order: Literal["asc", "desc"] = "desc"
) -> ApiRequest:
    """``GET /threads/{thread_id}/runs`` (default: just the newest run)."""
    path = f"/threads/{_seg(thread_id, 'thread_id')}/runs"
    return ApiRequest("GET", path, tuple(_list_params(limit, order, None)))


def create_thread(messages: Sequence[InputMessage] = ()) -> ApiRequest:
    """``POST /threads``; with no messages the body is ``{}``, as the SDK sends."""
    items = _messages(messages, "messages")
    return ApiRequest("POST", "/threads", (), {"messages": items} if items else {})
