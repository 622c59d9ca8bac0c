"""Attacks on the issue-15 performance changes (the streaming phase that reads the body itself,
`_IdleWatch`, the poll schedule in groups, `PoolGate` admission), each pinning a defect found
and fixed, over real sockets on 127.0.0.1 (the emulator, or a small aiohttp.web server)."""

from __future__ import annotations

import copy
import pickle

import anyio
import pytest
from _web import serve
from aiohttp import web

import agentrun
from agentrun import AsyncClient, ClientStateError
from agentrun._auth import StaticTokenSource, TokenCache
from agentrun._machine import State
from agentrun._results import TextDelta
from agentrun._transport import Transport
from agentrun.emulator import Emulator, EmulatorSettings, FaultRule, Timing

pytestmark = pytest.mark.anyio


_FRAME = b"event: thread.message.delta\ndata: " + b"x" * 1000 + b"\n\n"
_FRAMES = 2000  # ~2 MB: far more than aiohttp buffers before it stops reading the socket


async def _fast_stream(request: web.Request) -> web.StreamResponse:
    """An event stream sent as fast as the client takes it, then `done`."""
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    for _ in range(_FRAMES):
        await resp.write(_FRAME)
    await resp.write(b"event: done\ndata: [DONE]\n\n")
    await resp.write_eof()
    return resp


async def test_a_busy_consumer_is_not_a_silent_server() -> None:
    """`read_timeout` bounds the silence of the *server*: a consumer that stops reading for
    longer than that (busy with an event) while the server keeps sending must still get the
    whole body. aiohttp stops reading the socket once its buffer is full and stops its read
    timer with it; `_IdleWatch`, which replaced that timer for streamed bodies, counted the
    bytes that stopped arriving as silence and failed the body (`StreamInterruptedError`)."""
    async with (
        serve(_fast_stream) as url,
        Transport(url, token_cache=TokenCache(StaticTokenSource("t")), read_timeout=0.3) as tr,
    ):
        total = 0
        chunks = 0
        async with tr.stream("POST", "/threads/runs", json={}) as body:
            async for chunk in body:
                total += len(chunk)
                chunks += 1
                if chunks == 1:
                    await anyio.sleep(1.2)  # busy: 4x the read timeout, the server is not idle
        assert total == _FRAMES * len(_FRAME) + len(b"event: done\ndata: [DONE]\n\n")
        assert tr._gate.in_use == 0


LONG = Timing(queue_delay=0.01, run_duration=30.0, delta_interval=0.01)
_ACTIVE = ("queued", "in_progress", "requires_action")


def _left_active(emu: Emulator) -> dict[str, int]:
    """Runs the service still counts as running."""
    by_status = emu.stats()["runs_by_status"]
    return {s: n for s, n in by_status.items() if s in _ACTIVE and n}


async def test_cancel_before_the_run_id_with_one_pooled_connection_still_cancels_the_run() -> None:
    """A caller cancelled while its streamed create is open but before the service named the
    run (only `thread.created` arrived) leaves the body to the cleanup, which reads on for the
    run id and then looks the run up on the thread to cancel it. The body holds a pool slot
    until it is finished: with `pool_limit=1` the look-up waited for that very slot until the
    cleanup's grace ran out, and the run was left going on the service."""
    async with (
        Emulator(EmulatorSettings(timing=LONG, stall_limit=30)) as emu,
        AsyncClient(emu.endpoint, api_key=emu.api_key, pool_limit=1) as client,
    ):
        emu.inject(FaultRule(route="POST /threads/runs", kind="stall", after_events=1))
        with anyio.move_on_after(0.3) as scope:
            await client.run("asst_abc123", "hi", mode="stream")
        assert scope.cancelled_caught
        # The caller waited for the cleanup: the run is cancelled, the slot is free again.
        assert _left_active(emu) == {}
        assert client._transport._gate.in_use == 0
        result = await client.run(
            "asst_abc123", "[emulator:sleep=0.05] and now?", mode="stream", timeout=20
        )
        assert result.state is State.COMPLETED


