"""Deadlines, cancellation, pool waits and broken streams, against the real emulator (and a
stalled server) over real sockets on 127.0.0.1.

Every test asserts an outcome: the error type, the runs left active on the service (the
emulator's own count), the requests sent after a cancel. Durations are bounded only generously,
to tell "at the deadline" from "after some unrelated grace period".
"""

from __future__ import annotations

import asyncio
import logging
import pathlib
import random
import socket
import sys
import threading
import time
from collections.abc import Iterator

import anyio
import pytest

import agentrun
from agentrun import AsyncClient
from agentrun._client import RunStream
from agentrun._machine import State
from agentrun.emulator import Emulator, EmulatorSettings, FaultRule, Timing

pytestmark = pytest.mark.anyio

FAST = Timing(queue_delay=0.01, run_duration=0.03, delta_interval=0.001)
#: Runs that stay active long enough for every cancel to find them running.
LONG = Timing(queue_delay=0.01, run_duration=30.0, delta_interval=0.001)
_ACTIVE = ("queued", "in_progress", "requires_action")


def _left_active(emu: Emulator) -> dict[str, int]:
    """Runs the service still counts as running (cancelling ones end by themselves)."""
    by_status = emu.stats()["runs_by_status"]
    return {s: n for s, n in by_status.items() if s in _ACTIVE and n}


async def _settled(emu: Emulator) -> dict[str, int]:
    """The emulator's runs by status once no run is still `cancelling` (bounded wait)."""
    with anyio.move_on_after(10):
        while emu.stats()["runs_by_status"].get("cancelling"):
            await anyio.sleep(0.05)
    return dict(emu.stats()["runs_by_status"])


@pytest.fixture
def stalled() -> Iterator[str]:
    """The base URL of a server that accepts connections and never answers a byte."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        srv.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(srv.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{srv.getsockname()[1]}/api/projects/p"
    finally:
        stop.set()
        thread.join(5)
        for conn in held:
            conn.close()
        srv.close()


# -- deadlines -------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["stream", "poll"])
async def test_stalled_server_times_out_at_the_deadline(stalled: str, mode: str) -> None:
    """A server that never answers gives `APITimeoutError` at the caller's deadline (not at
    a create grace period, and never another error), in both modes."""
    async with AsyncClient(stalled, api_key="k") as client:
        start = time.monotonic()
        with pytest.raises(agentrun.APITimeoutError):
            await client.run("asst_abc123", "hi", mode=mode, timeout=1)  # type: ignore[arg-type]
        assert time.monotonic() - start < 8  # the old create grace alone was 15 s


@pytest.mark.parametrize("stream", [False, True])
async def test_stalled_server_acompletion_times_out(stalled: str, stream: bool) -> None:
    """`acompletion` (plain and streamed) against a stalled server: `APITimeoutError`."""
    start = time.monotonic()

    async def call() -> None:
        resp = await agentrun.acompletion(
            model="azure_ai/agents/asst_abc123",
            messages=[{"role": "user", "content": "hi"}],
            api_base=stalled,
            api_key="k",
            timeout=1,
            stream=stream,
        )
        if stream:
            async for _ in resp:  # type: ignore[union-attr]
                pass

    with pytest.raises(agentrun.APITimeoutError):
        await call()
    assert time.monotonic() - start < 8
    await agentrun.aclose_clients()


def test_stalled_server_sync_completion_times_out(stalled: str) -> None:
    """The sync `completion` against a stalled server: `APITimeoutError` at its deadline."""
    start = time.monotonic()
    with pytest.raises(agentrun.APITimeoutError):
        agentrun.completion(
            model="azure_ai/agents/asst_abc123",
            messages=[{"role": "user", "content": "hi"}],
            api_base=stalled,
            api_key="k",
            timeout=1,
        )
    assert time.monotonic() - start < 8


@pytest.mark.parametrize("mode", ["stream", "poll"])
def test_stalled_server_agentrun_run_reports_a_timeout(
    stalled: str, mode: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`agentrun run` against a stalled server reports the timeout (not an internal error)."""
    from agentrun import cli

    argv = ["run", "--api-base", stalled, "--api-key", "k", "--timeout", "1", "--mode", mode]
    code = cli.main([*argv, "asst_abc123", "hi"])
    err = capsys.readouterr().err
    assert code != 0
    assert "timed out" in err
    assert "report" not in err


