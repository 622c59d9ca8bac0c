"""agentrun._responses.wire: the pure Responses API (Foundry Agents v2) wire module.

No event loop and no sockets: names and routing, request builders, the parsers of response
objects, stream events and error bodies, and the status → run-state mapping. The stream
fixture has the shape of the azure-ai-projects 2.x recordings (our own ids and texts).
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentrun._errors import (
    BadRequestError,
    ConfigurationError,
    RateLimitError,
    RemoteProtocolError,
)
from agentrun._responses import wire
from agentrun._responses.wire import AgentReference, ClassicRoute, V2Route
from agentrun._sse import SSEDecoder, SSEEvent

NAME_RULE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


# -- names and routing ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a", "A1", "my-agent", "x" * 63, "1-2-3", "general-assistant"])
def test_valid_agent_names(name: str) -> None:
    """Names of 1-63 letters, digits and hyphens with alphanumeric ends are accepted as is."""
    assert wire.validate_agent_name(name) == name


@pytest.mark.parametrize(
    "name", ["", "-a", "a-", "x" * 64, "has space", "under_score", "dot.name", "é", None, 5]
)
def test_invalid_agent_names(name: Any) -> None:
    """Anything else is a ConfigurationError, before any request."""
    with pytest.raises(ConfigurationError):
        wire.validate_agent_name(name)


@settings(deadline=None)  # behaviour, not speed: the machine may be loaded
@given(st.text(alphabet="abcXYZ019-_. ", max_size=70))
def test_agent_name_rule_property(name: str) -> None:
    """validate_agent_name accepts exactly the service's rule (≤ 63, alphanumeric ends,
    hyphens inside), for any string over a tricky alphabet."""
    ok = bool(NAME_RULE.fullmatch(name)) and len(name) <= 63
    if ok:
        assert wire.validate_agent_name(name) == name
    else:
        with pytest.raises(ConfigurationError):
            wire.validate_agent_name(name)


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("azure_ai/agents/asst_abc123", ClassicRoute("asst_abc123")),
        ("azure_ai/agents/my-agent", V2Route(AgentReference("my-agent"))),
        ("azure_ai/agents/my-agent:3", V2Route(AgentReference("my-agent", "3"))),
    ],
)
def test_route_model(model: str, expected: Any) -> None:
    """asst_ ids route to classic; names, with or without a version, to v2 (LiteLLM's rule);
    route_agent does the same for the id alone."""
    assert wire.route_model(model) == expected
    assert wire.route_agent(model.removeprefix(wire.MODEL_PREFIX)) == expected


@pytest.mark.parametrize(
    "model",
    [
        "",
        "gpt-4o",
        "asst_abc123",
        "azure_ai/agents/",
        "azure_ai/agents/a/b",
        "openai/gpt-4o",
        "azure_ai/agents/x:",
        "azure_ai/agents/-x",
        "azure_ai/agents/asst_",
        "azure_ai/agents/asst_a b",
        3,
    ],
)
def test_route_model_rejects(model: Any) -> None:
    """No prefix (a bare model or id), empty ids, extra path segments, other providers, empty
    versions, bad names and classic ids: ConfigurationError."""
    with pytest.raises(ConfigurationError):
        wire.route_model(model)


names = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True)
versions = st.one_of(st.none(), st.integers(1, 999).map(str))


@settings(deadline=None)  # behaviour, not speed: the machine may be loaded
@given(names, versions)
def test_model_string_round_trip(name: str, version: str | None) -> None:
    """str(AgentReference) after the prefix routes back to the same reference, and its JSON
    is the agent_reference object (version only when pinned)."""
    ref = AgentReference(name, version)
    route = wire.route_model(wire.MODEL_PREFIX + str(ref))
    assert route == V2Route(ref)
    expected = {"type": "agent_reference", "name": name}
    if version is not None:
        expected["version"] = version
    assert ref.to_json() == expected


# -- requests ------------------------------------------------------------------------------


def test_create_response_streamed_in_a_conversation() -> None:
    """One POST /openai/v1/responses with agent_reference, input, conversation and stream;
    no api-version (the data plane takes none)."""
    req = wire.create_response(
        AgentReference("my-agent", "2"), "Hello", conversation="conv_1", stream=True
    )
    assert (req.method, req.path, req.stream, req.api_version) == (
        "POST",
        "/openai/v1/responses",
        True,
        None,
    )
    assert req.json == {
        "agent_reference": {"type": "agent_reference", "name": "my-agent", "version": "2"},
        "input": "Hello",
        "conversation": "conv_1",
        "stream": True,
    }


def test_create_response_background_with_tool_outputs() -> None:
    """Background mode and function_call_output items chained with previous_response_id."""
    items = [wire.function_call_output_item("call_1", '{"temp": 21}')]
    req = wire.create_response(
        AgentReference("a"), items, previous_response_id="resp_1", background=True
    )
    assert req.json is not None
    assert req.json["background"] is True and "stream" not in req.json
    assert req.json["previous_response_id"] == "resp_1"
    assert req.json["input"] == [
        {"type": "function_call_output", "call_id": "call_1", "output": '{"temp": 21}'}
    ]
    assert req.stream is False


def test_create_response_rejects_bad_combinations() -> None:
    """conversation + previous_response_id, background without store, tiny
    max_output_tokens and a non-reference agent are ConfigurationErrors."""
    ref = AgentReference("a")
    with pytest.raises(ConfigurationError, match="previous_response_id"):
        wire.create_response(ref, "x", conversation="conv_1", previous_response_id="resp_1")
    with pytest.raises(ConfigurationError, match="store"):
        wire.create_response(ref, "x", background=True, store=False)
    with pytest.raises(ConfigurationError):
        wire.create_response(ref, "x", max_output_tokens=3)
    with pytest.raises(ConfigurationError):
        wire.create_response("a", "x")  # type: ignore[arg-type]


@pytest.mark.parametrize("param", sorted(wire.AGENT_OWNED_PARAMS))
def test_agent_owned_params_raise_bad_request(param: str) -> None:
    """Every parameter the agent owns is a BadRequestError (code invalid_payload) naming it,
    before sending, as the service's 400 would be."""
    with pytest.raises(BadRequestError) as err:
        wire.create_response(AgentReference("a"), "x", extra={param: "v"})
    assert err.value.code == "invalid_payload" and param in str(err.value)


def test_extra_cannot_swap_the_agent() -> None:
    """An agent_reference in extra naming another agent is refused; other extras pass."""
    with pytest.raises(BadRequestError):
        wire.create_response(AgentReference("a"), "x", extra={"agent_reference": {"name": "b"}})
    req = wire.create_response(AgentReference("a"), "x", extra={"truncation": "auto"})
    assert req.json is not None and req.json["truncation"] == "auto"


def test_other_requests() -> None:
    """get (poll and resumed stream), cancel, conversations, items and agent look-ups: method,
    path with quoted ids, params, and api-version only on the agent routes."""
    assert wire.get_response("resp_1") == wire.ApiRequest("GET", "/openai/v1/responses/resp_1")
    resumed = wire.get_response("resp_1", stream=True, starting_after=7)
    assert resumed.params == (("stream", "true"), ("starting_after", "7")) and resumed.stream
    assert wire.cancel_response("resp/1").path == "/openai/v1/responses/resp%2F1/cancel"
    conv = wire.create_conversation([wire.message_item("user", "hi")], metadata={"k": "v"})
    assert conv.json == {
        "items": [{"type": "message", "role": "user", "content": "hi"}],
        "metadata": {"k": "v"},
    }
    assert wire.list_items("conv_1", limit=5, order="asc", after="msg_1").params == (
        ("limit", "5"),
        ("order", "asc"),
        ("after", "msg_1"),
    )
    assert wire.create_items("conv_1", [wire.message_item("user", "x")]).method == "POST"
    assert wire.delete_conversation("conv_1").method == "DELETE"
    assert wire.get_conversation("conv_1").path == "/openai/v1/conversations/conv_1"
    assert wire.get_agent("my-agent") == wire.ApiRequest(
        "GET", "/agents/my-agent", api_version="v1"
    )
    assert wire.get_agent_version(AgentReference("a", "2")).path == "/agents/a/versions/2"
    for bad in (
        lambda: wire.get_response(""),
        lambda: wire.list_items("c", limit=0),
        lambda: wire.create_items("c", []),
        lambda: wire.message_item("robot", "x"),
        lambda: wire.get_agent_version(AgentReference("a")),
        lambda: wire.function_call_output_item("", "x"),
    ):
        with pytest.raises(ConfigurationError):
            bad()


# -- response objects ----------------------------------------------------------------------


def response_json(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": "resp_a1",
        "object": "response",
        "created_at": 1770000000.0,
        "status": "completed",
        "background": False,
        "conversation": {"id": "conv_a1"},
        "error": None,
        "incomplete_details": None,
        "output": [
            {
                "type": "message",
                "id": "msg_a1",
                "status": "completed",
                "role": "assistant",
                "content": [
                    {"type": "output_text", "text": "Oslo is ", "annotations": []},
                    {"type": "refusal", "refusal": "no"},
                    {
                        "type": "output_text",
                        "text": "cold.",
                        "annotations": [
                            {
                                "type": "url_citation",
                                "url": "https://e.org",
                                "start_index": 0,
                                "end_index": 5,
                            }
                        ],
                    },
                ],
            },
            {"type": "web_search_call", "id": "ws_1", "status": "completed"},
        ],
        "usage": {"input_tokens": 10, "output_tokens": 4, "total_tokens": 14},
        "agent_reference": {"type": "agent_reference", "name": "geo", "version": "3"},
    }
    base.update(over)
    return base


def test_parse_response_text_annotations_usage() -> None:
    """Text is every output_text part in order; annotations are kept; unknown items and parts
    are kept raw; usage, conversation id, agent and created_at (a float) are read."""
    resp = wire.parse_response(response_json())
    assert resp.text == "Oslo is \n\ncold."
    assert resp.annotations == (
        {"type": "url_citation", "url": "https://e.org", "start_index": 10, "end_index": 15},
    )
    assert resp.text[10:15] == "cold."
    assert isinstance(resp.output[1], wire.UnknownItem) and resp.output[1].type == "web_search_call"
    assert resp.usage == wire.Usage(10, 4, 14)
    assert resp.conversation_id == "conv_a1"
    assert resp.agent == AgentReference("geo", "3")
    assert resp.created_at == 1770000000
    assert resp.finish_reason == "stop" and wire.run_state(resp) == "completed"


def test_parse_response_function_calls_mean_requires_action() -> None:
    """A completed response with function_call items is requires_action with finish_reason
    tool_calls; the calls carry call_id, name and JSON arguments."""
    call = {
        "type": "function_call",
        "id": "fc_1",
        "call_id": "call_1",
        "name": "get_weather",
        "arguments": '{"location":"Oslo"}',
        "status": "completed",
    }
    resp = wire.parse_response(response_json(output=[call]))
    assert resp.function_calls == (
        wire.FunctionCall("call_1", "get_weather", '{"location":"Oslo"}', "fc_1", "completed"),
    )
    assert wire.run_state(resp) == "requires_action" and resp.finish_reason == "tool_calls"


@pytest.mark.parametrize(
    ("status", "extra", "state", "finish"),
    [
        ("queued", {}, "run_queued", None),
        ("in_progress", {}, "in_progress", None),
        ("failed", {"error": {"code": "server_error", "message": "boom"}}, "failed", None),
        ("cancelled", {}, "cancelled", None),
        (
            "incomplete",
            {"incomplete_details": {"reason": "max_output_tokens"}},
            "incomplete",
            "length",
        ),
        (
            "incomplete",
            {"incomplete_details": {"reason": "content_filter"}},
            "incomplete",
            "content_filter",
        ),
    ],
)
def test_status_to_run_state(
    status: str, extra: dict[str, Any], state: str, finish: str | None
) -> None:
    """Each response status maps to the run state name users know, and to a finish_reason."""
    resp = wire.parse_response(response_json(status=status, output=[], usage=None, **extra))
    assert wire.run_state(resp) == state
    assert resp.finish_reason == finish
    assert resp.is_terminal == (status in ("failed", "cancelled", "incomplete"))
    if status == "failed":
        assert resp.error == wire.ResponseError("server_error", "boom")


def test_parse_response_is_tolerant_but_needs_id_and_status() -> None:
    """Only id and a known status are required; a missing id, an unknown status or a wrong
    type is a RemoteProtocolError naming the field."""
    minimal = wire.parse_response({"id": "resp_1", "status": "in_progress"})
    assert minimal.output == () and minimal.usage is None and minimal.conversation_id is None
    with pytest.raises(RemoteProtocolError, match="'id'"):
        wire.parse_response({"status": "completed"})
    with pytest.raises(RemoteProtocolError, match="status"):
        wire.parse_response({"id": "r", "status": "thinking"})
    with pytest.raises(RemoteProtocolError, match="output"):
        wire.parse_response({"id": "r", "status": "completed", "output": {}})
    with pytest.raises(RemoteProtocolError):
        wire.parse_response([])


@settings(deadline=None)  # behaviour, not speed: the machine may be loaded
@given(st.lists(st.text(max_size=12), max_size=6))
def test_text_is_all_output_text_parts_in_order(texts: list[str]) -> None:
    """Whatever the split into message items, `text` is their parts in order, joined with
    TEXT_PART_SEPARATOR (as classic joins parts), and each part's annotation spans it."""
    items = [
        {
            "type": "message",
            "role": "assistant",
            "content": [
                {
                    "type": "output_text",
                    "text": t,
                    "annotations": [
                        {"type": "url_citation", "start_index": 0, "end_index": len(t)}
                    ],
                }
            ],
        }
        for t in texts
    ]
    resp = wire.parse_response({"id": "r", "status": "completed", "output": items})
    assert resp.text == wire.TEXT_PART_SEPARATOR.join(texts)
    spans = [resp.text[a["start_index"] : a["end_index"]] for a in resp.annotations]
    assert spans == texts


def test_conversation_item_page_and_agent_version() -> None:
    """Conversations, item pages (user messages kept raw, assistant messages parsed) and agent
    version objects (direct or as an agent's latest)."""
    conv = wire.parse_conversation({"id": "conv_1", "object": "conversation", "created_at": 5})
    assert conv == wire.Conversation("conv_1", 5, {})
    page = wire.parse_item_page(
        {
            "object": "list",
            "data": [
                {"type": "message", "id": "m1", "role": "user", "content": []},
                {"type": "message", "id": "m2", "role": "assistant", "content": []},
            ],
            "first_id": "m1",
            "last_id": "m2",
            "has_more": False,
        }
    )
    assert isinstance(page.items[0], wire.UnknownItem)
    assert isinstance(page.items[1], wire.OutputMessage)
    version = {"object": "agent.version", "name": "a", "version": "2", "definition": {"model": "m"}}
    assert wire.parse_agent_version(version).model == "m"
    agent = {"object": "agent", "name": "a", "versions": {"latest": version}}
    assert wire.parse_agent_version(agent).version == "2"


# -- errors --------------------------------------------------------------------------------


def test_error_body_with_details() -> None:
    """The Responses error shape: code, param, type, and the details' params in the message."""
    body = json.dumps(
        {
            "error": {
                "code": "invalid_payload",
                "message": "Invalid payload",
                "param": None,
                "type": "invalid_request_error",
                "details": [
                    {
                        "code": "ValidationError",
                        "message": "Not allowed when agent is specified.",
                        "param": "temperature",
                        "type": "error",
                    }
                ],
            }
        }
    ).encode()
    info = wire.parse_error_body(body)
    assert info.code == "invalid_payload" and info.type == "invalid_request_error"
    assert "temperature: Not allowed when agent is specified." in info.message
    assert info.details[0]["param"] == "temperature"


@settings(deadline=None)  # behaviour, not speed: the machine may be loaded
@given(st.binary(max_size=200))
def test_parse_error_body_never_raises(body: bytes) -> None:
    """Any bytes at all give an ErrorInfo (an error path must not fail twice)."""
    info = wire.parse_error_body(body)
    assert isinstance(info.message, str)


def test_retry_after_prefers_milliseconds() -> None:
    """retry-after-ms wins over Retry-After (openai-python's order); Retry-After alone works;
    garbage is skipped."""
    assert wire.retry_after_seconds({"Retry-After": "3", "retry-after-ms": "1500"}) == 1.5
    assert wire.retry_after_seconds({"retry-after": "2"}) == 2.0
    assert wire.retry_after_seconds({"retry-after-ms": "soon", "Retry-After": "4"}) == 4.0
    assert wire.retry_after_seconds({}) is None


def test_error_from_body_types_the_error() -> None:
    """A 429 answer becomes RateLimitError with the code and retry_after in seconds."""
    body = b'{"error":{"code":"rate_limit_exceeded","message":"slow down"}}'
    err = wire.error_from_body(429, body, {"retry-after-ms": "250"}, request_id="rid")
    assert isinstance(err, RateLimitError)
    assert (err.code, err.retry_after, err.request_id, err.status_code) == (
        "rate_limit_exceeded",
        0.25,
        "rid",
        429,
    )
    assert "slow down" in str(err)


# -- stream events -------------------------------------------------------------------------

RESP = {"id": "resp_s1", "object": "response", "status": "in_progress", "output": []}
MSG = {
    "type": "message",
    "id": "msg_s1",
    "status": "in_progress",
    "role": "assistant",
    "content": [],
}
AT = {"item_id": "msg_s1", "output_index": 0, "content_index": 0}
STREAM = [
    {"type": "response.created", "response": RESP},
    {"type": "response.in_progress", "response": RESP},
    {"type": "response.output_item.added", "output_index": 0, "item": MSG},
    {
        "type": "response.content_part.added",
        **AT,
        "part": {"type": "output_text", "text": "", "annotations": []},
    },
    {"type": "response.output_text.delta", **AT, "delta": "Ber", "logprobs": []},
    {"type": "response.output_text.delta", **AT, "delta": "gen is", "logprobs": []},
    {"type": "response.output_text.delta", **AT, "delta": " wet.", "logprobs": []},
    {
        "type": "response.output_text.annotation.added",
        **AT,
        "annotation_index": 0,
        "annotation": {
            "type": "url_citation",
            "url": "https://e.org",
            "start_index": 0,
            "end_index": 13,
        },
    },
    {"type": "response.output_text.done", **AT, "text": "Bergen is wet.", "logprobs": []},
    {
        "type": "response.content_part.done",
        **AT,
        "part": {"type": "output_text", "text": "Bergen is wet.", "annotations": []},
    },
    {"type": "response.reasoning_summary_text.delta", "item_id": "rs_1", "delta": "hm"},
    {
        "type": "response.output_item.done",
        "output_index": 0,
        "item": {**MSG, "status": "completed"},
    },
    {
        "type": "response.completed",
        "response": {
            **RESP,
            "status": "completed",
            "usage": {"input_tokens": 3, "output_tokens": 4, "total_tokens": 7},
        },
    },
]


def encode(events: list[dict[str, Any]]) -> bytes:
    frames = []
    for seq, event in enumerate(events):
        frames.append(
            f"event: {event['type']}\ndata: {json.dumps({**event, 'sequence_number': seq})}\n\n"
        )
    return "".join(frames).encode()


@settings(deadline=None)  # behaviour, not speed: the machine may be loaded
@given(st.lists(st.integers(1, 40), min_size=1, max_size=30))
def test_stream_parses_whatever_the_chunking(cuts: list[int]) -> None:
    """The SSE decoder plus parse_stream_event turn the recorded-shape stream into typed
    events whatever the byte chunking: deltas join to the done text, the annotation and the
    final usage come through, and the unknown reasoning event is kept raw."""
    data = encode(STREAM)
    decoder = SSEDecoder()
    events: list[SSEEvent] = []
    pos = 0
    for cut in cuts:
        events.extend(decoder.feed(data[pos : pos + cut]))
        pos += cut
    events.extend(decoder.feed(data[pos:]))
    parsed = [wire.parse_stream_event(e) for e in events]
    assert [p.sequence_number for p in parsed if p is not None] == list(range(len(STREAM)))
    deltas = "".join(p.delta for p in parsed if isinstance(p, wire.TextDelta))
    done = next(p for p in parsed if isinstance(p, wire.TextDone))
    assert deltas == done.text == "Bergen is wet."
    annotation = next(p for p in parsed if isinstance(p, wire.AnnotationAdded))
    assert annotation.annotation["url"] == "https://e.org"
    unknown = [p for p in parsed if isinstance(p, wire.UnknownEvent)]
    assert [u.type for u in unknown] == ["response.reasoning_summary_text.delta"]
    final = parsed[-1]
    assert isinstance(final, wire.ResponseEvent) and final.type == "response.completed"
    assert final.response.usage == wire.Usage(3, 4, 7)
    added = parsed[2]
    assert isinstance(added, wire.OutputItemEvent) and isinstance(added.item, wire.OutputMessage)


def test_function_call_and_error_events() -> None:
    """Function-call argument events, the flat and the nested `error` event, and a [DONE]
    sentinel (tolerated: None)."""
    delta = wire.parse_stream_event(
        SSEEvent(
            "response.function_call_arguments.delta",
            json.dumps(
                {
                    "type": "response.function_call_arguments.delta",
                    "sequence_number": 4,
                    "item_id": "fc_1",
                    "output_index": 0,
                    "delta": '{"a',
                }
            ),
        )
    )
    assert delta == wire.FunctionCallArgumentsDelta(4, "fc_1", 0, '{"a')
    flat = SSEEvent(
        "error",
        '{"type":"error","code":"server_error","message":"boom","param":null,"sequence_number":9}',
    )
    assert wire.parse_stream_event(flat) == wire.StreamError(9, "server_error", "boom", None)
    nested = SSEEvent(
        "error", '{"type":"error","error":{"code":"rate_limit_exceeded","message":"slow"}}'
    )
    assert wire.parse_stream_event(nested) == wire.StreamError(
        None, "rate_limit_exceeded", "slow", None
    )
    assert wire.parse_stream_event(SSEEvent("message", "[DONE]")) is None


def test_malformed_known_events_raise() -> None:
    """A known event without a field a client needs, or data that is not JSON, is a
    RemoteProtocolError; the type falls back to the `event:` line."""
    with pytest.raises(RemoteProtocolError, match="delta"):
        wire.parse_stream_event(
            SSEEvent(
                "response.output_text.delta", '{"item_id":"m","output_index":0,"content_index":0}'
            )
        )
    with pytest.raises(RemoteProtocolError, match="not JSON"):
        wire.parse_stream_event(SSEEvent("response.completed", "{oops"))
    with pytest.raises(RemoteProtocolError):
        wire.parse_stream_event(
            SSEEvent("response.completed", '{"response": {"status": "completed"}}')
        )


def test_wire_module_is_pure() -> None:
    """The v2 wire module and the agentrun modules it imports use only the stdlib, attrs and
    each other: no aiohttp/anyio/asyncio/azure/yaml/rich, and nothing of the classic package."""
    import ast
    import pathlib
    import sys

    root = pathlib.Path(wire.__file__).resolve().parents[1]
    allowed_third_party = {"attrs"}
    todo = ["agentrun._responses.wire"]
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = root.parent / (name.replace(".", "/") + ".py")
        for node in ast.walk(ast.parse(path.read_text())):
            modules: list[str] = []
            if isinstance(node, ast.Import):
                modules = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                modules = [node.module]
            for module in modules:
                top = module.split(".")[0]
                if top == "agentrun":
                    classic = module.startswith("agentrun._classic")
                    assert not classic, f"{name} imports the classic package"
                    todo.append(module)
                elif top != "__future__":
                    assert top in sys.stdlib_module_names or top in allowed_third_party, (
                        f"{name} imports {module}"
                    )
                    assert top != "asyncio", f"{name} imports asyncio"
    assert seen == {
        "agentrun._responses.wire",
        "agentrun._errors",
        "agentrun._retry",
        "agentrun._sse",
        "agentrun._fields",
    }
