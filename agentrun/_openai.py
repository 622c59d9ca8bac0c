"""The OpenAI chat-completions format, both ways, and `acompletion`.

In: a chat request (`model="azure_ai/agents/<agent id>"`, `messages`, OpenAI parameters) becomes
one `AsyncClient` invocation. Out: its `RunResult` becomes a `chat.completion` object, and its
stream events become `chat.completion.chunk` objects.

Module-level calls share clients through a registry keyed by event loop and
`ConnectionSettings`, so their connection pool and token cache are shared across calls.

Why one module of ~1,250 lines: it is the whole OpenAI chat-completions format, both ways
(request mapping, response and chunk objects, the module-level registry, `acompletion`); the
sections share the chunk and object builders.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import re
import ssl
import threading
import time
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from typing import Any, TypeVar

from agentrun._client import AsyncClient, RunStream
from agentrun._credentials import environment
from agentrun._errors import (
    BadRequestError,
    ConfigurationError,
    RunIncompleteError,
    UnsupportedParamsError,
)
from agentrun._machine import State
from agentrun._model import TEXT_PART_SEPARATOR
from agentrun._responses.wire import ClassicRoute, route_model
from agentrun._results import RunFinished, RunResult, StateChanged, TextDelta, ToolCallDelta
from agentrun._retry import RetryPolicy
from agentrun._settings import ConnectionSettings, _digest, _env_key
from agentrun._toolcalls import ToolCallMemory

__all__ = [
    "ChatCompletion",
    "ChatCompletionChunk",
    "CompletionStream",
    "OpenAIObject",
    "acompletion",
    "chat",
    "get_client",
    "parse_model",
]

MODEL_PREFIX = "azure_ai/agents/"
_AGENT_ID = re.compile(r"[A-Za-z0-9_\-.:]{1,256}")  # checked with fullmatch

#: OpenAI parameters the Agent Service can honour, and the run option each one becomes.
SUPPORTED_PARAMS = {
    "temperature": "temperature",
    "top_p": "top_p",
    "max_tokens": "max_completion_tokens",
    "max_completion_tokens": "max_completion_tokens",
    "response_format": "response_format",
    "tools": "tools",
    "tool_choice": "tool_choice",
    "parallel_tool_calls": "parallel_tool_calls",
    "metadata": "metadata",
    # The Responses API's continuation without a conversation (v2 agents): the response that
    # the new one follows, which the client calls `run_id` (docs/v2.md).
    "previous_response_id": "run_id",
}
#: Accepted and ignored: they change nothing the service does.
_HARMLESS = frozenset({"user"})
#: OpenAI parameters that are harmless at these values (their OpenAI defaults): OpenAI clients
#: and frameworks often send them explicitly.
_NEUTRAL_VALUES: dict[str, tuple[Any, ...]] = {
    "n": (1,),
    "presence_penalty": (0, 0.0),
    "frequency_penalty": (0, 0.0),
    "logprobs": (False,),
    "stop": ([], ()),
    "logit_bias": ({},),
}
#: Keys of `extra_body` (how OpenAI clients send non-OpenAI fields) that agentrun reads.
_EXTRA_BODY_KEYS = frozenset({"thread_id", "instructions"})
#: OpenAI parameters the service cannot honour: an error unless drop_params=True.
UNSUPPORTED_PARAMS = frozenset(
    {
        "n",
        "stop",
        "presence_penalty",
        "frequency_penalty",
        "logit_bias",
        "logprobs",
        "top_logprobs",
        "seed",
        "functions",
        "function_call",
        "audio",
        "modalities",
        "prediction",
        "reasoning_effort",
        "service_tier",
        "store",
        "web_search_options",
    }
)


def parse_model(model: str) -> str:
    """The agent in `azure_ai/agents/<agent>`: a classic id (``asst_...``) or a v2 agent name
    with an optional ``:version`` (LiteLLM's routing rule; names validated as the service
    does: up to 63 letters, digits and hyphens). Raises ConfigurationError otherwise."""
    if not isinstance(model, str):
        raise ConfigurationError(
            f"model must be a string like 'azure_ai/agents/asst_abc123', got {model!r}"
        )
    if not model.startswith(MODEL_PREFIX):
        raise ConfigurationError(
            f"model {model!r} is not an Azure AI Foundry agent: use 'azure_ai/agents/<agent id>', "
            "e.g. 'azure_ai/agents/asst_abc123' (classic) or 'azure_ai/agents/my-agent:3' (v2)"
        )
    agent = model[len(MODEL_PREFIX) :]
    if not _AGENT_ID.fullmatch(agent):
        raise ConfigurationError(f"model {model!r} has no valid agent id after 'azure_ai/agents/'")
    route_model(model)  # a v2 name or version the service would refuse fails here
    return agent


#: Optional fields of OpenAI's chat objects: read as None when absent from the JSON.
_OPTIONAL_FIELDS = frozenset(
    {
        "role",
        "content",
        "refusal",
        "tool_calls",
        "function_call",
        "annotations",
        "audio",
        "name",
        "id",
        "type",
        "function",
        "arguments",
        "index",
        "usage",
        "logprobs",
        "finish_reason",
        "system_fingerprint",
        "service_tier",
    }
)


# -- response objects -------------------------------------------------------------------------


class OpenAIObject:
    """A JSON object with attribute and item access (`resp.choices[0].message.content` and
    `resp["choices"]`); `to_dict()` gives the exact JSON."""

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[str, Any]) -> None:
        object.__setattr__(self, "_data", dict(data))

    def __getattr__(self, name: str) -> Any:
        if name[:1] == "_":
            if name == "_data":
                # A streamed chunk's JSON is built on first use (`_lazy_data`).
                return self._lazy_data()
            # No JSON field: a private or special name (`copy` and `pickle` look one up on an
            # object whose `_data` is not set yet; reading `_data` here would recurse).
            raise AttributeError(name)
        try:
            return _wrap(self._data[name])
        except KeyError:
            # Like the openai package's models: an optional field left out reads as None
            # (`chunk.choices[0].delta.content` on the final chunk, whose delta is {}).
            if name in _OPTIONAL_FIELDS:
                return None
            raise AttributeError(name) from None

    def _lazy_data(self) -> dict[str, Any]:
        """The JSON of an object made without it (a streamed text chunk and its choice and
        delta), built from the object's own fields and kept; AttributeError for any other
        object without `_data` (one that `copy` or `pickle` is still building)."""
        raise AttributeError("_data")

    def __getitem__(self, key: str) -> Any:
        return _wrap(self._data[key])

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __iter__(self) -> Any:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, OpenAIObject):
            return bool(self._data == other._data)
        if isinstance(other, Mapping):
            return bool(self._data == dict(other))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def get(self, key: str, default: Any = None) -> Any:
        return _wrap(self._data.get(key, default))

    def keys(self) -> Any:
        return self._data.keys()

    def to_dict(self) -> dict[str, Any]:
        """A deep copy of the JSON object."""
        result: dict[str, Any] = json.loads(json.dumps(self._data))
        return result

    model_dump = to_dict

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self._data, **kwargs)

    model_dump_json = to_json

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self._data.items())
        return f"{type(self).__name__}({inner})"


class _Obj(OpenAIObject):
    __slots__ = ()

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self._data.items())
        return f"({inner})" if inner else "()"


class Usage(OpenAIObject):
    __slots__ = ()


class ChatCompletion(OpenAIObject):
    """A `chat.completion`; `thread_id`, `run_id` and `_hidden_params` tell the thread.

    `run_result` is the `RunResult` behind it (state history, timings), when there is one.
    """

    __slots__ = ("run_result",)
    run_result: RunResult | None

    def __init__(self, data: Mapping[str, Any], run_result: RunResult | None = None) -> None:
        super().__init__(data)
        object.__setattr__(self, "run_result", run_result)

    @property
    def _hidden_params(self) -> dict[str, Any]:
        return {"thread_id": self._data.get("thread_id"), "run_id": self._data.get("run_id")}


class _Envelope:
    """The JSON fields that every chunk of one stream shares (`data`: id, object, created,
    model, a `choices` placeholder, system_fingerprint, thread_id, run_id; strings, numbers
    and None only), and the JSON text of a text chunk around its content, per `separators`."""

    __slots__ = ("_json", "data")

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data
        self._json: dict[Any, tuple[str, str] | None] = {}

    def text_chunk_json(self, separators: Any) -> tuple[str, str] | None:
        """The text before and after `json.dumps(content)` in `json.dumps(data of a text
        chunk, separators=separators)`; None if it cannot be split (then dump it whole)."""
        try:
            return self._json[separators]
        except KeyError:
            pass
        data = self.data.copy()
        data["choices"] = [_text_choice_json(_SLOT)]
        text, slot = json.dumps(data, separators=separators), json.dumps(_SLOT)
        parts = text.split(slot)
        found = (parts[0], parts[1]) if len(parts) == 2 else None
        self._json[separators] = found
        return found


#: Stands for a text chunk's content while its JSON text is split (`_Envelope`).
_SLOT = "\x00agentrun-content\x00"


def _text_choice_json(text: str) -> dict[str, Any]:
    """The JSON of a text chunk's choice: `{"content": text}`, no role, no finish reason."""
    return {"index": 0, "delta": {"content": text}, "finish_reason": None, "logprobs": None}


