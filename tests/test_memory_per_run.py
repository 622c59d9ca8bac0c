"""What a polled invocation holds while it waits between polls (issue 15: memory per run in
flight under 20 KiB at 10,000), against the real emulator over 127.0.0.1.

Behaviour, not timings: tracemalloc says which blocks are still held once every invocation is
parked (asleep in its agent's poll group), counted per invocation; the values shared between
invocations are checked by identity; and `bench.py --plan memory` says which part of the RSS
is the benchmark's own.
"""

from __future__ import annotations

import gc
import importlib.util
import inspect
import pathlib
import sys
import tracemalloc
from collections.abc import AsyncIterator, Callable
from types import ModuleType
from typing import Any

import anyio
import pytest

from agentrun import AsyncClient, _driver
from agentrun._machine import RunMachine, State
from agentrun._protocol import ToolCallDelta
from agentrun._reply import Reply
from agentrun.emulator import Emulator, EmulatorSettings, Timing

pytestmark = pytest.mark.anyio

AGENT = "asst_abc123"
TIMING = Timing(queue_delay=0.02, run_duration=0.2, delta_interval=0.02)
#: Invocations parked at once.
N = 10


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(EmulatorSettings(timing=TIMING)) as e:
        yield e


def _held(snap: tracemalloc.Snapshot, where: Callable[[tracemalloc.Traceback], bool]) -> int:
    """Bytes of the blocks in `snap` whose allocation traceback satisfies `where`."""
    return sum(t.size for t in snap.traces if where(t.traceback))


def _decoded_by_transport(tb: tracemalloc.Traceback) -> bool:
    """A block of a JSON response body decoded by the client's transport (the run objects the
    create and the polls return), not the emulator's decoding of the requests."""
    files = [f.filename for f in tb]
    return files[-1].endswith("json/decoder.py") and any(
        f.endswith("agentrun/_transport.py") for f in files
    )


async def _parked(client: AsyncClient, n: int) -> None:
    """Wait until `n` invocations sleep between polls in the agent's poll group."""
    group = client._ctx.poll_group(AGENT)
    with anyio.fail_after(60):  # a bound for a loaded machine, not a timing
        while len(group._asleep) < n:
            await anyio.sleep(0.01)


async def _parked_snapshot(emu: Emulator) -> tracemalloc.Snapshot:
    """A tracemalloc snapshot (started after a warm-up call) taken while `N` polled
    invocations of runs that last a minute all sleep between polls; then they are cancelled."""
    async with AsyncClient(emu.endpoint, api_key=emu.api_key, mode="poll") as client:
        warm = await client.run(AGENT, "Warm up.")
        assert warm.state is State.COMPLETED
        tracemalloc.start(16)
        try:
            async with anyio.create_task_group() as tg:
                for i in range(N):
                    tg.start_soon(client.run, AGENT, f"[emulator:sleep=60] Item {i}.")
                await _parked(client, N)
                gc.collect()
                snap = tracemalloc.take_snapshot()
                tg.cancel_scope.cancel()  # the client cancels the runs
        finally:
            tracemalloc.stop()
    return snap


async def test_a_parked_invocation_keeps_no_decoded_run(emu: Emulator) -> None:
    """While polled invocations sleep until their next poll, none of them holds the run
    object of the create's (or a poll's) response: of the JSON the transport decoded, each
    keeps at most its run's and thread's ids (the state machine's), not the ~50 blocks
    (~3.5 KiB) of the whole object."""
    snap = await _parked_snapshot(emu)
    per_run = _held(snap, _decoded_by_transport) / N
    assert per_run < 400, f"{per_run:.0f} bytes of decoded JSON held per parked invocation"


async def test_the_wait_between_polls_is_small(emu: Emulator) -> None:
    """What the wait itself holds per parked invocation (blocks allocated by `_poll_sleep`'s
    own lines, directly or through asyncio and anyio) is a future and a timer, a few hundred
    bytes: no cancel scope, event or task state of its own (~2.4 KiB before)."""
    lines, first = inspect.getsourcelines(_driver._poll_sleep)
    span = range(first, first + len(lines))

    def in_the_wait(tb: tracemalloc.Traceback) -> bool:
        for frame in reversed(tb):  # innermost first
            if "/agentrun/" in frame.filename:
                return frame.filename.endswith("agentrun/_driver.py") and frame.lineno in span
        return False

    snap = await _parked_snapshot(emu)
    per_run = _held(snap, in_the_wait) / N
    assert per_run < 600, f"{per_run:.0f} bytes held per parked invocation by the wait"


async def test_the_result_still_carries_the_whole_final_run(emu: Emulator) -> None:
    """Dropping the snapshot while parked loses nothing: a polled result's `run` is the final
    run object, whole (`raw` as received, with the fields the parsed `Run` reads), and the
    usage the final poll brought."""
    async with AsyncClient(emu.endpoint, api_key=emu.api_key, mode="poll") as client:
        result = await client.run(AGENT, "[emulator:sleep=0.5] Tell me a story.")
    assert result.state is State.COMPLETED and result.mode == "poll"
    assert result.requests >= 3  # it slept between polls at least once
    run = result.run
    assert run is not None
    assert run.status == "completed" and run.id == result.run_id
    assert run.raw["status"] == "completed" and run.raw["id"] == result.run_id
    assert {"thread_id", "assistant_id", "created_at", "completed_at", "usage"} <= set(run.raw)
    assert result.usage is not None and result.usage.total_tokens > 0