@pytest.mark.parametrize("mode", ["stream", "poll"])
async def test_throttled_create_gives_rate_limit_error_within_the_deadline(mode: str) -> None:
    """A create throttled with `429 Retry-After: 30` under `timeout=2` raises `RateLimitError`
    (with `retry_after`) at once: waiting would outlive the invocation's deadline."""
    async with Emulator(EmulatorSettings(timing=FAST)) as emu:
        emu.inject(FaultRule(route="POST /threads/runs", status=429, retry_after=30, times=3))
        async with AsyncClient(emu.endpoint, api_key=emu.api_key) as client:
            start = time.monotonic()
            with pytest.raises(agentrun.RateLimitError) as info:
                await client.run("asst_abc123", "hi", mode=mode, timeout=2)  # type: ignore[arg-type]
            assert time.monotonic() - start < 10
            assert info.value.retry_after == 30
            assert client.statistics().requests_sent == 1  # no retry that could not finish


async def test_throttled_create_is_retried_when_the_deadline_allows() -> None:
    """The same 429 with a short Retry-After and a long deadline is retried and succeeds."""
    async with Emulator(EmulatorSettings(timing=FAST)) as emu:
        emu.inject(FaultRule(route="POST /threads/runs", status=429, retry_after=0.2, times=1))
        async with AsyncClient(emu.endpoint, api_key=emu.api_key) as client:
            result = await client.run("asst_abc123", "What is 2 + 2?", mode="poll", timeout=30)
    assert result.state is State.COMPLETED
    assert "4" in result.text


# -- cancellation ----------------------------------------------------------------------------


async def _cancel_many(client: AsyncClient, how: str, n: int, mode: str) -> None:
    rng = random.Random(7)

    async def one(delay: float) -> None:
        call = client.run("asst_abc123", "hi", mode=mode)  # type: ignore[arg-type]
        if how == "wait_for":
            with pytest.raises((asyncio.TimeoutError, TimeoutError)):
                await asyncio.wait_for(call, delay)
        elif how == "timeout":
            with pytest.raises((asyncio.TimeoutError, TimeoutError)):
                async with asyncio.timeout(delay):
                    await call
        else:
            task = asyncio.get_running_loop().create_task(call)
            await asyncio.sleep(delay)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    # Cancels spread over the creates, the pool waits and the runs themselves: half within
    # the first half second, half later (so that created runs are cancelled even on a slow
    # machine, where the first creates may take longer than half a second).
    delays = [rng.uniform(0.0, 0.5) if i % 2 else rng.uniform(0.5, 5.0) for i in range(n)]
    await asyncio.gather(*(one(d) for d in delays))


# `asyncio.timeout` is new in Python 3.11: on 3.10 the other two ways are tested.
NATIVE_CANCELS = ["wait_for", "task_cancel"] + (["timeout"] if sys.version_info >= (3, 11) else [])


@pytest.mark.parametrize("how", NATIVE_CANCELS)
@pytest.mark.parametrize("mode", ["stream", "poll"])
async def test_native_asyncio_cancellation_leaves_no_run_active(how: str, mode: str) -> None:
    """500 invocations in flight, each cancelled by plain asyncio (`wait_for`, `timeout`,
    `Task.cancel`) at a random point: afterwards no run is active on the service."""
    async with Emulator(EmulatorSettings(timing=LONG)) as emu:
        async with AsyncClient(emu.endpoint, api_key=emu.api_key, pool_limit=50) as client:
            with anyio.fail_after(120):
                await _cancel_many(client, how, 500, mode)
        # The client's close waited for every cleanup.
        assert _left_active(emu) == {}
        statuses = await _settled(emu)
    assert set(statuses) == {"cancelled"}, statuses  # runs were created, and all cancelled