class ChatCompletionChunk(ChatCompletion):
    """A `chat.completion.chunk`.

    `choices` is an attribute of its own (wrapped once: a stream is read in a loop). A text
    chunk of a stream is made without its JSON (`_proto`: the stream's `_Envelope`; None for
    any other chunk): `to_dict()` and `to_json()` make theirs directly; item access and the
    envelope's fields build the chunk's JSON on first use (and `_proto` becomes None).
    """

    __slots__ = ("_proto", "choices")
    choices: Any
    _proto: _Envelope | None

    def __init__(self, data: Mapping[str, Any], run_result: RunResult | None = None) -> None:
        super().__init__(data, run_result)
        object.__setattr__(self, "_proto", None)
        if "choices" in self._data:
            object.__setattr__(self, "choices", _wrap(self._data["choices"]))

    def _lazy_data(self) -> dict[str, Any]:
        proto: _Envelope | None
        try:
            proto = object.__getattribute__(self, "_proto")
        except AttributeError:
            proto = None  # `copy` or `pickle` is still making it
        if proto is None:
            raise AttributeError("_data")
        # The chunk, its choice and its delta get their JSON together (one JSON object).
        choice = self.choices[0]
        delta = choice.delta
        choice_data = _text_choice_json(delta.content)
        data = proto.data.copy()
        data["choices"] = [choice_data]
        object.__setattr__(delta, "_data", choice_data["delta"])
        object.__setattr__(choice, "_data", choice_data)
        object.__setattr__(self, "_data", data)
        object.__setattr__(self, "_proto", None)
        return data

    def to_dict(self) -> dict[str, Any]:
        """A deep copy of the JSON object."""
        proto = self._proto
        if proto is None:
            return super().to_dict()
        # A text chunk: the envelope holds no containers, so its copy is a deep one.
        data = proto.data.copy()
        data["choices"] = [_text_choice_json(self.choices[0].delta.content)]
        return data

    model_dump = to_dict

    def to_json(self, **kwargs: Any) -> str:
        proto = self._proto
        if proto is not None and kwargs.keys() <= {"separators"}:
            separators = kwargs.get("separators")
            if separators is None or type(separators) is tuple:
                parts = proto.text_chunk_json(separators)
                if parts is not None:
                    return parts[0] + json.dumps(self.choices[0].delta.content) + parts[1]
        return json.dumps(self._data, **kwargs)

    model_dump_json = to_json


class _Delta(_Obj):
    """A chunk's `delta`, its `content` (None when absent) an attribute of its own; a text
    chunk's delta is made with `content` alone and its JSON built on first use."""

    __slots__ = ("content",)
    content: Any

    def _lazy_data(self) -> dict[str, Any]:
        try:
            data = {"content": object.__getattribute__(self, "content")}
        except AttributeError:
            raise AttributeError("_data") from None
        object.__setattr__(self, "_data", data)
        return data


class _Choice(_Obj):
    """A chunk's choice, its `delta` wrapped once; a text chunk's choice is made with `delta`
    alone and its JSON built on first use."""

    __slots__ = ("delta",)
    delta: _Delta

    def _lazy_data(self) -> dict[str, Any]:
        try:
            delta = object.__getattribute__(self, "delta")
        except AttributeError:
            raise AttributeError("_data") from None
        data = {"index": 0, "delta": delta._data, "finish_reason": None, "logprobs": None}
        object.__setattr__(self, "_data", data)
        return data


_O = TypeVar("_O", bound=OpenAIObject)


def _shared(cls: type[_O], data: dict[str, Any]) -> _O:
    """An object of `cls` over `data` itself, not a copy: for JSON this module built or took
    apart (the objects give no way to change it; `to_dict()` copies)."""
    obj = cls.__new__(cls)
    object.__setattr__(obj, "_data", data)
    return obj


_new = object.__new__


