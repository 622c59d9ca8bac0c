"""What the OpenAI layer adds per call, end to end, with the machine's noise paired out.

`AsyncClient.stream()` and `acompletion(stream=True)` (or, with ``--run``, `AsyncClient.run()`
and `acompletion()`, mode auto) in one process, batch by batch and alternating which goes
first, against one emulator in its own process (TLS on 127.0.0.1; queue 0.01 s, run 0.05 s,
49 deltas 1 ms apart). Each batch is B concurrent calls; its CPU time (`time.process_time()`)
per call is compared with the other kind's batch next to it, so that load from other processes
moves both alike. Prints the medians and the median paired difference in ms per call.

    python benchmarks/openai_interleaved.py [--rounds 40] [--batch 50] [--run]

Compare two trees by running it with each on ``PYTHONPATH`` (alternate them). Used for the
OpenAI-layer figures in benchmarks/analysis.md (issue 15).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pathlib
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import Any

import agentrun
from agentrun import AsyncClient

MODEL = "azure_ai/agents/asst_abc123"
KEY = "emulator-key"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def measure(endpoint: str, ca: str, rounds: int, batch: int, run: bool) -> None:
    client = AsyncClient(endpoint, api_key=KEY, verify=ca, mode="auto" if run else "stream")
    kw: dict[str, Any] = {"api_base": endpoint, "api_key": KEY, "verify": ca}

    def ask(i: int) -> list[dict[str, Any]]:
        return [{"role": "user", "content": f"Tell me about rivers {i}"}]

    async def plain(i: int) -> None:
        if run:
            await client.run("asst_abc123", ask(i))
            return
        async with client.stream("asst_abc123", ask(i)) as events:
            async for _ in events:
                pass

    async def openai(i: int) -> None:
        if run:
            resp = await agentrun.acompletion(MODEL, ask(i), **kw)
            assert resp.choices[0].message.content
            return
        chunks = await agentrun.acompletion(MODEL, ask(i), stream=True, **kw)
        async with chunks:
            async for chunk in chunks:
                choice = chunk.choices[0] if chunk.choices else None
                _ = choice.delta.content if choice is not None else None

    async def timed(fn: Callable[[int], Awaitable[None]]) -> float:
        t = time.process_time()
        await asyncio.gather(*(fn(i) for i in range(batch)))
        return (time.process_time() - t) / batch * 1e3

    await timed(plain)
    await timed(openai)
    got: dict[str, list[float]] = {"plain": [], "openai": []}
    for r in range(rounds):
        order = [("plain", plain), ("openai", openai)]
        for name, fn in order[::-1] if r % 2 else order:
            got[name].append(await timed(fn))
    diff = [b - a for a, b in zip(got["plain"], got["openai"], strict=True)]
    names = ("run()", "acompletion()") if run else ("stream()", "acompletion(stream=True)")
    print(
        f"{names[0]} {statistics.median(got['plain']):.3f} ms/call, {names[1]} "
        f"{statistics.median(got['openai']):.3f} ms/call, paired difference "
        f"{statistics.median(diff):.3f} [{min(diff):.3f}-{max(diff):.3f}] ms/call "
        f"({rounds} rounds of {batch}; load {os.getloadavg()[0]:.1f})"
    )
    await client.aclose()
    await agentrun.aclose_clients()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--run", action="store_true", help="run() and acompletion(), not streams")
    args = ap.parse_args()
    port = _free_port()
    with tempfile.TemporaryDirectory() as tmp:
        ca = str(pathlib.Path(tmp) / "ca.pem")
        cmd = [sys.executable, "-m", "agentrun.cli", "emulator", "--host", "127.0.0.1"]
        cmd += ["--port", str(port), "--tls", "--ca-out", ca, "--queue-delay", "0.01"]
        cmd += ["--run-duration", "0.05", "--delta-interval", "0.001"]
        emu = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        try:
            assert emu.stdout is not None
            emu.stdout.readline()  # its first line: it is listening
            endpoint = f"https://127.0.0.1:{port}/api/projects/emulator"
            asyncio.run(measure(endpoint, ca, args.rounds, args.batch, args.run))
        finally:
            emu.terminate()
            emu.wait(timeout=10)


if __name__ == "__main__":
    main()
