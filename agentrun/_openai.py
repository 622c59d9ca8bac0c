"""The OpenAI chat-completions format, both ways, and `acompletion`.

In: a chat request (`model="azure_ai/agents/<agent id>"`, `messages`, OpenAI parameters) becomes
one `AsyncClient` invocation. Out: its `RunResult` becomes a `chat.completion` object, and its
stream events become `chat.completion.chunk` objects.

Module-level calls share clients through a registry keyed by event loop, endpoint and
credentials, so their connection pool and token cache are shared across calls.
"""

from __future__ import annotations

import collections
import hashlib
import json
import re
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

from agentrun._client import AsyncClient, RunStream
from agentrun._credentials import default_api_base
from agentrun._errors import BadRequestError, ConfigurationError, RunIncompleteError
from agentrun._machine import State
from agentrun._results import RunFinished, RunResult, StateChanged, TextDelta, ToolCallDelta

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
_AGENT_ID = re.compile(r"^[A-Za-z0-9_\-.:]{1,256}$")

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
}
#: Accepted and ignored: they change nothing the service does.
_HARMLESS = frozenset({"user"})
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
        "extra_headers",
    }
)


def parse_model(model: str) -> str:
    """The agent id in `azure_ai/agents/<agent id>`; raise ConfigurationError otherwise."""
    if not isinstance(model, str):
        raise ConfigurationError(
            f"model must be a string like 'azure_ai/agents/asst_abc123', got {model!r}"
        )
    if not model.startswith(MODEL_PREFIX):
        raise ConfigurationError(
            f"model {model!r} is not an Azure AI Foundry agent: use 'azure_ai/agents/<agent id>', "
            "e.g. 'azure_ai/agents/asst_abc123'"
        )
    agent = model[len(MODEL_PREFIX) :]
    if not _AGENT_ID.match(agent):
        raise ConfigurationError(f"model {model!r} has no valid agent id after 'azure_ai/agents/'")
    return agent


# -- response objects -------------------------------------------------------------------------


class OpenAIObject:
    """A JSON object with attribute and item access (`resp.choices[0].message.content` and
    `resp["choices"]`); `to_dict()` gives the exact JSON."""

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[str, Any]) -> None:
        object.__setattr__(self, "_data", dict(data))

    def __getattr__(self, name: str) -> Any:
        try:
            return _wrap(self._data[name])
        except KeyError:
            raise AttributeError(name) from None

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

    def __init__(self, data: Mapping[str, Any], run_result: RunResult | None = None) -> None:
        super().__init__(data)
        object.__setattr__(self, "run_result", run_result)

    @property
    def _hidden_params(self) -> dict[str, Any]:
        return {"thread_id": self._data.get("thread_id"), "run_id": self._data.get("run_id")}


class ChatCompletionChunk(ChatCompletion):
    """A `chat.completion.chunk`."""

    __slots__ = ()


def _wrap(value: Any) -> Any:
    if isinstance(value, dict):
        return _Obj(value) if "prompt_tokens" not in value else Usage(value)
    if isinstance(value, list):
        return [_wrap(v) for v in value]
    return value


# -- request mapping --------------------------------------------------------------------------


class _Request:
    """A chat request translated into one `AsyncClient` invocation's arguments."""

    def __init__(self) -> None:
        self.input: list[dict[str, Any]] = []
        self.options: dict[str, Any] = {}
        self.tool_outputs: dict[str, str] = {}
        self.thread_id: str | None = None
        self.include_usage = False


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, Mapping) and part.get("type") == "text":
                parts.append(str(part.get("text", "")))
        return "\n".join(parts)
    if content is None:
        return ""
    raise BadRequestError(
        f"message content must be a string or a list of parts, got {type(content).__name__}"
    )