def _text_chunk(proto: _Envelope, text: str) -> ChatCompletionChunk:
    """The chunk of a text delta (`{"content": text}`, no role, no finish reason) in the
    stream envelope `proto`: its choice and delta made with their attributes alone, the JSON
    of all three built on first use (`_lazy_data`)."""
    delta = _new(_Delta)
    delta.content = text
    choice = _new(_Choice)
    choice.delta = delta
    chunk = _new(ChatCompletionChunk)
    chunk._proto = proto
    chunk.run_result = None
    chunk.choices = [choice]
    return chunk


def _wrap(value: Any) -> Any:
    if isinstance(value, dict):
        # A child shares its parent's JSON (no copy per attribute access).
        return _shared(_Obj, value) if "prompt_tokens" not in value else _shared(Usage, value)
    if isinstance(value, list):
        return [_wrap(v) for v in value]
    return value


# -- request mapping --------------------------------------------------------------------------


class _Request:
    """A chat request translated into one `AsyncClient` invocation's arguments."""

    def __init__(self) -> None:
        self.agent = ""
        self.model = ""
        self.input: list[dict[str, Any]] = []
        self.options: dict[str, Any] = {}
        self.tool_outputs: dict[str, str] = {}
        self.thread_id: str | None = None
        self.include_usage = False
        # Tool messages without thread_id, mapped without a client: the sending client's
        # tool-call memory must name their thread (map again with it).
        self.needs_thread = False


def _content_text(content: Any, where: str) -> str:
    """The text of a system, developer or tool message (a string or text parts)."""
    if isinstance(content, str):
        return content
    if content is None:
        return ""
    if isinstance(content, Sequence) and not isinstance(content, (bytes, bytearray)):
        parts = []
        for j, part in enumerate(content):
            if not isinstance(part, Mapping) or part.get("type") != "text":
                kind = part.get("type") if isinstance(part, Mapping) else type(part).__name__
                raise ConfigurationError(
                    f"{where}.content[{j}] is a {kind!r} part; this message takes text only"
                )
            parts.append(str(part.get("text", "")))
        return "\n".join(parts)
    raise ConfigurationError(
        f"{where}.content must be a string or a list of parts, got {type(content).__name__}"
    )


def _check_params(params: Mapping[str, Any], drop_params: bool) -> dict[str, Any]:
    """The run options for the OpenAI parameters; an error names any the service can't honour."""
    options: dict[str, Any] = {}
    for name, value in params.items():
        if value is None:
            continue
        if name in SUPPORTED_PARAMS:
            options[SUPPORTED_PARAMS[name]] = value
        elif name in _HARMLESS or drop_params or _is_neutral(name, value):
            continue
        else:
            hint = (
                "the Azure AI Agent Service does not support it"
                if name in UNSUPPORTED_PARAMS
                else "it is not a parameter agentrun knows"
            )
            raise UnsupportedParamsError(
                f"unsupported parameter {name!r}: {hint}; remove it or pass drop_params=True"
            )
    if options.get("tool_choice") == "required":
        if not drop_params:
            raise UnsupportedParamsError(
                "unsupported parameter 'tool_choice': 'required' is not supported by the Azure "
                "AI Agent Service; use 'auto', 'none' or a specific function, or pass "
                "drop_params=True"
            )
        options.pop("tool_choice")
    tokens = options.get("max_completion_tokens")
    if isinstance(tokens, int) and tokens < 256:
        if not drop_params:
            raise UnsupportedParamsError(
                f"unsupported parameter 'max_tokens': {tokens} is below the Azure AI Agent "
                "Service's minimum of 256; raise it or pass drop_params=True to leave it out"
            )
        options.pop("max_completion_tokens")
    return options


def _is_neutral(name: str, value: Any) -> bool:
    return any(type(value) is type(v) and value == v for v in _NEUTRAL_VALUES.get(name, ()))


def _split_extra_body(params: dict[str, Any]) -> dict[str, Any]:
    """Move `extra_body`'s known keys out of `params`; the rest count as parameters."""
    extra = params.pop("extra_body", None)
    if extra is None:
        return {}
    if not isinstance(extra, Mapping):
        raise ConfigurationError("extra_body must be an object")
    known = {k: v for k, v in extra.items() if k in _EXTRA_BODY_KEYS}
    for k, v in extra.items():
        if k not in _EXTRA_BODY_KEYS:
            params.setdefault(k, v)
    return known


def _with_extra_body(
    thread_id: str | None, instructions: str | None, params: Mapping[str, Any]
) -> tuple[str | None, str | None, dict[str, Any]]:
    """`thread_id` and `instructions` may also come in `extra_body` (as OpenAI clients send
    non-OpenAI fields); its other keys count as parameters."""
    rest = dict(params)
    extra = _split_extra_body(rest)
    if thread_id is None:
        thread_id = extra.get("thread_id")
    if instructions is None:
        instructions = extra.get("instructions")
    return thread_id, instructions, rest


