"""What agentrun holds per polled invocation while it waits, by tracemalloc (issue 15).

A smaller, quicker, deterministic companion to `bench.py --plan memory`: the emulator (TLS, as
the bench runs it) in a child process with runs that last 10 minutes; `n` invocations started
at once in this process (`AsyncClient(mode="poll").run()`, or `agentrun.acompletion()`, which
polls too at this size); once the emulator holds all `n` runs active and (`poll`) every
invocation sleeps between polls, or (`acompletion`, whose client is internal) the traced memory
grew by less than 0.5% over `settle` seconds, as the bench's probe waits, garbage is collected
and
a tracemalloc snapshot is diffed against one taken before the burst. Blocks are attributed as
the bench attributes them (`runners/common.py`: `diff_snapshots`): the innermost agentrun frame
of the allocation, else the pooled connections, else this script's own records (its task and
coroutine per invocation: the harness's, not agentrun's), else the allocating line.

    PYTHONPATH=$PWD python benchmarks/micro_memory.py --n 2000 [--variant acompletion]

Prints bytes and blocks per in-flight run: the total, agentrun's own, the harness's, the
connections, then agentrun's lines and the top allocating lines. Then it closes the client,
which cancels every run (the emulator is stopped either way).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import pathlib
import signal
import sys
import tempfile
import time
import tracemalloc
from typing import Any

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE / "runners"))

import common  # noqa: E402  (benchmarks/runners/common.py)
from bench import AGENT, Emulator, _memory_area, _short_path  # noqa: E402

import agentrun  # noqa: E402
from agentrun import AsyncClient  # noqa: E402

#: The harness's own frames (this file): its invocation tasks and their coroutines.
ME = str(pathlib.Path(__file__).resolve())


def _owner(tb: Any) -> str:
    """As `common._owner`, with this script's frames as the harness's."""
    if tb[-1].filename.endswith(common.CONNECTION_FILES):
        return "connection"
    for frame in reversed(tb):
        if "/agentrun/" in frame.filename:
            return f"{frame.filename}:{frame.lineno}"
    for frame in reversed(tb):
        if frame.filename == ME:
            return "harness"
    return f"{tb[-1].filename}:{tb[-1].lineno}"


async def main_async(args: argparse.Namespace, emu: Emulator) -> None:
    client = AsyncClient(
        emu.endpoint, api_key=emu.api_key, verify=str(emu.ca_path), pool_limit=100, mode="poll"
    )
    model = f"azure_ai/agents/{AGENT}"

    async def invoke(i: int, text: str) -> Any:
        if args.variant == "acompletion":
            return await agentrun.acompletion(
                model=model,
                messages=[{"role": "user", "content": text}],
                api_base=emu.endpoint,
                api_key=emu.api_key,
                verify=str(emu.ca_path),
            )
        return await client.run(AGENT, text)

    try:
        # Warm up: connection, imports, the agent's poll schedule (a short run).
        await invoke(-1, "[emulator:sleep=0.3] warm up")
        gc.collect()
        tracemalloc.start(common.FRAMES)
        snap0 = tracemalloc.take_snapshot()
        before = emu.stats()
        tasks = [
            asyncio.ensure_future(invoke(i, f"Tell me about item {i} of the benchmark."))
            for i in range(args.n)
        ]
        # Every run created, then traced memory steady (< 0.5% growth over `settle` s).
        seen: list[tuple[float, int]] = []
        t0 = time.monotonic()
        while True:
            await asyncio.sleep(0.25)
            if any(t.done() for t in tasks):
                raise SystemExit("an invocation ended before the probe")
            stats = await asyncio.to_thread(emu.stats)
            created = stats["runs_created"] - before["runs_created"]
            now, traced = time.monotonic(), tracemalloc.get_traced_memory()[0]
            print(
                f"  {now - t0:5.1f} s: {created} runs created, {traced / 2**20:.1f} MiB traced",
                file=sys.stderr,
                flush=True,
            )
            if created < args.n:
                continue
            if args.variant == "poll":
                # All parked (asleep between polls): nothing in flight on the wire.
                group = client._ctx.poll_group(AGENT)
                while len(group._asleep) < args.n and time.monotonic() - t0 < 120:
                    await asyncio.sleep(0.01)
                print(f"  parked: {len(group._asleep)}", file=sys.stderr)
                break
            seen.append((now, traced))
            seen = [(t, v) for t, v in seen if now - t <= args.settle]
            if now - seen[0][0] >= args.settle * 0.9 and traced <= seen[0][1] * 1.005:
                break
            if now - t0 > 120:
                print("not settled after 120 s: measuring anyway", file=sys.stderr)
                break
        gc.collect()
        snap = tracemalloc.take_snapshot()
        tracemalloc.stop()
        report(snap0, snap, args.n)
    finally:
        for t in tasks if "tasks" in locals() else []:
            t.cancel()
        await asyncio.gather(*(tasks if "tasks" in locals() else []), return_exceptions=True)
        await client.aclose()
        if args.variant == "acompletion":
            from agentrun._openai import aclose_clients

            await aclose_clients()


def report(snap0: Any, snap: Any, n: int) -> None:
    ignore = [
        tracemalloc.Filter(False, tracemalloc.__file__),
        tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
        tracemalloc.Filter(False, "<frozen importlib._bootstrap_external>"),
        tracemalloc.Filter(False, "<unknown>"),
    ]
    snap0, snap = snap0.filter_traces(ignore), snap.filter_traces(ignore)
    size: dict[str, float] = {}
    count: dict[str, float] = {}
    for stat in snap.compare_to(snap0, "traceback"):
        key = _owner(stat.traceback)
        size[key] = size.get(key, 0) + stat.size_diff
        count[key] = count.get(key, 0) + stat.count_diff
    groups: dict[str, float] = {}
    for key, v in size.items():
        area = "harness" if key == "harness" else _memory_area(key)
        groups[area] = groups.get(area, 0) + v
    total = sum(size.values())
    ours = sum(v for k, v in groups.items() if k.startswith("agentrun/"))
    print(f"in flight: {n}; bytes per run (blocks per run)")
    print(f"  total traced             {total / n:8.0f}")
    print(f"  agentrun's own           {ours / n:8.0f}")
    for area, v in sorted(groups.items(), key=lambda kv: -kv[1]):
        if abs(v) / n >= 8:
            print(f"    {area:<58} {v / n:8.0f}")
    print("  agentrun's lines:")
    lines = sorted(((k, v) for k, v in size.items() if "/agentrun/" in k), key=lambda kv: -kv[1])
    for k, v in lines:
        if abs(v) / n >= 8:
            print(f"    {_short_path(k):<40} {v / n:8.0f} ({count[k] / n:.2f})")
    print("  top allocating lines:")
    for s in snap.compare_to(snap0, "lineno")[:25]:
        frame = s.traceback[-1]
        where = _short_path(f"{frame.filename}:{frame.lineno}")
        print(f"    {where:<58} {s.size_diff / n:8.0f} ({s.count_diff / n:.2f})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--variant", choices=("poll", "acompletion"), default="poll")
    ap.add_argument("--settle", type=float, default=3.0, help="seconds of steady memory")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("terminated"))  # stop the emulator too
    with tempfile.TemporaryDirectory() as tmp:
        timing = {"queue_delay": 0.05, "run_duration": 600.0, "delta_interval": 0.01}
        emu = Emulator(pathlib.Path(tmp), timing)
        try:
            asyncio.run(main_async(args, emu))
        finally:
            emu.stop()


if __name__ == "__main__":
    main()
