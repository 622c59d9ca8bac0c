"""The Responses API (Foundry Agents v2) behind the run state machine.

Pure code (no I/O, no event loop): what the driver sends for each machine `Op`, and how v2
answers (Response objects, ``response.*`` stream events) become machine inputs and the
protocol-neutral values results carry (`Run`, `Message`, `ToolCall`, `Usage`, `LastError`).
The wire shapes themselves are in `agentrun._responses.wire`.

How a v2 invocation walks the machine (docs/v2.md, "The v2 state machine"):

* **Every invocation creates one new response.** Continuing a conversation is one
  ``POST /openai/v1/responses`` with ``conversation`` (`Op.CREATE_RUN`); with
  ``previous_response_id`` (and no conversation) the same request carries that id instead
  (`Op.CREATE_THREAD_AND_RUN`: nothing to create first).
* **A new conversation costs one more request.** The Responses API cannot create a
  conversation inline, so a first turn is ``POST /openai/v1/conversations`` (empty; `Op.
  CREATE_THREAD`, answered with `thread_ready`), then the response request that continues it:
  2 requests, and 1 per turn after that. The input always goes in the response request, so
  both turns send the same kind of request and the conversation records the input as part of
  that response.
* **Tool outputs start a new response too.** v2 has no "submit tool outputs" on the old
  response: the outputs are ``function_call_output`` input items of a new response, sent with
  the conversation (or ``previous_response_id``). So the machine is started without a run id
  (it walks ``pending`` → ``run_queued`` → ... again), and `Op.SUBMIT_TOOL_OUTPUTS` is never
  asked for.
* **Streamed invocations are foreground** (``stream: true``): one request whose events drive
  the machine (`neutral_events`); closing the connection cancels the response on the
  service (the ``POST .../cancel`` the driver still sends is refused with a 400 for a
  foreground response, which the driver ignores). **Polled invocations use background mode**
  (``background: true``, then ``GET /openai/v1/responses/{id}``), cancelled with
  ``POST .../cancel``.
* **The reply needs no listing**: the final response holds its output items
  (`ResponsesProtocol.reply_of`), so `Op.LIST_MESSAGES` costs no request, and `Op.FIND_RUN`
  (a stream broke before its first event) finds nothing (`latest_run` is None): a
  conversation does not list its responses, and a foreground response whose stream broke
  is cancelled by the service.

Status mapping for `RunMachine.run_update`: ``queued``, ``in_progress``, ``failed``,
``incomplete``, ``cancelled`` as they are; ``completed`` with ``function_call`` output items is
``requires_action`` (the caller owes their outputs); otherwise ``completed``.
"""

from __future__ import annotations

import json
import types
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import attrs

from agentrun._errors import BadRequestError, ConfigurationError
from agentrun._inputs import InputMessage, RunOptions, ToolOutput
from agentrun._machine import Op
from agentrun._model import (
    LastError,
    Message,
    Part,
    Run,
    RunStep,
    TextPart,
    ToolCall,
    UnknownPart,
    Usage,
)
from agentrun._protocol import (
    ApiRequest,
    Call,
    Event,
    Invocation,
    MessageSeen,
    RunUpdated,
    StreamEnded,
    StreamFailed,
    TextDelta,
    ToolCallDelta,
)
from agentrun._responses import wire
from agentrun._sse import SSEEvent

__all__ = [
    "AGENT_OWNED_OPTIONS",
    "CLASSIC_ONLY_OPTIONS",
    "QUIET_EVENTS",
    "ResponsesProtocol",
    "V2Call",
    "build_call",
    "conversation_id_of",
    "input_items",
    "invocation_call",
    "machine_status",
    "neutral_annotation",
    "neutral_events",
    "request_for",
    "to_messages",
    "to_run",
]