def _map_request(
    messages: Any,
    *,
    thread_id: str | None,
    instructions: str | None,
    drop_params: bool,
    stream_options: Any,
    params: Mapping[str, Any],
) -> _Request:
    if not isinstance(messages, Sequence) or isinstance(messages, (str, bytes)) or not messages:
        raise ConfigurationError("messages must be a non-empty list of chat messages")
    req = _Request()
    req.thread_id = thread_id
    for name, value in params.items():
        if value is None:
            continue
        if name in SUPPORTED_PARAMS:
            req.options[SUPPORTED_PARAMS[name]] = value
        elif name in _HARMLESS or drop_params:
            continue
        else:
            hint = (
                "the Azure AI Agent Service does not support it"
                if name in UNSUPPORTED_PARAMS
                else "it is not a parameter agentrun knows"
            )
            raise BadRequestError(
                f"unsupported parameter {name!r}: {hint}; remove it or pass drop_params=True"
            )
    if req.options.get("tool_choice") == "required":
        if not drop_params:
            raise BadRequestError(
                "tool_choice='required' is not supported by the Azure AI Agent Service; use "
                "'auto', 'none' or a specific function, or pass drop_params=True"
            )
        req.options.pop("tool_choice")
    tokens = req.options.get("max_completion_tokens")
    if isinstance(tokens, int) and tokens < 256:
        if not drop_params:
            raise BadRequestError(
                f"max_tokens={tokens}: the Azure AI Agent Service needs at least 256; raise it "
                "or pass drop_params=True to leave it out"
            )
        req.options.pop("max_completion_tokens")
    if stream_options is not None:
        if not isinstance(stream_options, Mapping):
            raise BadRequestError("stream_options must be an object")
        req.include_usage = bool(stream_options.get("include_usage"))
    if instructions is not None:
        req.options["instructions"] = instructions

    system: list[str] = []
    convo: list[Mapping[str, Any]] = []
    for i, msg in enumerate(messages):
        if not isinstance(msg, Mapping):
            raise ConfigurationError(f"messages[{i}] must be an object with a role")
        role = msg.get("role")
        if role in ("system", "developer"):
            text = _content_text(msg.get("content"))
            if text:
                system.append(text)
        elif role in ("user", "assistant", "tool"):
            convo.append(msg)
        else:
            raise ConfigurationError(
                f"messages[{i}] has role {role!r}; expected system, developer, user, assistant "
                "or tool"
            )
    if system:
        req.options["additional_instructions"] = "\n\n".join(system)

    # With a thread, only what came after the last assistant message is new.
    if thread_id is not None:
        last_assistant = max(
            (i for i, m in enumerate(convo) if m.get("role") == "assistant"), default=-1
        )
        convo = convo[last_assistant + 1 :]
    for i, msg in enumerate(convo):
        role = msg["role"]
        if role == "tool":
            call_id = msg.get("tool_call_id")
            if not isinstance(call_id, str) or not call_id:
                raise ConfigurationError(f"tool message {i} has no tool_call_id")
            req.tool_outputs[call_id] = _content_text(msg.get("content"))
            continue
        content = msg.get("content")
        if role == "assistant" and (content is None or content == ""):
            continue  # an assistant turn that only called tools: nothing to put on a thread
        if content is None:
            raise ConfigurationError(f"a {role} message has no content")
        req.input.append({"role": role, "content": content})
    if req.tool_outputs and req.input:
        raise BadRequestError(
            "tool results and new user messages cannot be sent together: a run waiting for "
            "tool outputs takes no messages; send the tool messages first"
        )
    if not req.input and not req.tool_outputs:
        raise ConfigurationError("messages hold no user message to send")
    return req


# -- tool-call memory: tool messages without a thread_id still find their run ---------------


class _ToolCallMemory:
    """Which thread asked for which tool call ids (bounded, most recent kept)."""

    def __init__(self, size: int = 10_000) -> None:
        self._lock = threading.Lock()
        self._items: collections.OrderedDict[str, str] = collections.OrderedDict()
        self._size = size

    def remember(self, thread_id: str, call_ids: Sequence[str]) -> None:
        with self._lock:
            for call_id in call_ids:
                self._items[call_id] = thread_id
                self._items.move_to_end(call_id)
            while len(self._items) > self._size:
                self._items.popitem(last=False)

    def thread_for(self, call_ids: Sequence[str]) -> str | None:
        with self._lock:
            threads = {self._items.get(c) for c in call_ids}
        if len(threads) == 1:
            return threads.pop()
        return None


_TOOL_CALLS = _ToolCallMemory()


# -- response mapping -------------------------------------------------------------------------


def _annotation(ann: Mapping[str, Any]) -> dict[str, Any]:
    if ann.get("type") == "url_citation" and isinstance(ann.get("url_citation"), Mapping):
        inner = dict(ann["url_citation"])
        inner.setdefault("start_index", ann.get("start_index"))
        inner.setdefault("end_index", ann.get("end_index"))
        return {"type": "url_citation", "url_citation": inner}
    return dict(ann)


def _finish_reason(result: RunResult) -> str:
    if result.state is State.REQUIRES_ACTION:
        return "tool_calls"
    if result.state is State.INCOMPLETE:
        return "content_filter" if result.incomplete_reason == "content_filter" else "length"
    return "stop"


