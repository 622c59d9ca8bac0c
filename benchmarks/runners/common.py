"""What every runner shares: the handshake with the harness, timing, CPU and memory figures.

Standard library only: it is imported by runners in the project's .venv (agentrun) and in
.bench-venv (the peers). A runner is started as `python RUNNER CONFIG.json`; it

1. imports its library and builds its client (import time and CPU are recorded apart),
2. makes one warm-up invocation unless the config says `"warmup": false`,
3. prints `READY {json}` and waits for `GO` on stdin (the harness snapshots the emulator's
   statistics in between),
4. starts all `n` invocations at once, each recording when it started, when its first text
   delta arrived (streaming) and when the caller held the reply, with the run and thread ids,
5. writes its figures as JSON to the config's `out` path and prints `DONE`.

With `memprobe` in the config (run_agentrun.py), the harness also writes `PROBE` once the
emulator holds all `n` runs active; see MemoryProbe.
"""

from __future__ import annotations

import asyncio
import collections
import gc
import json
import os
import resource
import sys
import threading
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from typing import Any

PAGE = os.sysconf("SC_PAGE_SIZE")

# Recorded when this module is first imported: runners import it before their library.
PROCESS_T0 = time.perf_counter()


def now_ms() -> float:
    """Wall clock in ms since the epoch: the emulator stamps runs with the same clock."""
    return time.time() * 1000.0


def cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def max_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def load_config() -> dict[str, Any]:
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} CONFIG.json")
    with open(sys.argv[1]) as f:
        cfg: dict[str, Any] = json.load(f)
    thread_file = cfg.get("threads_file")
    cfg["thread_ids"] = []
    if thread_file:
        with open(thread_file) as f:
            cfg["thread_ids"] = [line.strip() for line in f if line.strip()]
    return cfg


def prompt(i: int, continued: bool) -> str:
    if continued:
        return f"And now tell me about item {i} of the benchmark."
    return f"Tell me about item {i} of the benchmark."


def new_record(i: int) -> dict[str, Any]:
    return {
        "i": i,
        "start_ms": now_ms(),
        "first_delta_ms": None,
        "done_ms": None,
        "run_id": None,
        "thread_id": None,
        "ok": False,
        "error": None,
        "chars": 0,
    }


def error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]


Invoke = Callable[[int, dict[str, Any], "str | None"], Awaitable[None]]

# Invocations started and finished in the measured phase (read by MemoryProbe).
FLIGHT = {"started": 0, "finished": 0}


async def run_all(n: int, invoke: Invoke, thread_ids: list[str], timeout: float) -> list[Any]:
    """Start `n` invocations at once; each fills its record. Bounded by `timeout` seconds."""

    async def one(i: int) -> dict[str, Any]:
        rec = new_record(i)
        FLIGHT["started"] += 1
        try:
            await invoke(i, rec, thread_ids[i] if thread_ids else None)
            rec["ok"] = rec["done_ms"] is not None
        except Exception as exc:
            rec["error"] = error_text(exc)
        finally:
            FLIGHT["finished"] += 1
        return rec

    tasks = [asyncio.ensure_future(one(i)) for i in range(n)]
    done, pending = await asyncio.wait(tasks, timeout=timeout)
    for t in pending:
        t.cancel()
    out = []
    for i, t in enumerate(tasks):
        if t in done:
            out.append(t.result())
        else:
            rec = new_record(i)
            rec["error"] = f"TimeoutError: not finished within {timeout:g} s"
            out.append(rec)
    if pending:
        await asyncio.wait(pending, timeout=5)
    return out


