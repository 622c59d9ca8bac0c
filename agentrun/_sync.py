"""The sync layer: `Client` and `completion` over one anyio blocking portal.

One asyncio event loop runs in a daemon thread (`agentrun-portal`), started on first use. A
sync call becomes a task on that loop and the calling thread waits for it, so every sync call,
from any thread (even one running an event loop of its own, like a notebook's), shares that
loop's client registry: one connection pool and one token cache per endpoint and credentials.
A call made from the portal's own thread is refused (it would wait for itself). Ctrl-C while
waiting cancels the task, and with it the remote run. At interpreter exit the portal closes
what is still open on it and stops.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import contextlib
import functools
import logging
import ssl
import threading
import time
import warnings
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, Literal, Protocol, TypeVar, overload

import anyio
import anyio.abc
from anyio.from_thread import BlockingPortal

from agentrun import _openai
from agentrun._client import AsyncClient, Mode, RunStream
from agentrun._errors import ClientStateError
from agentrun._openai import ChatCompletion, ChatCompletionChunk, CompletionStream
from agentrun._options import RunOptions
from agentrun._results import ClientStatistics, MapResult, RunRequest, RunResult, StreamEvent
from agentrun._retry import RetryPolicy
from agentrun._settings import ConnectionSettings

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = [
    "Client",
    "MapIterator",
    "SyncCompletionStream",
    "SyncRunStream",
    "completion",
]

logger = logging.getLogger("agentrun")

T = TypeVar("T")
E = TypeVar("E")
E_co = TypeVar("E_co", covariant=True)

#: How often a waiting caller wakes up, so that a signal (Ctrl-C) is delivered on every
#: platform (a lock wait is only interruptible on POSIX).
WAKE_INTERVAL = 0.1
#: How long a caller interrupted by Ctrl-C waits for its task's cleanup (the remote cancel).
CANCEL_WAIT = 10.0
#: How long interpreter exit may spend closing what is still open on the portal.
EXIT_WAIT = 15.0

_FROM_PORTAL = (
    "a sync agentrun call was made from the thread of agentrun's event loop portal (inside a "
    "coroutine or callback running on it); it would wait for itself forever. Use the async API "
    "(await agentrun.acompletion / AsyncClient) there"
)


class _End:
    """Marks the end of an async iteration that crossed the portal."""


_END = _End()


# -- the portal ----------------------------------------------------------------------------


class _Runner:
    """Runs coroutine functions on a blocking portal for a waiting sync caller."""

    def _portal(self) -> BlockingPortal:
        raise NotImplementedError  # pragma: no cover

    def _check_thread(self) -> None:
        """Refuse a call from the portal's own thread (where it would deadlock)."""

    def start(
        self, func: Callable[[], Awaitable[T]]
    ) -> tuple[concurrent.futures.Future[T], threading.Event]:
        """Start `func()` as a portal task; return its future and an event set when it ends.

        The future resolves as soon as the task is cancelled; the event says when its cleanup
        (a shielded remote cancel) is over.
        """
        self._check_thread()
        portal = self._portal()
        ended = threading.Event()

        async def task() -> T:
            try:
                return await func()
            finally:
                ended.set()
                self._forget(ended)

        try:
            future = portal.start_task_soon(task)
        except RuntimeError as exc:
            # anyio refuses the portal's own thread and a stopped portal with RuntimeError.
            raise ClientStateError(f"cannot run on agentrun's event loop portal: {exc}") from exc
        self._remember(future, ended)
        return future, ended

    def _remember(self, future: concurrent.futures.Future[Any], ended: threading.Event) -> None:
        """Note a call in flight (the shared portal cancels those at exit)."""

    def _forget(self, ended: threading.Event) -> None:
        """Forget a call that ended."""

    def start_if_running(self, func: Callable[[], Awaitable[Any]]) -> None:
        """Start `func()` without waiting, if the portal runs (for finalizers: never raises,
        never starts a portal)."""
        with contextlib.suppress(Exception):
            if self._running():
                self.start(func)

    def _running(self) -> bool:
        return True

    def run(self, func: Callable[[], Awaitable[T]]) -> T:
        """Run `func()` on the portal and wait for its result; its exceptions propagate."""
        future, ended = self.start(func)
        return _wait(future, ended)


