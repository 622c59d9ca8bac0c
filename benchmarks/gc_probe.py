"""The GC's share of a streamed burst: the floor's calls against `AsyncClient.stream()`'s, in
one process, against the bench's emulator (TLS, 1 s runs, `bench.Emulator`) in a child
process (issue 15).

For each phase (`--order`, e.g. ``floor,stream``): N calls at once after one warm-up call;
CPU per call (`time.process_time()`), the time spent in the GC and its collections per
generation (`gc.callbacks`), and the GC-tracked objects per call alive `--sample-at` seconds
into the burst (most of a 1,000 burst waits for one of the 100 pool slots then), with
`--types` the object types that make them up (against the count before the burst).

    PYTHONPATH=<tree> python benchmarks/gc_probe.py [--n 1000] [--order floor,stream] [--types]

The GC counts and object counts are what to compare between trees: the CPU figures move
with the machine's load like the bench's. Used for benchmarks/analysis.md (round 3).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import os
import pathlib
import ssl
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import bench  # the benchmark harness: its Emulator

import agentrun
from agentrun import AsyncClient

_gc_time = [0.0, 0.0]  # total, start of the current collection
_gc_runs = [0, 0, 0]


def _on_gc(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _gc_time[1] = time.perf_counter()
    else:
        _gc_time[0] += time.perf_counter() - _gc_time[1]
        _gc_runs[info["generation"]] += 1


def _prompt(i: int) -> str:
    return f"Tell me about item {i} of the benchmark."


async def _measure(
    one: Callable[[int], Awaitable[None]], args: argparse.Namespace
) -> dict[str, Any]:
    await one(-1)
    gc.collect()
    _gc_time[0] = 0.0
    _gc_runs[:] = [0, 0, 0]
    before = collections.Counter(type(o).__qualname__ for o in gc.get_objects())
    base = sum(before.values())
    seen: dict[str, Any] = {}

    async def sample() -> None:
        await asyncio.sleep(args.sample_at)
        objects = gc.get_objects()
        seen["alive"] = (len(objects) - base) / args.n
        if args.types:
            now = collections.Counter(type(o).__qualname__ for o in objects)
            now.subtract(before)
            seen["types"] = [(k, round(v / args.n, 1)) for k, v in now.most_common(30)]

    sampler = asyncio.ensure_future(sample())
    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(args.n)))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    await sampler
    return {
        "cpu_ms_per_call": round(cpu / args.n * 1e3, 3),
        "gc_ms_per_call": round(_gc_time[0] / args.n * 1e3, 3),
        "gc_collections": list(_gc_runs),
        "alive_per_call": round(seen["alive"], 1),
        "wall_s": round(wall, 1),
        "load": os.getloadavg()[0],
        **({"types": seen["types"]} if args.types else {}),
    }


async def floor_phase(emu: bench.Emulator, args: argparse.Namespace) -> dict[str, Any]:
    """The floor runner's calls (runners/run_floor.py), without its bookkeeping."""
    ctx = ssl.create_default_context(cafile=str(emu.ca_path))
    connector = aiohttp.TCPConnector(limit=bench.POOL_LIMIT, ssl=ctx)
    async with aiohttp.ClientSession(connector=connector) as session:
        url = emu.endpoint.rstrip("/") + "/threads/runs?api-version=v1"
        headers = {"Authorization": f"Bearer {emu.api_key}"}

        async def one(i: int) -> None:
            body = {
                "assistant_id": bench.AGENT,
                "thread": {"messages": [{"role": "user", "content": _prompt(i)}]},
                "stream": True,
            }
            async with session.post(url, json=body, headers=headers) as resp:
                tail = b""
                async for chunk in resp.content.iter_any():
                    tail = (tail + chunk)[-64:]
            if not tail.rstrip().endswith(b"data: [DONE]"):
                raise RuntimeError("the stream ended early")

        return await _measure(one, args)


async def stream_phase(emu: bench.Emulator, args: argparse.Namespace) -> dict[str, Any]:
    """`AsyncClient.stream()` read to its end, as runners/run_agentrun.py's stream variant."""
    async with AsyncClient(
        emu.endpoint,
        api_key=emu.api_key,
        verify=str(emu.ca_path),
        pool_limit=bench.POOL_LIMIT,
        mode="stream",
    ) as client:

        async def one(i: int) -> None:
            async with client.stream(bench.AGENT, _prompt(i)) as events:
                async for ev in events:
                    if isinstance(ev, agentrun.RunFinished):
                        assert ev.result.text

        return await _measure(one, args)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--order", default="floor,stream")
    ap.add_argument("--sample-at", type=float, default=0.5)
    ap.add_argument("--types", action="store_true")
    args = ap.parse_args()
    gc.callbacks.append(_on_gc)
    with tempfile.TemporaryDirectory() as tmp:
        emu = bench.Emulator(pathlib.Path(tmp))
        try:
            for name in args.order.split(","):
                phase = floor_phase if name == "floor" else stream_phase
                print(name, asyncio.run(phase(emu, args)), flush=True)
        finally:
            emu.stop()


if __name__ == "__main__":
    sys.exit(main())