class Phase:
    """The measured phase: CPU, wall time and memory from GO to the last result."""

    def __init__(self, profile: str | None = None) -> None:
        self.info: dict[str, Any] = {}
        # cProfile over the measured phase only, written as pstats to `profile` (a path).
        self._profile_path = profile
        self._profiler: Any = None

    def ready(self, extra: dict[str, Any]) -> None:
        """Tell the harness we are warm, and wait for it to say GO."""
        self.info["ready_rss"] = rss_bytes()
        self.info["setup_cpu_s"] = cpu_seconds()
        self.info["setup_wall_s"] = time.perf_counter() - PROCESS_T0
        print("READY " + json.dumps(extra), flush=True)
        line = sys.stdin.readline().strip()
        if line != "GO":
            sys.exit(f"expected GO from the harness, got {line!r}")
        # The phase's peak RSS is the process's peak (ru_maxrss) read at the end: CPython
        # seldom gives memory back, so the peak before GO is about the RSS at GO. (A sampling
        # thread was tried: it cost ~5 ms of CPU per second, too much for 1-invocation runs.)
        self.info["load_at_go"] = os.getloadavg()
        if self._profile_path:
            import cProfile

            self._profiler = cProfile.Profile()
        self._cpu0 = cpu_seconds()
        self._wall0 = time.perf_counter()
        self.info["go_ms"] = now_ms()
        if self._profiler is not None:
            self._profiler.enable()

    def end(self) -> None:
        if self._profiler is not None:
            self._profiler.disable()
        self.info["wall_s"] = time.perf_counter() - self._wall0
        self.info["cpu_s"] = cpu_seconds() - self._cpu0
        self.info["load_at_end"] = os.getloadavg()
        if self._profiler is not None:
            self._profiler.dump_stats(self._profile_path)
        self.info["phase_peak_rss"] = max(max_rss_bytes(), rss_bytes())
        self.info["end_ms"] = now_ms()


def finish(cfg: dict[str, Any], phase: Phase, records: list[Any], extra: dict[str, Any]) -> None:
    out = dict(phase.info)
    out.update(extra)
    out["total_cpu_s"] = cpu_seconds()
    out["max_rss"] = max_rss_bytes()
    out["records"] = records
    tmp = cfg["out"] + ".tmp"
    with open(tmp, "w") as f:
        json.dump(out, f)
    os.replace(tmp, cfg["out"])
    print("DONE", flush=True)


def import_figures(t0: float, cpu0: float) -> dict[str, float]:
    return {"import_wall_s": time.perf_counter() - t0, "import_cpu_s": cpu_seconds() - cpu0}


# Stack depth tracemalloc records: enough to find the agentrun frame that asked for a block
# allocated inside a library (json, aiohttp) on its behalf.
FRAMES = 8


class MemoryProbe:
    """A diagnostic (config `memprobe`): memory held with every invocation in flight.

    Meant for an emulator whose runs last long enough (tens of seconds) that every invocation
    has its run created, and none has finished, when memory settles. `before()` (after the
    warm-up, before READY) records RSS and, with `memprobe: "tracemalloc"`, starts tracemalloc
    (FRAMES frames deep) and takes a snapshot. `watch(n)` (a task beside the invocations)
    waits for the harness to write `PROBE` on stdin (it does when the emulator has all `n`
    runs active), then until the measure (traced bytes, or RSS) has grown by less than 0.5%
    over the last 3 s (at most 15 s); it then records RSS, the traced bytes and the wall
    clock, and diffs the snapshots (garbage is collected before either, so the diff is what
    is *held*). tracemalloc slows the process: CPU figures of a probed run mean nothing. The
    harness divides by the runs the emulator had in flight at `at_ms`.
    """

    def __init__(self, mode: str) -> None:
        self.trace = mode == "tracemalloc"
        self.info: dict[str, Any] = {"mode": mode}
        self._snap0: Any = None

    def before(self) -> None:
        gc.collect()
        if self.trace:
            tracemalloc.start(FRAMES)
            self._snap0 = tracemalloc.take_snapshot()
            self.info["traced_before"] = tracemalloc.get_traced_memory()[0]
        self.info["rss_before"] = rss_bytes()

    def _measure(self) -> int:
        return tracemalloc.get_traced_memory()[0] if self.trace else rss_bytes()

    async def watch(self, n: int, window: float = 3.0, limit: float = 15.0) -> None:
        # The harness's word that every run is active, read on a daemon thread (a blocked
        # readline must not hold up the event loop's shutdown).
        loop = asyncio.get_running_loop()
        told = asyncio.Event()

        def read() -> None:
            line = sys.stdin.readline().strip()
            if line == "PROBE":
                loop.call_soon_threadsafe(told.set)

        threading.Thread(target=read, daemon=True).start()
        await told.wait()
        seen: collections.deque[tuple[float, int]] = collections.deque()
        t0 = time.monotonic()
        while True:
            await asyncio.sleep(0.25)
            if FLIGHT["finished"]:
                self.info["missed"] = "an invocation finished before memory settled"
                return
            now, value = time.monotonic(), self._measure()
            seen.append((now, value))
            while seen and now - seen[0][0] > window:
                seen.popleft()
            settled = now - t0 > window and value <= seen[0][1] * 1.005
            if FLIGHT["started"] >= n and (settled or now - t0 > limit):
                break
        self.info["settled"] = settled
        gc.collect()
        self.info["at_ms"] = now_ms()
        self.info["in_flight"] = FLIGHT["started"] - FLIGHT["finished"]
        self.info["rss_at"] = rss_bytes()
        self.info["settle_s"] = round(time.monotonic() - t0, 2)
        if self.trace:
            snap = tracemalloc.take_snapshot()
            self.info["traced_at"] = tracemalloc.get_traced_memory()[0]
            tracemalloc.stop()
            self.info.update(diff_snapshots(self._snap0, snap))

    def report(self) -> dict[str, Any]:
        return self.info