#: `RunOptions` fields the agent version owns; with an agent referenced, the service answers
#: 400 ``invalid_payload`` for them, and agentrun raises that `BadRequestError` before sending.
#: (``response_format`` is the Responses API's ``text``; ``model`` is the version's deployment.)
AGENT_OWNED_OPTIONS = (
    "instructions",
    "model",
    "response_format",
    "temperature",
    "tool_choice",
    "tools",
    "top_p",
)
#: `RunOptions` fields of the classic runs API with no v2 request parameter.
CLASSIC_ONLY_OPTIONS = ("max_prompt_tokens", "parallel_tool_calls", "truncation_strategy")


@attrs.frozen
class V2Call:
    """What one v2 invocation sends, validated: the agent, its input items, where it goes on.

    `conversation_id` continues that conversation (the v2 `thread_id`); `new_conversation`
    creates one first; `previous_response_id` continues a response chain without a
    conversation. At most one of the three is set.
    """

    agent: wire.AgentReference
    items: tuple[Mapping[str, Any], ...]
    conversation_id: str | None = None
    previous_response_id: str | None = None
    new_conversation: bool = False
    max_output_tokens: int | None = None
    metadata: Mapping[str, str] | None = None


def _text_part(part: Mapping[str, Any], role: str) -> dict[str, Any]:
    kind = part.get("type")
    if kind == "text":
        return {
            "type": "output_text" if role == "assistant" else "input_text",
            "text": part["text"],
        }
    if kind == "image_url":
        image = part["image_url"]
        out = {"type": "input_image", "image_url": image["url"]}
        out["detail"] = image.get("detail", "auto")
        return out
    if kind == "image_file":
        image = part["image_file"]
        return {
            "type": "input_image",
            "file_id": image["file_id"],
            "detail": image.get("detail", "auto"),
        }
    raise ConfigurationError(f"content part type {kind!r} has no Responses API equivalent")


def input_items(
    messages: Sequence[InputMessage],
    tool_outputs: Sequence[ToolOutput] = (),
    *,
    system: str | None = None,
) -> tuple[dict[str, Any], ...]:
    """The ``input`` items of a response request: `system` text first as a ``system``
    message item (LiteLLM's mapping of a chat system prompt for agents), then the messages
    (chat text parts as ``input_text``/``output_text``, images as ``input_image``), then one
    ``function_call_output`` item per tool output."""
    items: list[dict[str, Any]] = []
    if system:
        items.append(wire.message_item("system", system))
    for msg in messages:
        content = msg.content
        if isinstance(content, str):
            items.append(wire.message_item(msg.role, content))
        else:
            items.append(wire.message_item(msg.role, [_text_part(p, msg.role) for p in content]))
    for out in tool_outputs:
        items.append(wire.function_call_output_item(out.tool_call_id, out.output))
    return tuple(items)


def build_call(
    agent: str | wire.AgentReference,
    messages: Sequence[InputMessage],
    options: RunOptions,
    *,
    thread_id: str | None = None,
    previous_response_id: str | None = None,
    tool_outputs: Sequence[ToolOutput] = (),
) -> V2Call:
    """Validate a v2 invocation and say what it sends.

    Raises `BadRequestError` (code ``invalid_payload``, naming every such option) for options
    the agent owns (`AGENT_OWNED_OPTIONS`), `ConfigurationError` for classic-only options
    (`CLASSIC_ONLY_OPTIONS`), for `thread_id` together with `previous_response_id`, and for an
    invalid agent name. ``additional_instructions`` (where agentrun puts chat system messages)
    becomes a leading ``system`` input item. ``max_completion_tokens`` is sent as
    ``max_output_tokens``.
    """
    ref = agent if isinstance(agent, wire.AgentReference) else wire.parse_agent_reference(agent)
    owned = [name for name in AGENT_OWNED_OPTIONS if getattr(options, name) is not None]
    if owned:
        names = ", ".join(repr(k) for k in owned)
        raise BadRequestError(
            f"{names}: not allowed when a v2 agent ({ref}) is referenced; the agent version "
            "owns its model, instructions, tools and sampling settings (create a new version to "
            "change them; send per-call context as a system message or in the input)",
            code="invalid_payload",
        )
    unsupported = [name for name in CLASSIC_ONLY_OPTIONS if getattr(options, name) is not None]
    if unsupported:
        raise ConfigurationError(
            f"{', '.join(repr(k) for k in unsupported)}: classic runs API option(s) with no "
            f"equivalent for v2 agents ({ref}); remove them"
        )
    if thread_id is not None and previous_response_id is not None:
        raise ConfigurationError(
            "thread_id (a v2 conversation) and previous_response_id cannot be combined: pass one"
        )
    for name, value in (("thread_id", thread_id), ("previous_response_id", previous_response_id)):
        if value is not None and (type(value) is not str or not value.strip()):
            raise ConfigurationError(f"{name} must be a non-empty id string, got {value!r}")
    items = input_items(messages, tool_outputs, system=options.additional_instructions)
    if not items:
        raise ConfigurationError("input is empty: give a prompt or at least one message")
    max_tokens = options.max_completion_tokens
    return V2Call(
        agent=ref,
        items=items,
        conversation_id=thread_id,
        previous_response_id=previous_response_id,
        new_conversation=thread_id is None and previous_response_id is None,
        max_output_tokens=max_tokens,
        metadata=options.metadata,
    )


