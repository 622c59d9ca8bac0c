"""`AsyncClient`: the facade of agentrun, holding one transport, token cache and driver context.

It checks what a caller asks for (`run`, `stream`, `open_stream`, `map`), builds the
invocation value, and hands it to the run driver (`agentrun._driver.RunStream`) with the
client's `DriverContext`; `map` fans out through `agentrun._fanout`. Everything about HTTP
lives in `_transport`, everything about one service API behind `_protocol` (the classic API in
`_classic`), every state rule in `_machine`, and the driving of one run in `_driver`.
"""

from __future__ import annotations

import enum
import math
import ssl
from collections.abc import (
    AsyncIterable,
    Iterable,
    Mapping,
    Sequence,
)
from typing import TYPE_CHECKING, Any

import anyio
import attrs

from agentrun import _otel
from agentrun._auth import TokenCache
from agentrun._classic.protocol import ClassicProtocol
from agentrun._driver import CANCEL_GRACE, DriverContext, RunStream
from agentrun._errors import ClientStateError, ConfigurationError
from agentrun._fanout import RunMap
from agentrun._inputs import InputMessage, RunOptions, ToolOutput
from agentrun._options import RunOptions as RunKwargs
from agentrun._protocol import Invocation, Mode
from agentrun._responses import protocol as v2
from agentrun._responses.wire import V2Route, route_agent
from agentrun._results import (
    ClientStatistics,
    RunFinished,
    RunRequest,
    RunResult,
)
from agentrun._retry import RetryPolicy
from agentrun._settings import ConnectionSettings
from agentrun._toolcalls import ToolCallMemory
from agentrun._transport import Transport

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["CANCEL_GRACE", "AsyncClient", "Mode", "RunMap", "RunStream"]


class _Default(enum.Enum):
    """Sentinel for "use the client's setting" where None has a meaning of its own."""

    TOKEN = 0


DEFAULT = _Default.TOKEN
_MODES = ("auto", "stream", "poll")


