"""The Responses API (Foundry Agents v2) wire format: names, routing, requests, parsers, states.

Pure code: no I/O, no clock, no event loop (stdlib, attrs and agentrun's pure core:
`_errors`, `_sse`, `_retry`). The transport turns an `ApiRequest` into HTTP and hands the
decoded body (or each `SSEEvent`) back to the parsers here. The shapes follow
``reference/agents-v2-api.md`` (OpenAI's Responses and Conversations types as served by
``{project}/openai/v1``, and the Foundry agent-version routes with ``api-version=v1``).

Error rules, as in the classic `agentrun._classic.wire`:

* bad input from the caller (an invalid agent name, both ``conversation`` and
  ``previous_response_id``) raises `ConfigurationError` naming the parameter; a parameter the
  agent owns (``instructions``, ``tools``, ``temperature``, ...) raises `BadRequestError`,
  the error the service would answer with, before anything is sent;
* anything malformed from the service raises `RemoteProtocolError` naming the object and the
  field. Parsers require only what a client needs (ids and statuses); unknown output item
  types, content parts and stream events are kept raw, so a new service feature does not
  break an old client.

The v2 run state machine, in the state names users know from classic (`State` values):

``pending`` → ``thread_created`` (only when a conversation is created by its own
``POST /openai/v1/conversations``) → ``message_posted`` (only when items are added by their
own ``POST .../items``; normally the input goes in the response request) → ``run_queued``
(response status ``queued``: background mode) → ``in_progress`` → one of ``completed``,
``failed``, ``incomplete``, ``cancelled``, or ``requires_action`` (status ``completed`` with
``function_call`` output items: the caller owes their outputs, sent as
``function_call_output`` items with ``previous_response_id``). There is no ``expired`` and no
``cancelling``: a cancel answers with the final response. See `run_state`.

Why one module of ~1,200 lines: it is the whole v2 wire format, the counterpart of the classic
`agentrun._classic.wire`, so the protocol seam can import one module per protocol. Its
sections (names and routing, requests, response values, errors, stream events) share only the
private field readers and can be split along those lines if the seam wants it.
"""

from __future__ import annotations

import json as _json
import json.scanner as _json_scanner
import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal, TypeAlias
from urllib.parse import quote

import attrs

from agentrun._errors import (
    APIStatusError,
    BadRequestError,
    ConfigurationError,
    RemoteProtocolError,
    status_error_class,
)
from agentrun._errors import parse_error_body as _parse_error_body
from agentrun._fields import _bad, _obj, _opt_list, _opt_obj, _opt_str, _str, _type_name
from agentrun._retry import retry_after_seconds as _retry_after_header_seconds
from agentrun._sse import SSEEvent

__all__ = [
    "AGENT_NAME_MAX_LENGTH",
    "AGENT_OWNED_PARAMS",
    "API_VERSION",
    "CLASSIC_ID_PREFIX",
    "MODEL_PREFIX",
    "RESPONSE_STATUSES",
    "TERMINAL_STATUSES",
    "TEXT_PART_SEPARATOR",
    "AgentReference",
    "AgentVersion",
    "AnnotationAdded",
    "ApiRequest",
    "ClassicRoute",
    "ContentPartEvent",
    "Conversation",
    "ErrorInfo",
    "FunctionCall",
    "FunctionCallArgumentsDelta",
    "FunctionCallArgumentsDone",
    "ItemPage",
    "OutputItem",
    "OutputItemEvent",
    "OutputMessage",
    "OutputText",
    "Response",
    "ResponseError",
    "ResponseEvent",
    "StreamError",
    "StreamEvent",
    "TextDelta",
    "TextDone",
    "UnknownEvent",
    "UnknownItem",
    "UnknownPart",
    "Usage",
    "V2Route",
    "cancel_response",
    "check_agent_owned",
    "create_conversation",
    "create_items",
    "create_response",
    "delete_conversation",
    "delete_response",
    "error_from_body",
    "function_call_output_item",
    "get_agent",
    "get_agent_version",
    "get_conversation",
    "get_response",
    "list_items",
    "message_item",
    "parse_agent_reference",
    "parse_agent_version",
    "parse_conversation",
    "parse_error_body",
    "parse_item_page",
    "parse_response",
    "parse_stream_event",
    "retry_after_seconds",
    "route_agent",
    "route_model",
    "run_state",
    "validate_agent_name",
    "validate_agent_version",
]

#: The LiteLLM-compatible model prefix: ``azure_ai/agents/<asst id | name[:version]>``.
MODEL_PREFIX = "azure_ai/agents/"
#: Classic agent ids start with this; anything else after `MODEL_PREFIX` is a v2 agent name.
CLASSIC_ID_PREFIX = "asst_"
#: The api-version of the agent-management routes (the ``/openai/v1`` routes take none).
API_VERSION = "v1"
AGENT_NAME_MAX_LENGTH = 63
_NAME_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_CLASSIC_ID_RE = re.compile(r"asst_[A-Za-z0-9_.-]{1,251}")
_VERSION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")

#: Request parameters the agent version owns. The service answers 400 ``invalid_payload``
#: ("Not allowed when agent is specified.") when a request that references an agent carries
#: one; agentrun raises the same `BadRequestError` before sending (reference §3.1).
AGENT_OWNED_PARAMS = frozenset(
    {
        "instructions",
        "tools",
        "tool_choice",
        "temperature",
        "top_p",
        "text",
        "reasoning",
    }
)

