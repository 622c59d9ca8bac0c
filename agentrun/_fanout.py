"""Structured fan-out: many invocations, at most N at once, results as they finish.

`fan_out` is the one way agentrun runs a batch: `AsyncClient.map` (through `RunMap`), the sync
`Client.map` and the JSONL batch runner all use it. Its tasks live in one anyio task group
owned by an `async with` block, so nothing runs fire-and-forget and nothing is cancelled from
`__del__`: leaving the block cancels what is still running (and each cancelled invocation
cancels its remote run, as any invocation does). Backend-neutral: anyio only.
"""

from __future__ import annotations

import contextlib
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Mapping,
)
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import anyio
import anyio.abc

from agentrun._errors import ConfigurationError
from agentrun._results import MapResult, RunRequest

if TYPE_CHECKING:
    from agentrun._client import AsyncClient

__all__ = ["RunMap", "fan_out"]

_In = TypeVar("_In")
_Out = TypeVar("_Out")

Requests = Iterable[RunRequest | Mapping[str, Any]] | AsyncIterable[RunRequest | Mapping[str, Any]]


@asynccontextmanager
async def fan_out(
    items: Iterable[_In] | AsyncIterable[_In],
    work: Callable[[int, _In], Awaitable[_Out]],
    concurrency: int,
) -> AsyncIterator[AsyncIterator[_Out]]:
    """Run `work(index, item)` for each item (read lazily), at most `concurrency` at once.

    Yields an async iterator of the outcomes in the order they finish. `work` should turn its
    own failures into outcomes (one it raises cancels the rest and leaves the block, as in any
    task group). An exception raised while reading `items` stops the reading; the iterator
    raises it after the outcomes of the work already started. Leaving the block before the
    iterator is exhausted cancels the work still running and waits for it.
    """
    if concurrency < 1:
        raise ConfigurationError("concurrency must be at least 1")
    send, receive = anyio.create_memory_object_stream[_Out](concurrency)
    limiter = anyio.CapacityLimiter(concurrency)
    # What stopped the reading of `items`, raised after the outcomes already under way.
    failure: list[Exception] = []

    async def one(
        index: int, item: _In, token: object, out: anyio.abc.ObjectSendStream[_Out]
    ) -> None:
        async with out:
            try:
                outcome = await work(index, item)
                with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                    await out.send(outcome)
            finally:
                limiter.release_on_behalf_of(token)

    async def feed(tg: anyio.abc.TaskGroup) -> None:
        async with send:
            index = 0
            try:
                async for item in _aiter(items):
                    # A slot is taken before the next item is read: the input is read lazily.
                    token = object()
                    await limiter.acquire_on_behalf_of(token)
                    tg.start_soon(one, index, item, token, send.clone())
                    index += 1
            except Exception as exc:
                failure.append(exc)

    async def results() -> AsyncGenerator[_Out, None]:
        async for outcome in receive:
            yield outcome
        if failure:
            raise failure[0]

    raised: Exception | None = None
    async with anyio.create_task_group() as tg, receive:
        tg.start_soon(feed, tg)
        gen = results()
        try:
            yield gen
        except Exception as exc:
            # Raised from the caller's block: taken out of the task group (which would wrap it
            # in an ExceptionGroup) and raised as it is once the work stopped.
            raised = exc
        finally:
            # Whatever was not consumed is not wanted: stop the work (a no-op once done).
            tg.cancel_scope.cancel()
            await gen.aclose()
    if raised is not None:
        raise raised


class RunMap:
    """What `AsyncClient.map` returns: an async context manager whose block owns the work.

    ```python
    async with client.map(requests, concurrency=50) as results:
        async for item in results:
            ...
    ```

    `results` yields a `MapResult` per request as it finishes. Leaving the block (by `break`,
    an error or the end) cancels the invocations still running, on the service too. Using
    `async for` on `client.map(...)` directly raises `TypeError` (the work needs an owner).
    """

    def __init__(self, client: AsyncClient, requests: Requests, concurrency: int) -> None:
        if concurrency < 1:
            raise ConfigurationError("concurrency must be at least 1")
        self._client = client
        self._requests = requests
        self._concurrency = concurrency
        self._cm: contextlib.AbstractAsyncContextManager[AsyncIterator[MapResult]] | None = None

    def __repr__(self) -> str:
        return f"<RunMap concurrency={self._concurrency}>"

    def __aiter__(self) -> NoReturn:
        raise TypeError(
            "client.map(...) is an async context manager that owns its tasks: write "
            "`async with client.map(requests, concurrency=...) as results:` and then "
            "`async for item in results:`"
        )

    async def __aenter__(self) -> AsyncIterator[MapResult]:
        if self._cm is not None:
            raise RuntimeError("this RunMap was already entered; call client.map(...) again")
        self._client._check_open()
        self._cm = fan_out(self._open_requests(), self._one, self._concurrency)
        return await self._cm.__aenter__()

    async def __aexit__(self, *exc_info: Any) -> bool | None:
        assert self._cm is not None
        return await self._cm.__aexit__(*exc_info)

    async def _open_requests(self) -> AsyncIterator[RunRequest | Mapping[str, Any]]:
        """The requests, while the client is open: closing it stops the batch (the items
        under way end with `ClientStateError`, then the results raise it)."""
        async for raw in _aiter(self._requests):
            self._client._check_open()
            yield raw

    async def _one(self, index: int, raw: RunRequest | Mapping[str, Any]) -> MapResult:
        try:
            req = _as_request(raw)
        except Exception as exc:
            bad = RunRequest(agent="", input="", options={}, key=raw)
            return MapResult(index=index, request=bad, error=exc)
        try:
            result = await self._client.run(req.agent, req.input, **req.options)
        except Exception as exc:
            return MapResult(index=index, request=req, error=exc)
        return MapResult(index=index, request=req, result=result)


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


async def _aiter(items: Iterable[_In] | AsyncIterable[_In]) -> AsyncIterator[_In]:
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item