def _bench() -> ModuleType:
    path = pathlib.Path(__file__).resolve().parent.parent / "benchmarks" / "bench.py"
    spec = importlib.util.spec_from_file_location("agentrun_bench_memory_under_test", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_the_bench_says_which_part_of_the_rss_is_its_own() -> None:
    """`bench.py --plan memory`: each RSS row gets the benchmark runner's own share per run
    (from the tracemalloc row of the same client) and the RSS per run without it; a client
    with no tracemalloc row gets neither (nothing measured to subtract)."""
    bench = _bench()
    rows: list[dict[str, Any]] = [
        {"client": "agentrun-poll", "probe": "rss", "memory": {"rss_kib_per_run": 19.5}},
        {
            "client": "agentrun-poll",
            "probe": "tracemalloc",
            "memory": {
                "rss_kib_per_run": 40.0,
                "by_owner_kib_per_run": {"agentrun/_driver.py": 3.0, bench.HARNESS_AREA: 1.75},
            },
        },
        {"client": "agentrun-acompletion", "probe": "rss", "memory": {"rss_kib_per_run": 21.0}},
    ]
    bench.harness_share(rows)
    assert rows[0]["memory"]["harness_kib_per_run"] == 1.75
    assert rows[0]["memory"]["rss_kib_per_run_less_harness"] == 17.75
    assert "harness_kib_per_run" not in rows[1]["memory"]
    assert rows[2]["memory"] == {"rss_kib_per_run": 21.0}


#: Allocating files of a pooled connection's buffers (as `benchmarks/runners/common.py`
#: counts them): shared by the runs, not held per run.
_CONNECTION_FILES = (
    "/asyncio/sslproto.py",
    "/ssl.py",
    "/asyncio/selector_events.py",
    "/aiohttp/connector.py",
    "/aiohttp/client_proto.py",
)


def _agentruns_own(tb: tracemalloc.Traceback) -> bool:
    """A block whose allocation passed through agentrun's client code (not the emulator's,
    not a pooled connection's buffers)."""
    if tb[-1].filename.endswith(_CONNECTION_FILES):
        return False
    for frame in reversed(tb):  # innermost first
        if "/agentrun/" in frame.filename:
            return "/agentrun/emulator/" not in frame.filename
    return False


async def test_a_parked_invocation_holds_a_few_kib(emu: Emulator) -> None:
    """Everything agentrun's code allocated and still holds per parked invocation (the
    innermost agentrun frame of each block, as the bench's tracemalloc probe counts it) is
    under 10 KiB with 10 in flight (~7 KiB, a third of it the share of the pooled
    connections' objects): the decoded run, the wait's scope and event, per-invocation copies
    of the same move causes and empty options are not among it (~13.5 KiB before)."""
    snap = await _parked_snapshot(emu)
    per_run = _held(snap, _agentruns_own) / N
    assert per_run < 10 * 1024, f"{per_run:.0f} bytes held per parked invocation"


def test_machines_share_their_move_causes() -> None:
    """Two machines moved by the same kind of update record the same cause string (one
    object, not a copy per machine in flight)."""
    a = RunMachine(mode="poll", now=0.0)
    b = RunMachine(mode="poll", now=0.0)
    for m, run_id in ((a, "run_a"), (b, "run_b")):
        m.start(0.0)
        m.run_update(
            "in_progress", run_id=run_id, thread_id="thread_" + run_id, now=1.0, via="poll"
        )
    assert [t.cause for t in a.history] == ["start", "poll: run created", "poll: in_progress"]
    assert all(x.cause is y.cause for x, y in zip(a.history, b.history, strict=True))


async def test_invocations_without_options_share_one_options_value() -> None:
    """Invocations that set no run option share one (immutable) `RunOptions`; one that sets
    an option gets its own, with that option."""
    async with AsyncClient("https://example.invalid/api/projects/p", api_key="k") as client:
        a = client.open_stream(AGENT, "One.")
        b = client.open_stream(AGENT, "Two.", temperature=None)
        c = client.open_stream(AGENT, "Three.", temperature=0.5)
        try:
            assert a._inv.options is b._inv.options
            assert c._inv.options is not a._inv.options
            assert c._inv.options.temperature == 0.5 and a._inv.options.temperature is None
        finally:
            for s in (a, b, c):
                await s.aclose()


def test_replies_share_their_empty_maps_until_written() -> None:
    """A reply that delivered no text and saw no tool call holds no maps of its own (one
    shared, read-only empty map); its first delta gives it its own, and the next reply still
    starts empty."""
    a, b = Reply(), Reply()
    assert a.delivered is b.delivered and a.call_types is b.call_types
    assert not a.delivered
    delta = a.text_delta("msg_1", 0, "Hello")
    assert delta is not None and delta.text == "Hello"
    a.text_delta("msg_1", 0, " world")
    assert dict(a.delivered) == {("msg_1", 0): ["Hello", " world"]}
    assert not b.delivered and not Reply().delivered
    call = ToolCallDelta(step_id="step_1", index=0, id="call_1", name="f", arguments="", type=None)
    assert a.public_delta(call) is not None
    assert dict(a.call_types) == {("step_1", 0): "function"} and not b.call_types
