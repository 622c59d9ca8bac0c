"""Benchmark runner for LiteLLM's `azure_ai/agents/asst_...` provider (.bench-venv).

Variants: `acompletion` (non-streaming: create thread, post message, create run, poll every
second, list messages) and `stream` (`acompletion(stream=True)`: one create-thread-and-run
request read as SSE). LiteLLM 1.110.2 drops `thread_id` (it lands in `extra_body`), so it has
no continued-thread variant: the harness skips those scenarios for it.

LiteLLM returns no run id; each invocation makes a thread of its own with one run, so the
harness matches its runs by the thread id LiteLLM does return (`_hidden_params["thread_id"]`,
or `hidden_params` on stream chunks).
"""

from __future__ import annotations

import os
import time

import common  # the runner's own directory is on sys.path

# Use the price map LiteLLM ships instead of fetching one from the internet at import.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

T0, CPU0 = time.perf_counter(), common.cpu_seconds()

import asyncio  # noqa: E402
from typing import Any  # noqa: E402

import litellm  # noqa: E402

IMPORTED = common.import_figures(T0, CPU0)


async def main_async(cfg: dict[str, Any]) -> None:
    variant = cfg["variant"]
    if cfg["ca_path"]:
        litellm.ssl_verify = cfg["ca_path"]
    model = f"azure_ai/agents/{cfg['agent']}"
    base = cfg["endpoint"]
    key = cfg["api_key"]

    async def invoke(i: int, rec: dict[str, Any], thread_id: str | None) -> None:
        if thread_id is not None:
            raise RuntimeError("LiteLLM 1.110.2 cannot continue a thread")
        messages = [{"role": "user", "content": common.prompt(i, False)}]
        if variant == "stream":
            chunks = await litellm.acompletion(
                model=model, messages=messages, api_base=base, api_key=key, stream=True
            )
            chars = 0
            async for chunk in chunks:
                hidden = getattr(chunk, "hidden_params", None) or {}
                if rec["thread_id"] is None and hidden.get("thread_id"):
                    rec["thread_id"] = hidden["thread_id"]
                delta = chunk.choices[0].delta.content if chunk.choices else None
                if delta:
                    if rec["first_delta_ms"] is None:
                        rec["first_delta_ms"] = common.now_ms()
                    chars += len(delta)
            rec["done_ms"] = common.now_ms()
            rec["chars"] = chars
        else:
            resp = await litellm.acompletion(
                model=model, messages=messages, api_base=base, api_key=key
            )
            rec["done_ms"] = common.now_ms()
            rec["thread_id"] = (resp._hidden_params or {}).get("thread_id")
            rec["chars"] = len(resp.choices[0].message.content or "")

    if cfg.get("warmup", True):
        await invoke(-1, common.new_record(-1), None)
    phase = common.Phase()
    phase.ready(IMPORTED)
    records = await common.run_all(cfg["n"], invoke, cfg["thread_ids"], cfg["timeout"])
    phase.end()
    common.finish(cfg, phase, records, dict(IMPORTED))


def main() -> None:
    asyncio.run(main_async(common.load_config()))


if __name__ == "__main__":
    main()
