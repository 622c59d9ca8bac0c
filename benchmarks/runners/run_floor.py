"""The floor: a bare aiohttp client doing what the service requires and nothing else.

Run by the harness like every runner (see common.py for the protocol), in the project's venv.
One invocation is one streaming `POST {endpoint}/threads/runs?api-version=v1` (create a thread
and run the agent on it, `"stream": true`) with a static bearer token, over one
`aiohttp.TCPConnector` of the same size as agentrun's pool (`pool_limit`) trusting the same CA,
reading the SSE body to its end. The only parsing is of the first event (`thread.created`), so
the harness can match the invocation with the emulator's run (for the lag), and a check that
the body ended with `data: [DONE]` (so a cut stream is an error, not a fast call).

It is written as plainly as possible on purpose: every CPU figure in docs/benchmarks.md is a
ratio to this runner's CPU per invocation, measured in the same run.
"""

from __future__ import annotations

import time

import common  # the runner's own directory is on sys.path

T0, CPU0 = time.perf_counter(), common.cpu_seconds()

import asyncio  # noqa: E402
import json  # noqa: E402
import ssl  # noqa: E402
from typing import Any  # noqa: E402

import aiohttp  # noqa: E402

IMPORTED = common.import_figures(T0, CPU0)


async def main_async(cfg: dict[str, Any]) -> None:
    ctx = ssl.create_default_context(cafile=cfg["ca_path"])
    connector = aiohttp.TCPConnector(limit=cfg.get("pool_limit", 100), ssl=ctx)
    session = aiohttp.ClientSession(connector=connector)
    url = cfg["endpoint"].rstrip("/") + "/threads/runs?api-version=v1"
    headers = {"Authorization": f"Bearer {cfg['api_key']}"}

    async def invoke(i: int, rec: dict[str, Any], thread_id: str | None) -> None:
        body = {
            "assistant_id": cfg["agent"],
            "thread": {"messages": [{"role": "user", "content": common.prompt(i, False)}]},
            "stream": True,
        }
        async with session.post(url, json=body, headers=headers) as resp:
            if resp.status != 200:
                raise RuntimeError(f"HTTP {resp.status}: {(await resp.read())[:200]!r}")
            head = b""
            tail = b""
            async for chunk in resp.content.iter_any():
                if rec["thread_id"] is None:
                    head += chunk
                    end = head.find(b"\n\n")
                    if end >= 0:
                        for line in head[:end].split(b"\n"):
                            if line.startswith(b"data:"):
                                rec["thread_id"] = json.loads(line[5:])["id"]
                tail = (tail + chunk)[-64:]
        if not tail.rstrip().endswith(b"data: [DONE]"):
            raise RuntimeError(f"the stream ended early: {tail!r}")
        rec["done_ms"] = common.now_ms()

    try:
        if cfg.get("warmup", True):
            await invoke(-1, common.new_record(-1), None)
        phase = common.Phase(cfg.get("cprofile"))
        phase.ready(IMPORTED)
        records = await common.run_all(cfg["n"], invoke, [], cfg["timeout"])
        phase.end()
    finally:
        await session.close()
    common.finish(cfg, phase, records, dict(IMPORTED))


def main() -> None:
    asyncio.run(main_async(common.load_config()))


if __name__ == "__main__":
    main()