def _tool_calls_json(result: RunResult) -> list[dict[str, Any]]:
    return [
        {
            "id": call.id,
            "type": "function",
            "function": {"name": call.name or "", "arguments": call.arguments},
        }
        for call in result.tool_calls
    ]


def _usage_json(result: RunResult) -> dict[str, int] | None:
    if result.usage is None:
        return None
    u = result.usage
    return {
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.total_tokens,
    }


def _created(result: RunResult) -> int:
    if result.run is not None:
        return int(result.run.raw.get("created_at") or time.time())
    return int(time.time())


def completion_from_result(result: RunResult, model: str) -> ChatCompletion:
    """The `chat.completion` for a finished (or incomplete) run."""
    message: dict[str, Any] = {"role": "assistant", "content": result.text or None}
    tool_calls = _tool_calls_json(result)
    if tool_calls:
        message["tool_calls"] = tool_calls
    annotations = [_annotation(a) for m in result.messages for a in m.annotations]
    if annotations:
        message["annotations"] = annotations
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
    if tool_calls:
        _TOOL_CALLS.remember(result.thread_id, [c["id"] for c in tool_calls])
    return ChatCompletion(data, result)


class CompletionStream:
    """`chat.completion.chunk` objects as the run streams; `async for chunk in stream`.

    The first chunk carries the role, then content and tool-call deltas, then a chunk with
    `finish_reason`, then (with `stream_options={"include_usage": True}`) a usage chunk. Every
    chunk carries `thread_id`. A run that fails raises its typed error from the iterator.
    Leaving early: call `aclose()` (or use `async with`) so the run is cancelled.
    """

    def __init__(self, events: RunStream, model: str, include_usage: bool) -> None:
        self._events = events
        self._model = model
        self._include_usage = include_usage
        self._queue: collections.deque[ChatCompletionChunk] = collections.deque()
        self._sent_role = False
        self._done = False
        self._created = int(time.time())
        self._tool_index: dict[int, int] = {}
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
        self._done = True
        await self._events.aclose()

    def _chunk(
        self,
        delta: Mapping[str, Any] | None,
        finish_reason: str | None = None,
        usage: Mapping[str, Any] | None = None,
    ) -> ChatCompletionChunk:
        run_id = self._events.run_id or ""
        choices: list[dict[str, Any]] = []
        if delta is not None:
            choices.append(
                {"index": 0, "delta": dict(delta), "finish_reason": finish_reason, "logprobs": None}
            )
        data: dict[str, Any] = {
            "id": f"chatcmpl-{run_id}",
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "choices": choices,
            "system_fingerprint": None,
            "thread_id": self._events.thread_id,
            "run_id": run_id,
        }
        if usage is not None:
            data["usage"] = dict(usage)
        return ChatCompletionChunk(data)

    def _role_first(self, delta: dict[str, Any]) -> dict[str, Any]:
        if not self._sent_role:
            self._sent_role = True
            return {"role": "assistant", **delta}
        return delta

    async def __anext__(self) -> ChatCompletionChunk:
        while not self._queue:
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
            self._on_event(event)
        return self._queue.popleft()

    def _on_event(self, event: object) -> None:
        if isinstance(event, TextDelta):
            if event.text:
                self._queue.append(self._chunk(self._role_first({"content": event.text})))
        elif isinstance(event, ToolCallDelta):
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
        delta: dict[str, Any] = {}
        annotations = [_annotation(a) for m in result.messages for a in m.annotations]
        if annotations:
            delta["annotations"] = annotations
        self._queue.append(self._chunk(delta, finish_reason=_finish_reason(result)))
        if result.tool_calls:
            _TOOL_CALLS.remember(result.thread_id, [c.id for c in result.tool_calls])
        if self._include_usage:
            self._queue.append(self._chunk(None, usage=_usage_json(result)))


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
    """One chat completion through `client` (the building block of `acompletion`, the proxy
    and the batch runner). `response_model` is the model name to report (default `model`)."""
    agent = parse_model(model)
    req = _map_request(
        messages,
        thread_id=thread_id,
        instructions=instructions,
        drop_params=drop_params,
        stream_options=stream_options,
        params=params,
    )
    thread = req.thread_id
    if req.tool_outputs and thread is None:
        thread = _TOOL_CALLS.thread_for(list(req.tool_outputs))
        if thread is None:
            raise BadRequestError(
                "tool messages need the thread_id of the run that asked for them (pass "
                "thread_id=, as returned with the tool calls)"
            )
    kwargs: dict[str, Any] = dict(req.options)
    if req.tool_outputs:
        kwargs["tool_outputs"] = req.tool_outputs
    if timeout is not None:
        kwargs["timeout"] = timeout
    name = response_model or model
    if stream:
        kwargs.setdefault("mode", mode or "stream")
        events = client.open_stream(agent, req.input, thread_id=thread, **kwargs)
        return CompletionStream(events, name, req.include_usage)
    if mode is not None:
        kwargs["mode"] = mode
    try:
        result = await client.run(agent, req.input, thread_id=thread, **kwargs)
    except RunIncompleteError as exc:
        if not isinstance(exc.result, RunResult):
            raise
        result = exc.result
    return completion_from_result(result, name)