def _map_request(
    messages: Any,
    *,
    thread_id: str | None,
    instructions: str | None,
    drop_params: bool,
    stream_options: Any,
    params: Mapping[str, Any],
    memory: ToolCallMemory | None,
) -> _Request:
    if not isinstance(messages, Sequence) or isinstance(messages, (str, bytes)):
        raise ConfigurationError(
            'messages must be a list of chat messages like [{"role": "user", "content": "Hello"}]'
        )
    if not messages:
        raise ConfigurationError("messages is empty: give at least one user message")
    if thread_id is not None and (not isinstance(thread_id, str) or not thread_id.strip()):
        raise ConfigurationError(f"thread_id must be a non-empty string, got {thread_id!r}")
    if instructions is not None and not isinstance(instructions, str):
        raise ConfigurationError("instructions must be a string")
    req = _Request()
    req.options = _check_params(params, drop_params)
    if stream_options is not None:
        if not isinstance(stream_options, Mapping):
            raise ConfigurationError("stream_options must be an object")
        req.include_usage = bool(stream_options.get("include_usage"))
    if instructions is not None:
        req.options["instructions"] = instructions

    system: list[str] = []
    convo: list[tuple[int, Mapping[str, Any]]] = []
    for i, msg in enumerate(messages):
        if not isinstance(msg, Mapping):
            raise ConfigurationError(f"messages[{i}] must be an object with a role")
        role = msg.get("role")
        if role in ("system", "developer"):
            text = _content_text(msg.get("content"), f"messages[{i}]")
            if text:
                system.append(text)
        elif role in ("user", "assistant", "tool"):
            convo.append((i, msg))
        else:
            raise ConfigurationError(
                f"messages[{i}] has role {role!r}; expected system, developer, user, assistant "
                "or tool"
            )
    if system:
        req.options["additional_instructions"] = "\n\n".join(system)

    last_assistant = max(
        (k for k, (_, m) in enumerate(convo) if m.get("role") == "assistant"), default=-1
    )
    tail = convo[last_assistant + 1 :]
    tool_ids = [_tool_call_id(i, m) for i, m in convo if m.get("role") == "tool"]
    if thread_id is None and tool_ids:
        if memory is None:
            # Only checked (before a client is chosen): the thread these tool messages belong
            # to is looked up, and the rest mapped, by the client that sends them.
            req.needs_thread = True
            return req
        # A plain OpenAI client sends the whole history and no thread_id: the tool call ids
        # this client handed out name the thread the history lives on.
        thread_id = memory.thread_for(tool_ids)
        if thread_id is None:
            raise BadRequestError(
                "tool messages need the thread_id of the run that asked for them: pass "
                "thread_id= (the thread_id of the response with the tool calls)"
            )
    req.thread_id = thread_id
    # On an existing thread, everything up to the last assistant message is already there.
    new = tail if thread_id is not None else convo
    for i, msg in new:
        role = msg["role"]
        if role == "tool":
            req.tool_outputs[_tool_call_id(i, msg)] = _content_text(
                msg.get("content"), f"messages[{i}]"
            )
            continue
        content = msg.get("content")
        if role == "assistant" and (content is None or content == "" or content == []):
            continue  # an assistant turn that only called tools: nothing to put on a thread
        if content is None:
            raise ConfigurationError(f"messages[{i}] ({role}) has no content")
        if not isinstance(content, str) and not (
            isinstance(content, Sequence) and not isinstance(content, (bytes, bytearray))
        ):
            raise ConfigurationError(
                f"messages[{i}].content must be a string or a list of parts, "
                f"got {type(content).__name__}"
            )
        req.input.append({"role": role, "content": content})
    if req.tool_outputs and req.input:
        raise BadRequestError(
            "tool results and new user messages cannot be sent together: a run waiting for "
            "tool outputs takes no messages; send the tool messages first"
        )
    if not req.input and not req.tool_outputs:
        raise ConfigurationError(
            "messages hold nothing new to send: with a thread_id, give the user message(s) "
            "after the last assistant message"
            if thread_id is not None
            else "messages hold no user or assistant message to start a thread with"
        )
    return req


def _tool_call_id(i: int, msg: Mapping[str, Any]) -> str:
    call_id = msg.get("tool_call_id")
    if not isinstance(call_id, str) or not call_id:
        raise ConfigurationError(f"messages[{i}] (tool) has no tool_call_id")
    return call_id


# -- response mapping -------------------------------------------------------------------------