def request_for(
    op: Op,
    call: V2Call,
    *,
    thread_id: str | None,
    run_id: str | None,
    stream: bool,
) -> wire.ApiRequest | None:
    """The request for machine `op`, or None when v2 needs none (`Op.LIST_MESSAGES`: the
    response holds its output; `Op.FIND_RUN`, `Op.SUBMIT_TOOL_OUTPUTS`: no v2 counterpart,
    see the module docstring). A create is streamed (foreground) when `stream`, else sent in
    background mode, to be polled."""
    if op is Op.CREATE_THREAD:
        return wire.create_conversation()
    if op in (Op.CREATE_RUN, Op.CREATE_THREAD_AND_RUN):
        conversation = thread_id if op is Op.CREATE_RUN else None
        if op is Op.CREATE_RUN and conversation is None:
            raise ConfigurationError("continuing a conversation needs its id")
        return wire.create_response(
            call.agent,
            list(call.items),
            conversation=conversation,
            previous_response_id=call.previous_response_id if conversation is None else None,
            stream=stream,
            background=not stream,
            max_output_tokens=call.max_output_tokens,
            metadata=call.metadata,
        )
    if op is Op.GET_RUN:
        if run_id is None:
            raise ConfigurationError("cannot poll a response before it exists")
        return wire.get_response(run_id)
    if op is Op.CANCEL_RUN:
        if run_id is None:
            raise ConfigurationError("cannot cancel a response before it exists")
        return wire.cancel_response(run_id)
    return None


def conversation_id_of(data: Any) -> str:
    """The id in the answer to ``POST /openai/v1/conversations``."""
    return wire.parse_conversation(data).id


def machine_status(response: wire.Response) -> str:
    """The run status `RunMachine.run_update` takes for `response` (module docstring)."""
    if response.status == "completed" and response.function_calls:
        return "requires_action"
    return response.status


def neutral_annotation(annotation: Mapping[str, Any]) -> dict[str, Any]:
    """An ``output_text`` annotation in the shape results use (the classic one): a v2
    ``url_citation`` (``url``, ``title`` at the top level) also gets the nested
    ``url_citation: {url, title}`` object that the OpenAI mapping reads; every key the service
    sent is kept."""
    out = dict(annotation)
    if out.get("type") == "url_citation" and not isinstance(out.get("url_citation"), Mapping):
        out["url_citation"] = {"url": out.get("url") or "", "title": out.get("title") or ""}
    return out


def _usage(usage: wire.Usage | None) -> Usage | None:
    if usage is None:
        return None
    return Usage(usage.input_tokens, usage.output_tokens, usage.total_tokens)