# Allocating files whose blocks belong to a pooled connection (TLS and socket buffers, the
# aiohttp protocol), however the request that opened the connection got there: with a pool of
# 100 their cost per in-flight run falls as runs grow.
CONNECTION_FILES = (
    "/asyncio/sslproto.py",
    "/ssl.py",
    "/asyncio/selector_events.py",
    "/aiohttp/connector.py",
    "/aiohttp/client_proto.py",
)


def _owner(tb: Any) -> str:
    """Who a block is held for: "connection" (CONNECTION_FILES), else the innermost agentrun
    frame of its allocation, else the innermost runner frame (the benchmark's own records),
    else the allocating line."""
    if tb[-1].filename.endswith(CONNECTION_FILES):
        return "connection"
    for marker in ("/agentrun/", "/benchmarks/runners/"):
        for frame in reversed(tb):  # oldest first: reversed is innermost first
            if marker in frame.filename:
                return f"{frame.filename}:{frame.lineno}"
    frame = tb[-1]
    return f"{frame.filename}:{frame.lineno}"


def diff_snapshots(before: Any, after: Any, top: int = 40) -> dict[str, Any]:
    """Bytes and blocks held at `after` minus `before` (largest first): by the allocating file
    and line (`by_file`, `by_line`) and by owner (`by_owner`, see _owner): what agentrun's
    code allocated directly or through a library it called."""
    ignore = [
        tracemalloc.Filter(False, tracemalloc.__file__),
        tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
        tracemalloc.Filter(False, "<frozen importlib._bootstrap_external>"),
        tracemalloc.Filter(False, "<unknown>"),
    ]
    before, after = before.filter_traces(ignore), after.filter_traces(ignore)
    by_file = after.compare_to(before, "filename")
    by_line = after.compare_to(before, "lineno")
    # The top lines overall, and every line of agentrun's own that holds more than before.
    by_line = by_line[:top] + [
        s for s in by_line[top:] if "/agentrun/" in s.traceback[-1].filename and s.size_diff > 0
    ]
    owners: collections.Counter[str] = collections.Counter()
    blocks: collections.Counter[str] = collections.Counter()
    for stat in after.compare_to(before, "traceback"):
        key = _owner(stat.traceback)
        owners[key] += stat.size_diff
        blocks[key] += stat.count_diff
    return {
        "by_owner": [[k, v, blocks[k]] for k, v in owners.most_common() if v > 0],
        "by_file": [
            [s.traceback[-1].filename, s.size_diff, s.count_diff]
            for s in by_file
            if s.size_diff > 0
        ],
        "by_line": [
            [f"{s.traceback[-1].filename}:{s.traceback[-1].lineno}", s.size_diff, s.count_diff]
            for s in by_line
            if s.size_diff > 0
        ],
    }