async def test_client_closed_while_the_consumer_is_between_events_raises() -> None:
    """`AsyncClient.aclose()` stops every invocation still running, and those raise
    `ClientStateError` (its docstring). A stream consumer busy between two events when the
    client closes (no read under way, so nothing to interrupt) saw a clean end of iteration
    instead: a reply cut short with no error and no `RunFinished`."""
    timing = Timing(queue_delay=0.01, run_duration=0.05, delta_interval=0.01)
    async with Emulator(EmulatorSettings(timing=timing)) as emu:
        client = AsyncClient(emu.endpoint, api_key=emu.api_key)
        outcome: list[object] = []
        first_delta = anyio.Event()

        async def consume() -> None:
            try:
                async with client.stream("asst_abc123", "tell me a long story") as stream:
                    async for event in stream:
                        if isinstance(event, TextDelta):
                            first_delta.set()
                            await anyio.sleep(0.3)  # busy with the event
                outcome.append("ended")
            except ClientStateError as exc:
                outcome.append(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(consume)
            with anyio.fail_after(10):
                await first_delta.wait()
            await client.aclose()
        assert len(outcome) == 1 and isinstance(outcome[0], ClientStateError), outcome
        assert _left_active(emu) == {}


def test_openai_objects_copy_deepcopy_and_pickle() -> None:
    """A `ChatCompletion` and its streamed `ChatCompletionChunk`s (with their wrapped choice
    and delta) survive `copy.copy`, `copy.deepcopy` and a pickle round trip, equal to the
    original, as the openai package's models do (frameworks deep-copy responses to log
    them). `OpenAIObject.__getattr__` recursed without end on an object whose `_data` was not
    set yet, which is how `copy` and `pickle` build one."""
    timing = Timing(queue_delay=0.01, run_duration=0.02, delta_interval=0.001)
    with Emulator(EmulatorSettings(timing=timing)).in_thread() as emu:
        common = {
            "model": "azure_ai/agents/asst_abc123",
            "api_base": emu.endpoint,
            "api_key": emu.api_key,
            "messages": [{"role": "user", "content": "What is 2 * 3?"}],
        }
        chunks = list(agentrun.completion(stream=True, **common))
        reply = agentrun.completion(**common)
    chunk = chunks[1]
    assert chunk.choices[0].delta.content
    for copier in (copy.copy, copy.deepcopy, lambda o: pickle.loads(pickle.dumps(o))):
        for obj in (chunk, reply, reply.choices[0].message):
            twin = copier(obj)
            assert type(twin) is type(obj)
            assert twin == obj
        twin = copier(chunk)
        assert twin.choices[0].delta.content == chunk.choices[0].delta.content
        assert copier(reply).choices[0].message.content == reply.choices[0].message.content


async def test_a_cancel_does_not_wait_behind_streams_holding_the_pool() -> None:
    """With `pool_limit=1`, a long stream of another invocation holds the only pooled
    connection. A polled invocation that times out meanwhile must still cancel its run within
    the cleanup's grace: its cancel uses the connection kept for cancels (before, it waited
    behind the stream, past the grace, and the run was left going)."""
    async with (
        Emulator(EmulatorSettings(timing=LONG, stall_limit=30)) as emu,
        AsyncClient(emu.endpoint, api_key=emu.api_key, pool_limit=1) as client,
    ):
        outcome: list[BaseException] = []

        async def polled() -> None:
            try:
                await client.run(
                    "asst_abc123", "[emulator:sleep=20] polled", mode="poll", timeout=1
                )
            except agentrun.APITimeoutError as exc:
                outcome.append(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(polled)
            await anyio.sleep(0.2)  # its run is created; now a stream takes the only slot
            tg.start_soon(
                lambda: client.run("asst_abc123", "[emulator:sleep=15] streamed", mode="stream")
            )
            with anyio.fail_after(8):
                while not outcome:
                    await anyio.sleep(0.05)
            runs = emu.stats()["runs_by_status"]
            assert runs.get("cancelled", 0) + runs.get("cancelling", 0) == 1, runs
            tg.cancel_scope.cancel()  # the stream: cancelled too, by its own cleanup
        assert isinstance(outcome[0], agentrun.APITimeoutError)
        assert _left_active(emu) == {}