def _annotations(
    result: RunResult, text: str | None = None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The reply's annotations: OpenAI `url_citation`s, and every annotation as the service
    sent it. Indices are shifted to `result.text` (the messages' texts joined; `text` when
    the caller has it already)."""
    openai_shape: list[dict[str, Any]] = []
    raw: list[dict[str, Any]] = []
    offset = 0
    for msg in result.messages:
        msg_text = msg.text
        if not msg_text:
            continue
        for ann in msg.annotations:
            if text is None:
                text = result.text
            item = json.loads(json.dumps(dict(ann)))
            for key in ("start_index", "end_index"):
                if type(item.get(key)) is int:
                    item[key] += offset
            raw.append(item)
            if item.get("type") == "url_citation" and isinstance(item.get("url_citation"), dict):
                openai_shape.append(_url_citation(item, text))
        offset += len(msg_text) + len(TEXT_PART_SEPARATOR)
    return openai_shape, raw


def _url_citation(item: Mapping[str, Any], text: str) -> dict[str, Any]:
    inner = item["url_citation"]
    start, end = item.get("start_index"), item.get("end_index")
    if type(start) is not int or type(end) is not int:
        # No indices from the service: point at the citation marker in the text, if any.
        marker = item.get("text")
        found = text.find(marker) if isinstance(marker, str) and marker else -1
        start, end = (found, found + len(marker)) if found >= 0 else (0, 0)  # type: ignore[arg-type]
    return {
        "type": "url_citation",
        "url_citation": {
            "url": str(inner.get("url") or ""),
            "title": str(inner.get("title") or ""),
            "start_index": start,
            "end_index": end,
        },
    }


def _finish_reason(result: RunResult) -> str:
    if result.state is State.REQUIRES_ACTION:
        return "tool_calls"
    if result.state is State.INCOMPLETE:
        return "content_filter" if result.incomplete_reason == "content_filter" else "length"
    return "stop"


def _tool_calls_json(result: RunResult) -> list[dict[str, Any]]:
    # Only function calls are the caller's to answer; OpenAI has no other tool-call type.
    return [
        {
            "id": call.id,
            "type": "function",
            "function": {"name": call.name or "", "arguments": call.arguments},
        }
        for call in result.tool_calls
        if call.type == "function"
    ]


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _agent_steps(result: RunResult) -> list[dict[str, Any]]:
    """The tool calls the service ran itself (built-in tools), in step order."""
    out: list[dict[str, Any]] = []
    for step in result.steps:
        for call in step.tool_calls:
            if call.type == "function":
                continue
            out.append(
                {
                    "step_id": step.id,
                    "id": call.id,
                    "type": call.type,
                    "name": call.name,
                    "arguments": call.arguments,
                    "output": _jsonable(call.output),
                    "raw": _jsonable(dict(call.raw)),
                }
            )
    return out


def _agent_images(result: RunResult) -> list[dict[str, Any]]:
    return [
        {"type": "image_file", "image_file": {"file_id": part.file_id}} for part in result.images
    ]


def _agent_extras(result: RunResult, into: dict[str, Any], text: str | None = None) -> None:
    """agentrun's documented extra fields of a message (or of the final chunk's delta);
    `text` is `result.text` when the caller has it already."""
    annotations, raw_annotations = _annotations(result, text)
    if annotations:
        into["annotations"] = annotations
    if raw_annotations:
        into["agent_annotations"] = raw_annotations
    steps = _agent_steps(result)
    if steps:
        into["agent_steps"] = steps
    images = _agent_images(result)
    if images:
        into["agent_images"] = images


def _usage_json(result: RunResult) -> dict[str, Any] | None:
    if result.usage is None:
        return None
    u = result.usage
    out: dict[str, Any] = {
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.total_tokens,
    }
    if u.cached_tokens is not None:
        # Azure's `prompt_token_details` is OpenAI's `prompt_tokens_details`.
        out["prompt_tokens_details"] = {"cached_tokens": u.cached_tokens}
    return out


def _created(result: RunResult) -> int:
    if result.run is not None:
        return int(result.run.raw.get("created_at") or time.time())
    return int(time.time())


def completion_from_result(result: RunResult, model: str) -> ChatCompletion:
    """The `chat.completion` for a finished (or incomplete) run."""
    text = result.text
    message: dict[str, Any] = {
        "role": "assistant",
        "content": text or None,
        "refusal": None,
        "annotations": [],
    }
    tool_calls = _tool_calls_json(result)
    if tool_calls:
        message["tool_calls"] = tool_calls
    _agent_extras(result, message, text)
    data = {
        "id": f"chatcmpl-{result.run_id}",
        "object": "chat.completion",
        "created": _created(result),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": _finish_reason(result),
                "logprobs": None,
            }
        ],
        "usage": _usage_json(result),
        "system_fingerprint": None,
        "thread_id": result.thread_id,
        "run_id": result.run_id,
    }
    return ChatCompletion(data, result)


class CompletionStream:
    """`chat.completion.chunk` objects as the run streams; `async for chunk in stream`.

    The first chunk carries the role, then content and tool-call deltas, then a chunk with
    `finish_reason`, then (with `stream_options={"include_usage": True}`) a usage chunk. Every
    chunk carries `thread_id`. A run that fails raises its typed error from the iterator.
    Leaving early cancels the run: at once with `aclose()` (or `async with`), else in the
    background as soon as the stream is dropped (say, after `break`).
    """

    def __init__(
        self,
        events: RunStream,
        model: str,
        include_usage: bool,
        memory: ToolCallMemory | None = None,
    ) -> None:
        self._events = events
        self._memory = memory
        self._model = model
        self._include_usage = include_usage
        self._queue: collections.deque[ChatCompletionChunk] = collections.deque()
        self._sent_role = False
        self._done = False
        self._created = int(time.time())
        self._tool_index: dict[int, int] = {}
        # The text part the last text chunk belonged to: (message id, index).
        self._text_part: tuple[str, int] | None = None
        # The chunk envelope, built once per (run id, thread id) rather than once per chunk.
        self._base: dict[str, Any] = {}
        self._base_ids: tuple[str, str | None] | None = None
        # Once the role went out and the run and thread ids are known (a run's ids never
        # change after that), the envelope of every later chunk: a text delta of the same
        # part then becomes its chunk in `__anext__` without a dispatch (`_text_chunk`).
        self._proto: _Envelope | None = None
        self.result: RunResult | None = None

    @property
    def thread_id(self) -> str | None:
        return self._events.thread_id

    def __aiter__(self) -> CompletionStream:
        return self

    async def __aenter__(self) -> CompletionStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop: cancel the run on the service if it is still going, and wait for that."""
        self._done = True
        await self._events.aclose()

    def __del__(self) -> None:
        # Left unfinished (say, by `break` out of `async for`): the run is cancelled in the
        # background, as `aclose()` would, and the client's `aclose()` waits for that. (A mock
        # stream, `mock_response=`, has no run.)
        events = getattr(self, "_events", None)
        if events is not None:
            events._abandon()

    def _chunk(
        self,
        delta: dict[str, Any] | None,
        finish_reason: str | None = None,
        usage: dict[str, Any] | None = None,
    ) -> ChatCompletionChunk:
        ids = (self._events.run_id or "", self._events.thread_id)
        if ids != self._base_ids:
            run_id, thread_id = self._base_ids = ids
            self._base = {
                "id": f"chatcmpl-{run_id}",
                "object": "chat.completion.chunk",
                "created": self._created,
                "model": self._model,
                "choices": None,  # each chunk's own, in this position
                "system_fingerprint": None,
                "thread_id": thread_id,
                "run_id": run_id,
            }
            if run_id and thread_id:
                self._proto = _Envelope(self._base)
        data = self._base.copy()
        # `delta` and `usage` are fresh dicts of this class's: the chunk takes them as they are.
        # Its choice and delta are wrapped now, with `delta` and `content` as plain attributes:
        # `chunk.choices[0].delta.content`, read for every chunk, costs no lookup miss.
        choices: list[_Choice] = []
        if delta is None:
            data["choices"] = []
        else:
            choice_data = {"index": 0, "delta": delta, "finish_reason": finish_reason}
            choice_data["logprobs"] = None
            data["choices"] = [choice_data]
            wrapped = _shared(_Delta, delta)
            wrapped.content = delta.get("content")
            choice = _shared(_Choice, choice_data)
            choice.delta = wrapped
            choices.append(choice)
        if usage is not None:
            data["usage"] = usage
        chunk = _shared(ChatCompletionChunk, data)
        chunk.run_result = None
        chunk._proto = None
        chunk.choices = choices
        return chunk

    def _role_first(self, delta: dict[str, Any]) -> dict[str, Any]:
        if not self._sent_role:
            self._sent_role = True
            return {"role": "assistant", **delta}
        return delta

    async def __anext__(self) -> ChatCompletionChunk:
        queue = self._queue
        while not queue:
            if self._done:
                raise StopAsyncIteration
            try:
                event = await self._events.__anext__()
            except StopAsyncIteration:
                self._done = True
                raise
            except RunIncompleteError as exc:
                # Out of tokens or filtered: the text so far is the answer, with its reason.
                self._done = True
                if isinstance(exc.result, RunResult):
                    self._finish(exc.result)
                    continue
                raise
            # Most of a stream: the next text delta of the same part, after the role went out
            # and the ids are known, is its chunk at once (as `_text_chunk` makes it).
            if type(event) is TextDelta:
                proto = self._proto
                text = event.text
                if (
                    proto is not None
                    and text
                    and (event.message_id, event.index) == self._text_part
                ):
                    delta = _new(_Delta)
                    delta.content = text
                    choice = _new(_Choice)
                    choice.delta = delta
                    chunk = _new(ChatCompletionChunk)
                    chunk._proto = proto
                    chunk.run_result = None
                    chunk.choices = [choice]
                    return chunk
            self._on_event(event)
            # The rest of the events that arrived together, without one `__anext__` each.
            buffered = self._events._buffer
            while buffered and not self._done:
                self._on_event(buffered.popleft())
        return queue.popleft()

    def _on_event(self, event: object) -> None:
        if isinstance(event, TextDelta):
            if event.text:
                text = event.text
                part = (event.message_id, event.index)
                proto = self._proto
                if part == self._text_part and proto is not None:
                    self._queue.append(_text_chunk(proto, text))
                    return
                if self._text_part is not None and part != self._text_part:
                    # A new text part or message: the same separator as the non-streamed text.
                    text = TEXT_PART_SEPARATOR + text
                self._text_part = part
                self._queue.append(self._chunk(self._role_first({"content": text})))
        elif isinstance(event, ToolCallDelta):
            if event.type != "function":
                return  # a built-in tool the service runs itself: reported in `agent_steps`
            index = self._tool_index.setdefault(event.index, len(self._tool_index))
            call: dict[str, Any] = {"index": index}
            if event.id is not None:
                call["id"] = event.id
                call["type"] = "function"
            fn: dict[str, Any] = {"arguments": event.arguments}
            if event.name is not None:
                fn["name"] = event.name
            call["function"] = fn
            self._queue.append(self._chunk(self._role_first({"tool_calls": [call]})))
        elif isinstance(event, RunFinished):
            self._done = True
            self._finish(event.result)
        elif isinstance(event, StateChanged) and not self._sent_role and event.run_id:
            # Tell the client who is speaking (and the thread) as soon as the run exists.
            self._queue.append(self._chunk(self._role_first({"content": ""})))

    def _finish(self, result: RunResult) -> None:
        self.result = result
        if not self._sent_role:
            self._queue.append(self._chunk(self._role_first({"content": ""})))
        if not self._tool_index:
            # Function calls that arrived without deltas (a polled run, a stream finished by
            # polling): one chunk carries them whole, as OpenAI's first tool-call delta would.
            whole = [dict(call, index=i) for i, call in enumerate(_tool_calls_json(result))]
            if whole:
                self._tool_index = {i: i for i in range(len(whole))}
                self._queue.append(self._chunk({"tool_calls": whole}))
        delta: dict[str, Any] = {}
        _agent_extras(result, delta)
        self._queue.append(self._chunk(delta, finish_reason=_finish_reason(result)))
        calls = [c["id"] for c in _tool_calls_json(result)]
        if calls and self._memory is not None:
            self._memory.remember(result.thread_id, calls)
        if self._include_usage:
            self._queue.append(self._chunk(None, usage=_usage_json(result)))