async def test_cancel_sends_no_create_that_waited_for_a_connection() -> None:
    """Cancelling invocations whose creates wait for a pooled connection sends nothing after
    the cancel: the waiting creates are dropped, the sent one's run is cancelled."""
    async with Emulator(EmulatorSettings(timing=LONG)) as emu:
        client = AsyncClient(emu.endpoint, api_key=emu.api_key, pool_limit=1)
        async with client, anyio.create_task_group() as tg:
            for _ in range(20):
                tg.start_soon(lambda: client.run("asst_abc123", "hi", mode="stream"))
            with anyio.fail_after(30):
                while not emu.runs():
                    await anyio.sleep(0.05)
            await anyio.sleep(0.3)
            runs_before = len(emu.runs())
            cutoff_ms = time.time() * 1000
            tg.cancel_scope.cancel()
        runs = emu.runs()
        assert len(runs) == runs_before == 1
        assert not [r for r in runs if r["created_at_ms"] > cutoff_ms]
        # One create was sent (the one holding the connection); after the cancel, only the
        # cancel of its run.
        requests = emu.stats()["requests"]
        assert set(requests) == {
            "POST /threads/runs",
            "POST /threads/{thread_id}/runs/{run_id}/cancel",
        }, requests
        assert [sum(counts.values()) for counts in requests.values()] == [1, 1]
        assert _left_active(emu) == {}