#: How `Response.text` joins several ``output_text`` parts (the classic module's value): separate
#: parts are separate blocks of the reply. Stream consumers that assemble `TextDelta`s should
#: insert it when ``(output_index, content_index)`` changes.
TEXT_PART_SEPARATOR = "\n\n"

#: Every ``status`` a response can have ([openai-py] ``response_status.py``).
RESPONSE_STATUSES = ("queued", "in_progress", "completed", "failed", "incomplete", "cancelled")
TERMINAL_STATUSES = frozenset({"completed", "failed", "incomplete", "cancelled"})


# --------------------------------------------------------------------------------------------
# Agent names and model routing


def validate_agent_name(name: Any) -> str:
    """`name` if it is a valid v2 agent name: 1 to 63 characters, ASCII letters, digits and
    hyphens, starting and ending with a letter or digit (the service's rule for
    ``POST /agents/{name}/versions``). Raises `ConfigurationError` otherwise."""
    if type(name) is not str or not name:
        raise ConfigurationError(f"agent name must be a non-empty string, got {name!r}")
    if len(name) > AGENT_NAME_MAX_LENGTH:
        raise ConfigurationError(
            f"agent name {name[:20]!r}... is {len(name)} characters long; "
            f"the service allows at most {AGENT_NAME_MAX_LENGTH}"
        )
    if not _NAME_RE.fullmatch(name):
        raise ConfigurationError(
            f"agent name {name!r} is not valid: use letters, digits and hyphens, starting and "
            "ending with a letter or digit"
        )
    return name


def validate_agent_version(version: Any) -> str:
    """`version` if it is a plausible agent version (the service numbers them ``"1"``,
    ``"2"``, ...): 1 to 64 characters of letters, digits, ``.``, ``_``, ``-``, starting with a
    letter or digit. Raises `ConfigurationError` otherwise."""
    if type(version) is not str or not _VERSION_RE.fullmatch(version):
        raise ConfigurationError(
            f"agent version must be a string like '1' (letters, digits, '.', '_', '-'), "
            f"got {version!r}"
        )
    return version


@attrs.frozen
class AgentReference:
    """A v2 agent: its name, and a pinned version or None for the latest.

    `to_json` is the request's ``agent_reference`` object. ``str()`` is ``name[:version]``.
    """

    name: str = attrs.field(converter=validate_agent_name)
    version: str | None = attrs.field(default=None)

    @version.validator
    def _check_version(self, _attribute: Any, value: str | None) -> None:
        if value is not None:
            validate_agent_version(value)

    def to_json(self) -> dict[str, str]:
        out = {"type": "agent_reference", "name": self.name}
        if self.version is not None:
            out["version"] = self.version
        return out

    def __str__(self) -> str:
        return self.name if self.version is None else f"{self.name}:{self.version}"


def parse_agent_reference(spec: Any) -> AgentReference:
    """``"name"`` or ``"name:version"`` as an `AgentReference`; `ConfigurationError` if either
    part is invalid."""
    if type(spec) is not str or not spec:
        raise ConfigurationError(f"agent must be 'name' or 'name:version', got {spec!r}")
    name, sep, version = spec.partition(":")
    if sep and not version:
        raise ConfigurationError(f"agent {spec!r} has an empty version after ':'")
    return AgentReference(name, version if sep else None)


@attrs.frozen
class ClassicRoute:
    """The model names a classic agent (threads/runs API): ``asst_...``."""

    assistant_id: str
    protocol: Literal["classic"] = "classic"


@attrs.frozen
class V2Route:
    """The model names a v2 agent (Responses API) by name and optional version."""

    agent: AgentReference
    protocol: Literal["v2"] = "v2"


def route_model(model: Any) -> ClassicRoute | V2Route:
    """Which protocol a model string selects, and the agent it names.

    ``azure_ai/agents/asst_abc123`` → `ClassicRoute`; ``azure_ai/agents/my-agent`` and
    ``azure_ai/agents/my-agent:3`` → `V2Route` (LiteLLM's rule: ids that do not start with
    ``asst_`` are v2 agent names). Raises `ConfigurationError` for anything else: no
    ``azure_ai/agents/`` prefix (``gpt-4o`` is not an agent), an empty id, a ``/`` left in the
    id, an invalid name or version. See `route_agent` for an id without the prefix.
    """
    if type(model) is not str or not model.startswith(MODEL_PREFIX):
        raise ConfigurationError(
            f"model {model!r} is not an Azure AI Foundry agent: use "
            "'azure_ai/agents/<agent name>[:<version>]' or 'azure_ai/agents/asst_...'"
        )
    return route_agent(model[len(MODEL_PREFIX) :])


def route_agent(agent: Any) -> ClassicRoute | V2Route:
    """Like `route_model` for an agent id without the model prefix (a CLI ``--agent`` value):
    ``asst_...`` → `ClassicRoute`, ``name[:version]`` → `V2Route`."""
    if type(agent) is not str or not agent or "/" in agent:
        raise ConfigurationError(
            f"agent must be 'asst_...' (classic) or '<name>[:<version>]' (v2), got {agent!r}"
        )
    if agent.startswith(CLASSIC_ID_PREFIX):
        if not _CLASSIC_ID_RE.fullmatch(agent):
            raise ConfigurationError(f"{agent!r} is not a valid classic agent id")
        return ClassicRoute(agent)
    return V2Route(parse_agent_reference(agent))