def map_chat(
    *,
    model: str,
    messages: Any,
    thread_id: str | None = None,
    instructions: str | None = None,
    stream_options: Any = None,
    drop_params: bool = False,
    memory: ToolCallMemory | None = None,
    **params: Any,
) -> _Request:
    """A chat request as one invocation's arguments: the one OpenAI -> run mapping (used by
    `acompletion`, `chat`, the proxy and, through `chat`, the batch runner). Raises
    `ConfigurationError`, `BadRequestError` or `UnsupportedParamsError` for what cannot be
    sent; sends nothing."""
    agent = parse_model(model)
    thread_id, instructions, params = _with_extra_body(thread_id, instructions, params)
    req = _map_request(
        messages,
        thread_id=thread_id,
        instructions=instructions,
        drop_params=drop_params,
        stream_options=stream_options,
        params=params,
        memory=memory,
    )
    if "run_id" in req.options and isinstance(route_model(model), ClassicRoute):
        raise ConfigurationError(
            "previous_response_id continues a v2 agent's response (Responses API); classic "
            "agents (asst_...) continue a thread: pass thread_id"
        )
    req.agent = agent
    req.model = model
    return req


async def run_chat(
    client: AsyncClient,
    req: _Request,
    *,
    stream: bool = False,
    timeout: float | None = None,
    mode: Any = None,
    response_model: str | None = None,
) -> ChatCompletion | CompletionStream:
    """Run a request `map_chat` made through `client`: a `ChatCompletion`, or with `stream`
    a `CompletionStream`. `response_model` is the model name to report (default the
    request's)."""
    kwargs: dict[str, Any] = dict(req.options)
    if req.tool_outputs:
        kwargs["tool_outputs"] = req.tool_outputs
    if timeout is not None:
        kwargs["timeout"] = timeout
    name = response_model or req.model
    if stream:
        kwargs.setdefault("mode", mode or "stream")
        events = client.open_stream(req.agent, req.input, thread_id=req.thread_id, **kwargs)
        return CompletionStream(events, name, req.include_usage, client._tool_calls)
    if mode is not None:
        kwargs["mode"] = mode
    try:
        result = await client.run(req.agent, req.input, thread_id=req.thread_id, **kwargs)
    except RunIncompleteError as exc:
        if not isinstance(exc.result, RunResult):
            raise
        result = exc.result
    calls = [c["id"] for c in _tool_calls_json(result)]
    if calls:
        client._tool_calls.remember(result.thread_id, calls)
    return completion_from_result(result, name)


async def chat(
    client: AsyncClient,
    *,
    model: str,
    messages: Any,
    thread_id: str | None = None,
    instructions: str | None = None,
    stream: bool = False,
    stream_options: Any = None,
    timeout: float | None = None,
    drop_params: bool = False,
    mode: Any = None,
    response_model: str | None = None,
    **params: Any,
) -> ChatCompletion | CompletionStream:
    """One chat completion through `client` (the building block of the proxy and the batch
    runner): `map_chat`, then `run_chat`. `response_model` is the model name to report
    (default `model`)."""
    req = map_chat(
        model=model,
        messages=messages,
        thread_id=thread_id,
        instructions=instructions,
        stream_options=stream_options,
        drop_params=drop_params,
        memory=client._tool_calls,
        **params,
    )
    return await run_chat(
        client, req, stream=stream, timeout=timeout, mode=mode, response_model=response_model
    )


# -- the client registry ---------------------------------------------------------------------


class _LoopClients:
    """The shared clients of one event loop, and the parked async generator that closes them
    when the loop shuts its async generators down (`asyncio.run` does, at its end)."""

    def __init__(self) -> None:
        self.clients: dict[ConnectionSettings, AsyncClient] = {}
        self.closer: AsyncGenerator[None, None] | None = None
        # `get_client`'s arguments and environment (`_arguments_key`) -> the client they chose:
        # a call like an earlier one skips building and hashing its `ConnectionSettings`.
        self.by_arguments: dict[tuple[Any, ...], AsyncClient] = {}