# -- the client registry ---------------------------------------------------------------------


class _Registry:
    """One `AsyncClient` per (event loop, endpoint, credentials), shared by module-level calls."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_loop: weakref.WeakKeyDictionary[Any, dict[tuple[Any, ...], AsyncClient]] = (
            weakref.WeakKeyDictionary()
        )

    def get(self, key: tuple[Any, ...], make: Any) -> AsyncClient:
        loop = _current_loop()
        with self._lock:
            clients = self._by_loop.setdefault(loop, {})
            client = clients.get(key)
            if client is None:
                client = clients[key] = make()
            return client

    def clients_for_current_loop(self) -> list[AsyncClient]:
        with self._lock:
            return list(self._by_loop.get(_current_loop(), {}).values())

    async def aclose_current_loop(self) -> None:
        loop = _current_loop()
        with self._lock:
            clients = list(self._by_loop.pop(loop, {}).values())
        for client in clients:
            await client.aclose()


def _current_loop() -> Any:
    import asyncio

    return asyncio.get_running_loop()


_REGISTRY = _Registry()


def _secret_key(value: str | None) -> str | None:
    # Key on a digest, so the registry never holds a second copy of a secret in plain text.
    if value is None:
        return None
    return hashlib.sha256(value.encode()).hexdigest()


def get_client(
    *,
    api_base: str | None = None,
    api_key: str | None = None,
    tenant_id: str | None = None,
    client_id: str | None = None,
    client_secret: str | None = None,
    api_version: str | None = None,
    credential: Any = None,
    verify: Any = True,
    authority: str | None = None,
) -> AsyncClient:
    """The shared client of the running event loop for these endpoint and credentials."""
    base = (api_base or default_api_base() or "").rstrip("/")
    key = (
        base,
        _secret_key(api_key),
        tenant_id,
        client_id,
        _secret_key(client_secret),
        api_version or "v1",
        id(credential) if credential is not None else None,
        verify if isinstance(verify, (bool, str)) else id(verify),
        authority,
    )

    def make() -> AsyncClient:
        return AsyncClient(
            base or None,
            api_key=api_key,
            tenant_id=tenant_id,
            client_id=client_id,
            client_secret=client_secret,
            api_version=api_version or "v1",
            credential=credential,
            verify=verify,
            authority=authority,
        )

    return _REGISTRY.get(key, make)


async def aclose_clients() -> None:
    """Close the shared clients of the running event loop (module-level calls reopen them)."""
    await _REGISTRY.aclose_current_loop()


async def acompletion(
    model: str,
    messages: Any,
    *,
    api_base: str | None = None,
    api_key: str | None = None,
    tenant_id: str | None = None,
    client_id: str | None = None,
    client_secret: str | None = None,
    api_version: str | None = None,
    thread_id: str | None = None,
    instructions: str | None = None,
    stream: bool = False,
    stream_options: Any = None,
    timeout: float | None = None,
    drop_params: bool = False,
    **params: Any,
) -> Any:
    """Call an Azure AI Foundry agent in the OpenAI chat-completions format.

    `model` is `azure_ai/agents/<agent id>`. Returns a `ChatCompletion`, or with `stream=True`
    an async iterator of `ChatCompletionChunk`s. `thread_id` continues a thread (the response's
    `thread_id` / `_hidden_params["thread_id"]`); `instructions` overrides the agent's.
    """
    credential = params.pop("credential", None)
    verify = params.pop("verify", True)
    authority = params.pop("authority", None)
    # Validate before anything is opened: a bad call must not cost a connection.
    parse_model(model)
    _map_request(
        messages,
        thread_id=thread_id,
        instructions=instructions,
        drop_params=drop_params,
        stream_options=stream_options,
        params=params,
    )
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
    )
    return await chat(
        client,
        model=model,
        messages=messages,
        thread_id=thread_id,
        instructions=instructions,
        stream=stream,
        stream_options=stream_options,
        timeout=timeout,
        drop_params=drop_params,
        **params,
    )
