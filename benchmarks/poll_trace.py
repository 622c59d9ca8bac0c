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
import contextvars
import cProfile
import itertools
import json
import math
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

sys.path.insert(0, str(pathlib.Path(__file__).parent))

import bench

import agentrun
from agentrun import AsyncClient, _driver, _gate
from agentrun._machine import Op

POLLS: dict[str, list[tuple[float, float, str]]] = collections.defaultdict(list)
#: Per run id, the `GET .../messages` that built its reply: (sent, answered) ms.
LISTS: dict[str, tuple[float, float]] = {}
#: (wall ms, client CPU s, emulator CPU s) every `--cpu-ms`.
CPU: list[tuple[float, float, float]] = []
#: Per request kind (the machine's op), ms each request waited for a pool slot (`PoolGate`).
GATE_WAIT: dict[str, list[float]] = collections.defaultdict(list)
_OP: contextvars.ContextVar[str] = contextvars.ContextVar("op", default="other")


def _trace_polls() -> None:
    send = _driver.RunStream._send

    async def traced(self: Any, action: Any) -> Any:
        sent = time.time() * 1000
        token = _OP.set(action.op.value)
        try:
            nxt = await send(self, action)
        finally:
            _OP.reset(token)
        if action.op is Op.GET_RUN and self._machine is not None:
            POLLS[self._machine.run_id].append((sent, time.time() * 1000, str(self._machine.state)))
        elif action.op is Op.LIST_MESSAGES and self._machine is not None:
            LISTS[self._machine.run_id] = (sent, time.time() * 1000)
        return nxt

    _driver.RunStream._send = traced  # type: ignore[method-assign]
    list_messages = _driver.RunStream._list_messages

    async def traced_list(self: Any) -> None:
        token = _OP.set("list_messages")
        try:
            await list_messages(self)
        finally:
            _OP.reset(token)

    _driver.RunStream._list_messages = traced_list  # type: ignore[method-assign]
    acquire = _gate.PoolGate.acquire

    async def timed(self: Any, urgent: bool, **kw: Any) -> None:
        t = time.perf_counter()
        await acquire(self, urgent, **kw)
        GATE_WAIT[_OP.get()].append(1000 * (time.perf_counter() - t))

    _gate.PoolGate.acquire = timed  # type: ignore[method-assign]


async def _burst(
    emu: bench.Emulator, n: int, mode: str, profile: pathlib.Path | None = None
) -> tuple[list[dict[str, Any]], float]:
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
        GATE_WAIT.clear()
        prof = cProfile.Profile() if profile is not None else None
        if prof is not None:
            prof.enable()
        t0 = time.time()
        await asyncio.gather(*(one(i) for i in range(n)))
        wall = time.time() - t0
        if prof is not None:
            prof.disable()
            prof.dump_stats(profile)
        return recs, wall
    finally:
        await client.aclose()


_EMU_PROFILED = """
import cProfile, os, sys
from agentrun.cli import main
prof = cProfile.Profile()
prof.enable()
try:
    main()
finally:
    prof.disable()
    prof.dump_stats(os.environ["AGENTRUN_EMULATOR_PROFILE"])
"""


def _emulator_from_this_tree(profile: pathlib.Path | None) -> None:
    """Start the emulator from the tree `agentrun` is imported from (not the checkout the venv
    was installed from), under cProfile when `profile` is given."""
    popen = subprocess.Popen

    def start(cmd: list[str], **kw: Any) -> Any:
        if "emulator" in cmd[:4]:
            env = dict(kw.get("env") or os.environ)
            env["PYTHONPATH"] = str(pathlib.Path(agentrun.__file__).resolve().parent.parent)
            if profile is not None:
                env["AGENTRUN_EMULATOR_PROFILE"] = str(profile)
                cmd = [sys.executable, "-c", _EMU_PROFILED, *cmd[cmd.index("emulator") :]]
            else:
                cmd = [sys.executable, "-m", "agentrun.cli", *cmd[cmd.index("emulator") :]]
            kw["env"] = env
        return popen(cmd, **kw)

    bench.subprocess.Popen = start  # type: ignore[assignment]


