"""`AsyncClient`: drives one `RunMachine` per invocation over one transport and token cache.

The machine decides (send this, sleep until then, read the stream, finish); this module only
carries its decisions out with anyio: requests through the shared `Transport`, sleeps, stream
reading, one absolute deadline per invocation (passed to every request it makes, and so to the
retry decisions), and a time-bounded cancel of the remote run when the caller gives up.

Giving up never leaves a run behind. A create that may have reached the service runs in a task
of its own (owned by the client), so that no cancellation of the caller, asyncio's included,
can cut it short before the run id is known; a create still waiting for a pooled connection is
cancelled instead, before anything is sent. The cleanup that cancels the remote run is a
client-owned task too: a repeated native cancel cannot stop it, and `AsyncClient.aclose()`
waits for it. Everything about HTTP lives in `_transport`, everything about JSON in
`_wire`, and every state rule in `_machine`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import logging
import math
import ssl
import time
import weakref
from collections import Counter, deque
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterable,
    Mapping,
    Sequence,
)
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import anyio
import anyio.abc
import attrs
from anyio.streams.memory import MemoryObjectSendStream

from agentrun import _otel
from agentrun import _wire as wire
from agentrun._auth import TokenCache
from agentrun._errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    BadRequestError,
    ClientStateError,
    ConfigurationError,
    RemoteProtocolError,
    RunCancelledError,
    RunError,
    RunExpiredError,
    RunFailedError,
    RunIncompleteError,
)
from agentrun._machine import (
    TERMINAL_STATES,
    Finish,
    Op,
    ReadStream,
    RunMachine,
    Send,
    Sleep,
    State,
)
from agentrun._options import Mode, RunOptions
from agentrun._results import (
    ClientStatistics,
    MapResult,
    RunFinished,
    RunRequest,
    RunResult,
    StateChanged,
    StreamEvent,
    TextDelta,
    ToolCallDelta,
    percentiles,
)
from agentrun._retry import RetryPolicy, request_id_of
from agentrun._schedule import PollSchedule
from agentrun._settings import ConnectionSettings
from agentrun._sse import SSEDecoder
from agentrun._transport import (
    BodyChunks,
    RequestProgress,
    StreamInterruptedError,
    Transport,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["AsyncClient", "Mode", "RunMap", "RunStream"]

logger = logging.getLogger("agentrun")


class _Default(enum.Enum):
    """Sentinel for "use the client's setting" where None has a meaning of its own."""

    TOKEN = 0


DEFAULT = _Default.TOKEN
_MODES = ("auto", "stream", "poll")

_T = TypeVar("_T")

#: How long the cleanup after a cancel or timeout may take: finishing a create that was already
#: sent (so that its run id is known), then cancelling the remote run. The invocation's own
#: requests are bounded by its deadline alone.
CANCEL_GRACE = 10.0
#: Statuses of a poll worth repeating later: the run exists, the service is briefly unwell.
_TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
_STATE_SAMPLES = 10_000
#: Events a caller without an event stream never needs: the reply arrives whole in
#: `thread.message.completed`, so its deltas and the step bookkeeping are not even decoded.
#: (`thread.run.step.completed` is decoded: it holds a step whole, for `RunResult.steps`.)
_QUIET_SKIP = frozenset(
    {
        "thread.message.delta",
        "thread.message.created",
        "thread.message.in_progress",
        "thread.run.step.created",
        "thread.run.step.in_progress",
        "thread.run.step.delta",
    }
)


@attrs.define
class _Invocation:
    agent: str
    messages: tuple[wire.InputMessage, ...]
    options: wire.RunOptions
    thread_id: str | None
    run_id: str | None
    tool_outputs: tuple[wire.ToolOutput, ...]
    timeout: float | None
    mode: Mode
    # Runs on the thread created before this (Unix seconds) are not this invocation's.
    floor: float = attrs.field(factory=lambda: math.floor(time.time()) - 1)


class _Collector:
    """What a run produced, gathered from stream events, polls and message listings."""

    def __init__(self) -> None:
        self.run: wire.Run | None = None
        # In the service's order: first sight in the event stream, or a list's own order
        # (a dict keeps the position of a key's first insertion when it is updated).
        self.messages: dict[str, wire.Message] = {}
        # Messages the run wrote before this invocation (before the tool outputs it submits).
        self.earlier: set[str] = set()
        self.steps: dict[str, wire.RunStep] = {}
        # The type of each tool call of a step, from its first delta (later ones may omit it).
        self.call_types: dict[tuple[str, int], str] = {}
        # Text handed to the caller as deltas, per (message id, content index).
        self.delivered: dict[tuple[str, int], str] = {}
        self.stream_broken = False
        self.requests = 0
        self.pending: list[StateChanged] = []
        self.last_active_at: float | None = None
        self.request_id: str | None = None


class AsyncClient:
    """An async client for Azure AI Foundry Agents.

    One client holds one connection pool (`pool_limit` connections) and one token cache, shared
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
        self._schedules: dict[str, PollSchedule] = {}
        self._in_flight = 0
        self._streams_in_flight = 0
        self._learn_events: dict[str, anyio.Event] = {}
        self._maps: weakref.WeakSet[RunMap] = weakref.WeakSet()
        # Work that must outlive a cancelled caller: creates already sent, and cleanups.
        self._tasks: set[asyncio.Task[Any]] = set()
        self._live: weakref.WeakSet[RunStream] = weakref.WeakSet()
        self._closing = False
        self._started = 0
        self._by_state: Counter[str] = Counter()
        self._state_time: dict[State, deque[float]] = {}

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
        self._closing = True
        for batch in list(self._maps):
            await batch.aclose()
        with anyio.CancelScope(shield=True):
            streams = list(self._live)
            for stream in streams:
                stream._client_closing()
            for stream in streams:
                await stream._stepped()
            while self._tasks:
                await asyncio.wait(set(self._tasks))
        try:
            await self._transport.aclose()
        finally:
            await self._tokens.aclose()

    def _detach(self, coro: Coroutine[Any, Any, _T]) -> asyncio.Task[_T]:
        """Run `coro` in a task the client owns (and `aclose` waits for)."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

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
        stream = RunStream(self, inv, emit=False)
        async with stream:
            async for event in stream:
                if isinstance(event, RunFinished):
                    return event.result
        raise AssertionError("an invocation ended without a result")  # pragma: no cover

    def open_stream(
        self,
        agent: str,
        input: str | Sequence[Mapping[str, Any]] = (),
        **kwargs: Unpack[RunOptions],
    ) -> RunStream:
        """Like `stream()`, as a plain async iterator: call `aclose()` if you stop early."""
        kwargs.setdefault("mode", "stream")
        return RunStream(
            self, self._invocation(agent, input, **_split_run_kwargs(kwargs)), emit=True
        )

    @asynccontextmanager
    async def stream(
        self,
        agent: str,
        input: str | Sequence[Mapping[str, Any]] = (),
        **kwargs: Unpack[RunOptions],
    ) -> AsyncIterator[RunStream]:
        """Run like `run()`, yielding events as they arrive.

        ```python
        async with client.stream("asst_abc123", "Hi") as events:
            async for event in events:
                if isinstance(event, agentrun.TextDelta):
                    print(event.text, end="")
        ```

        Events: `StateChanged`, `TextDelta`, `ToolCallDelta`, and last `RunFinished` with the
        result. A run error is raised from the iterator. Leaving the block early cancels the
        remote run. `mode` defaults to "stream" here.
        """
        stream = self.open_stream(agent, input, **kwargs)
        async with stream:
            yield stream

    def map(
        self,
        requests: Iterable[RunRequest | Mapping[str, Any]]
        | AsyncIterable[RunRequest | Mapping[str, Any]],
        *,
        concurrency: int = 100,
    ) -> RunMap:
        """Run many invocations, at most `concurrency` at once; yield each as it finishes.

        Items are `RunRequest`s or mappings of `run()` arguments (`agent`, `input`, ...),
        from any iterable or async iterable, consumed lazily. A failed item is yielded with
        its `error`; it does not stop the others. Leaving the loop early (or `aclose()`, or
        the end of an `async with client.map(...) as results:` block) cancels what is still
        running, on the service too.
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
            runs_started=self._started,
            runs_in_flight=self._in_flight,
            runs_by_state=dict(self._by_state),
            state_time={s.value: percentiles(list(v)) for s, v in self._state_time.items()},
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
    ) -> _Invocation:
        if not isinstance(agent, str) or not agent.strip():
            raise ConfigurationError("agent must be a non-empty agent id, e.g. 'asst_abc123'")
        outputs = _tool_outputs(tool_outputs)
        messages = _messages(input)
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
        return _Invocation(
            agent=agent.strip(),
            messages=messages,
            options=wire.RunOptions(**{k: v for k, v in (options or {}).items() if v is not None}),
            thread_id=thread_id,
            run_id=run_id,
            tool_outputs=outputs,
            timeout=timeout,
            mode=chosen,
        )

    def _pick_mode(self, mode: Mode) -> Literal["stream", "poll"]:
        if mode != "auto":
            return mode
        # A streamed run holds a pooled connection for its whole life. Streams may take half
        # the pool; beyond that runs are polled, so that creates and polls always find a
        # connection (docs/benchmarks.md has the measurements behind this rule).
        return "stream" if self._streams_in_flight < max(1, self.pool_limit // 2) else "poll"

    def _learned(self, agent: str) -> anyio.Event:
        """An event set when `agent`'s poll schedule changes materially."""
        event = self._learn_events.get(agent)
        if event is None:
            event = self._learn_events[agent] = anyio.Event()
        return event

    def _relearned(self, agent: str) -> None:
        event = self._learn_events.pop(agent, None)
        if event is not None:
            event.set()

    # -- the driver ------------------------------------------------------------------------

    def _begin(self, inv: _Invocation) -> Literal["stream", "poll"]:
        mode = self._pick_mode(inv.mode)
        self._in_flight += 1
        self._started += 1
        if mode == "stream":
            self._streams_in_flight += 1
        return mode

    def _end(self, m: RunMachine | None, mode: str) -> None:
        self._in_flight -= 1
        if mode == "stream":
            self._streams_in_flight -= 1
        if m is None:
            return
        self._by_state[m.state.value] += 1
        for state, seconds in m.durations().items():
            bucket = self._state_time.get(state)
            if bucket is None:
                bucket = self._state_time[state] = deque(maxlen=_STATE_SAMPLES)
            bucket.append(seconds)


class RunMap:
    """The async iterator `AsyncClient.map` returns (also an async context manager).

    The invocations run in a task of their own, started on the first `__anext__`, so the
    caller's loop holds no task group between items: breaking out of `async for` is safe, and
    the iterator cancels the remaining work when it is closed or garbage collected.
    """

    def __init__(
        self,
        client: AsyncClient,
        requests: Iterable[RunRequest | Mapping[str, Any]]
        | AsyncIterable[RunRequest | Mapping[str, Any]],
        concurrency: int,
    ) -> None:
        self._client = client
        self._requests = requests
        self._concurrency = concurrency
        self._send, self._receive = anyio.create_memory_object_stream[MapResult](concurrency)
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def __aiter__(self) -> RunMap:
        return self

    async def __aenter__(self) -> RunMap:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def __anext__(self) -> MapResult:
        if self._closed:
            raise StopAsyncIteration
        if self._task is None:
            # The task must not reference this iterator, or a loop left by `break` would keep
            # it (and its work) alive instead of letting `__del__` stop it.
            self._task = asyncio.get_running_loop().create_task(
                _drive_map(self._client, self._requests, self._concurrency, self._send)
            )
            self._client._maps.add(self)
        try:
            return await self._receive.receive()
        except anyio.EndOfStream:
            task, self._task = self._task, None
            self._closed = True
            self._receive.close()
            await task  # re-raises what stopped the feeding, if anything did
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        """Cancel what is still running (remote runs included) and wait for it."""
        self._closed = True
        self._receive.close()
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with anyio.CancelScope(shield=True), contextlib.suppress(asyncio.CancelledError):
                await task
        elif task is not None and not task.cancelled():
            task.exception()  # retrieved, so asyncio does not report it as never retrieved
        self._send.close()

    def __del__(self) -> None:
        # An iterator left behind by `break`: stop its work (the runs' cleanup still runs).
        task = self._task
        if task is not None and not task.done():
            task.cancel()
        self._receive.close()
        self._send.close()


async def _drive_map(
    client: AsyncClient,
    requests: Iterable[RunRequest | Mapping[str, Any]]
    | AsyncIterable[RunRequest | Mapping[str, Any]],
    concurrency: int,
    send: MemoryObjectSendStream[MapResult],
) -> None:
    """The work behind a `RunMap`: feed the requests, at most `concurrency` at once."""
    limiter = anyio.CapacityLimiter(concurrency)

    async def one(
        index: int, req: RunRequest, token: object, out: anyio.abc.ObjectSendStream[MapResult]
    ) -> None:
        async with out:
            try:
                try:
                    result = await client.run(req.agent, req.input, **req.options)
                except Exception as exc:
                    item = MapResult(index=index, request=req, error=exc)
                else:
                    item = MapResult(index=index, request=req, result=result)
                with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                    await out.send(item)
            finally:
                limiter.release_on_behalf_of(token)

    async with send, anyio.create_task_group() as tg:
        index = 0
        async for raw in _aiter(requests):
            token = object()
            await limiter.acquire_on_behalf_of(token)
            try:
                req = _as_request(raw)
            except Exception as exc:
                limiter.release_on_behalf_of(token)
                bad = RunRequest(agent="", input="", options={}, key=raw)
                await send.send(MapResult(index=index, request=bad, error=exc))
            else:
                tg.start_soon(one, index, req, token, send.clone())
            index += 1


class RunStream:
    """One invocation, driven step by step as its events are consumed.

    An async iterator of `StreamEvent`s ending with `RunFinished` (or raising the run's error),
    and an async context manager whose exit cancels the remote run if the invocation did not
    finish. It holds no task and no cancel scope between events: the invocation's deadline is
    applied around each step, so it can be iterated from any code, like any async iterator.

    Whatever stops it early (an error, the deadline, a cancellation of the caller, `aclose()`,
    the client closing, or the stream being dropped unfinished) cancels the remote run in a
    cleanup task owned by the client; the caller waits for that cleanup unless cancelled again.
    """

    def __init__(self, client: AsyncClient, inv: _Invocation, *, emit: bool) -> None:
        self._client = client
        self._inv = inv
        self._emit = emit
        self._machine: RunMachine | None = None
        self._col = _Collector()
        self._mode: Literal["stream", "poll"] = "poll"
        self._gen: AsyncGenerator[list[StreamEvent], None] | None = None
        self._buffer: collections.deque[StreamEvent] = collections.deque()
        self._deadline = math.inf
        self._done = False
        self._result: RunResult | None = None
        # A create the caller stopped waiting for after it may have been sent.
        self._pending: asyncio.Task[Any] | None = None
        # A streamed create whose reader stopped before the run id arrived.
        self._orphan: tuple[BodyChunks, SSEDecoder] | None = None
        self._cleanup: asyncio.Task[None] | None = None
        self._scope: anyio.CancelScope | None = None
        self._idle: anyio.Event | None = None
        self._closed_by_client = False
        self._obs: _otel.Observer | None = None

    @property
    def thread_id(self) -> str | None:
        return self._machine.thread_id if self._machine else self._inv.thread_id

    @property
    def run_id(self) -> str | None:
        return self._machine.run_id if self._machine else self._inv.run_id

    @property
    def result(self) -> RunResult | None:
        """The result, once `RunFinished` was delivered."""
        return self._result

    def __aiter__(self) -> RunStream:
        return self

    async def __aenter__(self) -> RunStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop: cancel the remote run if it is still going, and wait for that (bounded)."""
        if self._done:
            if self._cleanup is not None and not self._cleanup.done():
                await self._await_cleanup(self._cleanup)
            return
        self._done = True
        await self._stop("cancel")
        self._observed("cancelled")

    def __del__(self) -> None:
        self._abandon()

    def _abandon(self) -> None:
        """The stream was dropped unfinished (say, by `break`): cancel its run in the background."""
        if self._done or self._gen is None:
            return
        self._done = True
        loop = self._client._transport._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._begin_cleanup("abandoned")
        else:
            with contextlib.suppress(RuntimeError):  # the loop stopped meanwhile
                loop.call_soon_threadsafe(self._begin_cleanup, "abandoned")

    def _client_closing(self) -> None:
        """`AsyncClient.aclose()`: stop the current step, or clean up if none is running."""
        self._closed_by_client = True
        if self._scope is not None:
            self._scope.cancel()
        elif not self._done and self._gen is not None:
            self._done = True
            self._begin_cleanup("client closed")

    async def _stepped(self) -> None:
        """Wait until no step runs (after `_client_closing`), then for the cleanup."""
        if self._scope is not None:
            self._idle = self._idle or anyio.Event()
            await self._idle.wait()
        if self._cleanup is not None:
            await asyncio.wait({self._cleanup})

    async def __anext__(self) -> StreamEvent:
        if self._buffer:
            return self._buffer.popleft()
        if self._done:
            raise StopAsyncIteration
        if self._gen is None:
            if self._client._closing:
                self._done = True
                raise ClientStateError("this client is closed; create a new one")
            self._mode = self._client._begin(self._inv)
            self._client._live.add(self)
            inv = self._inv
            self._obs = self._client._telemetry.start(
                inv.agent, self._mode, inv.thread_id, inv.messages, inv.options.model
            )
            self._gen = self._steps()
            if self._inv.timeout is not None:
                self._deadline = anyio.current_time() + self._inv.timeout
        scope = self._scope = anyio.CancelScope(deadline=self._deadline)
        try:
            with scope, _otel.current(self._obs):
                batch = await self._gen.__anext__()
        except BaseException as exc:
            self._step_ended()
            self._done = True
            cancelled = isinstance(exc, anyio.get_cancelled_exc_class())
            await self._stop("cancel" if cancelled else "error")
            if isinstance(exc, APITimeoutError) and anyio.current_time() >= self._deadline:
                self._observed("timeout")
                raise self._timeout_error() from exc
            self._observed(exc)
            raise
        self._step_ended()
        if scope.cancelled_caught:
            self._done = True
            await self._stop("client closed" if self._closed_by_client else "deadline")
            self._observed("cancelled" if self._closed_by_client else "timeout")
            if self._closed_by_client:
                raise ClientStateError(
                    "the client was closed while this invocation was running"
                    + (f"; run {self.run_id} was cancelled" if self.run_id else "")
                )
            raise self._timeout_error()
        if isinstance(batch[-1], RunFinished):
            self._done = True
            self._result = batch[-1].result
            await self._finish_gen()
            self._observed(None)
        self._buffer.extend(batch)
        return self._buffer.popleft()

    def _step_ended(self) -> None:
        self._scope = None
        if self._idle is not None:
            self._idle.set()
            self._idle = None

    def _timeout_error(self) -> APITimeoutError:
        m = self._machine
        cancelled = m is not None and m.run_id is not None and m.state is State.CANCELLED
        return APITimeoutError(
            f"the invocation of {self._inv.agent} did not finish within "
            f"{self._inv.timeout:g} s"
            + (f"; run {m.run_id} was cancelled" if m and cancelled else ""),
            thread_id=m.thread_id if m else None,
            run_id=m.run_id if m else None,
            history=m.history if m else (),
        )

    async def _stop(self, reason: str) -> None:
        """End the invocation early: clean up (in a client task) and wait for it."""
        m = self._machine
        if (m is None or m.finished) and self._pending is None and self._orphan is None:
            await self._finish_gen()  # nothing runs on the service: no task needed
            return
        await self._await_cleanup(self._begin_cleanup(reason))

    @staticmethod
    async def _await_cleanup(task: asyncio.Task[None]) -> None:
        # anyio's shield keeps an anyio cancel from cutting the wait short; a native asyncio
        # cancel does cut it short, but the cleanup task goes on (the client waits for it).
        with anyio.CancelScope(shield=True):
            await asyncio.shield(task)

    def _begin_cleanup(self, reason: str) -> asyncio.Task[None]:
        if self._cleanup is None:
            self._cleanup = self._client._detach(self._clean_up(reason))
        return self._cleanup

    async def _clean_up(self, reason: str) -> None:
        """Finish the steps, learn the run id of a create cut short, cancel the run. Never
        raises; bounded by `CANCEL_GRACE`."""
        try:
            with anyio.move_on_after(CANCEL_GRACE):
                await self._finish_gen()
                await self._adopt(reason)
                await self._cancel_remote(reason)
        except Exception as exc:
            logger.warning("cleanup of run %s failed: %s", self.run_id, exc)
        finally:
            pending, self._pending = self._pending, None
            if pending is not None and not pending.done():
                pending.cancel()
            orphan, self._orphan = self._orphan, None
            if orphan is not None:
                orphan[0].finish()
            if reason == "abandoned":
                self._observed("cancelled")

    async def _adopt(self, reason: str) -> None:
        """Take over what a create cut short produced, until the run id is known."""
        m = self._machine
        pending = self._pending
        if pending is not None:
            await asyncio.wait({pending})
            self._pending = None
            if pending.cancelled() or pending.exception() is not None:
                return
            got = pending.result()
            if isinstance(got, BodyChunks):
                self._orphan = (got, SSEDecoder())
            elif m is not None and not m.finished:
                self._apply_run(wire.parse_run(got), "response")
        if self._orphan is None or m is None:
            return
        body, decoder = self._orphan
        with contextlib.suppress(StreamInterruptedError, APITimeoutError):
            async for chunk in body:
                for sse in decoder.feed(chunk):
                    for ev in wire.parse_stream_event(sse):
                        if m.finished:
                            return
                        if isinstance(ev, wire.RunEvent):
                            self._apply_run(ev.run, "stream")
                        elif isinstance(ev, wire.ThreadCreated):
                            m.thread_created(ev.thread.id, anyio.current_time())
                if m.run_id is not None:
                    return

    def _observed(self, error: BaseException | str | None) -> None:
        """Report the invocation's end to its telemetry observer (once)."""
        obs, self._obs = self._obs, None
        if obs is not None:
            obs.end(self._machine, self._result, error)

    async def _finish_gen(self) -> None:
        gen, self._gen = self._gen, None
        if gen is not None:
            self._client._end(self._machine, self._mode)
            self._client._live.discard(self)
            await gen.aclose()

    # -- the steps ----------------------------------------------------------------------

    async def _steps(self) -> AsyncGenerator[list[StreamEvent], None]:
        inv, col, client = self._inv, self._col, self._client
        schedule = client._schedules.setdefault(inv.agent, PollSchedule())
        if inv.tool_outputs and inv.run_id is None:
            inv.run_id = await self._waiting_run()
        if inv.tool_outputs and inv.thread_id is not None and inv.run_id is not None:
            # The run may have written text before its tool calls; that reply was returned
            # with the calls. Note those messages so this reply holds only what follows.
            col.earlier = await self._run_message_ids(inv.thread_id, inv.run_id)
        start = anyio.current_time()
        m = self._machine = RunMachine(
            mode=self._mode,
            now=start,
            thread_id=inv.thread_id,
            run_id=inv.run_id,
            poll_delay=schedule.delay,
            # /threads/runs takes no additional_instructions: create the thread first then.
            separate_thread=inv.options.additional_instructions is not None,
            attach=inv.run_id is not None and not inv.tool_outputs,
        )
        action: Send | Sleep | ReadStream | Finish = m.start(start)
        while not isinstance(action, Finish):
            if isinstance(action, Sleep):
                # Sleep until the planned poll, unless the agent's schedule learns something
                # first (say, the first run of a batch finished): then re-plan from it.
                learned = client._learned(inv.agent)
                with anyio.move_on_after(action.until - anyio.current_time()):
                    await learned.wait()
                now = anyio.current_time()
                action = m.replan(now) if learned.is_set() and now < action.until else m.timer(now)
            elif isinstance(action, Send) and action.stream:
                async with contextlib.aclosing(self._stream(action)) as items:
                    async for item in items:
                        if isinstance(item, _Next):
                            action = item.action
                        else:
                            yield item
            elif isinstance(action, Send):
                action = await self._send(action)
            else:  # pragma: no cover - the machine only asks for ReadStream while streaming
                raise AssertionError("unexpected ReadStream outside a stream")
            if col.pending:
                yield list(col.pending)
                col.pending.clear()
        state = action.state
        if state in TERMINAL_STATES:
            # The run ended between the last sight of it active and the first sight of it
            # ended. Take the middle when the two are close, but never more than a tenth of
            # the run earlier (after a long sleep the middle says nothing), so that the lag of
            # this poll does not teach the schedule to poll later next time.
            seen_end = m.history[-1].at
            created = _run_created_at(m)
            ended = seen_end
            if col.last_active_at is not None and col.last_active_at < seen_end:
                ended -= min((seen_end - col.last_active_at) / 2, 0.1 * (seen_end - created))
            if schedule.record(ended - created):
                client._relearned(inv.agent)
        if state is State.REQUIRES_ACTION and (self._mode == "poll" or col.stream_broken):
            # Text written before the tool calls belongs to this reply (as in a stream).
            await self._list_messages()
        if (
            (self._mode == "poll" or col.stream_broken)
            and (state in TERMINAL_STATES or state is State.REQUIRES_ACTION)
            and _builtin_tools(col.run)
        ):
            # Not seen in a stream: the built-in tool steps are listed (only for agents that
            # have built-in tools, so that plain runs cost no extra request).
            await self._list_steps()
        result = self._build_result()
        if self._emit and state in (State.COMPLETED, State.REQUIRES_ACTION, State.INCOMPLETE):
            # The whole reply reaches a stream consumer exactly once: what the event stream did
            # not deliver (poll mode, or a stream that broke) follows as deltas now.
            rest = self._undelivered(result)
            if rest:
                yield rest
        if state not in TERMINAL_STATES and state is not State.REQUIRES_ACTION:
            raise APIConnectionError(
                "the event stream broke before the service confirmed the run; it may or may "
                "not have been created",
                thread_id=m.thread_id,
            )
        if state in (State.COMPLETED, State.REQUIRES_ACTION):
            yield [RunFinished(result)]
            return
        raise _run_error(result)

    def _build_result(self) -> RunResult:
        m = self._machine
        assert m is not None
        col = self._col
        run = col.run
        msgs = [msg for mid, msg in col.messages.items() if mid not in col.earlier]
        return RunResult(
            agent_id=self._inv.agent,
            state=m.state,
            thread_id=m.thread_id or "",
            run_id=m.run_id or "",
            messages=tuple(msgs),
            usage=run.usage if run else None,
            tool_calls=run.required_tool_calls if run and m.state is State.REQUIRES_ACTION else (),
            history=tuple(m.history),
            mode=self._mode,
            requests=self._col.requests,
            run=run,
            last_error=run.last_error if run else None,
            incomplete_reason=run.incomplete_reason if run else None,
            request_id=col.request_id,
            steps=tuple(col.steps.values()),
        )

    def _undelivered(self, result: RunResult) -> list[StreamEvent]:
        """Deltas for the reply text the caller has not seen yet, in reply order."""
        out: list[StreamEvent] = []
        for msg in result.messages:
            for index, part in enumerate(msg.content):
                if type(part) is not wire.TextPart or not part.text:
                    continue
                key = (msg.id, index)
                seen = self._col.delivered.get(key, "")
                if part.text.startswith(seen) and len(part.text) > len(seen):
                    self._col.delivered[key] = part.text
                    out.append(TextDelta(part.text[len(seen) :], msg.id, index))
                elif not part.text.startswith(seen):
                    logger.debug("streamed text of message %s differs from its final text", msg.id)
        return out

    async def _request(
        self,
        req: wire.ApiRequest,
        meta: dict[str, str] | None = None,
        *,
        progress: RequestProgress | None = None,
        deadline: float | None = None,
    ) -> Any:
        """One request of the invocation, bounded by its deadline (or by `deadline`)."""
        self._col.requests += 1
        m = self._machine
        if deadline is None and math.isfinite(self._deadline):
            deadline = self._deadline
        return await self._client._transport.request_json(
            req.method,
            req.path,
            params=req.params,
            json=req.json,
            deadline=deadline,
            thread_id=m.thread_id if m else self._inv.thread_id,
            run_id=m.run_id if m else self._inv.run_id,
            meta=meta,
            progress=progress,
        )

    async def _create(self, send: Callable[[RequestProgress], Awaitable[_T]]) -> _T:
        """Send a create in a client-owned task, so that a cancelled caller cannot cut it
        short once it may have reached the service (its run is then cleaned up, not lost).

        A create still waiting for a connection, a token or a retry delay when the caller
        is cancelled is cancelled too: nothing is sent after the cancel.
        """
        progress = RequestProgress()

        async def run() -> _T:
            return await send(progress)

        task = self._client._detach(run())
        self._pending = task
        try:
            result = await asyncio.shield(task)
        except BaseException:
            if not task.done() and not progress.sent:
                task.cancel()  # it has sent nothing: stop it before it does
                self._pending = None
            elif task.done() and (task.cancelled() or task.exception() is not None):
                self._pending = None  # it failed on its own: nothing to adopt
            # Otherwise the cleanup adopts it: waits for its answer, then cancels the run.
            raise
        self._pending = None
        return result

    async def _send(self, action: Send) -> Send | Sleep | ReadStream | Finish:
        m = self._machine
        assert m is not None
        op = action.op
        if op is Op.CREATE_THREAD:
            data = await self._request(wire.create_thread(self._inv.messages))
            seen = len(m.history)
            nxt = m.thread_ready(wire.parse_thread(data).id, anyio.current_time())
            self._note_moves(seen)
            return nxt
        if op in (Op.CREATE_THREAD_AND_RUN, Op.CREATE_RUN, Op.SUBMIT_TOOL_OUTPUTS):
            req = _create_request(self._inv, m, op, stream=False)
            meta: dict[str, str] = {}
            data = await self._create(lambda p: self._request(req, meta, progress=p))
            self._col.request_id = meta.get("request_id")
            return self._apply_run(wire.parse_run(data), "response")
        if op is Op.GET_RUN:
            assert m.thread_id is not None and m.run_id is not None
            try:
                data = await self._request(wire.get_run(m.thread_id, m.run_id))
            except (APIConnectionError, APIStatusError) as exc:
                if isinstance(exc, APIStatusError) and exc.status_code not in _TRANSIENT_STATUSES:
                    raise
                if anyio.current_time() >= self._deadline:
                    raise
                # The run exists and may still finish: poll it again rather than fail the
                # invocation and leave the run unseen. The deadline bounds this.
                logger.debug("poll of run %s failed (%s); polling again", m.run_id, exc)
                return m.poll_failed(anyio.current_time())
            return self._apply_run(wire.parse_run(data), "poll")
        if op is Op.CANCEL_RUN:
            assert m.thread_id is not None and m.run_id is not None
            data = await self._request(wire.cancel_run(m.thread_id, m.run_id))
            return self._apply_run(wire.parse_run(data), "response")
        if op is Op.LIST_MESSAGES:
            await self._list_messages()
            return m.messages_fetched(anyio.current_time())
        if op is Op.FIND_RUN:
            assert m.thread_id is not None
            runs = await self._latest_runs(m.thread_id)
            found = runs[0] if runs else None
            if found is None or (found.created_at < self._inv.floor and not _active(found)):
                raise APIConnectionError(
                    "the event stream broke before the run was created; no run was started",
                    thread_id=m.thread_id,
                )
            return self._apply_run(found, "poll")
        raise AssertionError(f"unhandled op {op}")  # pragma: no cover

    def _apply_run(
        self, run: wire.Run, via: Literal["response", "poll", "stream"]
    ) -> Send | Sleep | ReadStream | Finish:
        m = self._machine
        assert m is not None
        self._col.run = run
        if run.status in _ACTIVE_STATUSES:
            self._col.last_active_at = anyio.current_time()
        seen = len(m.history)
        action = m.run_update(
            run.status, run_id=run.id, thread_id=run.thread_id, now=anyio.current_time(), via=via
        )
        self._note_moves(seen)
        return action

    def _note_moves(self, seen: int) -> None:
        """Log the moves recorded since `seen` history entries, report them to telemetry, and
        queue their events."""
        m = self._machine
        assert m is not None
        for i in range(max(seen, 1), len(m.history)):
            prev, t = m.history[i - 1], m.history[i]
            logger.debug(
                "run %s on thread %s: %s -> %s (%s)",
                m.run_id,
                m.thread_id,
                prev.state.value,
                t.state.value,
                t.cause,
            )
            if self._obs is not None:
                self._obs.state(
                    prev.state.value, t.state.value, t.at, t.cause, m.thread_id, m.run_id
                )
            if self._emit:
                self._col.pending.append(
                    StateChanged(t.state, prev.state, t.at, m.thread_id, m.run_id)
                )

    async def _stream(self, action: Send) -> AsyncGenerator[list[StreamEvent] | _Next, None]:
        m = self._machine
        assert m is not None
        req = _create_request(self._inv, m, action.op, stream=True)
        transport = self._client._transport
        self._col.requests += 1
        decoder = SSEDecoder()
        deadline = self._deadline if math.isfinite(self._deadline) else None

        async def open_stream(progress: RequestProgress) -> BodyChunks:
            context = transport.stream(
                req.method,
                req.path,
                params=req.params,
                json=req.json,
                deadline=deadline,
                thread_id=m.thread_id,
                run_id=m.run_id,
                progress=progress,
            )
            return await context.__aenter__()

        body = await self._create(open_stream)
        if self._col.request_id is None:
            self._col.request_id = request_id_of(body.headers)
        eof = False
        handed_off = False
        try:
            while not eof:
                try:
                    frames = decoder.feed(await body.__anext__())
                except StopAsyncIteration:
                    eof = True
                    frames = decoder.close()
                # The events of one chunk go out together: one resume of this generator
                # (and one deadline scope in `__anext__`) per chunk, not per event.
                batch: list[StreamEvent] = []
                for sse in frames:
                    if not self._emit and sse.event in _QUIET_SKIP:
                        continue
                    for ev in wire.parse_stream_event(sse):
                        nxt = self._on_stream_event(ev)
                        if self._col.pending:
                            batch.extend(self._col.pending)
                            self._col.pending.clear()
                        if isinstance(nxt, ReadStream):
                            if self._emit:
                                out = self._public_delta(ev)
                                if out is not None:
                                    batch.append(out)
                            continue
                        if batch:
                            yield batch
                        if isinstance(ev, wire.StreamDone):
                            await _drain(body)
                        yield _Next(nxt)
                        return
                if batch:
                    yield batch
        except StreamInterruptedError:
            self._col.stream_broken = True
            logger.debug("stream of run %s broke; finishing it by polling", m.run_id)
            yield _Next(m.stream_lost(anyio.current_time()))
            return
        except BaseException:
            if m.run_id is None and not eof and not m.finished:
                # Stopped before the service named the run: the cleanup reads on to learn
                # its id and cancel it.
                self._orphan = (body, decoder)
                handed_off = True
            raise
        finally:
            if not handed_off:
                body.finish()
        yield _Next(m.stream_done(anyio.current_time()))

    def _on_stream_event(self, ev: wire.StreamEvent) -> Send | Sleep | ReadStream | Finish:
        m = self._machine
        assert m is not None
        if isinstance(ev, wire.StepEvent):
            if ev.step is not None and (
                m.run_id is None or ev.raw.get("run_id") in (None, m.run_id)
            ):
                self._col.steps[ev.step_id] = ev.step
            return ReadStream()
        if isinstance(ev, (wire.TextDelta, wire.ToolCallDelta)):
            return ReadStream()
        if isinstance(ev, wire.RunEvent):
            return self._apply_run(ev.run, "stream")
        if isinstance(ev, wire.MessageEvent):
            msg = ev.message
            if msg.role == "assistant" and (m.run_id is None or msg.run_id in (None, m.run_id)):
                self._col.messages[msg.id] = msg
            return ReadStream()
        if isinstance(ev, wire.ThreadCreated):
            seen = len(m.history)
            action = m.thread_created(ev.thread.id, anyio.current_time())
            self._note_moves(seen)
            return action
        if isinstance(ev, wire.StreamDone):
            return m.stream_done(anyio.current_time())
        # An `error` event: the service reports a failure inside the stream; the run's own
        # status (polled next) says what happened to it.
        self._col.stream_broken = True
        logger.debug("stream error event for run %s: %s", m.run_id, ev.code)
        return m.stream_lost(anyio.current_time())

    async def _latest_runs(self, thread_id: str) -> list[wire.Run]:
        return list(
            wire.parse_run_page(await self._request(wire.list_runs(thread_id, limit=1))).data
        )

    async def _waiting_run(self) -> str:
        """The run of the invocation's thread that waits for tool outputs."""
        thread_id = self._inv.thread_id
        assert thread_id is not None
        runs = await self._latest_runs(thread_id)
        if not runs or runs[0].status != "requires_action":
            state = f"its latest run is {runs[0].status}" if runs else "it has no run"
            raise BadRequestError(
                f"thread {thread_id} has no run waiting for tool outputs ({state})",
                thread_id=thread_id,
            )
        return runs[0].id

    async def _list_messages(self) -> None:
        """Collect the run's assistant messages in the list's own order (``order=asc``)."""
        m = self._machine
        assert m is not None and m.thread_id is not None
        async for msg in self._run_messages(m.thread_id, m.run_id):
            if msg.role == "assistant":
                self._col.messages[msg.id] = msg

    async def _run_messages(
        self, thread_id: str, run_id: str | None
    ) -> AsyncIterator[wire.Message]:
        after: str | None = None
        while True:
            req = wire.list_messages(thread_id, run_id=run_id, order="asc", after=after)
            page = wire.parse_message_page(await self._request(req))
            for msg in page.data:
                yield msg
            if not page.has_more or not page.last_id or not page.data:
                return
            after = page.last_id

    async def _list_steps(self) -> None:
        """Collect the run's steps in the list's order; a failure only loses the steps."""
        m = self._machine
        assert m is not None
        if m.thread_id is None or m.run_id is None:
            return
        steps: list[wire.RunStep] = []
        after: str | None = None
        try:
            while True:
                req = wire.list_run_steps(m.thread_id, m.run_id, after=after)
                page = wire.parse_run_step_page(await self._request(req))
                steps.extend(page.data)
                if not page.has_more or not page.last_id or not page.data:
                    break
                after = page.last_id
        except (APIStatusError, RemoteProtocolError) as exc:
            logger.debug("could not list the steps of run %s: %s", m.run_id, exc)
            return
        if self._inv.tool_outputs:
            # As a stream after tool outputs: from the step that made the answered calls on.
            answered = {o.tool_call_id for o in self._inv.tool_outputs}
            start = next(
                (i for i, s in enumerate(steps) if any(c.id in answered for c in s.tool_calls)),
                0,
            )
            steps = steps[start:]
        for step in steps:
            self._col.steps[step.id] = step

    async def _run_message_ids(self, thread_id: str, run_id: str) -> set[str]:
        return {msg.id async for msg in self._run_messages(thread_id, run_id)}

    def _public_delta(self, ev: wire.StreamEvent) -> StreamEvent | None:
        col = self._col
        if isinstance(ev, wire.TextDelta):
            if ev.message_id in col.earlier:
                return None
            key = (ev.message_id, ev.index)
            col.delivered[key] = col.delivered.get(key, "") + ev.text
            return TextDelta(ev.text, ev.message_id, ev.index, ev.annotations)
        if isinstance(ev, wire.ToolCallDelta):
            # Later deltas of a call may omit its type: the first one's holds for the call.
            key = (ev.step_id, ev.index)
            kind = col.call_types.setdefault(key, ev.type or "function")
            return ToolCallDelta(ev.index, ev.id, ev.name, ev.arguments, kind)
        return None

    async def _cancel_remote(self, reason: str) -> None:
        """Cancel the remote run (bounded in time); never raises."""
        m = self._machine
        if m is None or m.finished:
            return
        seen = len(m.history)
        if m.run_id is None or m.thread_id is None:
            m.cancel(anyio.current_time(), reason)
            self._note_moves(seen)
            return
        with anyio.move_on_after(CANCEL_GRACE), _otel.current(self._obs):
            try:
                action = m.cancel(anyio.current_time(), reason)
                self._note_moves(seen)
                if isinstance(action, Send):
                    req = wire.cancel_run(m.thread_id, m.run_id)
                    # The cleanup's own bound, not the invocation's (it may have passed).
                    grace = anyio.current_time() + CANCEL_GRACE
                    data = await self._request(req, deadline=grace)
                    self._apply_run(wire.parse_run(data), "response")
            except BadRequestError:
                # Already terminal on the service: nothing left to cancel.
                pass
            except Exception as exc:
                logger.warning("could not cancel run %s: %s", m.run_id, exc)


@attrs.frozen
class _Next:
    """Internal: the stream reader's next machine action."""

    action: Send | Sleep | ReadStream | Finish


# -- helpers ---------------------------------------------------------------------------------


def _builtin_tools(run: wire.Run | None) -> bool:
    """Whether the run may use a tool the service runs itself (its ``tools`` echo says so)."""
    tools = run.raw.get("tools") if run is not None else None
    return isinstance(tools, list) and any(
        isinstance(t, dict) and t.get("type") != "function" for t in tools
    )


def _check_timeout(timeout: float | None) -> None:
    if timeout is not None and not (timeout > 0 and math.isfinite(timeout)):
        raise ConfigurationError(f"timeout must be a positive number of seconds, got {timeout!r}")


def _messages(input: str | Sequence[Mapping[str, Any]]) -> tuple[wire.InputMessage, ...]:
    if isinstance(input, str):
        if not input.strip():
            return ()
        return (wire.InputMessage(role="user", content=input),)
    if isinstance(input, Mapping):
        raise ConfigurationError("input must be a string or a list of messages, not one mapping")
    out: list[wire.InputMessage] = []
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
        out.append(wire.InputMessage(role=role, content=msg["content"]))
    return tuple(out)


def _tool_outputs(
    outputs: Mapping[str, str] | Sequence[Mapping[str, str]] | None,
) -> tuple[wire.ToolOutput, ...]:
    if outputs is None:
        return ()
    items: list[wire.ToolOutput] = []
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
        items.append(wire.ToolOutput(tool_call_id=call_id, output=out))
    if not items:
        raise ConfigurationError("tool_outputs is empty")
    return tuple(items)


def _create_request(inv: _Invocation, m: RunMachine, op: Op, *, stream: bool) -> wire.ApiRequest:
    if op is Op.CREATE_THREAD_AND_RUN:
        return wire.create_thread_and_run(inv.agent, inv.messages, inv.options, stream=stream)
    assert m.thread_id is not None
    if op is Op.CREATE_RUN:
        # Messages go with the run on a caller's thread; on a thread we just created they
        # were posted with it.
        extra = inv.messages if inv.thread_id is not None else ()
        return wire.create_run(
            m.thread_id, inv.agent, inv.options, additional_messages=extra, stream=stream
        )
    if m.run_id is None:
        raise ConfigurationError("tool_outputs need run_id")  # resolved before driving
    return wire.submit_tool_outputs(m.thread_id, m.run_id, inv.tool_outputs, stream=stream)


_ACTIVE_STATUSES = frozenset({"queued", "in_progress", "requires_action", "cancelling"})


def _active(run: wire.Run) -> bool:
    return run.status in _ACTIVE_STATUSES


def _run_created_at(m: RunMachine) -> float:
    for t in m.history:
        if t.state is State.RUN_QUEUED:
            return t.at
    return m.history[0].at


def _run_error(result: RunResult) -> RunError:
    code = result.last_error.code if result.last_error else None
    message = result.last_error.message if result.last_error else None
    if result.state is State.INCOMPLETE:
        code = result.incomplete_reason or code
    cls: type[RunError] = {
        State.FAILED: RunFailedError,
        State.CANCELLED: RunCancelledError,
        State.EXPIRED: RunExpiredError,
        State.INCOMPLETE: RunIncompleteError,
    }[result.state]
    detail = f": {code}" if code else ""
    if message:
        detail += f" ({message})"
    return cls(
        f"run {result.run_id} on thread {result.thread_id} ended {result.state.value}{detail}",
        status=result.state.value,
        thread_id=result.thread_id,
        run_id=result.run_id,
        code=code,
        error_message=message,
        history=result.history,
        result=result,
    )


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
    unknown = set(options) - set(attrs.fields_dict(wire.RunOptions))
    if unknown:
        raise ConfigurationError(f"unknown argument(s): {', '.join(sorted(unknown))}")
    out["options"] = options
    return out


def _as_request(raw: RunRequest | Mapping[str, Any]) -> RunRequest:
    if isinstance(raw, RunRequest):
        return raw
    if not isinstance(raw, Mapping):
        raise ConfigurationError(f"a request must be a RunRequest or a mapping, got {raw!r}")
    data = dict(raw)
    agent = data.pop("agent", None)
    if not isinstance(agent, str):
        raise ConfigurationError("a request needs an 'agent'")
    inp = data.pop("input", ())
    key = data.pop("key", None)
    return RunRequest(agent=agent, input=inp, options=data, key=key)


async def _aiter(items: Iterable[Any] | AsyncIterable[Any]) -> AsyncIterator[Any]:
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item


async def _drain(chunks: AsyncIterator[bytes]) -> None:
    """Read what is left of a finished stream (normally nothing) so the connection is reused.

    The `done` event was read: the run's outcome is known, so a connection that breaks now
    (reset, deadline) changes nothing.
    """
    with anyio.move_on_after(1.0), contextlib.suppress(StreamInterruptedError, APITimeoutError):
        async for _ in chunks:
            pass


async def _iterate_events(
    receive: anyio.abc.ObjectReceiveStream[StreamEvent | BaseException],
) -> AsyncIterator[StreamEvent]:
    async for item in receive:
        if isinstance(item, BaseException):
            raise item
        yield item