def to_run(response: wire.Response, agent: wire.AgentReference | str, raw: Any = None) -> Run:
    """`response` as the neutral `Run`: `thread_id` is its conversation id ("" when none),
    `required_tool_calls` its ``function_call`` items (id = ``call_id``), `last_error` its
    ``error``, `usage` with the chat names (input → prompt, output → completion); `raw` is
    the decoded response object when given (`ResponsesProtocol.reply_of` reads its output).
    `assistant_id` is the agent the response names (``name:version``), else `agent`."""
    err = response.error
    calls = tuple(
        ToolCall(
            id=c.call_id,
            type="function",
            name=c.name,
            arguments=c.arguments,
            raw={"type": "function_call", "call_id": c.call_id, "name": c.name, "id": c.id},
        )
        for c in response.function_calls
    )
    status = machine_status(response)
    return Run(
        id=response.id,
        thread_id=response.conversation_id or "",
        assistant_id=str(response.agent or agent),
        status=status,
        created_at=response.created_at or 0,
        started_at=None,
        completed_at=None,
        failed_at=None,
        cancelled_at=None,
        expires_at=None,
        last_error=LastError(err.code, err.message or None) if err is not None else None,
        usage=_usage(response.usage),
        required_tool_calls=calls if status == "requires_action" else (),
        incomplete_reason=response.incomplete_reason,
        metadata={},
        model=None,
        raw=raw
        if isinstance(raw, Mapping)
        else {"object": "response", "id": response.id, "status": response.status},
    )


def _part(part: wire.OutputText | wire.UnknownPart) -> Part:
    if isinstance(part, wire.OutputText):
        return TextPart(part.text, tuple(neutral_annotation(a) for a in part.annotations))
    return UnknownPart(part.type, part.raw)


def to_messages(response: wire.Response, agent: wire.AgentReference | str) -> tuple[Message, ...]:
    """The assistant ``message`` output items of `response` as neutral `Message`s, in output
    order (`run_id` = the response id, `thread_id` = its conversation id or "")."""
    out: list[Message] = []
    for index, item in enumerate(response.output):
        if not isinstance(item, wire.OutputMessage) or item.role != "assistant":
            continue
        out.append(
            Message(
                id=item.id or f"{response.id}/output/{index}",
                thread_id=response.conversation_id or "",
                run_id=response.id,
                assistant_id=str(response.agent or agent),
                role="assistant",
                status=item.status,
                created_at=response.created_at or 0,
                content=tuple(_part(p) for p in item.content),
                incomplete_reason=response.incomplete_reason,
                raw={"type": "message", "id": item.id, "role": "assistant"},
            )
        )
    return tuple(out)


# --------------------------------------------------------------------------------------------
# The seam (`agentrun._protocol.RunProtocol`)


#: Events a caller without an event stream never needs: the terminal ``response.*`` event
#: carries the whole output, so the deltas and part bookkeeping are not even decoded.
QUIET_EVENTS = frozenset(
    {
        "response.output_text.delta",
        "response.output_text.done",
        "response.output_text.annotation.added",
        "response.content_part.added",
        "response.content_part.done",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.added",
        "response.output_item.done",
    }
)
_TERMINAL_EVENTS = frozenset({"response.completed", "response.failed", "response.incomplete"})


def invocation_call(inv: Invocation) -> V2Call:
    """`build_call` for a seam `Invocation`: its `run_id` (when it carries input or tool
    outputs) is the ``previous_response_id``."""
    previous = inv.run_id if (inv.messages or inv.tool_outputs) else None
    return build_call(
        inv.agent,
        inv.messages,
        inv.options,
        thread_id=inv.thread_id,
        previous_response_id=previous,
        tool_outputs=inv.tool_outputs,
    )