def _wait(future: concurrent.futures.Future[T], ended: threading.Event) -> T:
    """Wait for a portal task; on Ctrl-C cancel it, give its cleanup a bounded time, re-raise."""
    try:
        if threading.current_thread() is threading.main_thread():
            # Only the main thread gets Ctrl-C; it wakes up now and then so the signal is
            # delivered on every platform.
            while not future.done():
                concurrent.futures.wait((future,), timeout=WAKE_INTERVAL)
        else:
            # Worker threads (a thread pool of callers) just block: a thousand of them waking
            # ten times a second would burn the CPU the portal needs.
            concurrent.futures.wait((future,))
    except BaseException:
        # KeyboardInterrupt (or another asynchronous exception) in this thread: cancelling the
        # future cancels the task, whose cleanup cancels the remote run.
        future.cancel()
        ended.wait(CANCEL_WAIT)
        raise
    try:
        return future.result()
    except concurrent.futures.CancelledError:
        raise ClientStateError(
            "the call was cancelled because agentrun's event loop portal was stopped "
            "(the interpreter is exiting)"
        ) from None


class _SharedPortal(_Runner):
    """The process-wide portal: an event loop in a daemon thread, started on first use."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._blocking: BlockingPortal | None = None
        self._thread: threading.Thread | None = None
        self._ident: int | None = None
        self._exiting = False
        self._atexit = False
        # What sync users opened and may not close: closed at exit so nothing leaks.
        self.closeables: weakref.WeakSet[_Closeable] = weakref.WeakSet()
        # Calls in flight, by their `ended` event.
        self._calls: dict[threading.Event, concurrent.futures.Future[Any]] = {}

    @property
    def thread(self) -> threading.Thread | None:
        """The portal's thread, while it runs."""
        return self._thread

    def _running(self) -> bool:
        return self._blocking is not None and not self.in_portal_thread()

    def _remember(self, future: concurrent.futures.Future[Any], ended: threading.Event) -> None:
        with self._lock:
            self._calls[ended] = future
        if ended.is_set():  # it ended before it was noted
            self._forget(ended)

    def _forget(self, ended: threading.Event) -> None:
        with self._lock:
            self._calls.pop(ended, None)

    def in_portal_thread(self) -> bool:
        return self._ident is not None and threading.get_ident() == self._ident

    def _check_thread(self) -> None:
        if self.in_portal_thread():
            raise ClientStateError(_FROM_PORTAL)

    def _portal(self) -> BlockingPortal:
        portal = self._blocking
        if portal is not None:
            return portal
        with self._lock:
            if self._blocking is None:
                if self._exiting:
                    raise ClientStateError(
                        "agentrun's sync layer is stopped: the interpreter is exiting"
                    )
                self._start()
            assert self._blocking is not None
            return self._blocking

    def _start(self) -> None:
        ready: concurrent.futures.Future[BlockingPortal] = concurrent.futures.Future()

        async def serve() -> None:
            async with BlockingPortal() as portal:
                ready.set_result(portal)
                await portal.sleep_until_stopped()

        def main() -> None:
            try:
                anyio.run(serve, backend="asyncio")
            except BaseException as exc:
                if ready.done():
                    raise
                ready.set_exception(exc)

        # A daemon thread: a non-daemon one would be joined before atexit handlers run, so
        # the interpreter would wait forever for a loop that only the atexit handler stops.
        # (This is why anyio's `start_blocking_portal` is not used: it runs the loop in a
        # `ThreadPoolExecutor` worker, which is not a daemon and is joined at that point.)
        thread = threading.Thread(target=main, name="agentrun-portal", daemon=True)
        thread.start()
        portal = ready.result()
        self._thread, self._ident, self._blocking = thread, thread.ident, portal
        if not self._atexit:
            self._atexit = True
            atexit.register(self._at_exit)

    def track(self, item: _Closeable) -> None:
        self.closeables.add(item)

    def stop(self, timeout: float = EXIT_WAIT) -> None:
        """Close what is open on the portal (bounded by `timeout`), then stop its loop.

        A later sync call starts a new portal (unless the interpreter is exiting).
        """
        self._check_thread()
        with self._lock:
            portal, thread = self._blocking, self._thread
            self._blocking = self._thread = None
        if portal is None or thread is None:
            return
        deadline = time.monotonic() + timeout
        try:
            # Calls still in flight (from daemon threads) are cancelled first, while their
            # clients are open, so that their remote runs get cancelled too.
            with self._lock:
                calls = list(self._calls.items())
            for _ended, call in calls:
                call.cancel()
            for ended, _call in calls:
                ended.wait(max(0.0, deadline - time.monotonic()))
            future = portal.start_task_soon(self._close_all, deadline)
            concurrent.futures.wait((future,), timeout=max(0.0, deadline - time.monotonic()))
            if future.done() and not future.cancelled() and future.exception() is not None:
                logger.debug("closing agentrun's sync clients failed: %r", future.exception())
        finally:
            # Whatever is still running (a call from a daemon thread) is cancelled now.
            with contextlib.suppress(Exception):
                portal.start_task_soon(portal.stop, True).result(timeout=5.0)
            thread.join(max(1.0, deadline - time.monotonic()))
            self._ident = None

    async def _close_all(self, deadline: float) -> None:
        with anyio.move_on_after(max(0.0, deadline - time.monotonic())):
            items = list(self.closeables)
            # Streams first (their remote runs get cancelled), then the clients they use.
            items.sort(key=lambda item: isinstance(item, Client))
            for item in items:
                try:
                    await item._aclose_at_exit()
                except Exception as exc:
                    logger.debug("closing %r at exit failed: %r", item, exc)
            await _openai.aclose_clients()

    def _at_exit(self) -> None:
        self._exiting = True
        try:
            self.stop()
        except Exception as exc:  # an atexit handler must not raise
            logger.debug("stopping agentrun's portal failed: %r", exc)