class _Registry:
    """One `AsyncClient` per (event loop, endpoint, credentials), shared by module-level calls."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_loop: dict[asyncio.AbstractEventLoop, _LoopClients] = {}

    def get(
        self,
        key: ConnectionSettings,
        make: Callable[[], AsyncClient],
        arguments: tuple[Any, ...] | None = None,
    ) -> AsyncClient:
        loop = asyncio.get_running_loop()
        with self._lock:
            entry = self._by_loop.get(loop)
            if entry is None:
                entry = self._by_loop[loop] = _LoopClients()
            client = entry.clients.get(key)
            if client is None:
                client = entry.clients[key] = make()
            if entry.closer is None:
                entry.closer = self._park_closer(loop)
            if arguments is not None:
                entry.by_arguments[arguments] = client
            return client

    def remembered(self, arguments: tuple[Any, ...]) -> AsyncClient | None:
        """The client that `get` chose for these `get_client` arguments on this loop, if any."""
        entry = self._by_loop.get(asyncio.get_running_loop())
        return None if entry is None else entry.by_arguments.get(arguments)

    def _park_closer(self, loop: asyncio.AbstractEventLoop) -> AsyncGenerator[None, None]:
        async def closer() -> AsyncGenerator[None, None]:
            try:
                yield
            finally:
                await self._close(loop)

        gen = closer()
        # Step it to its `yield` now: that registers it with the running loop, whose
        # shutdown_asyncgens() (asyncio.run, anyio.run) then closes the clients cleanly.
        step = gen.__anext__()
        with contextlib.suppress(StopIteration):
            step.send(None)
        return gen

    def clients_for_current_loop(self) -> list[AsyncClient]:
        with self._lock:
            entry = self._by_loop.get(asyncio.get_running_loop())
            return list(entry.clients.values()) if entry else []

    async def _close(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._lock:
            entry = self._by_loop.pop(loop, None)
        if entry is None:
            return
        errors: list[BaseException] = []
        for client in entry.clients.values():
            try:
                await client.aclose()
            except Exception as exc:  # close every client, then report
                errors.append(exc)
        if errors:
            raise errors[0]

    async def aclose_current_loop(self) -> None:
        loop = asyncio.get_running_loop()
        with self._lock:
            entry = self._by_loop.get(loop)
            closer = entry.closer if entry else None
            if entry is not None:
                entry.closer = None
        await self._close(loop)
        if closer is not None:
            await closer.aclose()  # its finally finds nothing left to close


_REGISTRY = _Registry()


def get_client(
    *,
    api_base: str | None = None,
    api_key: str | None = None,
    tenant_id: str | None = None,
    client_id: str | None = None,
    client_secret: str | None = None,
    api_version: str | None = None,
    credential: Any = None,
    verify: Any = None,
    authority: str | None = None,
    max_retries: int | None = None,
    allow_insecure_http: bool | None = None,
    settings: ConnectionSettings | None = None,
) -> AsyncClient:
    """The shared client of the running event loop for these endpoint and credentials.

    The arguments make a `ConnectionSettings` (or pass `settings=` alone), which is the key
    clients are shared under. Arguments left out come from the environment, as for
    `AsyncClient`; `verify=None` (or True) means a CA bundle named by `SSL_CERT_FILE` or
    `REQUESTS_CA_BUNDLE`, else the system's trust store (it applies to the service and to the
    token endpoint of a service principal). `max_retries` (None: the default policy, 3) is how
    many times one failed request may be retried. An `http://` api_base is refused
    (`ConfigurationError`) unless its host is the loopback or `allow_insecure_http` (env
    `AGENTRUN_ALLOW_INSECURE_HTTP=1`) allows it. Clients are closed by `aclose_clients()`, or
    when the event loop's `asyncio.run` ends.
    """
    if max_retries is not None and (
        isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0
    ):
        raise ConfigurationError(f"max_retries must be a whole number >= 0, got {max_retries!r}")
    arguments: tuple[Any, ...] | None = None
    if settings is None:
        arguments = _arguments_key(
            api_base,
            api_key,
            tenant_id,
            client_id,
            client_secret,
            api_version,
            credential,
            verify,
            authority,
            max_retries,
            allow_insecure_http,
        )
        if arguments is not None:
            client = _REGISTRY.remembered(arguments)
            if client is not None:
                return client
        settings = ConnectionSettings(
            api_base=api_base or None,
            api_key=api_key,
            tenant_id=tenant_id,
            client_id=client_id,
            client_secret=client_secret,
            api_version=api_version or "v1",
            credential=credential,
            verify=True if verify is None else verify,
            authority=authority,
            retry_policy=None if max_retries is None else RetryPolicy(max_attempts=max_retries + 1),
            allow_insecure_http=allow_insecure_http,
        )
    return _REGISTRY.get(settings, lambda: AsyncClient(settings=settings), arguments)


def _arguments_key(
    api_base: Any,
    api_key: Any,
    tenant_id: Any,
    client_id: Any,
    client_secret: Any,
    api_version: Any,
    credential: Any,
    verify: Any,
    authority: Any,
    max_retries: Any,
    allow_insecure_http: Any,
) -> tuple[Any, ...] | None:
    """What `get_client`'s connection arguments and the connection environment variables
    (`environment()`, read at each call: settings are made under the environment of their
    call) choose a client by, as a key; None when an argument is not hashable (no memo).
    Secrets (`api_key`, `client_secret`, the secret variables) are in it as their digests,
    as in `ConnectionSettings`.

    A credential and an `ssl.SSLContext` count by identity, as in `ConnectionSettings` (the
    client's settings hold them, so their ids stay theirs while the key is kept); every value
    counts with its type (`verify=1` is not `verify=True`)."""
    if isinstance(verify, ssl.SSLContext):
        verify = ("ctx", id(verify))
    if isinstance(api_key, str):
        api_key = _digest(api_key)
    if isinstance(client_secret, str):
        client_secret = _digest(client_secret)
    values: tuple[Any, ...] = (api_base, api_key, tenant_id, client_id, client_secret)
    values += (api_version, verify, authority, max_retries, allow_insecure_http)
    key: tuple[Any, ...] = tuple((type(v), v) for v in values)
    env = _env_key(tuple(environment().items()))
    key += (None if credential is None else id(credential), *env)
    try:
        hash(key)
    except TypeError:
        return None
    return key


async def aclose_clients() -> None:
    """Close the shared clients of the running event loop (module-level calls reopen them)."""
    await _REGISTRY.aclose_current_loop()


def module_drop_params() -> bool:
    """LiteLLM's global switch: `agentrun.drop_params = True` (default False)."""
    import agentrun

    return bool(getattr(agentrun, "drop_params", False))


def _check_extra_headers(extra_headers: Any) -> None:
    if extra_headers is None:
        return
    if not isinstance(extra_headers, Mapping):
        raise ConfigurationError("extra_headers must be a mapping of header names to values")
    for name, value in extra_headers.items():
        if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name):
            raise ConfigurationError(f"extra_headers: {name!r} is not a valid header name")
        if not isinstance(value, str) or any(c in value for c in "\r\n\0"):
            raise ConfigurationError(f"extra_headers: the value of {name!r} is not a valid header")


_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,256}")