def _proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) of process `pid`, from /proc."""
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _sample_cpu(pid: int, every: float, stop: threading.Event) -> None:
    while not stop.wait(every):
        CPU.append((time.time() * 1000, time.process_time(), _proc_cpu(pid)))


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else math.nan


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("n", type=int)
    ap.add_argument("--mode", default="poll", choices=("poll", "auto", "stream"))
    ap.add_argument("--out", type=pathlib.Path)
    ap.add_argument("--bucket-ms", type=int, default=200)
    ap.add_argument("--cpu-ms", type=int, default=50, help="CPU sampling period")
    ap.add_argument("--emulator-profile", type=pathlib.Path, help="cProfile the emulator to FILE")
    ap.add_argument("--client-profile", type=pathlib.Path, help="cProfile the burst to FILE")
    args = ap.parse_args()
    _trace_polls()
    _emulator_from_this_tree(args.emulator_profile)
    with tempfile.TemporaryDirectory(prefix="agentrun-trace-") as tmp:
        emu = bench.Emulator(pathlib.Path(tmp))
        try:
            stop = threading.Event()
            sampler = threading.Thread(
                target=_sample_cpu, args=(emu.proc.pid, args.cpu_ms / 1000, stop), daemon=True
            )
            sampler.start()
            try:
                recs, wall = asyncio.run(_burst(emu, args.n, args.mode, args.client_profile))
            finally:
                stop.set()
                sampler.join()
            runs = {r["id"]: r for r in emu.runs()}
        finally:
            emu.stop()
    for r in recs:
        run = runs[r["run_id"]]
        r.update(created=run["created_at_ms"], completed=run["completed_at_ms"])
        r["polls"] = POLLS.get(r["run_id"], [])
        r["list"] = LISTS.get(r["run_id"])
    if args.out:
        args.out.write_text(json.dumps({"wall_s": wall, "calls": recs, "cpu": CPU}))
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
    _timeline(recs)
    print(f"{'pool slot wait, ms':<28} {'p10':>7} {'p50':>7} {'p90':>7} {'mean':>7} {'count':>6}")
    for op, xs in sorted(GATE_WAIT.items()):
        print(
            f"{op:<28} {_pct(xs, 0.1):7.1f} {_pct(xs, 0.5):7.1f} {_pct(xs, 0.9):7.1f} "
            f"{statistics.fmean(xs):7.1f} {len(xs):6d}"
        )
    _cpu_table(recs, t0, b)


def _timeline(recs: list[dict[str, Any]]) -> None:
    """Where each call's lag goes: the run's end -> the poll that saw it ended sent -> that
    poll answered -> the messages list answered -> the caller holding the reply (ms)."""
    parts: dict[str, list[float]] = collections.defaultdict(list)
    for r in recs:
        last = r["polls"][-1] if r["polls"] else None
        if last is None or r["list"] is None:
            continue
        sent, answered = last[0], last[1]
        parts["end -> poll sent"].append(sent - r["completed"])
        parts["poll sent -> answered"].append(answered - sent)
        parts["poll answered -> list sent"].append(r["list"][0] - answered)
        parts["list sent -> answered"].append(r["list"][1] - r["list"][0])
        parts["list answered -> done"].append(r["done"] - r["list"][1])
        parts["lag (end -> done)"].append(r["done"] - r["completed"])
    print(f"{'per call, ms':<28} {'p10':>7} {'p50':>7} {'p90':>7} {'mean':>7}")
    for name, xs in parts.items():
        print(
            f"{name:<28} {_pct(xs, 0.1):7.1f} {_pct(xs, 0.5):7.1f} {_pct(xs, 0.9):7.1f} "
            f"{statistics.fmean(xs):7.1f}"
        )


def _cpu_table(recs: list[dict[str, Any]], t0: float, b: int) -> None:
    """Client and emulator CPU (share of one core) per bucket of the burst."""
    if len(CPU) < 2:
        return
    first_end = min(r["completed"] for r in recs)
    last_done = max(r["done"] for r in recs)
    rows: dict[int, list[float]] = collections.defaultdict(lambda: [0.0, 0.0, 0.0])
    drain = [0.0, 0.0, 0.0]
    for (w0, c0, e0), (w1, c1, e1) in itertools.pairwise(CPU):
        if w1 < t0:
            continue
        row = rows[int((w1 - t0) // b)]
        row[0] += (w1 - w0) / 1000
        row[1] += c1 - c0
        row[2] += e1 - e0
        if w1 >= first_end and w0 <= last_done:
            drain[0] += (w1 - w0) / 1000
            drain[1] += c1 - c0
            drain[2] += e1 - e0
    print(f"{'from ms':>8} {'client CPU %':>13} {'emulator CPU %':>15}")
    for k in sorted(rows):
        wall, c, e = rows[k]
        print(f"{k * b:8d} {100 * c / wall:13.0f} {100 * e / wall:15.0f}")
    if drain[0]:
        print(
            f"drain (first run end -> last reply, {drain[0]:.2f} s): client "
            f"{100 * drain[1] / drain[0]:.0f}% of a core, emulator {100 * drain[2] / drain[0]:.0f}%"
        )


if __name__ == "__main__":
    main()