# --------------------------------------------------------------------------------------------
# Requests


@attrs.frozen
class ApiRequest:
    """One HTTP request, before the transport adds the project base URL and the token.

    The fields of the classic `agentrun._classic.wire.ApiRequest`, plus `api_version`: the
    api-version the route takes, or None for the ``/openai/v1`` data plane, which takes none
    (the transport sends none on those paths, `agentrun._transport`). `path` is
    relative to the project base URL, every id quoted as one path segment; `stream` tells the
    transport to expect ``text/event-stream``.
    """

    method: str
    path: str
    params: tuple[tuple[str, str], ...] = ()
    json: Mapping[str, Any] | None = None
    stream: bool = False
    api_version: str | None = None


def _id(value: Any, name: str) -> str:
    if type(value) is not str or not value or value in (".", ".."):
        raise ConfigurationError(f"{name} must be a non-empty id string, got {value!r}")
    return quote(value, safe="")


def check_agent_owned(params: Mapping[str, Any]) -> None:
    """Raise `BadRequestError` if `params` carries a parameter the agent owns (not None).

    The message names every such parameter, as the service's ``details`` do; the error's
    `code` is ``invalid_payload``, the service's. Nothing is sent.
    """
    owned = sorted(k for k in params if k in AGENT_OWNED_PARAMS and params[k] is not None)
    if owned:
        names = ", ".join(repr(k) for k in owned)
        raise BadRequestError(
            f"{names}: not allowed when an agent is referenced; the agent version owns its "
            "instructions, tools and sampling settings (create a new version to change them)",
            code="invalid_payload",
        )


_ROLES = ("user", "assistant", "system", "developer")


