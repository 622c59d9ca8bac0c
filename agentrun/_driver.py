"""The run driver: one `RunStream` per invocation, carrying out its `RunMachine`'s decisions.

The machine decides (send this, sleep until then, read the stream, finish, and how the
invocation ended); this module only carries its decisions out with anyio: requests through the
shared `Transport`, sleeps, stream reading, one absolute deadline per invocation (passed to
every request it makes, and so to the retry decisions), and a time-bounded cancel of the remote
run when the caller gives up. What each decision means on the wire is the protocol's
(`agentrun._protocol.RunProtocol`; the classic API's is `agentrun._classic.protocol`). The
driver reads nothing of the client: it gets a `DriverContext` (`agentrun._context`: transport,
protocol, telemetry, poll schedules, counters, the tasks it owns), and gathers the reply in a
`Reply` (`agentrun._reply`).

Giving up never leaves a run behind. A create that may have reached the service runs in a task
of its own (owned by the context, so by the client), so that no cancellation of the caller,
asyncio's included, can cut it short before the run id is known; a create still waiting for a
pooled connection is cancelled instead, before anything is sent. The cleanup that cancels the
remote run is a context-owned task too: a repeated native cancel cannot stop it, and
`AsyncClient.aclose()` waits for it.

Why one module of ~1,050 lines: `RunStream` is one object whose lifecycle (deadline scopes,
cleanup, adoption of a create cut short, abandonment) and steps (the machine loop, the stream
reader) share its state (machine, deadline, pending create, orphaned stream, cleanup task);
splitting them would pass that state around.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import logging
import math
import re
import weakref
from collections.abc import AsyncGenerator, Callable, Coroutine
from typing import TYPE_CHECKING, Any, Literal, NoReturn, TypeVar

import anyio
import anyio.lowlevel

from agentrun import _otel
from agentrun._context import DriverContext
from agentrun._errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    BadRequestError,
    ClientStateError,
    RemoteProtocolError,
)
from agentrun._machine import (
    ACTIVE_STATES,
    STATUS_TO_STATE,
    Finish,
    Op,
    Outcome,
    ReadStream,
    RunMachine,
    Send,
    Sleep,
    State,
)
from agentrun._model import Run
from agentrun._protocol import (
    ApiRequest,
    Event,
    Invocation,
    MessageSeen,
    RunUpdated,
    StepSeen,
    StreamEnded,
    TextDelta,
    ThreadStarted,
    ToolCallDelta,
)
from agentrun._reply import Reply, run_error
from agentrun._results import (
    RunFinished,
    RunResult,
    StateChanged,
    StreamEvent,
)
from agentrun._results import TextDelta as PublicTextDelta
from agentrun._retry import request_id_of
from agentrun._schedule import PollGroup, PollTicket
from agentrun._sse import SSEDecoder, SSEEvent
from agentrun._transport import (
    BodyChunks,
    RequestProgress,
    StreamInterruptedError,
)

if TYPE_CHECKING:
    import aiohttp

__all__ = ["CANCEL_GRACE", "DriverContext", "RunStream"]

logger = logging.getLogger("agentrun")

_T = TypeVar("_T")

#: How long the cleanup after a cancel or timeout may take: finishing a create that was already
#: sent (so that its run id is known), then cancelling the remote run. The invocation's own
#: requests are bounded by its deadline alone.
CANCEL_GRACE = 10.0


#: The buffer of a `RunStream` that never held events: shared, never added to (`__anext__`
#: makes a stream its own before adding).
_NO_EVENTS: collections.deque[Any] = collections.deque(maxlen=0)

#: Statuses of a poll worth repeating later: the run exists, the service is briefly unwell.
_TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


class RunStream:
    """One invocation, driven step by step as its events are consumed.

    An async iterator of `StreamEvent`s ending with `RunFinished` (or raising the run's error),
    and an async context manager whose exit cancels the remote run if the invocation did not
    finish. It holds no task and no cancel scope between events: the invocation's deadline is
    applied around each step, so it can be iterated from any code, like any async iterator.

    Steps that send requests or sleep run inside a cancel scope that the deadline timer (and
    `AsyncClient.aclose()`) cancels. The streaming phase (the open event stream of a streamed
    create) is one flat coroutine per chunk instead: `__anext__` awaits the body's reader
    itself, decodes the chunk and applies its events in place, and the deadline timer (or the
    client closing) fails the pending read (`BodyChunks.interrupt`), which ends the invocation
    exactly as a cancelled step would (`_cut`).

    Whatever stops it early (an error, the deadline, a cancellation of the caller, `aclose()`,
    the client closing, or the stream being dropped unfinished) cancels the remote run in a
    cleanup task owned by the client; the caller waits for that cleanup unless cancelled again.
    """

    # One per invocation in flight: slots keep it small (issue 15: < 20 KiB per run).
    __slots__ = (
        "__weakref__",
        "_after",
        "_body",
        "_buffer",
        "_cleanup",
        "_closed_by_client",
        "_col",
        "_ctx",
        "_deadline",
        "_decoder",
        "_done",
        "_emit",
        "_expired",
        "_gen",
        "_hot",
        "_idle",
        "_inv",
        "_later",
        "_machine",
        "_mode",
        "_obs",
        "_orphan",
        "_pending",
        "_protocol",
        "_reader",
        "_reading",
        "_relearn",
        "_result",
        "_scope",
        "_timer",
        "_tpl",
    )

    def __init__(self, ctx: DriverContext, inv: Invocation, *, emit: bool) -> None:
        self._ctx = ctx
        self._inv = inv
        self._emit = emit
        self._protocol = ctx.protocol_for(inv)
        self._machine: RunMachine | None = None
        self._col = Reply()
        self._mode: Literal["stream", "poll"] = "poll"
        self._gen: AsyncGenerator[list[StreamEvent] | None, None] | None = None
        # Events of a chunk not handed out yet; most chunks bring one event, so the buffer is
        # made when a chunk first brings several (issue 15: memory per run in flight).
        self._buffer: collections.deque[StreamEvent] = _NO_EVENTS
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
        # The invocation's deadline: one timer for the whole invocation (armed when it starts,
        # cancelled when it ends) that cancels the step running at the time, instead of a
        # timed cancel scope (an asyncio timer armed and cancelled) around every step.
        self._timer: asyncio.TimerHandle | None = None
        self._expired = False  # the timer fired
        # The streaming phase: the open event stream, read by `__anext__` itself (`_reader` is
        # set while the phase lasts), and the machine's action once it is over (`_after`).
        self._body: BodyChunks | None = None
        self._reader: aiohttp.StreamReader | None = None
        self._decoder: SSEDecoder | None = None
        self._after: Send | Sleep | ReadStream | Finish | None = None
        self._reading = False  # a body read is under way
        self._hot: tuple[Any, ...] = ()
        # The stream's delta template (`_learn_template`): none yet (None) or
        # (prefix, suffix, message id, index, then the whole frame's head and tail as bytes,
        # the list its texts are noted in as delivered (`Reply.delivered_texts`), and the
        # lengths of the head and tail).
        self._tpl: _Template | None = None
        # How many more times a template is learnt from a delta that took `plain_delta` (none
        # yet, or it did not fit): a stream's first delta may differ from the rest in more
        # than its text (the emulator adds ``"annotations": []`` to the first only), or be
        # escaped; a template that never fits (v2's moving sequence numbers) is not learnt
        # on every delta.
        self._relearn = 3
        # The latest snapshot frame of each message and step seen in the event stream, in
        # order of first sight, with the run id known then: decoded when the streaming phase
        # ends (`_defer`, `_settle`), so a snapshot that a later one replaces costs nothing.
        self._later: dict[tuple[str, str], tuple[SSEEvent, str | None]] | None = None

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
        loop = self._ctx.transport._loop
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
        elif self._reading:
            assert self._body is not None
            self._body.interrupt(_Interrupted())  # else the read's end sees the flag
        elif not self._done and self._gen is not None:
            self._done = True
            self._begin_cleanup("client closed")

    async def _stepped(self) -> None:
        """Wait until no step runs (after `_client_closing`), then for the cleanup."""
        if self._scope is not None or self._reading:
            self._idle = self._idle or anyio.Event()
            await self._idle.wait()
        if self._cleanup is not None:
            await asyncio.wait({self._cleanup})

    async def __anext__(self) -> StreamEvent:
        buffer = self._buffer
        if buffer:
            return buffer.popleft()
        while True:
            if self._done:
                if self._closed_by_client and self._result is None:
                    # Closed while the caller was between events (nothing to interrupt).
                    if self._cleanup is not None:
                        await self._await_cleanup(self._cleanup)
                    self._observed("cancelled")
                    raise ClientStateError(
                        "the client was closed while this invocation was running"
                        + (f"; run {self.run_id} was cancelled" if self.run_id else "")
                    )
                raise StopAsyncIteration
            reader = self._reader
            if reader is None:
                batch = await self._step()
                if batch is None:
                    continue  # the steps opened the event stream: the streaming phase begins
            else:
                # The streaming phase, one flat coroutine per chunk: no cancel scope (the
                # deadline timer and `_client_closing` interrupt the read instead), no
                # generator in between; the chunk's events are decoded and applied here.
                if self._expired or self._closed_by_client:
                    await self._cut()
                self._reading = True
                try:
                    chunk = await reader.readany()
                except BaseException as exc:
                    self._step_ended()
                    salvaged = await self._read_failed(exc)
                    if salvaged is None:
                        continue  # the stream broke: the steps go on by polling
                    chunk = salvaged
                self._reading = False
                if self._stopping():  # it came as the deadline passed or the client closed
                    await self._cut()
                try:
                    batch = self._on_chunk(chunk)
                except BaseException as exc:
                    self._drop_body()
                    await self._failed(exc)
                if not batch:
                    continue
            if len(batch) == 1:
                return batch[0]
            if buffer is _NO_EVENTS:
                buffer = self._buffer = collections.deque()
            buffer.extend(batch)
            return buffer.popleft()

    def _stopping(self) -> bool:
        return self._expired or self._closed_by_client

    async def _step(self) -> list[StreamEvent] | None:
        """Run the steps up to their next batch of events (None: the event stream is open),
        inside a cancel scope that the deadline and `AsyncClient.aclose()` cancel."""
        if self._gen is None:
            if self._inv.mode == "auto":
                await self._arrive()
            if self._ctx.closing:
                self._done = True
                raise ClientStateError("this client is closed; create a new one")
            self._mode = self._ctx.begin(self._inv.mode)
            self._ctx.live.add(self)
            inv = self._inv
            self._obs = self._ctx.telemetry.start(
                inv.agent, self._mode, inv.thread_id, inv.messages, inv.options.model
            )
            self._gen = self._steps()
            if self._inv.timeout is not None:
                self._deadline = _now() + self._inv.timeout
                self._timer = asyncio.get_running_loop().call_at(
                    self._deadline, _expire, weakref.ref(self), context=_NO_CONTEXT
                )
        scope = self._scope = anyio.CancelScope()
        if self._expired:
            scope.cancel()  # the deadline passed between two steps
        try:
            with scope, _otel.current(self._obs):
                batch = await self._gen.__anext__()
        except BaseException as exc:
            self._step_ended()
            await self._failed(exc)
        self._step_ended()
        if scope.cancelled_caught:
            await self._cut()
        if batch is not None and isinstance(batch[-1], RunFinished):
            self._done = True
            self._result = batch[-1].result
            await self._finish_gen()
            self._observed(None)
        return batch

    async def _failed(self, exc: BaseException) -> NoReturn:
        """A step raised `exc`: stop the invocation (cancel the run), then raise."""
        self._done = True
        cancelled = isinstance(exc, anyio.get_cancelled_exc_class())
        await self._stop("cancel" if cancelled else "error")
        if isinstance(exc, APITimeoutError) and _now() >= self._deadline:
            self._observed("timeout")
            raise self._timeout_error() from exc
        self._observed(exc)
        raise exc

    async def _cut(self) -> NoReturn:
        """The deadline passed, or the client closed, during a step: stop, then raise."""
        self._step_ended()
        self._drop_body()
        self._done = True
        closed = self._closed_by_client
        await self._stop("client closed" if closed else "deadline")
        self._observed("cancelled" if closed else "timeout")
        if closed:
            raise ClientStateError(
                "the client was closed while this invocation was running"
                + (f"; run {self.run_id} was cancelled" if self.run_id else "")
            )
        raise self._timeout_error()

    async def _arrive(self) -> None:
        """Let the invocations started together with this one arrive (one event-loop turn)
        before `auto` chooses a mode, so that a burst counts itself whole."""
        self._ctx.arriving += 1
        try:
            await anyio.lowlevel.checkpoint()
        finally:
            self._ctx.arriving -= 1

    def _disarm(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()

    def _step_ended(self) -> None:
        self._scope = None
        self._reading = False
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
            self._cleanup = self._ctx.detach(self._clean_up(reason))
        return self._cleanup

    async def _clean_up(self, reason: str) -> None:
        """Finish the steps, learn the run id of a create cut short, cancel the run. Never
        raises; bounded by `CANCEL_GRACE`."""
        try:
            for attempt in (1, 2):
                try:
                    with anyio.move_on_after(CANCEL_GRACE):
                        await self._finish_gen()
                        await self._adopt(reason)
                        self._release_orphan()
                        await self._cancel_remote(reason)
                    break
                except asyncio.CancelledError:
                    # A loop shutting down (`asyncio.run` cancels every task once at its end,
                    # say after a stream was dropped in `main`'s last line) would leave the run
                    # going: finish the cleanup anyway, still bounded; a second cancel wins.
                    if attempt == 2:
                        raise
                    # Python >= 3.11 counts cancel requests: take this one back. Python 3.10
                    # does not count them: the task goes on once the error is caught.
                    uncancel = getattr(asyncio.current_task(), "uncancel", None)
                    if uncancel is not None:
                        uncancel()
        except Exception as exc:
            logger.warning("cleanup of run %s failed: %s", self.run_id, exc)
        finally:
            pending, self._pending = self._pending, None
            if pending is not None and not pending.done():
                pending.cancel()
            self._release_orphan()
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
                self._apply_run(self._protocol.parse_run(got), "response")
        if self._orphan is None or m is None:
            return
        body, decoder = self._orphan
        # Read on for the run id, but not for the whole grace: a stream that stalls after
        # naming the thread would use it all and leave no time to cancel the run.
        with (
            anyio.move_on_after(ADOPT_READ),
            contextlib.suppress(StreamInterruptedError, APITimeoutError),
        ):
            async for chunk in body:
                for sse in decoder.feed(chunk):
                    for ev in self._protocol.stream_events(sse):
                        if m.finished:
                            return
                        if isinstance(ev, RunUpdated):
                            self._apply_run(ev.run, "stream")
                        elif isinstance(ev, ThreadStarted):
                            m.thread_created(ev.thread_id, _now())
                if m.run_id is not None:
                    return
        if m.run_id is None and m.thread_id is not None and not m.finished:
            self._release_orphan()
            await self._find_created_run()

    def _release_orphan(self) -> None:
        """Close the body of a create cut short once it was read for the run id: it holds a
        pool slot (`PoolGate`) that the cleanup's own requests may need (`pool_limit=1`)."""
        orphan, self._orphan = self._orphan, None
        if orphan is not None:
            orphan[0].finish()

    async def _find_created_run(self) -> None:
        """The create reached the service (its stream was open, it may have named the thread)
        but the run id never came: look the run up on the thread, so it can be cancelled."""
        m = self._machine
        assert m is not None and m.thread_id is not None
        grace = _now() + CANCEL_GRACE

        async def call(req: Any) -> Any:
            return await self._request(req, deadline=grace)

        for attempt in range(3):
            try:
                found = await self._protocol.latest_run(call, m.thread_id)
            except Exception as exc:
                logger.warning("could not look up the run on %s: %s", m.thread_id, exc)
                return
            if found is not None and (
                found.created_at >= self._inv.floor
                or STATUS_TO_STATE.get(found.status) in ACTIVE_STATES
            ):
                self._apply_run(found, "poll")
                return
            if attempt < 2:
                await anyio.sleep(0.2)  # the service may not have created it yet

    def _observed(self, error: BaseException | str | None) -> None:
        """Report the invocation's end to its telemetry observer (once)."""
        obs, self._obs = self._obs, None
        if obs is not None:
            obs.end(self._machine, self._result, error)

    async def _finish_gen(self) -> None:
        self._disarm()
        self._drop_body()
        gen, self._gen = self._gen, None
        if gen is not None:
            self._ctx.end(self._machine, self._mode)
            self._ctx.live.discard(self)
            await gen.aclose()

    # -- the steps ----------------------------------------------------------------------

    async def _steps(self) -> AsyncGenerator[list[StreamEvent] | None, None]:
        inv, col, ctx = self._inv, self._col, self._ctx
        group = ctx.poll_group(inv.agent)
        ticket = group.ticket()
        protocol = self._protocol
        fresh = protocol.new_run_per_invocation
        if inv.tool_outputs and inv.run_id is None and not fresh:
            inv.run_id = await self._waiting_run()
        if inv.tool_outputs and inv.thread_id is not None and inv.run_id is not None and not fresh:
            # The run may have written text before its tool calls; that reply was returned
            # with the calls. Note those messages so this reply holds only what follows.
            col.earlier = await self._run_message_ids(inv.thread_id, inv.run_id)
        # Following a run that exists: no input, no outputs, just its id.
        attach = inv.run_id is not None and not inv.tool_outputs and not inv.messages
        start = _now()
        m = self._machine = RunMachine(
            mode=self._mode,
            now=start,
            thread_id=inv.thread_id,
            # A protocol that makes a new run per invocation starts every machine afresh; its
            # request says which earlier run (response) it continues.
            run_id=inv.run_id if attach or not fresh else None,
            poll_delay=ticket.delay,
            separate_thread=protocol.creates_thread_first(inv),
            attach=attach,
        )
        action: Send | Sleep | ReadStream | Finish = m.start(start)
        while not isinstance(action, Finish):
            if isinstance(action, Sleep):
                # Sleep until the planned poll, or until the agent's group wakes this run (a
                # run created after it ended, or the schedule learned): `_poll_sleep`.
                action = await _poll_sleep(group, ticket, m, action)
            elif isinstance(action, Send) and action.stream:
                await self._open_stream(action)
                # The streaming phase: `__anext__` reads the body itself, chunk by chunk, until
                # the machine moves on (`_after`).
                yield None
                after, self._after = self._after, None
                assert after is not None
                action = after
                body, self._body = self._body, None
                if body is not None:  # it ended with `done`: read the rest, reuse the connection
                    try:
                        await _drain(body)
                    finally:
                        body.finish()
            elif isinstance(action, Send):
                action = await self._send(action)
            else:  # pragma: no cover - the machine only asks for ReadStream while streaming
                raise AssertionError("unexpected ReadStream outside a stream")
            if col.pending:
                yield list(col.pending)
                col.pending.clear()
        # The machine decided how the invocation ended; this only carries it out.
        fin = action
        if fin.run_ended:
            # Teach the agent's schedule when the run ended, and wake the runs it tells about.
            _learn_end(group, ticket, m, col.last_active_at)
        if fin.unseen and fin.state is State.REQUIRES_ACTION:
            # Text written before the tool calls belongs to this reply (as in a stream).
            await self._list_messages()
        if (
            fin.unseen
            and fin.outcome is not Outcome.NO_RUN
            and col.run is not None
            and self._protocol.uses_builtin_tools(col.run)
        ):
            # Not seen in a stream: the built-in tool steps are listed (only for agents that
            # have built-in tools, so that plain runs cost no extra request).
            await self._list_steps()
        result = col.result(inv.agent, m, self._mode)
        if self._emit and fin.has_reply:
            # The whole reply reaches a stream consumer exactly once: what the event stream did
            # not deliver (poll mode, or a stream that broke) follows as deltas now.
            rest = col.undelivered(result)
            if rest:
                yield rest
        if fin.outcome is Outcome.NO_RUN:
            raise APIConnectionError(
                "the event stream broke before the service confirmed the run; it may or may "
                "not have been created",
                thread_id=m.thread_id,
            )
        if fin.outcome is Outcome.REPLY:
            yield [RunFinished(result)]
            return
        raise run_error(result)

    async def _request(
        self,
        req: ApiRequest,
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
        return await self._ctx.transport.request_json(
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

    async def _create(self, send: Coroutine[Any, Any, _T], progress: RequestProgress) -> _T:
        """Send a create (`send`, reporting to `progress`) in a client-owned task, so that a
        cancelled caller cannot cut it short once it may have reached the service (its run
        is then cleaned up, not lost).

        A create still waiting for a connection, a token or a retry delay when the caller
        is cancelled is cancelled too: nothing is sent after the cancel.
        """
        task = self._ctx.detach(send)
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
        op, protocol = action.op, self._protocol
        if op is Op.LIST_MESSAGES:
            await self._list_messages()
            return m.messages_fetched(_now())
        if op is Op.FIND_RUN:
            assert m.thread_id is not None
            found = await protocol.latest_run(self._request, m.thread_id)
            if found is None or (
                found.created_at < self._inv.floor
                and STATUS_TO_STATE.get(found.status) not in ACTIVE_STATES
            ):
                raise APIConnectionError(
                    "the event stream broke before the run was created; no run was started",
                    thread_id=m.thread_id,
                )
            return self._apply_run(found, "poll")
        req = protocol.request(op, self._inv, m.thread_id, m.run_id, stream=False)
        if op is Op.CREATE_THREAD:
            data = await self._request(req)
            seen = len(m.history)
            nxt = m.thread_ready(protocol.parse_thread_id(data), _now())
            self._note_moves(seen)
            return nxt
        if op in (Op.CREATE_THREAD_AND_RUN, Op.CREATE_RUN, Op.SUBMIT_TOOL_OUTPUTS):
            meta: dict[str, str] = {}
            progress = RequestProgress()
            data = await self._create(self._request(req, meta, progress=progress), progress)
            self._col.request_id = meta.get("request_id")
            return self._apply_run(protocol.parse_run(data), "response")
        if op is Op.GET_RUN:
            try:
                data = await self._request(req)
            except (APIConnectionError, APIStatusError) as exc:
                if isinstance(exc, APIStatusError) and exc.status_code not in _TRANSIENT_STATUSES:
                    raise
                if _now() >= self._deadline:
                    raise
                # The run exists and may still finish: poll it again rather than fail the
                # invocation and leave the run unseen. The deadline bounds this.
                logger.debug("poll of run %s failed (%s); polling again", m.run_id, exc)
                return m.poll_failed(_now())
            return self._apply_run(protocol.parse_run(data), "poll")
        assert op is Op.CANCEL_RUN
        return self._apply_run(protocol.parse_run(await self._request(req)), "response")

    def _apply_run(
        self, run: Run, via: Literal["response", "poll", "stream"]
    ) -> Send | Sleep | ReadStream | Finish:
        m = self._machine
        assert m is not None
        col = self._col
        col.run = run
        if STATUS_TO_STATE.get(run.status) in ACTIVE_STATES:
            col.last_active_at = _now()
        seen = len(m.history)
        # A run that names no thread (a v2 response may echo `conversation: null`) is on the
        # invocation's own thread, if it has one.
        thread_id = run.thread_id or m.thread_id or ""
        action = m.run_update(run.status, run_id=run.id, thread_id=thread_id, now=_now(), via=via)
        self._note_moves(seen)
        if type(action) is Sleep:
            # Parked until the next poll, which brings the run whole again: the machine holds
            # what the wait needs (ids, state, times), so the snapshot and its decoded JSON
            # (~4 KiB) are not kept meanwhile (issue 15: memory per run in flight). Only a run
            # seen at the end reaches the result, and the caller sees no other.
            col.run = None
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

    async def _open_stream(self, action: Send) -> None:
        """Send the streamed create (in a client task, see `_create`) and open its body for
        the streaming phase."""
        m = self._machine
        assert m is not None
        req = self._protocol.request(action.op, self._inv, m.thread_id, m.run_id, stream=True)
        transport = self._ctx.transport
        self._col.requests += 1
        deadline = self._deadline if math.isfinite(self._deadline) else None

        progress = RequestProgress()
        send = transport.open_stream(
            req.method,
            req.path,
            params=req.params,
            json=req.json,
            deadline=deadline,
            thread_id=m.thread_id,
            run_id=m.run_id,
            progress=progress,
        )
        body = await self._create(send, progress)
        if self._col.request_id is None:
            self._col.request_id = request_id_of(body.headers)
        self._body = body
        self._decoder = SSEDecoder()
        self._reader = body.reader
        # Per event in `_on_chunk`: one attribute, not six.
        protocol = self._protocol
        self._hot = (
            self._emit,
            self._col.pending,
            self._col.public_delta,
            protocol.quiet_events,
            protocol.stream_events,
            f"event: {protocol.delta_event}\ndata: ".encode(),
            protocol.delta_event,
            protocol.plain_delta,
            self._col.text_delta,
            protocol.snapshot_events,
        )

    def _on_chunk(self, chunk: bytes) -> list[StreamEvent]:
        """Decode one chunk of the event stream and apply its events; return the caller's.

        When the machine moves on (the stream is done, or an event ends the reading), the
        streaming phase ends: `_after` holds the machine's action, and the body is closed
        (or, after `done`, left for `_steps` to drain).
        """
        m = self._machine
        assert m is not None and self._decoder is not None
        if not chunk:  # the end of the body
            self._decoder.close()
            self._end_stream(m.stream_done(_now()), finish=True)
            return []
        decoder = self._decoder
        tpl = self._tpl
        if tpl:  # (learnt only when the caller has an event stream)
            # Most of a stream: a chunk that is one whole frame of the usual text delta, the
            # same frame as the stream's first delta but for its text, goes from its bytes
            # straight to the caller's event. The text is the bytes between the frame's head
            # and tail when they hold no quote, backslash or control character (a line ending
            # included) and are UTF-8; nothing else of the frame is decoded. The decoder must
            # hold nothing of another frame (`SSEDecoder.frame_data`'s conditions).
            size = len(chunk)
            start, end = tpl[7], size - tpl[8]
            if (
                end >= start
                and chunk.startswith(tpl[4])
                and chunk.endswith(tpl[5])
                and decoder._clean
                and size < decoder._max_size
                and _UNSAFE_IN_BYTES.search(chunk, start, end) is None
            ):
                try:
                    text = chunk[start:end].decode()
                except UnicodeDecodeError:
                    pass  # the general path raises the decoder's error
                else:
                    tpl[6].append(text)  # noted as delivered (`Reply.text_delta`)
                    return [PublicTextDelta(text, tpl[2], tpl[3])]
        (
            emit,
            pending,
            public_delta,
            quiet,
            stream_events,
            delta_head,
            delta_event,
            plain_delta,
            text_delta,
            snapshots,
        ) = self._hot
        if emit:
            # Any other one-frame delta chunk: from its data to the caller's event (no
            # `SSEEvent`, no neutral event: a delta moves the machine nowhere).
            data = decoder.frame_data(chunk, delta_head)
            if data is not None:
                plain = plain_delta(data)
                if plain is not None:
                    if self._relearn:
                        self._learn_template(data, plain)
                    out = text_delta(*plain)
                    return [] if out is None else [out]
        # The events of one chunk go out together: one `__anext__` per chunk, not per event.
        batch: list[StreamEvent] = []
        for sse in decoder.feed(chunk):
            name = sse.event
            if not emit and name in quiet:
                continue
            if name == delta_event:
                # A delta frame among others: the same path from its data.
                data = sse.data
                tpl = self._tpl
                if tpl:
                    slot = _template_text(tpl, data)
                    if slot is not None:
                        if emit:
                            out = text_delta(tpl[2], tpl[3], slot)
                            if out is not None:
                                batch.append(out)
                        continue
                plain = plain_delta(data)
                if plain is not None:
                    if emit and self._relearn:
                        self._learn_template(data, plain)
                    if emit:
                        out = text_delta(*plain)
                        if out is not None:
                            batch.append(out)
                    continue
            kind = snapshots.get(name)
            if kind is not None and self._defer(kind, sse):
                continue
            for ev in stream_events(sse):
                nxt = _READ if type(ev) is TextDelta else self._on_stream_event(ev)
                if pending:
                    batch.extend(pending)
                    pending.clear()
                if nxt is _READ or isinstance(nxt, ReadStream):
                    if emit:
                        out = public_delta(ev)
                        if out is not None:
                            batch.append(out)
                    continue
                self._end_stream(nxt, finish=not isinstance(ev, StreamEnded))
                return batch
        return batch

    def _learn_template(self, data: str, plain: tuple[str, int, str]) -> None:
        """Learn the stream's delta template from a delta that took `plain_delta`
        (`_delta_template`), with the head and tail of a whole frame of it as bytes and the
        list its texts are noted in (`_on_chunk`'s single-frame path); a delta that gives
        none (an escaped or empty text) leaves the template as it was."""
        self._relearn -= 1
        tpl = _delta_template(data, plain, self._protocol.plain_delta)
        if not tpl:
            return
        prefix, suffix, message_id, index = tpl
        texts = self._col.delivered_texts(message_id, index)
        if texts is None:
            return  # a message written before this invocation: not the caller's
        head = f"event: {self._protocol.delta_event}\ndata: {prefix}".encode()
        tail = f"{suffix}\n\n".encode()
        self._tpl = prefix, suffix, message_id, index, head, tail, texts, len(head), len(tail)

    def _defer(self, kind: str, sse: SSEEvent) -> bool:
        """Keep a message's or a step's snapshot frame for `_settle` (the latest per object,
        in its first sight's place); False when its id cannot be read without decoding it
        (then the frames kept so far are decoded first, and this one at once, in order)."""
        key = self._protocol.snapshot_id(sse.data)
        if key is None:
            self._settle()
            return False
        later = self._later
        if later is None:
            later = self._later = {}
        m = self._machine
        assert m is not None
        later[kind, key] = (sse, m.run_id)
        return True

    def _settle(self) -> None:
        """Decode and keep the snapshots `_defer` held back (at the end of the streaming
        phase): each message's and step's latest, in order of first sight. A malformed one
        raises `RemoteProtocolError` here; one that a later snapshot replaced is never read."""
        later, self._later = self._later, None
        if later:
            stream_events = self._protocol.stream_events
            for sse, run_id in later.values():
                for ev in stream_events(sse):
                    self._keep(ev, run_id)

    def _keep(self, ev: Event, run_id: str | None) -> None:
        """Note a message or step snapshot of the run (`run_id`, None when not known yet)."""
        if isinstance(ev, StepSeen):
            if run_id is None or ev.run_id in (None, run_id):
                self._col.steps[ev.step.id] = ev.step
        elif isinstance(ev, MessageSeen):
            msg = ev.message
            if msg.role == "assistant" and (run_id is None or msg.run_id in (None, run_id)):
                self._col.messages[msg.id] = msg

    def _end_stream(self, after: Send | Sleep | ReadStream | Finish, *, finish: bool) -> None:
        """The streaming phase is over; the steps go on with `after`."""
        self._settle()
        self._after = after
        self._reader = None
        if finish:
            body, self._body = self._body, None
            if body is not None:
                body.finish()

    async def _read_failed(self, exc: BaseException) -> bytes | None:
        """A body read raised `exc`: the bytes salvaged before a break, None when the stream
        broke (the steps go on by polling), else the invocation stops and this raises."""
        if isinstance(exc, _Interrupted):
            await self._cut()
        body, m = self._body, self._machine
        assert body is not None and m is not None
        try:
            try:
                return body.failed(exc)
            except StreamInterruptedError:
                logger.debug("stream of run %s broke; finishing it by polling", m.run_id)
                # (Decoding the snapshots held back may raise: the outer handler stops then.)
                self._end_stream(m.stream_lost(_now()), finish=True)
                return None
        except BaseException as err:
            self._drop_body()
            await self._failed(err)

    def _drop_body(self) -> None:
        """The streaming phase stops early: a body from before the service named the run goes
        to the cleanup (it reads on for the run id, see `_adopt`), any other is closed."""
        body, self._body = self._body, None
        self._reader = None
        if body is None:
            return
        m = self._machine
        if m is not None and m.run_id is None and not m.finished:
            assert self._decoder is not None
            self._orphan = (body, self._decoder)
        else:
            body.finish()

    def _on_stream_event(self, ev: Event) -> Send | Sleep | ReadStream | Finish:
        if type(ev) is TextDelta:  # most of a stream
            return _READ
        m = self._machine
        assert m is not None
        if isinstance(ev, (StepSeen, MessageSeen)):
            self._keep(ev, m.run_id)
            return _READ
        if isinstance(ev, (TextDelta, ToolCallDelta)):
            return _READ
        if isinstance(ev, RunUpdated):
            return self._apply_run(ev.run, "stream")
        if isinstance(ev, ThreadStarted):
            seen = len(m.history)
            action = m.thread_created(ev.thread_id, _now())
            self._note_moves(seen)
            return action
        if isinstance(ev, StreamEnded):
            return m.stream_done(_now())
        # An error event: the service reports a failure inside the stream; the run's own
        # status (polled next) says what happened to it.
        logger.debug("stream error event for run %s: %s", m.run_id, ev.code)
        return m.stream_lost(_now())

    async def _waiting_run(self) -> str:
        """The run of the invocation's thread that waits for tool outputs."""
        thread_id = self._inv.thread_id
        assert thread_id is not None
        run = await self._protocol.latest_run(self._request, thread_id)
        if run is None or run.status != "requires_action":
            state = f"its latest run is {run.status}" if run else "it has no run"
            raise BadRequestError(
                f"thread {thread_id} has no run waiting for tool outputs ({state})",
                thread_id=thread_id,
            )
        return run.id

    async def _list_messages(self) -> None:
        """Collect the run's assistant messages in the list's own order (oldest first)."""
        m = self._machine
        assert m is not None
        carried = self._protocol.reply_of(self._col.run) if self._col.run is not None else None
        if carried is not None:
            for msg in carried:  # the reply came with the run itself: nothing to list
                self._col.messages[msg.id] = msg
            return
        assert m.thread_id is not None
        async for msg in self._protocol.messages(self._request, m.thread_id, m.run_id):
            if msg.role == "assistant":
                self._col.messages[msg.id] = msg

    async def _list_steps(self) -> None:
        """Collect the run's steps in the list's order; a failure only loses the steps."""
        m = self._machine
        assert m is not None
        if m.thread_id is None or m.run_id is None:
            return
        try:
            steps = await self._protocol.steps(self._request, m.thread_id, m.run_id)
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
        return {msg.id async for msg in self._protocol.messages(self._request, thread_id, run_id)}

    async def _cancel_remote(self, reason: str) -> None:
        """Cancel the remote run (bounded in time); never raises."""
        m = self._machine
        if m is None or m.finished:
            return
        seen = len(m.history)
        if m.run_id is None or m.thread_id is None:
            m.cancel(_now(), reason)
            self._note_moves(seen)
            return
        with anyio.move_on_after(CANCEL_GRACE), _otel.current(self._obs):
            try:
                action = m.cancel(_now(), reason)
                self._note_moves(seen)
                if isinstance(action, Send):
                    protocol = self._protocol
                    req = protocol.request(
                        Op.CANCEL_RUN, self._inv, m.thread_id, m.run_id, stream=False
                    )
                    # The cleanup's own bound, not the invocation's (it may have passed).
                    grace = _now() + CANCEL_GRACE
                    data = await self._request(req, deadline=grace)
                    self._apply_run(protocol.parse_run(data), "response")
            except BadRequestError:
                # Already terminal on the service: nothing left to cancel.
                pass
            except Exception as exc:
                logger.warning("could not cancel run %s: %s", m.run_id, exc)


#: How long a cleanup reads a create's stream cut short for its run id before looking the run
#: up on the thread instead (seconds).
ADOPT_READ = 2.0


def _expire(ref: weakref.ref[RunStream]) -> None:
    """The invocation's deadline timer: cancel the step under way (the next one sees the
    deadline passed). Holds a weak reference, so a stream dropped unfinished is still freed
    (and cleaned up) at once."""
    stream = ref()
    if stream is None:
        return
    stream._expired = True
    if stream._scope is not None:
        stream._scope.cancel()
    elif stream._reading and stream._body is not None:
        stream._body.interrupt(_Interrupted())  # else the read's end sees `_expired`


def _now() -> float:
    """`anyio.current_time()` on asyncio (the loop's clock), without the backend lookup
    through sniffio that costs about as much as the call itself; the driver is asyncio's."""
    return asyncio.get_running_loop().time()


#: The machine's "keep reading" (immutable, so one for all).
_READ = ReadStream()

#: What a JSON string's content cannot hold as it stands (a quote, a backslash, a control
#: character): a text with none is its own JSON text.
_UNSAFE_IN_STRING = re.compile(r'["\\\x00-\x1f]')
#: The same for a text's UTF-8 bytes (no byte of a multi-byte character is below 0x80).
_UNSAFE_IN_BYTES = re.compile(rb'["\\\x00-\x1f]')


def _delta_template(
    data: str,
    plain: tuple[str, int, str],
    plain_delta: Callable[[str], tuple[str, int, str] | None],
) -> tuple[str, str, str, int] | Literal[False]:
    """The template of a stream's text deltas, learnt from its first (`data`, whose
    `RunProtocol.plain_delta` is `plain`): ``(prefix, suffix, message id, index)`` such that
    any ``prefix + t + suffix``, for a text `t` without a quote, backslash or control
    character, is a delta of that message and part with text `t` (the same value
    `plain_delta` would give: `t` is the content of the same JSON string). False when there
    is none (an escaped text, or data that varies between deltas but for the text, as a
    sequence number does: those take `plain_delta` every time).

    The slot is checked, not assumed: `plain_delta` of the template with another text must
    give that text, with the same message and part."""
    message_id, index, text = plain
    if not text or _UNSAFE_IN_STRING.search(text) is not None:
        return False
    quoted = f'"{text}"'
    at = data.rfind(quoted)
    if at < 0:
        return False
    prefix, suffix = data[: at + 1], data[at + len(quoted) - 1 :]
    probe = "zz" if text != "zz" else "zy"
    if plain_delta(prefix + probe + suffix) != (message_id, index, probe):
        return False
    return prefix, suffix, message_id, index


#: A stream's delta template (`RunStream._learn_template`).
_Template = tuple[str, str, str, int, bytes, bytes, list[str], int, int]


def _template_text(tpl: _Template | tuple[str, str, str, int], data: str) -> str | None:
    """The text of a delta's `data` that fits the stream's template (`_delta_template`):
    the slice between its prefix and suffix, when it is a JSON string's content as it stands.
    None when it does not fit (`plain_delta` decides then)."""
    prefix, suffix = tpl[0], tpl[1]
    if data.startswith(prefix) and data.endswith(suffix) and len(data) >= len(prefix) + len(suffix):
        text = data[len(prefix) : len(data) - len(suffix)]
        if _UNSAFE_IN_STRING.search(text) is None:
            return text
    return None


class _Interrupted(Exception):
    """Internal: the deadline passed, or the client closed, while a body read waited."""


def _run_created_at(m: RunMachine) -> float:
    for t in m.history:
        if t.state is State.RUN_QUEUED:
            return t.at
    return m.history[0].at


async def _drain(chunks: BodyChunks) -> None:
    """Read what is left of a finished stream (normally nothing) so the connection is reused.

    The `done` event was read: the run's outcome is known, so a connection that breaks now
    (reset, deadline) changes nothing.
    """
    if chunks.reader.at_eof():
        return  # usually so: the end of the body came with the `done` event
    with anyio.move_on_after(1.0), contextlib.suppress(StreamInterruptedError, APITimeoutError):
        async for _ in chunks:
            pass


class _Wake(asyncio.Future[None]):
    """What a run parked between polls waits on: resolved by its timer (the planned poll) or
    by its agent's `PollGroup` (`_learn_end`: a later run ended, or the schedule learned)."""

    __slots__ = ()

    def set(self) -> None:
        if not self.done():
            self.set_result(None)


#: The context the timers of a run in flight (its deadline's `_expire`, a parked run's
#: `_Wake.set`) run their callback in (they read and set no context variable): shared,
#: instead of a copy of the caller's context per timer.
_NO_CONTEXT = contextvars.Context()


async def _poll_sleep(
    group: PollGroup, ticket: PollTicket, m: RunMachine, action: Sleep
) -> Send | Sleep:
    """Sleep until the planned poll or a wake from the agent's `PollGroup`; the next action.

    Woken because a run of the agent created after this one was seen ended, it polls now;
    woken because the schedule learned, or at its planned time, it polls if the (possibly new)
    plan says the poll is due, else sleeps on to the new plan.
    """
    if ticket.created is None:
        # First sleep of this run: its role in the group may change the plan.
        group.join(ticket, _run_created_at(m), may_probe=not m.attach)
        action = m.replan(anyio.current_time())
    assert ticket.created is not None
    if ticket.answered(anyio.current_time() - ticket.created):
        # A poll was just answered: plan from the time of its answer.
        action = m.replan(anyio.current_time())
    # Parked: one future (the group's token to wake it) and one timer for the planned poll;
    # no cancel scope or event (issue 15: memory per run in flight). The step's scope
    # cancels the wait (the deadline, the caller, the client closing).
    loop = asyncio.get_running_loop()
    wake = _Wake(loop=loop)
    timer = loop.call_at(action.until, _Wake.set, wake, context=_NO_CONTEXT)
    group.sleep(ticket, wake)
    try:
        await wake
    finally:
        timer.cancel()
        poll_now = group.awake(ticket)
    now = anyio.current_time()
    elapsed = now - ticket.created
    if poll_now or ticket.due(elapsed):
        ticket.polled(elapsed)
        return m.timer(now)
    return m.replan(now)


def _learn_end(
    group: PollGroup, ticket: PollTicket, m: RunMachine, last_active_at: float | None
) -> None:
    """Tell the agent's group when the run ended and wake the sleepers it names.

    The run ended after the last sight of it active (or its creation) and before the first
    sight of it ended; a stream sees the end as it happens.
    """
    seen_end = m.history[-1].at
    created = _run_created_at(m)
    ticket.answered(seen_end - created, active=False)
    if m.attach:
        return  # a run followed from the middle: its creation time is unknown here
    if m.history[-1].cause.startswith("stream"):
        low = seen_end
    else:
        low = last_active_at if last_active_at is not None else created
    ended = group.finished(
        created, min(low, seen_end) - created, seen_end - created, follower=not ticket.probe
    )
    for token in ended:
        assert isinstance(token, _Wake)
        token.set()