async def test_closing_the_client_cancels_runs_in_flight(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """`aclose()` with 500 `run()` calls in flight (creating, streaming, polling) cancels every
    run on the service; the calls raise `ClientStateError`; nothing is logged as a warning."""
    caplog.set_level(logging.WARNING, logger="agentrun")
    async with Emulator(EmulatorSettings(timing=LONG)) as emu:
        client = AsyncClient(emu.endpoint, api_key=emu.api_key, pool_limit=100)
        loop = asyncio.get_running_loop()
        tasks = [
            loop.create_task(client.run("asst_abc123", f"hi {i}", mode=("stream", "poll")[i % 2]))
            for i in range(500)
        ]
        with anyio.fail_after(60):
            while len(emu.runs()) < 100:
                await anyio.sleep(0.05)
            await client.aclose()
            outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        assert _left_active(emu) == {}
        assert all(isinstance(o, agentrun.ClientStateError) for o in outcomes), {
            type(o).__name__ for o in outcomes
        }
        await _settled(emu)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_breaking_out_of_an_async_completion_stream_cancels_the_run() -> None:
    """Leaving `async for chunk in await acompletion(stream=True)` early (no `aclose`)
    cancels the run on the service, as the sync twin does."""
    async with Emulator(EmulatorSettings(timing=LONG)) as emu:
        stream = await agentrun.acompletion(
            model="azure_ai/agents/asst_abc123",
            api_base=emu.endpoint,
            api_key=emu.api_key,
            stream=True,
            messages=[{"role": "user", "content": "hello"}],
        )
        async for _chunk in stream:  # type: ignore[union-attr]
            break
        del stream, _chunk
        with anyio.fail_after(15):
            while [r["status"] for r in emu.runs()] != ["cancelled"]:
                await anyio.sleep(0.05)
        await agentrun.aclose_clients()


async def test_dropping_an_unfinished_run_stream_cancels_the_run() -> None:
    """A `RunStream` from `open_stream` dropped after its first event (never closed) has its
    run cancelled in the background, and the client's `aclose()` waits for that."""
    async with Emulator(EmulatorSettings(timing=LONG)) as emu:
        async with AsyncClient(emu.endpoint, api_key=emu.api_key) as client:
            events: RunStream | None = client.open_stream("asst_abc123", "hi")
            assert events is not None
            async for _event in events:
                if events.run_id is not None:
                    break
            events = None
            _event = None
        assert [r["status"] for r in emu.runs()] in (["cancelled"], ["cancelling"])


# -- waiting for the pool ----------------------------------------------------------------------


async def test_waiting_for_the_pool_is_bounded_by_the_deadline_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Pool of 2, 8 streamed runs of 1 s each (so the last wait ~3 s for a connection, far
    longer than the only grace period left, made tiny here): all complete, and the runs are
    created in the order the invocations asked for a connection (first come, first served)."""
    monkeypatch.setattr("agentrun._driver.CANCEL_GRACE", 0.2)
    timing = Timing(queue_delay=0.01, run_duration=1.0, delta_interval=0.001)
    async with Emulator(EmulatorSettings(timing=timing)) as emu:
        async with AsyncClient(emu.endpoint, api_key=emu.api_key, pool_limit=2) as client:
            results: dict[int, str] = {}

            async def one(i: int) -> None:
                result = await client.run(
                    "asst_def456",
                    f"What is {i} + 1?",
                    mode="stream",
                    timeout=60,
                    metadata={"i": str(i)},
                )
                results[i] = result.text

            with anyio.fail_after(60):
                async with anyio.create_task_group() as tg:
                    for i in range(8):
                        tg.start_soon(one, i)
                        await anyio.sleep(0.01)  # a known order of arrival
        runs = sorted(emu.runs(), key=lambda r: r["created_at_ms"])
    assert sorted(results) == list(range(8))
    assert all(str(i + 1) in text for i, text in results.items())
    order = [int(r["metadata"]["i"]) for r in runs]
    assert sorted(order[:2]) == [0, 1] and sorted(order[2:4]) == [2, 3], order
    assert sorted(order[4:6]) == [4, 5] and sorted(order[6:]) == [6, 7], order


# -- broken streams ----------------------------------------------------------------------------


async def test_a_stream_cut_anywhere_still_gives_the_completed_reply() -> None:
    """Whatever event the stream is cut after (the last `done` included, r4), the run is a
    completed run with its whole reply, never `LocalProtocolError`."""
    emu = Emulator(EmulatorSettings(timing=FAST))
    async with emu, AsyncClient(emu.endpoint, api_key=emu.api_key) as client:
        baseline = await client.run("asst_abc123", "What is 7 * 6?", mode="stream")
        events = 0
        async with client.stream("asst_abc123", "What is 7 * 6?") as stream:
            async for _ in stream:
                events += 1
        # From the second event on the thread is known, so a cut run can be found.
        for after in range(2, 40):
            emu.inject(FaultRule(route="POST /threads/runs", kind="stream_cut", after_events=after))
            result = await client.run("asst_abc123", "What is 7 * 6?", mode="stream")
            assert result.state is State.COMPLETED, after
            assert result.text == baseline.text, after
    assert "42" in baseline.text
    assert events > 3


def test_sync_completion_survives_a_reset_after_done() -> None:
    """The reproduction of r4 through the sync `completion`: the completed reply."""
    with Emulator().in_thread() as emu:
        emu.inject(FaultRule(route="POST /threads/runs", kind="stream_cut", after_events=21))
        resp = agentrun.completion(
            model="azure_ai/agents/asst_abc123",
            api_base=emu.endpoint,
            api_key=emu.api_key,
            messages=[{"role": "user", "content": "What is 7 * 6?"}],
        )
        assert "42" in resp.choices[0].message.content
        assert [r["status"] for r in emu.runs()] == ["completed"]


@pytest.mark.parametrize("failures", [4, 9])
async def test_failed_polls_keep_polling_the_known_run(failures: int) -> None:
    """Polls that use up the transport's attempts (503s) do not fail the invocation or leave
    the run unseen: the known run is polled again, within the deadline, to its reply."""
    timing = Timing(queue_delay=0.01, run_duration=1.0, delta_interval=0.001)
    async with Emulator(EmulatorSettings(timing=timing)) as emu:
        emu.inject(
            FaultRule(route="GET /threads/{thread_id}/runs/{run_id}", status=503, times=failures)
        )
        async with AsyncClient(emu.endpoint, api_key=emu.api_key) as client:
            result = await client.run("asst_abc123", "What is 7 * 6?", mode="poll", timeout=60)
        assert result.state is State.COMPLETED
        assert "42" in result.text
        assert [r["status"] for r in emu.runs()] == ["completed"]


async def test_polls_failing_until_the_deadline_cancel_the_run() -> None:
    """When polls keep failing until the deadline, the caller gets `APITimeoutError` and the
    run is cancelled on the service (not left running)."""
    async with Emulator(EmulatorSettings(timing=LONG)) as emu:
        emu.inject(
            FaultRule(route="GET /threads/{thread_id}/runs/{run_id}", status=503, times=1000)
        )
        async with AsyncClient(emu.endpoint, api_key=emu.api_key) as client:
            with pytest.raises(agentrun.APITimeoutError):
                await client.run("asst_abc123", "hi", mode="poll", timeout=3)
        assert _left_active(emu) == {}


# -- the proxy's clients going away ------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
async def test_proxy_clients_going_away_leave_no_run_active(stream: bool) -> None:
    """500 proxy clients that hang up at random points (before the answer, mid-stream): the
    proxy's handlers are cancelled natively by aiohttp, and no run is left active."""
    import aiohttp

    from agentrun._proxy import ProxyServer
    from agentrun._proxy_config import parse_config

    key = "sk-test"
    async with Emulator(EmulatorSettings(timing=LONG)) as emu:
        config = parse_config(
            "model_list:\n"
            "  - model_name: agent\n"
            "    litellm_params:\n"
            "      model: azure_ai/agents/asst_abc123\n"
            f"      api_base: {emu.endpoint}\n"
            "      api_key: os.environ/AZURE_AD_TOKEN\n"
            "      pool_limit: 50\n"
            f"general_settings:\n  master_key: {key}\n",
            env={"AZURE_AD_TOKEN": emu.api_key},
        )
        server = ProxyServer(config, host="127.0.0.1", port=0)
        await server.start()
        rng = random.Random(3)
        try:
            connector = aiohttp.TCPConnector(limit=0)
            async with aiohttp.ClientSession(connector=connector) as session:

                async def one(delay: float) -> None:
                    body = {
                        "model": "agent",
                        "messages": [{"role": "user", "content": "hi"}],
                        "stream": stream,
                    }
                    with anyio.move_on_after(delay):
                        async with session.post(
                            server.url + "/v1/chat/completions",
                            json=body,
                            headers={"Authorization": f"Bearer {key}"},
                        ) as resp:
                            await resp.read()

                with anyio.fail_after(120):
                    await asyncio.gather(*(one(rng.uniform(0.1, 3.0)) for _ in range(500)))
            with anyio.fail_after(30):
                while emu.stats()["runs_created"] and _left_active(emu):
                    await anyio.sleep(0.1)
        finally:
            await server.stop()
        assert _left_active(emu) == {}
        assert emu.stats()["runs_created"] > 0


def test_stream_dropped_at_the_end_of_asyncio_run_cancels_its_run(tmp_path: pathlib.Path) -> None:
    """Breaking out of `acompletion(stream=True)` as the last thing `main()` does, under
    `asyncio.run`: the loop's shutdown cancels every task once, and the cleanup still cancels
    the run on the service (the process exits cleanly, no run left in progress)."""
    import subprocess
    import sys

    script = tmp_path / "drop.py"
    with Emulator(EmulatorSettings(timing=LONG)).in_thread() as emu:
        script.write_text(
            "import asyncio, agentrun\n"
            "async def main():\n"
            "    s = await agentrun.acompletion(\n"
            "        model='azure_ai/agents/asst_abc123', stream=True,\n"
            "        messages=[{'role': 'user', 'content': 'hi'}],\n"
            f"        api_base={emu.endpoint!r}, api_key={emu.api_key!r})\n"
            "    async for _chunk in s:\n"
            "        break\n"
            "asyncio.run(main())\n"
        )
        proc = subprocess.run(
            [sys.executable, "-W", "error", str(script)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        deadline = time.monotonic() + 10
        while _left_active(emu):
            assert time.monotonic() < deadline, emu.stats()
            time.sleep(0.05)
        assert [r["status"] for r in emu.runs()] in (["cancelled"], ["cancelling"])


@pytest.mark.parametrize("how", ["wait_for", "timeout"])
async def test_cancel_after_thread_created_before_run_created_cancels_the_run(how: str) -> None:
    """A streamed create whose stream names the thread and then stalls (the run exists on
    the service, its id never arrived): a cancel or deadline in that window looks the run up
    on the thread and cancels it, instead of leaving it running."""
    settings = EmulatorSettings(timing=LONG, stall_limit=30)
    async with Emulator(settings) as emu:
        emu.inject(FaultRule(route="POST /threads/runs", kind="stall", after_events=1))
        async with AsyncClient(emu.endpoint, api_key=emu.api_key, mode="stream") as client:
            if how == "wait_for":
                with pytest.raises((asyncio.TimeoutError, TimeoutError)):
                    await asyncio.wait_for(client.run("asst_abc123", "hello"), 1)
            else:
                with pytest.raises(agentrun.APITimeoutError):
                    await client.run("asst_abc123", "hello", timeout=1)
        # The client's close waited for the cleanup.
        assert _left_active(emu) == {}
        statuses = await _settled(emu)
    assert statuses == {"cancelled": 1}, statuses