def neutral_events(sse: SSEEvent) -> list[Event]:
    """One server-sent event of a Responses stream as the seam's neutral events.

    ``response.*`` snapshots → `RunUpdated`; a terminal one also → `MessageSeen` per output
    message and then `StreamEnded` (the service sends no ``done``); text deltas →
    `TextDelta` (message id = output item id); an annotation → an empty `TextDelta` carrying
    it; a function call → `ToolCallDelta`s keyed by its output index; the top-level ``error``
    → `StreamFailed` (the driver then polls the response for its final status).
    """
    ev = wire.parse_stream_event(sse)
    if ev is None:
        return []
    if isinstance(ev, wire.ResponseEvent):
        resp = ev.response
        terminal = ev.type in _TERMINAL_EVENTS
        # A terminal snapshot keeps its JSON, so the reply can be read from it later.
        raw = json.loads(sse.data).get("response") if terminal else None
        out: list[Event] = [RunUpdated(to_run(resp, "", raw))]
        if terminal:
            out.extend(MessageSeen(m) for m in to_messages(resp, ""))
            out.append(StreamEnded())
        return out
    if isinstance(ev, wire.TextDelta):
        return [TextDelta(ev.item_id, ev.content_index, ev.delta)]
    if isinstance(ev, wire.AnnotationAdded):
        ann = neutral_annotation(ev.annotation)
        return [TextDelta(ev.item_id, ev.content_index, "", (ann,))]
    if isinstance(ev, wire.OutputItemEvent):
        item = ev.item
        if ev.type == "response.output_item.added" and isinstance(item, wire.FunctionCall):
            step = item.id or f"call:{ev.output_index}"
            return [ToolCallDelta(step, ev.output_index, item.call_id, "function", item.name, "")]
        return []
    if isinstance(ev, wire.FunctionCallArgumentsDelta):
        return [ToolCallDelta(ev.item_id, ev.output_index, None, None, None, ev.delta)]
    if isinstance(ev, wire.StreamError):
        return [StreamFailed(ev.code, ev.message)]
    return []


class ResponsesProtocol:
    """`RunProtocol` for the Responses API (Foundry Agents v2). Stateless: shared by every
    invocation of a client. See the module docstring for how ops map to requests."""

    name = "responses"
    quiet_events = QUIET_EVENTS
    #: Most of a stream; `plain_delta` takes it whole.
    delta_event = "response.output_text.delta"
    #: The usual text delta's values from its frame's data (`RunProtocol.plain_delta`).
    plain_delta = staticmethod(wire.text_delta_of)
    #: Tool outputs start a new response: no waiting run is looked up, none is resumed.
    new_run_per_invocation = True
    #: Every event is decoded as it arrives (`RunProtocol.snapshot_events`).
    snapshot_events: Mapping[str, str] = types.MappingProxyType({})

    def snapshot_id(self, data: str) -> str | None:
        return None

    def __repr__(self) -> str:
        return "ResponsesProtocol()"

    def request(
        self,
        op: Op,
        inv: Invocation,
        thread_id: str | None,
        run_id: str | None,
        *,
        stream: bool,
    ) -> ApiRequest:
        call = invocation_call(inv)
        req = request_for(op, call, thread_id=thread_id, run_id=run_id, stream=stream)
        if req is None:
            raise AssertionError(f"no v2 request for {op}")  # pragma: no cover
        return req

    def creates_thread_first(self, inv: Invocation) -> bool:
        # A conversation cannot be created inside the response request.
        return inv.thread_id is None and inv.run_id is None

    def parse_run(self, data: Any) -> Run:
        return to_run(wire.parse_response(data), "", data)

    def parse_thread_id(self, data: Any) -> str:
        return conversation_id_of(data)

    def stream_events(self, sse: SSEEvent) -> list[Event]:
        return neutral_events(sse)

    def uses_builtin_tools(self, run: Run) -> bool:
        return False  # built-in tool records are output items of the response itself

    async def latest_run(self, call: Call, thread_id: str) -> Run | None:
        return None  # a conversation does not list its responses

    def messages(self, call: Call, thread_id: str, run_id: str | None) -> AsyncIterator[Message]:
        return _no_messages()

    def reply_of(self, run: Run) -> tuple[Message, ...] | None:
        """The reply a response carries in its own output (no listing needed)."""
        raw = run.raw
        if raw.get("object") != "response" or "output" not in raw:
            return None
        return to_messages(wire.parse_response(dict(raw)), "")

    async def steps(self, call: Call, thread_id: str, run_id: str) -> list[RunStep]:
        return []


async def _no_messages() -> AsyncIterator[Message]:
    return
    yield  # pragma: no cover
