"""Where a polled burst's time goes: every poll's send and answer, against the emulator's runs.

A diagnostic, not a benchmark row: one process, one emulator as `bench.py` starts it (TLS, the
same timings and prompts), one warm-up call, then a burst of `N` polled calls. It wraps the
driver's request step to note each `GET` of a run (sent, answered, the status seen), then prints
requests per call, the lag (the caller holding the reply minus the emulator's `completed_at`,
as `bench.py` computes it) and a time series: runs created and ended, polls sent and how long
they took to be answered, replies delivered.

    python benchmarks/poll_trace.py 1000 [--mode poll|auto] [--out trace.json]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import pathlib
import statistics
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, str(pathlib.Path(__file__).parent))

import bench

from agentrun import AsyncClient, _driver
from agentrun._machine import Op

POLLS: dict[str, list[tuple[float, float, str]]] = collections.defaultdict(list)


def _trace_polls() -> None:
    send = _driver.RunStream._send

    async def traced(self: Any, action: Any) -> Any:
        sent = time.time() * 1000
        nxt = await send(self, action)
        if action.op is Op.GET_RUN and self._machine is not None:
            POLLS[self._machine.run_id].append((sent, time.time() * 1000, str(self._machine.state)))
        return nxt

    _driver.RunStream._send = traced  # type: ignore[method-assign]


async def _burst(emu: bench.Emulator, n: int, mode: str) -> tuple[list[dict[str, Any]], float]:
    client = AsyncClient(
        emu.endpoint, pool_limit=bench.POOL_LIMIT, mode=mode, api_key=emu.api_key,
        verify=str(emu.ca_path),
    )  # fmt: skip
    recs: list[dict[str, Any]] = []

    async def one(i: int) -> None:
        rec: dict[str, Any] = {"start": time.time() * 1000}
        res = await client.run(bench.AGENT, f"Tell me about item {i} of the benchmark.")
        rec.update(done=time.time() * 1000, run_id=res.run_id, requests=res.requests)
        recs.append(rec)

    try:
        await one(-1)
        recs.clear()
        POLLS.clear()
        t0 = time.time()
        await asyncio.gather(*(one(i) for i in range(n)))
        return recs, time.time() - t0
    finally:
        await client.aclose()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("n", type=int)
    ap.add_argument("--mode", default="poll", choices=("poll", "auto", "stream"))
    ap.add_argument("--out", type=pathlib.Path)
    ap.add_argument("--bucket-ms", type=int, default=200)
    args = ap.parse_args()
    _trace_polls()
    with tempfile.TemporaryDirectory(prefix="agentrun-trace-") as tmp:
        emu = bench.Emulator(pathlib.Path(tmp))
        try:
            recs, wall = asyncio.run(_burst(emu, args.n, args.mode))
            runs = {r["id"]: r for r in emu.runs()}
        finally:
            emu.stop()
    for r in recs:
        run = runs[r["run_id"]]
        r.update(created=run["created_at_ms"], completed=run["completed_at_ms"])
        r["polls"] = POLLS.get(r["run_id"], [])
    if args.out:
        args.out.write_text(json.dumps({"wall_s": wall, "calls": recs}))
    lags = sorted(r["done"] - r["completed"] for r in recs)
    runs_ms = sorted(r["completed"] - r["created"] for r in recs)
    print(
        f"N={args.n} mode={args.mode} wall={wall:.2f}s "
        f"requests/call={statistics.fmean(r['requests'] for r in recs):.2f} "
        f"lag p50={lags[len(lags) // 2]:.0f} ms p99={lags[int(len(lags) * 0.99)]:.0f} ms "
        f"run p50={runs_ms[len(runs_ms) // 2]:.0f} ms"
    )
    t0 = min(r["start"] for r in recs)
    b = args.bucket_ms
    created = collections.Counter(int((r["created"] - t0) // b) for r in recs)
    ended = collections.Counter(int((r["completed"] - t0) // b) for r in recs)
    done = collections.Counter(int((r["done"] - t0) // b) for r in recs)
    answer: dict[int, list[float]] = collections.defaultdict(list)
    for r in recs:
        for sent, answered, _ in r["polls"]:
            answer[int((sent - t0) // b)].append(answered - sent)
    print(
        f"{'from ms':>8} {'created':>8} {'ended':>6} {'polls':>6} {'answer p50 ms':>14} {'done':>5}"
    )
    for k in sorted(set(created) | set(ended) | set(done) | set(answer)):
        times = sorted(answer.get(k, []))
        p50 = f"{times[len(times) // 2]:.0f}" if times else "-"
        print(f"{k * b:8d} {created[k]:8d} {ended[k]:6d} {len(times):6d} {p50:>14} {done[k]:5d}")


if __name__ == "__main__":
    main()