def _mock_completion(
    content: str, model: str, messages: Any, thread_id: str | None
) -> dict[str, Any]:
    """The JSON of LiteLLM's `mock_response` answer: the given text, nothing sent."""
    return {
        "id": f"chatcmpl-mock-{os.urandom(8).hex()}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": None},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
        "system_fingerprint": None,
        "thread_id": thread_id,
        "run_id": None,
    }


class MockCompletionStream(CompletionStream):
    """The chunks of a `mock_response` with `stream=True`: the role and the text, then
    `finish_reason: stop` (and a usage chunk with `include_usage`). Sends nothing."""

    def __init__(self, data: Mapping[str, Any], include_usage: bool) -> None:
        self._mock: collections.deque[ChatCompletionChunk] = collections.deque()
        self._mock_thread_id = data.get("thread_id")
        base = {k: data[k] for k in ("id", "created", "model", "system_fingerprint", "run_id")}
        base["object"] = "chat.completion.chunk"
        base["thread_id"] = self._mock_thread_id
        text = data["choices"][0]["message"]["content"]
        for delta, finish in (({"role": "assistant", "content": text}, None), ({}, "stop")):
            choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
            self._mock.append(ChatCompletionChunk({**base, "choices": [choice]}))
        if include_usage:
            self._mock.append(ChatCompletionChunk({**base, "choices": [], "usage": data["usage"]}))
        self.result = None

    @property
    def thread_id(self) -> str | None:
        value = self._mock_thread_id
        return value if isinstance(value, str) else None

    async def aclose(self) -> None:
        self._mock.clear()

    async def __anext__(self) -> ChatCompletionChunk:
        if not self._mock:
            raise StopAsyncIteration
        return self._mock.popleft()


async def acompletion(
    model: str,
    messages: Any,
    *,
    temperature: float | None = None,
    top_p: float | None = None,
    max_tokens: int | None = None,
    max_completion_tokens: int | None = None,
    response_format: Any = None,
    tools: Any = None,
    tool_choice: Any = None,
    parallel_tool_calls: bool | None = None,
    metadata: Mapping[str, str] | None = None,
    user: str | None = None,
    stream: bool = False,
    stream_options: Any = None,
    thread_id: str | None = None,
    instructions: str | None = None,
    timeout: float | None = None,
    api_base: str | None = None,
    api_key: str | None = None,
    tenant_id: str | None = None,
    client_id: str | None = None,
    client_secret: str | None = None,
    api_version: str | None = None,
    credential: Any = None,
    authority: str | None = None,
    verify: Any = None,
    ssl_verify: Any = None,
    allow_insecure_http: bool | None = None,
    drop_params: bool | None = None,
    num_retries: int | None = None,
    max_retries: int | None = None,
    extra_headers: Mapping[str, str] | None = None,
    mock_response: Any = None,
    **params: Any,
) -> Any:
    """Call an Azure AI Foundry agent in the OpenAI chat-completions format.

    `model` is `azure_ai/agents/<agent id>`; `messages` a list of OpenAI chat messages.
    Returns a `ChatCompletion`, or with `stream=True` a `CompletionStream` (an async iterator
    of `ChatCompletionChunk`s; `aclose()` it if you stop early).

    OpenAI parameters the service honours: `temperature`, `top_p`, `max_tokens` /
    `max_completion_tokens` (at least 256), `response_format`, `tools`, `tool_choice`,
    `parallel_tool_calls`, `metadata` (the run's metadata: up to 16 string pairs), `stream`,
    `stream_options`; `user` is accepted and not sent (the service has no such field). Others
    raise `UnsupportedParamsError` unless `drop_params` (default: the module attribute
    `agentrun.drop_params`, False) leaves them out.

    Agent: `thread_id` continues a thread (the response's `thread_id` /
    `_hidden_params["thread_id"]`); `instructions` overrides the agent's. `timeout` is the
    whole invocation's deadline in seconds (`APITimeoutError`; the run is cancelled).

    Connection: `api_base` (else env `AZURE_AI_API_BASE`), `api_key` (an Entra ID token) or
    `tenant_id`/`client_id`/`client_secret` or `credential` (azure-identity async credential),
    else the environment; `api_version`; `authority`; `verify` / `ssl_verify` (LiteLLM's name)
    True, False or a CA bundle path; `allow_insecure_http` allows an `http://` api_base on a
    non-loopback host.

    LiteLLM compatibility: `num_retries` / `max_retries` set how many times one failed request
    is retried (only where that cannot duplicate work; never a second run); `extra_headers` is
    checked and accepted but not forwarded (the Agents API takes no caller headers);
    `mock_response` (a string) returns that text as the reply without calling the service, an
    exception instance is raised instead. See docs/openai-format.md.
    """
    openai_params = {
        "temperature": temperature,
        "top_p": top_p,
        "max_tokens": max_tokens,
        "max_completion_tokens": max_completion_tokens,
        "response_format": response_format,
        "tools": tools,
        "tool_choice": tool_choice,
        "parallel_tool_calls": parallel_tool_calls,
        "metadata": metadata,
        "user": user,
    }
    params = {**{k: v for k, v in openai_params.items() if v is not None}, **params}
    if drop_params is None:
        drop_params = module_drop_params()
    if verify is None:
        verify = ssl_verify
    retries = max_retries if max_retries is not None else num_retries
    _check_extra_headers(extra_headers)
    # Validate (and map, once) before anything is opened: a bad call must not cost a connection.
    req = map_chat(
        model=model,
        messages=messages,
        thread_id=thread_id,
        instructions=instructions,
        stream_options=stream_options,
        drop_params=drop_params,
        **params,
    )
    if mock_response is not None:
        if isinstance(mock_response, BaseException):
            raise mock_response
        if not isinstance(mock_response, str):
            raise ConfigurationError("mock_response must be a string or an exception instance")
        data = _mock_completion(mock_response, model, messages, req.thread_id)
        if stream:
            return MockCompletionStream(data, req.include_usage)
        return ChatCompletion(data)
    client = get_client(
        api_base=api_base,
        api_key=api_key,
        tenant_id=tenant_id,
        client_id=client_id,
        client_secret=client_secret,
        api_version=api_version,
        credential=credential,
        verify=verify,
        authority=authority,
        max_retries=retries,
        allow_insecure_http=allow_insecure_http,
    )
    if req.needs_thread:
        # Tool messages without thread_id: their thread is in this client's tool-call memory.
        req = map_chat(
            model=model,
            messages=messages,
            thread_id=thread_id,
            instructions=instructions,
            stream_options=stream_options,
            drop_params=drop_params,
            memory=client._tool_calls,
            **params,
        )
    return await run_chat(client, req, stream=stream, timeout=timeout)
