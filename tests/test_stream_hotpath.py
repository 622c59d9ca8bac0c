"""The streaming phase's hot path (issue 15): `RunStream` reads the event stream itself.

Pins what the flat reader must keep from the step-by-step one it replaced: the deadline and
`AsyncClient.aclose()` interrupt a pending body read and end the invocation as before, the
SSE decoder's single-frame fast path gives the general path's events, and a streamed body
keeps the transport's read bound (`read_timeout`) with its own idle watch.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import pytest
from _web import serve
from aiohttp import web

import agentrun
from agentrun import AsyncClient
from agentrun._auth import StaticTokenSource, TokenCache
from agentrun._results import RunFinished, TextDelta
from agentrun._sse import SSEDecoder
from agentrun._transport import StreamInterruptedError, Transport
from agentrun.emulator import Emulator, EmulatorSettings, Timing

pytestmark = pytest.mark.anyio

FAST = Timing(queue_delay=0.01, run_duration=0.03, delta_interval=0.001)


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(EmulatorSettings(timing=FAST)) as e:
        yield e


async def _until_no_active_run(emu: Emulator) -> None:
    with anyio.fail_after(5):
        while emu.stats()["active_runs"]:
            await anyio.sleep(0.02)


def _statuses(emu: Emulator) -> set[str]:
    return {r["status"] for r in emu.runs()}


# -- the deadline and the client closing, while a body read waits ------------------------------


async def test_deadline_during_a_silent_stream_times_out_and_cancels_the_run(
    emu: Emulator,
) -> None:
    """A stream that goes quiet (the run sleeps) past the deadline: the pending read is
    interrupted, the caller gets `APITimeoutError` naming the run, and the run is cancelled."""
    async with AsyncClient(emu.endpoint, api_key=emu.api_key) as client:
        seen: list[object] = []

        async def consume() -> None:
            async with client.stream(
                "asst_abc123", "Wait [emulator:sleep=5]", timeout=0.5
            ) as events:
                async for event in events:
                    seen.append(event)

        with anyio.fail_after(10), pytest.raises(agentrun.APITimeoutError) as info:
            await consume()
        assert info.value.run_id is not None
        assert seen  # the run's first state changes came before the silence
        assert not any(isinstance(e, RunFinished) for e in seen)
    await _until_no_active_run(emu)
    assert _statuses(emu) <= {"cancelling", "cancelled"}


async def test_deadline_passing_while_the_caller_holds_an_event_times_out(emu: Emulator) -> None:
    """The deadline passes between two reads (the caller is busy with an event): the next
    step raises `APITimeoutError` at once and the run is cancelled."""
    async with AsyncClient(emu.endpoint, api_key=emu.api_key) as client:

        async def consume() -> None:
            async with client.stream(
                "asst_abc123", "Wait [emulator:sleep=5]", timeout=0.5
            ) as events:
                async for _ in events:
                    await anyio.sleep(0.7)  # past the deadline, with no read pending

        with anyio.fail_after(10), pytest.raises(agentrun.APITimeoutError):
            await consume()
    await _until_no_active_run(emu)
    assert _statuses(emu) <= {"cancelling", "cancelled"}


async def test_run_in_stream_mode_times_out_during_a_silent_stream(emu: Emulator) -> None:
    """`run(mode="stream")` (no events handed out, so reads follow each other inside one
    `__anext__`) is bounded by the deadline the same way."""
    async with AsyncClient(emu.endpoint, api_key=emu.api_key) as client:
        with anyio.fail_after(10), pytest.raises(agentrun.APITimeoutError) as info:
            await client.run("asst_abc123", "Wait [emulator:sleep=5]", mode="stream", timeout=0.5)
        assert info.value.run_id is not None
    await _until_no_active_run(emu)
    assert _statuses(emu) <= {"cancelling", "cancelled"}


async def test_client_closing_during_a_stream_read_cancels_the_run(emu: Emulator) -> None:
    """`AsyncClient.aclose()` while a stream waits for its next chunk: the caller gets
    `ClientStateError` saying the run was cancelled, and `aclose()` returns once it is."""
    client = AsyncClient(emu.endpoint, api_key=emu.api_key)
    got: list[BaseException] = []
    first = anyio.Event()

    async def consume() -> None:
        try:
            async with client.stream("asst_abc123", "Wait [emulator:sleep=5]") as events:
                async for event in events:
                    if events.run_id is not None:
                        first.set()
                    del event
        except agentrun.ClientStateError as exc:
            got.append(exc)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(consume)
            await first.wait()
            await anyio.sleep(0.1)  # the stream is silent now: a read waits
            await client.aclose()
    assert len(got) == 1
    assert "was cancelled" in str(got[0])
    await _until_no_active_run(emu)
    assert _statuses(emu) <= {"cancelling", "cancelled"}


async def test_streamed_reply_is_whole_and_the_connection_reused(emu: Emulator) -> None:
    """Through the flat reader the deltas add up to the final text, and a stream read to its
    end gives its connection back to the pool (three streams, one connection)."""
    async with AsyncClient(emu.endpoint, api_key=emu.api_key) as client:
        for i in range(3):
            text = ""
            async with client.stream("asst_abc123", f"Hello {i}") as events:
                async for event in events:
                    if isinstance(event, TextDelta):
                        text += event.text
                    elif isinstance(event, RunFinished):
                        assert event.result.text == text
            assert text
        assert client.statistics().connections_opened == 1


# -- the SSE decoder's single-frame fast path --------------------------------------------------

FRAMES = [
    b'event: thread.message.delta\ndata: {"a": 1}\n\n',
    b"event: \ndata: x\n\n",  # an empty name is "message"
    "event: caf\u00e9\ndata: \u00fcber \u2603\n\n".encode(),
    b"event: a\ndata: \n\n",  # empty data
    b"event: a\ndata:  two spaces\n\n",
    b"event:  a\ndata: x\n\n",
    b"event: a\r\ndata: x\r\n\r\n",  # CRs: the general path
    b"event: a\ndata: 1\ndata: 2\n\n",  # two data lines: the general path
    b"event: a\nid: 7\ndata: x\n\n",
    b"event: a\ndata: x\nretry: 10\n\n",
    b"event: a\ndata: x\n\nevent: b\ndata: y\n\n",  # two frames in one chunk
]


@pytest.mark.parametrize("frame", FRAMES)
def test_single_frame_fast_path_matches_the_byte_by_byte_decode(frame: bytes) -> None:
    """A chunk fed whole gives exactly the events (name, data, id, retry) that the same
    bytes fed one at a time give, also after an earlier frame set an id, and the decoder is
    left in the same state (the next frame decodes the same)."""
    lead = b"id: 3\nevent: z\ndata: lead\n\n"
    whole, split = SSEDecoder(), SSEDecoder()
    assert whole.feed(lead) == [ev for i in range(len(lead)) for ev in split.feed(lead[i : i + 1])]
    got = whole.feed(frame)
    want = [ev for i in range(len(frame)) for ev in split.feed(frame[i : i + 1])]
    assert got == want
    assert got  # every sample completes at least one event
    after = b"event: next\ndata: n\n\n"
    assert whole.feed(after) == split.feed(after)


def test_single_frame_fast_path_rejects_bad_utf8_like_the_general_path() -> None:
    """Invalid UTF-8 in a whole frame raises `RemoteProtocolError`, as split across chunks."""
    d = SSEDecoder()
    d.feed(b"event: a\ndata: x\n\n")
    with pytest.raises(agentrun.RemoteProtocolError):
        d.feed(b"event: a\ndata: \xff\xfe\n\n")


def test_single_frame_fast_path_keeps_the_size_limit() -> None:
    """A whole frame over `max_size` raises, as the general path does."""
    d = SSEDecoder(max_size=16)
    d.feed(b"event: a\ndata: x\n\n")
    with pytest.raises(agentrun.RemoteProtocolError):
        d.feed(b"event: a\ndata: " + b"y" * 40 + b"\n\n")


# -- the read bound of a streamed body ---------------------------------------------------------


def _cache() -> TokenCache:
    return TokenCache(StaticTokenSource("t"))


async def test_a_streamed_body_silent_past_the_read_timeout_breaks() -> None:
    """A body that sends one chunk then nothing fails with `StreamInterruptedError` once it
    was silent for the transport's `read_timeout` (after the chunk that did arrive)."""

    async def stall(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b"event: a\ndata: 1\n\n")
        await anyio.sleep(30)
        return response

    async with (
        serve(stall) as url,
        Transport(url, token_cache=_cache(), read_timeout=0.4) as transport,
    ):
        chunks: list[bytes] = []

        async def read() -> None:
            async with transport.stream("POST", "threads/runs", json={}) as body:
                async for chunk in body:
                    chunks.append(chunk)

        with anyio.fail_after(10), pytest.raises(StreamInterruptedError):
            await read()
        assert chunks == [b"event: a\ndata: 1\n\n"]


async def test_a_streamed_body_that_keeps_sending_outlives_the_read_timeout() -> None:
    """A body sending a chunk every 50 ms for well over `read_timeout` is read to its end:
    the bound is on silence, not on the body's length."""

    async def trickle(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for i in range(24):
            await response.write(f"event: a\ndata: {i}\n\n".encode())
            await anyio.sleep(0.05)
        await response.write_eof()
        return response

    async with (
        serve(trickle) as url,
        Transport(url, token_cache=_cache(), read_timeout=0.4) as transport,
    ):
        data = b""
        with anyio.fail_after(10):
            async with transport.stream("POST", "threads/runs", json={}) as body:
                async for chunk in body:
                    data += chunk
        assert data.count(b"event: a") == 24