class _ExternalPortal(_Runner):
    """A portal the caller runs (`Client(portal=...)`)."""

    def __init__(self, portal: BlockingPortal) -> None:
        self._blocking = portal

    def _portal(self) -> BlockingPortal:
        return self._blocking


_PORTAL = _SharedPortal()


class _Closeable(Protocol):
    async def _aclose_at_exit(self) -> None: ...


# -- sync iterators ------------------------------------------------------------------------


class _AsyncSource(Protocol[E_co]):
    def __anext__(self) -> Awaitable[E_co]: ...

    async def aclose(self) -> None: ...

    @property
    def thread_id(self) -> str | None: ...

    @property
    def result(self) -> RunResult | None: ...


class _SyncStream(Generic[E]):
    """A sync iterator over an async one that lives on the portal: one portal call per item,
    so each item is handed over as soon as it arrives. `close()` (or leaving the `with`
    block) stops the run early and cancels it remotely."""

    def __init__(self, runner: _Runner, source: _AsyncSource[E]) -> None:
        self._runner = runner
        self._source = source
        self._finished = False  # the source ended (or failed): nothing left to cancel
        self._closed = False
        if isinstance(runner, _SharedPortal):
            runner.track(self)

    def __iter__(self) -> _SyncStream[E]:
        return self

    @property
    def thread_id(self) -> str | None:
        """The run's thread, as soon as the service has said it."""
        return self._source.thread_id

    @property
    def result(self) -> RunResult | None:
        """The run's result, once the stream is finished."""
        return self._source.result

    def __enter__(self) -> _SyncStream[E]:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def _next(self) -> E | _End:
        try:
            return await self._source.__anext__()
        except StopAsyncIteration:
            return _END

    def __next__(self) -> E:
        if self._closed or self._finished:
            raise StopIteration
        try:
            item = self._runner.run(self._next)
        except BaseException:
            # A run error, or Ctrl-C (the task was cancelled, and the remote run with it).
            self._finished = True
            raise
        if isinstance(item, _End):
            self._finished = True
            raise StopIteration
        return item

    def close(self) -> None:
        """Stop early: cancel the remote run if it is still going. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if not self._finished:
            self._finished = True
            self._runner.run(self._source.aclose)

    async def _aclose_at_exit(self) -> None:
        if not self._closed:
            self._closed = self._finished = True
            await self._source.aclose()

    def __del__(self) -> None:
        if getattr(self, "_closed", True) or getattr(self, "_finished", True):
            return
        warnings.warn(
            f"{type(self).__name__} was never closed; its run is being cancelled. Use "
            "`with` or call close()",
            ResourceWarning,
            stacklevel=2,
        )
        self._closed = True
        self._runner.start_if_running(self._source.aclose)


class SyncCompletionStream(_SyncStream[ChatCompletionChunk]):
    """The `chat.completion.chunk`s of `completion(..., stream=True)`, as they arrive.

    ```python
    with agentrun.completion(model=..., messages=..., stream=True) as chunks:
        for chunk in chunks:
            print(chunk.choices[0].delta.content or "", end="")
    ```
    A run that fails raises its typed error from the iterator. Leaving early (`close()`, the
    end of the `with` block) cancels the run.
    """

    def __init__(self, runner: _Runner, stream: CompletionStream) -> None:
        super().__init__(runner, stream)

    def __enter__(self) -> SyncCompletionStream:
        return self


class SyncRunStream(_SyncStream[StreamEvent]):
    """The events of `Client.stream(...)`: `StateChanged`, `TextDelta`, `ToolCallDelta`, and
    last `RunFinished`; a run error is raised from the iterator."""

    def __init__(self, runner: _Runner, stream: RunStream) -> None:
        super().__init__(runner, stream)
        self._stream = stream

    @property
    def run_id(self) -> str | None:
        return self._stream.run_id

    def __enter__(self) -> SyncRunStream:
        return self


class MapIterator:
    """The results of `Client.map(...)`, each as it finishes (a sync iterator).

    The batch runs in one task on the portal, started by the first `next()`; `close()` (or
    leaving the `with` block) cancels what is still running, remote runs included.
    """

    def __init__(
        self,
        runner: _Runner,
        client: AsyncClient,
        requests: Iterable[RunRequest | Mapping[str, Any]],
        concurrency: int,
    ) -> None:
        self._runner = runner
        self._client = client
        self._requests = requests
        self._concurrency = concurrency
        self._receive: anyio.abc.ObjectReceiveStream[MapResult] | None = None
        self._producer: tuple[concurrent.futures.Future[None], threading.Event] | None = None
        self._finished = False
        self._closed = False
        if isinstance(runner, _SharedPortal):
            runner.track(self)

    def __iter__(self) -> MapIterator:
        return self

    def __enter__(self) -> MapIterator:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def _produce(self, send: anyio.abc.ObjectSendStream[MapResult]) -> None:
        # The batch's task group lives in this task: cancelling it (close, Ctrl-C) cancels the
        # runs, and leaving the block waits for their (bounded, shielded) remote cancels.
        batch = self._client.map(_pull(self._requests), concurrency=self._concurrency)
        async with send, batch as results:
            async for item in results:
                await send.send(item)

    def _start(self) -> None:
        send, receive = anyio.create_memory_object_stream[MapResult]()
        self._receive = receive
        self._producer = self._runner.start(functools.partial(self._produce, send))

    async def _next(self) -> MapResult | _End:
        assert self._receive is not None
        try:
            return await self._receive.receive()
        except anyio.EndOfStream:
            await self._receive.aclose()
            return _END

    def __next__(self) -> MapResult:
        if self._closed or self._finished:
            raise StopIteration
        if self._producer is None:
            self._start()
        try:
            item = self._runner.run(self._next)
        except BaseException:
            self._stop()
            raise
        if isinstance(item, _End):
            self._finished = True
            assert self._producer is not None
            _wait(*self._producer)  # raises what stopped the batch, if anything did
            raise StopIteration
        return item

    def _stop(self) -> None:
        self._finished = True
        if self._producer is not None:
            future, ended = self._producer
            future.cancel()
            ended.wait(CANCEL_WAIT)
        if self._receive is not None:
            self._runner.start_if_running(self._receive.aclose)

    def close(self) -> None:
        """Cancel what is still running (remote runs included). Idempotent."""
        if self._closed:
            return
        self._closed = True
        if not self._finished:
            self._stop()

    async def _aclose_at_exit(self) -> None:
        # The portal stop cancels the producer task; nothing to do here.
        self._closed = self._finished = True


async def _pull(items: Iterable[Any]) -> AsyncIterator[Any]:
    """Feed a batch's requests to the portal loop.

    A list is read directly; any other iterable (a generator reading a file, say) is advanced
    in a worker thread, so that slow or blocking user code never stalls the shared loop.
    """
    if isinstance(items, (list, tuple)):
        for item in items:
            yield item
        return
    iterator = iter(items)
    end = object()
    while True:
        item = await anyio.to_thread.run_sync(next, iterator, end)
        if item is end:
            return
        yield item


# -- Client --------------------------------------------------------------------------------


class Client:
    """A sync client for Azure AI Foundry Agents: `AsyncClient` run on agentrun's portal.

    Same arguments and methods as `AsyncClient` (`run`, `stream`, `map`, `statistics`), plus
    `close()` and `with Client(...) as client:`. The `AsyncClient` is created on the portal's
    event loop and used only there, so one `Client` can be shared by many threads. Pass
    `portal=` (an `anyio.from_thread.BlockingPortal` you run) to use your own event loop
    thread instead of agentrun's shared one. `settings=` (a `ConnectionSettings`) replaces the
    connection arguments, as for `AsyncClient`; `client.settings` is the value in use.
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
        portal: BlockingPortal | None = None,
        tracer_provider: Any = None,
        meter_provider: Any = None,
        allow_insecure_http: bool | None = None,
    ) -> None:
        self._closed = True  # until the AsyncClient exists (for __del__)
        self._runner: _Runner = _PORTAL if portal is None else _ExternalPortal(portal)

        async def make() -> AsyncClient:
            return AsyncClient(
                api_base,
                settings=settings,
                credential=credential,
                api_key=api_key,
                tenant_id=tenant_id,
                client_id=client_id,
                client_secret=client_secret,
                authority=authority,
                api_version=api_version,
                verify=verify,
                pool_limit=pool_limit,
                mode=mode,
                timeout=timeout,
                retry_policy=retry_policy,
                env=env,
                tracer_provider=tracer_provider,
                meter_provider=meter_provider,
                allow_insecure_http=allow_insecure_http,
            )

        self._async = self._runner.run(make)
        self._closed = False
        if isinstance(self._runner, _SharedPortal):
            self._runner.track(self)

    @property
    def api_base(self) -> str:
        return self._async.api_base

    @property
    def settings(self) -> ConnectionSettings:
        """The connection settings in use (`AsyncClient.settings`)."""
        return self._async.settings

    @property
    def async_client(self) -> AsyncClient:
        """The `AsyncClient` underneath; use it only from coroutines run on the same portal."""
        return self._async

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<Client {self._async.api_base} mode={self._async.mode} {state}>"

    def __enter__(self) -> Client:
        self._check_open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise ClientStateError("this Client is closed; create a new one")

    def run(
        self,
        agent: str,
        input: str | Sequence[Mapping[str, Any]] = (),
        **kwargs: Unpack[RunOptions],
    ) -> RunResult:
        """Run `agent` on `input` and return its `RunResult` (see `AsyncClient.run` for the
        keyword arguments). Ctrl-C cancels the remote run, then raises KeyboardInterrupt."""
        self._check_open()
        return self._runner.run(functools.partial(self._async.run, agent, input, **kwargs))

    def stream(
        self,
        agent: str,
        input: str | Sequence[Mapping[str, Any]] = (),
        **kwargs: Unpack[RunOptions],
    ) -> SyncRunStream:
        """Run like `run()`, yielding events as they arrive:

        ```python
        with client.stream("asst_abc123", "Hi") as events:
            for event in events:
                if isinstance(event, agentrun.TextDelta):
                    print(event.text, end="")
        ```
        Leaving the block early cancels the remote run. `mode` defaults to "stream".
        """
        self._check_open()
        client = self._async

        async def open_stream() -> RunStream:
            return client.open_stream(agent, input, **kwargs)

        return SyncRunStream(self._runner, self._runner.run(open_stream))

    def map(
        self, requests: Iterable[RunRequest | Mapping[str, Any]], *, concurrency: int = 100
    ) -> MapIterator:
        """Run many invocations, at most `concurrency` at once; iterate over the `MapResult`s
        as they finish. A failed item carries its `error`. Close the iterator (or use `with`)
        to cancel what is still running when you stop early."""
        self._check_open()
        return MapIterator(self._runner, self._async, requests, concurrency)

    def statistics(self) -> ClientStatistics:
        """Requests, retries, tokens, connections, runs by state (also after `close()`)."""
        client = self._async

        async def read() -> ClientStatistics:
            return client.statistics()

        if isinstance(self._runner, _SharedPortal) and self._runner.thread is None:
            return client.statistics()  # the portal is gone: nothing changes these any more
        return self._runner.run(read)

    def close(self) -> None:
        """Close the connection pool and the token source. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._runner.run(self._async.aclose)

    async def _aclose_at_exit(self) -> None:
        if not self._closed:
            self._closed = True
            await self._async.aclose()

    def __del__(self) -> None:
        if getattr(self, "_closed", True):
            return
        warnings.warn(
            "agentrun.Client was never closed; use `with Client(...)` or call close()",
            ResourceWarning,
            stacklevel=2,
        )
        self._closed = True
        self._runner.start_if_running(self._async.aclose)


# -- completion ----------------------------------------------------------------------------


@overload
def completion(
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
    stream: Literal[False] = False,
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
) -> ChatCompletion: ...


@overload
def completion(
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
    stream: Literal[True],
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
) -> SyncCompletionStream: ...


@overload
def completion(
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
    stream: bool,
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
) -> ChatCompletion | SyncCompletionStream: ...


def completion(
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
) -> ChatCompletion | SyncCompletionStream:
    """Call an Azure AI Foundry agent in the OpenAI chat-completions format (sync).

    Takes the arguments of `acompletion` (see there, or docs/sync.md) and runs it on
    agentrun's portal. Returns a `ChatCompletion`, or with `stream=True` a
    `SyncCompletionStream` of chunks as they arrive (close it, or use `with`, if you stop
    early). Ctrl-C cancels the remote run.
    """
    kwargs: dict[str, Any] = dict(
        temperature=temperature,
        top_p=top_p,
        max_tokens=max_tokens,
        max_completion_tokens=max_completion_tokens,
        response_format=response_format,
        tools=tools,
        tool_choice=tool_choice,
        parallel_tool_calls=parallel_tool_calls,
        metadata=metadata,
        user=user,
        stream_options=stream_options,
        thread_id=thread_id,
        instructions=instructions,
        timeout=timeout,
        api_base=api_base,
        api_key=api_key,
        tenant_id=tenant_id,
        client_id=client_id,
        client_secret=client_secret,
        api_version=api_version,
        credential=credential,
        authority=authority,
        verify=verify,
        ssl_verify=ssl_verify,
        allow_insecure_http=allow_insecure_http,
        drop_params=drop_params,
        num_retries=num_retries,
        max_retries=max_retries,
        extra_headers=extra_headers,
        mock_response=mock_response,
        **params,
    )
    result = _PORTAL.run(
        functools.partial(_openai.acompletion, model, messages, stream=stream, **kwargs)
    )
    if isinstance(result, CompletionStream):
        return SyncCompletionStream(_PORTAL, result)
    assert isinstance(result, ChatCompletion)
    return result