def message_item(role: str, content: str | Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """An input ``message`` item. `content` is text or Responses content parts
    (``{"type": "input_text", "text": ...}``, ``input_image``, ...)."""
    if role not in _ROLES:
        raise ConfigurationError(f"message role must be one of {_ROLES}, got {role!r}")
    if isinstance(content, str):
        return {"type": "message", "role": role, "content": content}
    parts = []
    for i, part in enumerate(content):
        if not isinstance(part, Mapping) or type(part.get("type")) is not str:
            raise ConfigurationError(f"content[{i}] must be an object with a 'type'")
        parts.append(dict(part))
    if not parts:
        raise ConfigurationError("message content must not be empty")
    return {"type": "message", "role": role, "content": parts}


def function_call_output_item(call_id: str, output: str) -> dict[str, Any]:
    """A ``function_call_output`` input item answering the ``function_call`` with `call_id`."""
    if type(call_id) is not str or not call_id:
        raise ConfigurationError(f"call_id must be a non-empty string, got {call_id!r}")
    if type(output) is not str:
        raise ConfigurationError(f"a function output must be a string, got {output!r}")
    return {"type": "function_call_output", "call_id": call_id, "output": output}


def create_response(
    agent: AgentReference,
    input: str | Sequence[Mapping[str, Any]],
    *,
    conversation: str | None = None,
    previous_response_id: str | None = None,
    stream: bool = False,
    background: bool = False,
    store: bool | None = None,
    max_output_tokens: int | None = None,
    metadata: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> ApiRequest:
    """``POST /openai/v1/responses`` invoking `agent` (plain, ``stream``, ``background`` or
    both).

    `input` is text or input items (`message_item`, `function_call_output_item`, ...).
    `conversation` and `previous_response_id` are mutually exclusive (`ConfigurationError`);
    ``background`` needs ``store`` (not False). `extra` adds body fields; one the agent owns
    raises `BadRequestError` (see `check_agent_owned`), as does a different
    ``agent``/``agent_reference`` (an extra cannot swap the agent).
    """
    if not isinstance(agent, AgentReference):
        raise ConfigurationError(f"agent must be an AgentReference, got {agent!r}")
    body: dict[str, Any] = {"agent_reference": agent.to_json()}
    if isinstance(input, str):
        body["input"] = input
    else:
        items = []
        for i, item in enumerate(input):
            if not isinstance(item, Mapping):
                raise ConfigurationError(f"input[{i}] must be an item object, got {item!r}")
            items.append(dict(item))
        body["input"] = items
    if conversation is not None and previous_response_id is not None:
        raise ConfigurationError(
            "conversation (thread_id) and previous_response_id cannot be combined: pass one of them"
        )
    if conversation is not None:
        _id(conversation, "conversation")
        body["conversation"] = conversation
    if previous_response_id is not None:
        _id(previous_response_id, "previous_response_id")
        body["previous_response_id"] = previous_response_id
    if type(stream) is not bool or type(background) is not bool:
        raise ConfigurationError("stream and background must be booleans")
    if stream:
        body["stream"] = True
    if background:
        if store is False:
            raise ConfigurationError("background mode needs store=True (the service keeps it)")
        body["background"] = True
    if store is not None:
        body["store"] = bool(store)
    if max_output_tokens is not None:
        if type(max_output_tokens) is not int or max_output_tokens < 16:
            raise ConfigurationError(
                f"max_output_tokens must be an integer >= 16, got {max_output_tokens!r}"
            )
        body["max_output_tokens"] = max_output_tokens
    if metadata is not None:
        if not all(type(k) is str and type(v) is str for k, v in metadata.items()):
            raise ConfigurationError("metadata must map strings to strings")
        body["metadata"] = dict(metadata)
    if extra:
        check_agent_owned(extra)
        for key in ("agent", "agent_reference"):
            if key in extra and extra[key] != body["agent_reference"]:
                raise BadRequestError(
                    f"{key!r} in the request names another agent than the model "
                    f"({agent}); remove it",
                    code="invalid_payload",
                )
        for key, value in extra.items():
            if key not in body and key not in ("agent", "agent_reference"):
                body[key] = value
    return ApiRequest("POST", "/openai/v1/responses", (), body, stream)


def get_response(
    response_id: str, *, stream: bool = False, starting_after: int | None = None
) -> ApiRequest:
    """``GET /openai/v1/responses/{id}`` (a background response's poll); with `stream`, the
    event stream again from after sequence number `starting_after` (only for a response
    created with ``stream``)."""
    params: list[tuple[str, str]] = []
    if stream:
        params.append(("stream", "true"))
        if starting_after is not None:
            if type(starting_after) is not int or starting_after < -1:
                raise ConfigurationError("starting_after must be an integer >= -1")
            params.append(("starting_after", str(starting_after)))
    path = f"/openai/v1/responses/{_id(response_id, 'response_id')}"
    return ApiRequest("GET", path, tuple(params), None, stream)


def cancel_response(response_id: str) -> ApiRequest:
    """``POST /openai/v1/responses/{id}/cancel``: only background responses can be cancelled;
    the answer is the response (``cancelled``, or its terminal status if it had finished)."""
    return ApiRequest("POST", f"/openai/v1/responses/{_id(response_id, 'response_id')}/cancel")


def delete_response(response_id: str) -> ApiRequest:
    """``DELETE /openai/v1/responses/{id}``."""
    return ApiRequest("DELETE", f"/openai/v1/responses/{_id(response_id, 'response_id')}")


def create_conversation(
    items: Sequence[Mapping[str, Any]] = (), *, metadata: Mapping[str, str] | None = None
) -> ApiRequest:
    """``POST /openai/v1/conversations`` with up to 20 initial items."""
    if len(items) > 20:
        raise ConfigurationError(
            f"a conversation is created with at most 20 items, got {len(items)}"
        )
    body: dict[str, Any] = {}
    if items:
        body["items"] = [dict(i) for i in items]
    if metadata is not None:
        body["metadata"] = dict(metadata)
    return ApiRequest("POST", "/openai/v1/conversations", (), body)


def get_conversation(conversation_id: str) -> ApiRequest:
    """``GET /openai/v1/conversations/{id}``."""
    return ApiRequest("GET", f"/openai/v1/conversations/{_id(conversation_id, 'conversation_id')}")


def delete_conversation(conversation_id: str) -> ApiRequest:
    """``DELETE /openai/v1/conversations/{id}``."""
    cid = _id(conversation_id, "conversation_id")
    return ApiRequest("DELETE", f"/openai/v1/conversations/{cid}")


def create_items(conversation_id: str, items: Sequence[Mapping[str, Any]]) -> ApiRequest:
    """``POST /openai/v1/conversations/{id}/items`` (1 to 20 items per call)."""
    if not 1 <= len(items) <= 20:
        raise ConfigurationError(f"items must hold 1 to 20 items per call, got {len(items)}")
    cid = _id(conversation_id, "conversation_id")
    body = {"items": [dict(i) for i in items]}
    return ApiRequest("POST", f"/openai/v1/conversations/{cid}/items", (), body)


def list_items(
    conversation_id: str,
    *,
    limit: int = 20,
    order: Literal["asc", "desc"] = "desc",
    after: str | None = None,
) -> ApiRequest:
    """``GET /openai/v1/conversations/{id}/items`` (one page; `limit` 1 to 100)."""
    if type(limit) is not int or not 1 <= limit <= 100:
        raise ConfigurationError(f"limit must be an integer from 1 to 100, got {limit!r}")
    if order not in ("asc", "desc"):
        raise ConfigurationError(f"order must be 'asc' or 'desc', got {order!r}")
    params = [("limit", str(limit)), ("order", order)]
    if after is not None:
        params.append(("after", after))
    cid = _id(conversation_id, "conversation_id")
    return ApiRequest("GET", f"/openai/v1/conversations/{cid}/items", tuple(params))


def get_agent(name: str) -> ApiRequest:
    """``GET /agents/{name}?api-version=v1`` (the agent and its latest version)."""
    return ApiRequest("GET", f"/agents/{validate_agent_name(name)}", api_version=API_VERSION)


def get_agent_version(agent: AgentReference) -> ApiRequest:
    """``GET /agents/{name}/versions/{version}?api-version=v1``; `agent` must pin a version."""
    if agent.version is None:
        raise ConfigurationError(f"agent {agent} has no version to look up")
    path = f"/agents/{agent.name}/versions/{quote(agent.version, safe='')}"
    return ApiRequest("GET", path, api_version=API_VERSION)


# --------------------------------------------------------------------------------------------
# Parsing helpers


def _opt_int(d: dict[str, Any], key: str, where: str) -> int | None:
    value = d.get(key)
    if value is None:
        return None
    if type(value) is int:
        return value
    if type(value) is float and value.is_integer():  # created_at is sometimes 1762219267.0
        return int(value)
    _bad(where, key, f"must be an integer or null, got {_type_name(value)}")


def _int(d: dict[str, Any], key: str, where: str) -> int:
    value = _opt_int(d, key, where)
    if value is None:
        _bad(where, key, "is missing")
    return value


def _decode(data: str | bytes, what: str) -> Any:
    try:
        return _json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise RemoteProtocolError(f"malformed {what} from the service: not JSON ({exc})") from None


# --------------------------------------------------------------------------------------------
# Response values


@attrs.frozen
class Usage:
    """Token counts of a response (``usage``; None until it is terminal)."""

    input_tokens: int
    output_tokens: int
    total_tokens: int


@attrs.frozen
class ResponseError:
    """``response.error`` of a failed response: `code` (``server_error``,
    ``rate_limit_exceeded``, ...) and `message`."""

    code: str | None
    message: str


@attrs.frozen
class OutputText:
    """An ``output_text`` content part: its text and annotations (``url_citation``,
    ``file_citation``, ``file_path``, ... kept as JSON objects)."""

    text: str
    annotations: tuple[Mapping[str, Any], ...] = ()


@attrs.frozen
class UnknownPart:
    """A content part agentrun does not interpret (``refusal``, a future type): kept raw."""

    type: str
    raw: Mapping[str, Any]


@attrs.frozen
class OutputMessage:
    """A ``message`` output item (role ``assistant``)."""

    id: str | None
    role: str
    status: str | None
    content: tuple[OutputText | UnknownPart, ...]

    @property
    def text(self) -> str:
        """The ``output_text`` parts joined with `TEXT_PART_SEPARATOR` ("" if none)."""
        return TEXT_PART_SEPARATOR.join(p.text for p in self.content if isinstance(p, OutputText))


@attrs.frozen
class FunctionCall:
    """A ``function_call`` output item: the agent asks the caller to run `name` with
    `arguments` (a JSON string) and to answer with a ``function_call_output`` for `call_id`."""

    call_id: str
    name: str
    arguments: str
    id: str | None = None
    status: str | None = None


@attrs.frozen
class UnknownItem:
    """An output item agentrun does not interpret (a tool record, ``reasoning``, ...)."""

    type: str
    id: str | None
    raw: Mapping[str, Any]


OutputItem: TypeAlias = OutputMessage | FunctionCall | UnknownItem


@attrs.frozen
class Response:
    """A response object (``object: "response"``). Only `id` and `status` are required.

    `conversation_id` is the ``conv_...`` id (the v2 ``thread_id``); `agent` is the
    ``agent_reference`` the service echoed, if any; `incomplete_reason` is
    ``incomplete_details.reason``.
    """

    id: str
    status: str
    output: tuple[OutputItem, ...] = ()
    conversation_id: str | None = None
    previous_response_id: str | None = None
    usage: Usage | None = None
    error: ResponseError | None = None
    incomplete_reason: str | None = None
    agent: AgentReference | None = None
    created_at: int | None = None
    background: bool = False

    @property
    def text(self) -> str:
        """Every ``output_text`` part of every message item, in order, joined with
        `TEXT_PART_SEPARATOR` (as classic joins a message's text parts; openai-python's
        ``output_text`` glues them with "" instead)."""
        return TEXT_PART_SEPARATOR.join(p.text for p in self._text_parts())

    @property
    def annotations(self) -> tuple[Mapping[str, Any], ...]:
        """The annotations of every ``output_text`` part, in order, with integer
        ``start_index``/``end_index`` shifted to positions in `text`."""
        result: list[Mapping[str, Any]] = []
        offset = 0
        for n, part in enumerate(self._text_parts()):
            if n:
                offset += len(TEXT_PART_SEPARATOR)
            for ann in part.annotations:
                if offset:
                    ann = dict(ann)
                    for key in ("start_index", "end_index"):
                        if type(ann.get(key)) is int:
                            ann[key] += offset
                result.append(ann)
            offset += len(part.text)
        return tuple(result)

    def _text_parts(self) -> list[OutputText]:
        return [
            p
            for i in self.output
            if isinstance(i, OutputMessage)
            for p in i.content
            if isinstance(p, OutputText)
        ]

    @property
    def function_calls(self) -> tuple[FunctionCall, ...]:
        return tuple(i for i in self.output if isinstance(i, FunctionCall))

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def finish_reason(self) -> str | None:
        """The chat-completions finish_reason: ``tool_calls``, ``stop``, ``length``,
        ``content_filter``; None while not terminal or after failed/cancelled."""
        if self.status == "completed":
            return "tool_calls" if self.function_calls else "stop"
        if self.status == "incomplete":
            if self.incomplete_reason == "content_filter":
                return "content_filter"
            return "length"
        return None


def _parse_part(value: Any, where: str) -> OutputText | UnknownPart:
    d = _obj(value, where)
    kind = _str(d, "type", where)
    if kind != "output_text":
        return UnknownPart(kind, d)
    annotations = _opt_list(d, "annotations", where)
    for i, a in enumerate(annotations):
        if type(a) is not dict:
            _bad(where, f"annotations[{i}]", f"must be an object, got {_type_name(a)}")
    return OutputText(_str(d, "text", where), tuple(annotations))


def _parse_item(value: Any, where: str) -> OutputItem:
    d = _obj(value, where)
    kind = _str(d, "type", where)
    if kind == "message":
        parts = tuple(
            _parse_part(p, f"{where}.content[{i}]")
            for i, p in enumerate(_opt_list(d, "content", where))
        )
        return OutputMessage(
            _opt_str(d, "id", where),
            _opt_str(d, "role", where) or "assistant",
            _opt_str(d, "status", where),
            parts,
        )
    if kind == "function_call":
        return FunctionCall(
            _str(d, "call_id", where),
            _str(d, "name", where),
            _opt_str(d, "arguments", where) or "",
            _opt_str(d, "id", where),
            _opt_str(d, "status", where),
        )
    return UnknownItem(kind, d.get("id") if type(d.get("id")) is str else None, d)


def _parse_usage(d: dict[str, Any], where: str) -> Usage | None:
    u = _opt_obj(d, "usage", where)
    if u is None:
        return None
    w = f"{where}.usage"
    i, o = _int(u, "input_tokens", w), _int(u, "output_tokens", w)
    total = _opt_int(u, "total_tokens", w)
    return Usage(i, o, total if total is not None else i + o)


def parse_response(data: Any) -> Response:
    """A decoded response object as a `Response`; `RemoteProtocolError` if its id or status is
    missing or the status is not one of `RESPONSE_STATUSES`."""
    where = "response"
    d = _obj(data, where)
    rid = _str(d, "id", where)
    status = _str(d, "status", where)
    if status not in RESPONSE_STATUSES:
        _bad(where, "status", f"has unknown value {status!r}")
    output = tuple(
        _parse_item(item, f"{where}.output[{i}]")
        for i, item in enumerate(_opt_list(d, "output", where))
    )
    conv = d.get("conversation")
    if type(conv) is dict:
        conversation_id = _opt_str(conv, "id", f"{where}.conversation")
    elif conv is None or type(conv) is str:
        conversation_id = conv
    else:
        _bad(where, "conversation", f"must be an object or null, got {_type_name(conv)}")
    err = _opt_obj(d, "error", where)
    error = None
    if err is not None:
        error = ResponseError(
            _opt_str(err, "code", f"{where}.error"),
            _opt_str(err, "message", f"{where}.error") or "",
        )
    details = _opt_obj(d, "incomplete_details", where)
    reason = _opt_str(details, "reason", f"{where}.incomplete_details") if details else None
    agent = None
    ref = d.get("agent_reference") or d.get("agent")
    if type(ref) is dict and type(ref.get("name")) is str:
        version = ref.get("version")
        try:
            agent = AgentReference(ref["name"], version if type(version) is str else None)
        except ConfigurationError:
            agent = None  # an echo we cannot read is not worth failing a finished response
    return Response(
        id=rid,
        status=status,
        output=output,
        conversation_id=conversation_id,
        previous_response_id=_opt_str(d, "previous_response_id", where),
        usage=_parse_usage(d, where),
        error=error,
        incomplete_reason=reason,
        agent=agent,
        created_at=_opt_int(d, "created_at", where),
        background=d.get("background") is True,
    )


def run_state(response: Response) -> str:
    """The run state name (a `agentrun._machine.State` value) a response's status means:
    ``queued`` → ``run_queued``; ``in_progress``; ``completed`` with ``function_call`` items →
    ``requires_action``; otherwise ``completed``, ``failed``, ``incomplete``, ``cancelled``."""
    if response.status == "queued":
        return "run_queued"
    if response.status == "completed" and response.function_calls:
        return "requires_action"
    return response.status


@attrs.frozen
class Conversation:
    """A conversation (the v2 thread): ``conv_...`` id, creation time, metadata."""

    id: str
    created_at: int | None
    metadata: Mapping[str, str]


def parse_conversation(data: Any) -> Conversation:
    where = "conversation"
    d = _obj(data, where)
    meta = _opt_obj(d, "metadata", where) or {}
    return Conversation(
        _str(d, "id", where),
        _opt_int(d, "created_at", where),
        {str(k): str(v) for k, v in meta.items()},
    )


@attrs.frozen
class ItemPage:
    """One page of conversation items. Messages and function calls are parsed as output
    items (`OutputMessage`, `FunctionCall`; user messages too, their text is in `raw`);
    other items as `UnknownItem`."""

    items: tuple[OutputItem, ...]
    first_id: str | None
    last_id: str | None
    has_more: bool


def parse_item_page(data: Any) -> ItemPage:
    where = "conversation item list"
    d = _obj(data, where)
    items = tuple(
        _parse_any_item(item, f"{where}.data[{i}]")
        for i, item in enumerate(_opt_list(d, "data", where))
    )
    return ItemPage(
        items,
        _opt_str(d, "first_id", where),
        _opt_str(d, "last_id", where),
        d.get("has_more") is True,
    )


def _parse_any_item(value: Any, where: str) -> OutputItem:
    d = _obj(value, where)
    if d.get("type") == "message" and d.get("role") != "assistant":
        return UnknownItem("message", d.get("id") if type(d.get("id")) is str else None, d)
    return _parse_item(d, where)


@attrs.frozen
class AgentVersion:
    """An agent version (``object: "agent.version"``): name, version, its model deployment."""

    name: str
    version: str
    model: str | None
    raw: Mapping[str, Any]


def parse_agent_version(data: Any) -> AgentVersion:
    """An ``agent.version`` object, or an ``agent`` object (its ``versions.latest``)."""
    d = _obj(data, "agent version")
    if d.get("object") == "agent" or "versions" in d:
        versions = _obj(d.get("versions"), "agent.versions")
        d = _obj(versions.get("latest"), "agent.versions.latest")
    where = "agent version"
    definition = _opt_obj(d, "definition", where) or {}
    model = definition.get("model")
    return AgentVersion(
        _str(d, "name", where),
        _str(d, "version", where),
        model if type(model) is str else None,
        d,
    )


# --------------------------------------------------------------------------------------------
# Errors


@attrs.frozen
class ErrorInfo:
    """What an HTTP error body said (the Responses error shape
    ``{"error": {"code", "message", "param", "type", "details"?}}``). `message` includes the
    ``details`` messages with their params, so a 400 for agent-owned parameters names them."""

    code: str | None
    message: str
    param: str | None
    type: str | None
    details: tuple[Mapping[str, Any], ...] = ()


def parse_error_body(body: bytes | str) -> ErrorInfo:
    """What an error body or stream ``error`` event says (`agentrun._errors.parse_error_body`:
    the Responses error shape, with its ``details`` in the message). Never raises."""
    return ErrorInfo(*_parse_error_body(body)[:5])


def retry_after_seconds(headers: Mapping[str, str], now_epoch: float | None = None) -> float | None:
    """The delay the service asked for, in seconds: ``retry-after-ms`` (or
    ``x-ms-retry-after-ms``) first, as openai-python reads it, then ``Retry-After`` (seconds
    or an HTTP date when `now_epoch` is given). None if none is usable."""
    for name, value in headers.items():
        if name.lower() in ("retry-after-ms", "x-ms-retry-after-ms"):
            try:
                millis = float(value.strip())
            except ValueError:
                continue
            if millis == millis and millis not in (float("inf"), float("-inf")):
                return max(0.0, millis) / 1000.0
    return _retry_after_header_seconds(
        {k: v for k, v in headers.items() if k.lower() == "retry-after"}, now_epoch
    )


def error_from_body(
    status: int,
    body: bytes | str,
    headers: Mapping[str, str] | None = None,
    *,
    request_id: str | None = None,
    now_epoch: float | None = None,
) -> APIStatusError:
    """The typed error (`BadRequestError` for 400, `RateLimitError` for 429, ...) an HTTP
    error answer means, with the service's code, message and `retry_after` (seconds)."""
    info = parse_error_body(body)
    cls = status_error_class(status)
    parsed: Mapping[str, Any] | None = None
    with_body = _try_json(body)
    if type(with_body) is dict:
        parsed = with_body
    return cls(
        f"HTTP {status}: {info.message}" + (f" (code {info.code})" if info.code else ""),
        status_code=status,
        code=info.code,
        body=parsed,
        retry_after=retry_after_seconds(headers or {}, now_epoch),
        request_id=request_id,
    )


def _try_json(body: bytes | str) -> Any:
    try:
        return _json.loads(body)
    except (ValueError, RecursionError):
        return None


# --------------------------------------------------------------------------------------------
# Stream events


@attrs.frozen
class ResponseEvent:
    """``response.created`` / ``queued`` / ``in_progress`` / ``completed`` / ``failed`` /
    ``incomplete``: a snapshot of the whole response."""

    type: str
    sequence_number: int | None
    response: Response


@attrs.frozen
class OutputItemEvent:
    """``response.output_item.added`` / ``.done``."""

    type: str
    sequence_number: int | None
    output_index: int
    item: OutputItem


@attrs.frozen
class ContentPartEvent:
    """``response.content_part.added`` / ``.done`` (`part` kept as parsed or raw)."""

    type: str
    sequence_number: int | None
    item_id: str
    output_index: int
    content_index: int
    part: OutputText | UnknownPart


@attrs.frozen
class TextDelta:
    """``response.output_text.delta``: a piece of text (any length, not word-aligned)."""

    sequence_number: int | None
    item_id: str
    output_index: int
    content_index: int
    delta: str


@attrs.frozen
class TextDone:
    """``response.output_text.done``: the part's whole text."""

    sequence_number: int | None
    item_id: str
    output_index: int
    content_index: int
    text: str


@attrs.frozen
class AnnotationAdded:
    """``response.output_text.annotation.added``."""

    sequence_number: int | None
    item_id: str
    output_index: int
    content_index: int
    annotation_index: int
    annotation: Mapping[str, Any]


@attrs.frozen
class FunctionCallArgumentsDelta:
    """``response.function_call_arguments.delta``."""

    sequence_number: int | None
    item_id: str
    output_index: int
    delta: str


@attrs.frozen
class FunctionCallArgumentsDone:
    """``response.function_call_arguments.done``."""

    sequence_number: int | None
    item_id: str
    output_index: int
    arguments: str


@attrs.frozen
class StreamError:
    """The top-level ``error`` event: the stream failed (openai-python raises on it)."""

    sequence_number: int | None
    code: str | None
    message: str
    param: str | None


@attrs.frozen
class UnknownEvent:
    """Any other event (tool progress, reasoning, refusal, a future type), kept raw."""

    type: str
    sequence_number: int | None
    raw: Mapping[str, Any]


StreamEvent: TypeAlias = (
    ResponseEvent
    | OutputItemEvent
    | ContentPartEvent
    | TextDelta
    | TextDone
    | AnnotationAdded
    | FunctionCallArgumentsDelta
    | FunctionCallArgumentsDone
    | StreamError
    | UnknownEvent
)

_RESPONSE_EVENTS = frozenset(
    {
        "response.created",
        "response.queued",
        "response.in_progress",
        "response.completed",
        "response.failed",
        "response.incomplete",
    }
)


#: json's scanner (C where available): `(value, end)` of the JSON document at an index.
_scan_once: Any = _json_scanner.make_scanner(_json.JSONDecoder())  # type: ignore[arg-type]


def text_delta_of(data: str) -> tuple[str, int, str] | None:
    """The fast path of `parse_stream_event` for the data of a frame named
    ``response.output_text.delta`` (the usual text delta).

    Returns ``(item_id, content_index, delta)``, the values of the `TextDelta` the general
    parser gives, for data whose JSON is exactly one object with those fields of their types
    (and an integer ``output_index``, ``sequence_number`` an integer or absent, ``type`` that
    event's name or absent). Any other shape, malformed data included, gives None:
    `parse_stream_event` then decides (and raises what it raises).
    """
    try:
        # The C scanner straight, as `json.loads` does after its checks; a document with
        # anything after it (even whitespace) takes the general path.
        d, end = _scan_once(data, 0)
        if end != len(data):
            return None
        kind = d.get("type", "response.output_text.delta")
        item_id = d["item_id"]
        index = d["content_index"]
        text = d["delta"]
        output_index = d["output_index"]
        seq = d.get("sequence_number")
    except (StopIteration, ValueError, RecursionError, LookupError, TypeError, AttributeError):
        return None
    if (
        kind == "response.output_text.delta"
        and type(item_id) is str
        and type(index) is int
        and type(text) is str
        and type(output_index) is int
        and (seq is None or type(seq) is int)
    ):
        return item_id, index, text
    return None


def parse_stream_event(ev: SSEEvent) -> StreamEvent | None:
    """One SSE frame of a Responses stream as a value, or None for a ``[DONE]`` sentinel
    (the service sends none; tolerated). The type comes from the payload's ``type`` (the
    ``event:`` line when it has none). `RemoteProtocolError` if a known event lacks a field
    a client needs or the data is not JSON."""
    if ev.data.strip() == "[DONE]":
        return None
    d = _obj(_decode(ev.data, f"{ev.event} event"), f"{ev.event} event")
    raw_kind = d.get("type")
    kind: str = raw_kind if type(raw_kind) is str else ev.event
    where = f"{kind} event"
    seq = _opt_int(d, "sequence_number", where)
    if kind in _RESPONSE_EVENTS:
        return ResponseEvent(kind, seq, parse_response(d.get("response")))
    if kind in ("response.output_item.added", "response.output_item.done"):
        return OutputItemEvent(
            kind, seq, _int(d, "output_index", where), _parse_item(d.get("item"), f"{where} item")
        )
    if kind in ("response.content_part.added", "response.content_part.done"):
        return ContentPartEvent(
            kind,
            seq,
            _str(d, "item_id", where),
            _int(d, "output_index", where),
            _int(d, "content_index", where),
            _parse_part(d.get("part"), f"{where} part"),
        )
    if kind == "response.output_text.delta":
        return TextDelta(
            seq,
            _str(d, "item_id", where),
            _int(d, "output_index", where),
            _int(d, "content_index", where),
            _str(d, "delta", where),
        )
    if kind == "response.output_text.done":
        return TextDone(
            seq,
            _str(d, "item_id", where),
            _int(d, "output_index", where),
            _int(d, "content_index", where),
            _str(d, "text", where),
        )
    if kind == "response.output_text.annotation.added":
        return AnnotationAdded(
            seq,
            _str(d, "item_id", where),
            _int(d, "output_index", where),
            _int(d, "content_index", where),
            _opt_int(d, "annotation_index", where) or 0,
            _obj(d.get("annotation"), f"{where} annotation"),
        )
    if kind == "response.function_call_arguments.delta":
        return FunctionCallArgumentsDelta(
            seq, _str(d, "item_id", where), _int(d, "output_index", where), _str(d, "delta", where)
        )
    if kind == "response.function_call_arguments.done":
        return FunctionCallArgumentsDone(
            seq,
            _str(d, "item_id", where),
            _int(d, "output_index", where),
            _str(d, "arguments", where),
        )
    if kind == "error":
        info = _parse_error_body(ev.data)
        return StreamError(seq, info.code, info.message, info.param)
    return UnknownEvent(kind, seq, d)