class AsyncClient:
    """An async client for Azure AI Foundry Agents.

    One client holds one connection pool (`pool_limit` connections, plus one kept for cancels
    so that a run's cancel never waits behind streams) and one token cache, shared
    by every invocation made through it. Use it as `async with AsyncClient(...) as client:` or
    call `aclose()`. Credentials are resolved in this order: `credential`, `api_key`,
    `tenant_id`/`client_id`/`client_secret`, then the environment (`AZURE_TENANT_ID`,
    `AZURE_CLIENT_ID`, `AZURE_CLIENT_SECRET`, then `AZURE_AD_TOKEN`). `api_base` defaults to
    `AZURE_AI_API_BASE`.

    `verify` is True (system trust, or the bundle named by `SSL_CERT_FILE`), a path to a CA
    bundle, an `ssl.SSLContext`, or False to turn certificate verification off (explicitly
    only). A CA path applies to the service and to the service-principal credential agentrun
    builds; an `SSLContext` applies to the service only (azure-identity takes a path), so
    pass a path when the token endpoint needs the same private CA.

    `tracer_provider` / `meter_provider` (OpenTelemetry) receive the invocation spans and
    metrics; by default OpenTelemetry's global providers are used, and with none configured
    nothing is recorded (docs/observability.md).

    `api_base` must be `https://`; `http://` is refused (`ConfigurationError`) except on a
    loopback host (the emulator) or with `allow_insecure_http=True` (env
    `AGENTRUN_ALLOW_INSECURE_HTTP=1`), since the bearer token would travel in clear text.

    The connection arguments (`api_base` to `retry_policy`, `env`, `allow_insecure_http`) make
    a `ConnectionSettings` value, kept as `client.settings`; pass one as `settings=` instead
    (not both: `ConfigurationError`). `mode`, `timeout` and the telemetry providers are the
    client's own.
    """

    def __init__(
        self,
        api_base: str | None = None,
        *,
        settings: ConnectionSettings | None = None,
        credential: Any = None,
        api_key: str | None = None,
        tenant_id: str | None = None,
        client_id: str | None = None,
        client_secret: str | None = None,
        authority: str | None = None,
        api_version: str = "v1",
        verify: bool | str | ssl.SSLContext = True,
        pool_limit: int = 100,
        mode: Mode = "auto",
        timeout: float | None = 600.0,
        retry_policy: RetryPolicy | None = None,
        env: Mapping[str, str] | None = None,
        tracer_provider: Any = None,
        meter_provider: Any = None,
        allow_insecure_http: bool | None = None,
    ) -> None:
        settings = ConnectionSettings.given(
            settings,
            api_base=api_base,
            credential=credential,
            api_key=api_key,
            tenant_id=tenant_id,
            client_id=client_id,
            client_secret=client_secret,
            authority=authority,
            api_version=api_version,
            verify=verify,
            pool_limit=pool_limit,
            retry_policy=retry_policy,
            allow_insecure_http=allow_insecure_http,
            env=env,
        )
        if mode not in _MODES:
            raise ConfigurationError(f"mode must be one of {', '.join(_MODES)}, got {mode!r}")
        _check_timeout(timeout)
        self.settings = settings
        self.api_base = settings.api_base
        self.mode: Mode = mode
        self.timeout = timeout
        self.pool_limit = settings.pool_limit
        self._tokens = TokenCache(settings.token_source())
        self._transport = Transport(
            self.api_base,
            token_cache=self._tokens,
            api_version=settings.api_version,
            limit=settings.pool_limit,
            verify=settings.service_verify,
            retry_policy=settings.retry_policy,
        )
        self._telemetry = _otel.Telemetry(
            self.api_base,
            tracer_provider=tracer_provider,
            meter_provider=meter_provider,
            pool=self._transport,
        )
        # Tool call ids this client handed out -> their thread (OpenAI-format tool messages).
        self._tool_calls = ToolCallMemory()
        # Everything the run driver needs, as one value (it reads nothing else of the client).
        self._ctx = DriverContext(
            transport=self._transport,
            protocol=ClassicProtocol(),
            telemetry=self._telemetry,
            pool_limit=settings.pool_limit,
            # Foundry Agents v2 (the Responses API): agents named `name[:version]`.
            protocols={v2.ResponsesProtocol.name: v2.ResponsesProtocol()},
        )

    def __repr__(self) -> str:
        return f"<AsyncClient {self.api_base} mode={self.mode} pool_limit={self.pool_limit}>"

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool and the token source (if agentrun created it).

        Invocations still running (`run()`, streams, batches from `map()`) are stopped first
        and their runs cancelled on the service (each cleanup bounded by `CANCEL_GRACE`), so
        closing leaves nothing running; those invocations raise `ClientStateError`.
        """
        self._ctx.closing = True
        with anyio.CancelScope(shield=True):
            streams = list(self._ctx.live)
            for stream in streams:
                stream._client_closing()
            for stream in streams:
                await stream._stepped()
            await self._ctx.wait_tasks()
        try:
            await self._transport.aclose()
        finally:
            await self._tokens.aclose()

    def _check_open(self) -> None:
        """Raise `ClientStateError` when the client was closed (a closed client is not reused)."""
        if self._ctx.closing:
            raise ClientStateError(
                "this AsyncClient is closed; create a new one (a client cannot be reopened)"
            )

    # -- public API -----------------------------------------------------------------------

    async def run(
        self,
        agent: str,
        input: str | Sequence[Mapping[str, Any]] = (),
        *,
        thread_id: str | None = None,
        run_id: str | None = None,
        tool_outputs: Mapping[str, str] | Sequence[Mapping[str, str]] | None = None,
        instructions: str | None = None,
        additional_instructions: str | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
        tool_choice: Any = None,
        response_format: Any = None,
        temperature: float | None = None,
        top_p: float | None = None,
        max_prompt_tokens: int | None = None,
        max_completion_tokens: int | None = None,
        truncation_strategy: Mapping[str, Any] | None = None,
        metadata: Mapping[str, str] | None = None,
        parallel_tool_calls: bool | None = None,
        model: str | None = None,
        timeout: float | _Default | None = DEFAULT,
        mode: Mode | None = None,
    ) -> RunResult:
        """Run `agent` on `input` and return its result.

        `input` is a prompt, or a list of `{"role": "user"|"assistant", "content": ...}`
        messages. With `thread_id` the run continues that thread (the input is added to it).
        With `tool_outputs` (a `{tool_call_id: output}` mapping, or a list of
        `{"tool_call_id", "output"}`) the run of `thread_id` that waits in `requires_action`
        (or `run_id`) gets its tool outputs and goes on. With `run_id` and `thread_id` alone
        (no input), the invocation follows that existing run: it polls it to its end and
        returns its result, creating nothing (how a caller resumes a run it lost track of).

        `agent` is a classic agent id (``asst_...``) or a Foundry Agents v2 agent name with an
        optional version (``my-agent``, ``my-agent:3``; the Responses API, docs/v2.md). For a
        v2 agent `thread_id` is a conversation id (``conv_...``), `run_id` with input or tool
        outputs is the ``previous_response_id`` (alone, it follows that response), and the
        options the agent owns (`instructions`, `tools`, `temperature`, ...) raise
        `BadRequestError` before anything is sent.

        `timeout` bounds the whole invocation (seconds; None for no limit; default: the
        client's); it bounds every request, retry delay, poll and wait for a pooled
        connection, and raises `APITimeoutError` when it passes. On a timeout or any
        cancellation (anyio's or plain asyncio's) the remote run is cancelled before the error
        is raised (docs/concepts.md, "Deadlines and cancellation"). Raises a `RunError`
        subclass when the run ends failed, cancelled, expired or incomplete.
        """
        inv = self._invocation(
            agent,
            input,
            thread_id=thread_id,
            run_id=run_id,
            tool_outputs=tool_outputs,
            options=dict(
                instructions=instructions,
                additional_instructions=additional_instructions,
                tools=tools,
                tool_choice=tool_choice,
                response_format=response_format,
                temperature=temperature,
                top_p=top_p,
                max_prompt_tokens=max_prompt_tokens,
                max_completion_tokens=max_completion_tokens,
                truncation_strategy=truncation_strategy,
                metadata=metadata,
                parallel_tool_calls=parallel_tool_calls,
                model=model,
            ),
            timeout=timeout,
            mode=mode,
        )
        self._check_open()
        stream = RunStream(self._ctx, inv, emit=False)
        async with stream:
            async for event in stream:
                if isinstance(event, RunFinished):
                    return event.result
        raise AssertionError("an invocation ended without a result")  # pragma: no cover

    def open_stream(
        self,
        agent: str,
        input: str | Sequence[Mapping[str, Any]] = (),
        **kwargs: Unpack[RunKwargs],
    ) -> RunStream:
        """Like `stream()`, as a plain async iterator: call `aclose()` if you stop early."""
        kwargs.setdefault("mode", "stream")
        self._check_open()
        return RunStream(
            self._ctx, self._invocation(agent, input, **_split_run_kwargs(kwargs)), emit=True
        )

    def stream(
        self,
        agent: str,
        input: str | Sequence[Mapping[str, Any]] = (),
        **kwargs: Unpack[RunKwargs],
    ) -> RunStream:
        """Run like `run()`, yielding events as they arrive.

        ```python
        async with client.stream("asst_abc123", "Hi") as events:
            async for event in events:
                if isinstance(event, agentrun.TextDelta):
                    print(event.text, end="")
        ```

        Events: `StateChanged`, `TextDelta`, `ToolCallDelta`, and last `RunFinished` with the
        result. A run error is raised from the iterator. Leaving the block early cancels the
        remote run. `mode` defaults to "stream" here. The `RunStream` is its own async context
        manager (no wrapper object per call); `open_stream()` is the same stream, to be closed
        with `aclose()` when it is not used as `async with`.
        """
        return self.open_stream(agent, input, **kwargs)

    def map(
        self,
        requests: Iterable[RunRequest | Mapping[str, Any]]
        | AsyncIterable[RunRequest | Mapping[str, Any]],
        *,
        concurrency: int = 100,
    ) -> RunMap:
        """Run many invocations, at most `concurrency` at once; yield each as it finishes.

        ```python
        async with client.map(requests, concurrency=50) as results:
            async for item in results:
                print(item.index, item.result.text if item.ok else item.error)
        ```

        Items are `RunRequest`s or mappings of `run()` arguments (`agent`, `input`, ...),
        from any iterable or async iterable, consumed lazily. Each `MapResult` has its `index`,
        `request`, and a `result` or an `error`: a failed item does not stop the others. The
        `async with` block owns the work (one anyio task group): leaving it (end, `break`,
        error) cancels what is still running, on the service too, and waits for that.
        `async for` directly on `client.map(...)` raises `TypeError`. Raises
        `ConfigurationError` when `concurrency` < 1 and, on entering the block,
        `ClientStateError` when the client is closed.
        """
        if concurrency < 1:
            raise ConfigurationError("concurrency must be at least 1")
        return RunMap(self, requests, concurrency)

    def statistics(self) -> ClientStatistics:
        """Requests, retries, tokens, connections, runs by final state, time per state."""
        t = self._transport.statistics()
        return ClientStatistics(
            requests_sent=t.requests_sent,
            retries=t.retries,
            token_requests=self._tokens.statistics().token_requests,
            connections_opened=t.connections_opened,
            responses_by_status=dict(t.responses_by_status),
            runs_started=self._ctx.started,
            runs_in_flight=self._ctx.in_flight,
            runs_by_state=dict(self._ctx.by_state),
            state_time=self._ctx.state_percentiles(),
        )

    # -- building an invocation -----------------------------------------------------------

    def _invocation(
        self,
        agent: str,
        input: str | Sequence[Mapping[str, Any]],
        *,
        thread_id: str | None = None,
        run_id: str | None = None,
        tool_outputs: Mapping[str, str] | Sequence[Mapping[str, str]] | None = None,
        options: Mapping[str, Any] | None = None,
        timeout: float | _Default | None = DEFAULT,
        mode: Mode | None = None,
    ) -> Invocation:
        if not isinstance(agent, str) or not agent.strip():
            raise ConfigurationError("agent must be a non-empty agent id, e.g. 'asst_abc123'")
        # `asst_...` is a classic agent; `name[:version]` a v2 one (LiteLLM's rule).
        is_v2 = isinstance(route_agent(agent.strip()), V2Route)
        outputs = _tool_outputs(tool_outputs)
        messages = _messages(input)
        if is_v2:
            return self._v2_invocation(
                agent.strip(), messages, outputs, thread_id, run_id, options, timeout, mode
            )
        if outputs:
            if thread_id is None:
                raise ConfigurationError("tool_outputs need the thread_id of the waiting run")
            if messages:
                raise ConfigurationError(
                    "pass either new input or tool_outputs: a run waiting for tool outputs "
                    "cannot take new messages"
                )
        elif run_id is not None:
            if thread_id is None:
                raise ConfigurationError("run_id needs the thread_id of its run")
            if messages:
                raise ConfigurationError(
                    "pass either new input or run_id (to follow a run that exists), not both"
                )
            mode = "poll"  # following a run that exists: there is no request to stream
        elif not messages and thread_id is None:
            raise ConfigurationError("input is empty: give a prompt or at least one message")
        if isinstance(timeout, _Default):
            timeout = self.timeout
        _check_timeout(timeout)
        chosen = self.mode if mode is None else mode
        if chosen not in _MODES:
            raise ConfigurationError(f"mode must be one of {', '.join(_MODES)}, got {chosen!r}")
        return Invocation(
            agent=agent.strip(),
            messages=messages,
            options=_run_options(options),
            thread_id=thread_id,
            run_id=run_id,
            tool_outputs=outputs,
            timeout=timeout,
            mode=chosen,
        )

    def _v2_invocation(
        self,
        agent: str,
        messages: tuple[InputMessage, ...],
        outputs: tuple[ToolOutput, ...],
        thread_id: str | None,
        run_id: str | None,
        options: Mapping[str, Any] | None,
        timeout: float | _Default | None,
        mode: Mode | None,
    ) -> Invocation:
        """A v2 invocation: `thread_id` is a conversation id; `run_id` with input or tool
        outputs is the ``previous_response_id``, and alone it follows that response. Everything
        the Responses API cannot take (agent-owned options, both ids) fails here, before any
        request (docs/v2.md)."""
        if outputs and messages:
            raise ConfigurationError(
                "pass either new input or tool_outputs: tool outputs answer the calls of the "
                "previous response"
            )
        if outputs and thread_id is None and run_id is None:
            raise ConfigurationError(
                "tool_outputs need the thread_id (conversation) or run_id (previous response) "
                "that asked for them"
            )
        if not messages and not outputs:
            if run_id is None:
                raise ConfigurationError("input is empty: give a prompt or at least one message")
            mode = "poll"  # following a response that exists: there is no request to stream
        if isinstance(timeout, _Default):
            timeout = self.timeout
        _check_timeout(timeout)
        chosen = self.mode if mode is None else mode
        if chosen not in _MODES:
            raise ConfigurationError(f"mode must be one of {', '.join(_MODES)}, got {chosen!r}")
        inv = Invocation(
            agent=agent,
            messages=messages,
            options=_run_options(options),
            thread_id=thread_id,
            run_id=run_id,
            tool_outputs=outputs,
            timeout=timeout,
            mode=chosen,
            protocol=v2.ResponsesProtocol.name,
        )
        if messages or outputs:
            v2.invocation_call(inv)  # validates: raises before anything is sent
        return inv


#: The options of an invocation that sets none (most do): one shared value, immutable (issue
#: 15: memory per run in flight).
_NO_OPTIONS = RunOptions()


def _run_options(options: Mapping[str, Any] | None) -> RunOptions:
    """The `RunOptions` of the options given (None values are "not given")."""
    given = {k: v for k, v in (options or {}).items() if v is not None}
    return RunOptions(**given) if given else _NO_OPTIONS


def _check_timeout(timeout: float | None) -> None:
    if timeout is not None and (
        isinstance(timeout, bool)
        or not isinstance(timeout, (int, float))
        or not (timeout > 0 and math.isfinite(timeout))
    ):
        raise ConfigurationError(f"timeout must be a positive number of seconds, got {timeout!r}")


def _messages(input: str | Sequence[Mapping[str, Any]]) -> tuple[InputMessage, ...]:
    if isinstance(input, str):
        if not input.strip():
            return ()
        return (InputMessage(role="user", content=input),)
    if isinstance(input, Mapping):
        raise ConfigurationError("input must be a string or a list of messages, not one mapping")
    out: list[InputMessage] = []
    for i, msg in enumerate(input):
        if not isinstance(msg, Mapping):
            raise ConfigurationError(f"input[{i}] must be a mapping with role and content")
        role = msg.get("role")
        if role not in ("user", "assistant"):
            raise ConfigurationError(
                f"input[{i}] has role {role!r}; the thread takes 'user' and 'assistant' "
                "messages (pass system text as instructions or additional_instructions)"
            )
        if "content" not in msg:
            raise ConfigurationError(f"input[{i}] has no content")
        out.append(InputMessage(role=role, content=msg["content"]))
    return tuple(out)


def _tool_outputs(
    outputs: Mapping[str, str] | Sequence[Mapping[str, str]] | None,
) -> tuple[ToolOutput, ...]:
    if outputs is None:
        return ()
    items: list[ToolOutput] = []
    if isinstance(outputs, Mapping):
        pairs = list(outputs.items())
    else:
        pairs = []
        for i, o in enumerate(outputs):
            if not isinstance(o, Mapping) or "tool_call_id" not in o or "output" not in o:
                raise ConfigurationError(f"tool_outputs[{i}] needs tool_call_id and output")
            pairs.append((o["tool_call_id"], o["output"]))
    for call_id, out in pairs:
        if not isinstance(call_id, str) or not call_id:
            raise ConfigurationError("each tool output needs a non-empty tool_call_id")
        if not isinstance(out, str):
            raise ConfigurationError(f"the output for {call_id} must be a string")
        items.append(ToolOutput(tool_call_id=call_id, output=out))
    if not items:
        raise ConfigurationError("tool_outputs is empty")
    return tuple(items)


_RUN_KWARGS = frozenset(
    {
        "thread_id",
        "run_id",
        "tool_outputs",
        "timeout",
        "mode",
    }
)


def _split_run_kwargs(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """`run()` keyword arguments -> `_invocation()` ones (run options grouped)."""
    out: dict[str, Any] = {k: v for k, v in kwargs.items() if k in _RUN_KWARGS}
    options = {k: v for k, v in kwargs.items() if k not in _RUN_KWARGS}
    unknown = set(options) - set(attrs.fields_dict(RunOptions))
    if unknown:
        raise ConfigurationError(f"unknown argument(s): {', '.join(sorted(unknown))}")
    out["options"] = options
    return out
