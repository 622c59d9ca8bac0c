"""agentrun's own work in one streamed call's streaming phase, without network (issue 15).

`RunStream._on_chunk` (the driver's per-chunk step: SSE decoding, the events' parsing, the
state machine, the caller's events) over the chunks of one call as the emulator sends them
(compact JSON, the first delta with ``"annotations": []``; `thread.created`;
`thread.run.created` + `queued`; `in_progress`; the step's and message's `created` +
`in_progress` with the first delta; 47 one-delta chunks; the last delta with the message's
and step's `completed`, `thread.run.completed` and `done`: 61 events), CPU time per call
(`time.process_time()`), plus the objects the call leaves to the
GC (container objects the call leaves alive, which is what counts toward a collection).

    PYTHONPATH=<tree> python benchmarks/micro_call.py [--reps N] [--rounds K] [--profile]

Compare two trees by running it with each on ``PYTHONPATH``, alternated (the machine is
shared); used for the before/after figures in benchmarks/analysis.md. It drives the tree's
own `RunStream` (built as `_open_stream` builds it), so it measures the code the bench runs.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import json
import pstats
import statistics
import time
from typing import Any

import micro_hotpath as shapes  # the same objects as micro_hotpath's `burst` row

from agentrun._classic.protocol import ClassicProtocol
from agentrun._driver import RunStream
from agentrun._inputs import RunOptions
from agentrun._machine import RunMachine
from agentrun._protocol import Invocation
from agentrun._sse import SSEDecoder


def _frame(name: str, data: Any) -> str:
    body = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"event: {name}\ndata: {body}\n\n"


def call_chunks(deltas: int = 49) -> list[bytes]:
    """One call's body as the emulator writes it (see the module docstring)."""
    f = [_frame(name, json.loads(c.decode().split("data: ", 1)[1])) for name, c in _burst()]
    d = [_frame("thread.message.delta", shapes._delta(i)) for i in range(deltas)]
    # The emulator's first delta of a message also carries ``"annotations": []``.
    first = shapes._delta(0)
    first["delta"]["content"][0]["text"]["annotations"] = []
    d[0] = _frame("thread.message.delta", first)
    done = _frame("done", "[DONE]")
    chunks = [f[0], f[1] + f[2], f[3], f[4] + f[5] + f[6] + f[7] + d[0]]
    chunks += d[1:-1]
    chunks.append(d[-1] + f[8] + f[9] + f[10] + done)
    return [c.encode() for c in chunks]


def _burst() -> list[tuple[str, bytes]]:
    out = []
    for chunk in shapes.BURST[:-1]:
        name = chunk.decode().split("\n", 1)[0][len("event: ") :]
        out.append((name, chunk))
    return out


class _Ctx:
    """What `RunStream.__init__` reads of a `DriverContext`."""

    def __init__(self) -> None:
        self.protocol = ClassicProtocol()

    def protocol_for(self, inv: Invocation) -> ClassicProtocol:
        return self.protocol


def _open(ctx: Any, inv: Invocation, now: float) -> RunStream:
    """A `RunStream` in its streaming phase, as `_steps` and `_open_stream` leave it."""
    rs = RunStream(ctx, inv, emit=True)
    m = rs._machine = RunMachine(mode="stream", now=now)
    rs._mode = "stream"
    m.start(now)
    rs._decoder = SSEDecoder()
    protocol = rs._protocol
    hot: tuple[Any, ...] = (
        rs._emit,
        rs._col.pending,
        rs._col.public_delta,
        protocol.quiet_events,
        protocol.stream_events,
        f"event: {protocol.delta_event}\ndata: ".encode(),
        protocol.delta_event,
        protocol.plain_delta,
        rs._col.text_delta,
    )
    if hasattr(protocol, "snapshot_events"):  # this branch's tree
        hot += (protocol.snapshot_events,)
    rs._hot = hot
    return rs


def call_once(ctx: Any, inv: Invocation, chunks: list[bytes], now: float) -> int:
    rs = _open(ctx, inv, now)
    n = 0
    for chunk in chunks:
        n += len(rs._on_chunk(chunk))
    assert rs._after is not None, "the stream did not end"
    return n


async def main_async(args: argparse.Namespace) -> None:
    ctx = _Ctx()
    inv = Invocation(
        agent="asst_1",
        messages=(),
        options=RunOptions(),
        thread_id=None,
        run_id=None,
        tool_outputs=(),
        timeout=None,
        mode="stream",
    )
    chunks = call_chunks()
    now = asyncio.get_running_loop().time()
    events = call_once(ctx, inv, chunks, now)
    if args.profile:
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(args.reps):
            call_once(ctx, inv, chunks, now)
        prof.disable()
        st = pstats.Stats(prof)
        print(f"{st.total_calls / args.reps:.0f} function calls per call")  # type: ignore[attr-defined]
        st.sort_stats("tottime").print_stats(15)
        return
    rounds = []
    for _ in range(args.rounds):
        gc.collect()
        t = time.process_time()
        for _ in range(args.reps):
            call_once(ctx, inv, chunks, now)
        rounds.append((time.process_time() - t) / args.reps * 1e6)
    # Container objects a call leaves alive until its stream is dropped (the GC's generation
    # count moves with objects made and not yet freed).
    gc.collect()
    gc.disable()
    count0 = gc.get_count()[0]
    rs = _open(ctx, inv, now)
    for chunk in chunks:
        rs._on_chunk(chunk)
    alive = gc.get_count()[0] - count0
    gc.enable()
    print(
        f"call: {statistics.median(rounds):.1f} us per call "
        f"[{min(rounds):.1f}-{max(rounds):.1f}] over {args.rounds} rounds of {args.reps}; "
        f"{events} caller events; {alive} GC-tracked objects alive after it"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--profile", action="store_true")
    asyncio.run(main_async(ap.parse_args()))


if __name__ == "__main__":
    main()
