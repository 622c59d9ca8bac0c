"""The official `openai` client against `agentrun serve` (the proxy), which calls the emulator.

Run by the harness like every runner (see common.py), in the project's venv. The harness
starts the proxy in its own process (`agentrun serve --config ...`, plain HTTP on 127.0.0.1,
one model whose `api_base` is the emulator over TLS with the same CA and static token as the
other clients) and measures that process's CPU over the same phase; this runner measures the
openai client's own CPU. Variants: `chat` (`chat.completions.create`) and `chat-stream`
(`stream=True`, every chunk read). The thread is taken from the proxy's
`x-agentrun-thread-id` response header, so the harness can match the emulator's run.
"""

from __future__ import annotations

import time

import common  # the runner's own directory is on sys.path

T0, CPU0 = time.perf_counter(), common.cpu_seconds()

import asyncio  # noqa: E402
from typing import Any  # noqa: E402

import openai  # noqa: E402

IMPORTED = common.import_figures(T0, CPU0)
THREAD_HEADER = "x-agentrun-thread-id"


async def main_async(cfg: dict[str, Any]) -> None:
    # openai's own HTTP client and pool (up to 1,000 connections): the hop to the proxy is
    # plain HTTP on loopback; the proxy's pool towards the service is pool_limit, like agentrun's.
    client = openai.AsyncOpenAI(
        base_url=cfg["proxy_url"], api_key="bench", max_retries=0, timeout=cfg["timeout"]
    )
    stream = cfg["variant"] == "chat-stream"

    async def invoke(i: int, rec: dict[str, Any], thread_id: str | None) -> None:
        messages: Any = [{"role": "user", "content": common.prompt(i, False)}]
        if stream:
            raw = await client.chat.completions.with_raw_response.create(
                model="bench", messages=messages, stream=True
            )
            rec["thread_id"] = raw.headers.get(THREAD_HEADER)
            chars = 0
            async for chunk in raw.parse():
                content = chunk.choices[0].delta.content if chunk.choices else None
                if content:
                    if rec["first_delta_ms"] is None:
                        rec["first_delta_ms"] = common.now_ms()
                    chars += len(content)
        else:
            raw = await client.chat.completions.with_raw_response.create(
                model="bench", messages=messages
            )
            rec["thread_id"] = raw.headers.get(THREAD_HEADER)
            chars = len(raw.parse().choices[0].message.content or "")
        rec["done_ms"] = common.now_ms()
        rec["chars"] = chars

    try:
        if cfg.get("warmup", True):
            await invoke(-1, common.new_record(-1), None)
        phase = common.Phase()
        phase.ready(IMPORTED)
        records = await common.run_all(cfg["n"], invoke, [], cfg["timeout"])
        phase.end()
    finally:
        await client.close()
    common.finish(cfg, phase, records, dict(IMPORTED))


def main() -> None:
    asyncio.run(main_async(common.load_config()))


if __name__ == "__main__":
    main()
