"""Benchmark runner for agentrun (project .venv). See common.py for the protocol.

Variants (config `variant`):
  stream      AsyncClient(mode="stream"), `client.stream()`: the caller sees every text delta
  poll        AsyncClient(mode="poll"), `client.run()`
  auto        AsyncClient(mode="auto"), `client.run()`
  acompletion `agentrun.acompletion()` (OpenAI format, the drop-in for LiteLLM), default mode
  acompletion-stream  `agentrun.acompletion(stream=True)`, every chunk read
  sync        `agentrun.Client` from `n` threads (the sync wrapper), default mode
  auto-half   a candidate `auto` rule, emulated per call: the first pool_limit/2 invocations
              stream, the rest poll, so polls keep half of the pool (`client.run(mode=...)`)
  auto-fit    the rule proposed in issue 15, emulated per call: stream when the whole burst
              (`n` in flight) fits in the pool (n <= pool_limit), else poll every run
`memprobe: "rss"` or `"tracemalloc"` adds common.MemoryProbe (a diagnostic for an emulator with
long runs: memory held with every invocation in flight; CPU figures of such a run mean nothing).
`credentials: "sp"` authenticates with the emulator's service principal instead of the static
token; `warmup: false` starts cold (no token, no connection) so single-flight shows.
"""

from __future__ import annotations

import time

import common  # the runner's own directory is on sys.path

T0, CPU0 = time.perf_counter(), common.cpu_seconds()

import asyncio  # noqa: E402
import concurrent.futures  # noqa: E402
from typing import Any  # noqa: E402

import agentrun  # noqa: E402
from agentrun import AsyncClient  # noqa: E402

IMPORTED = common.import_figures(T0, CPU0)


def client_kwargs(cfg: dict[str, Any]) -> dict[str, Any]:
    kw: dict[str, Any] = {"verify": cfg["ca_path"] or True}
    if cfg.get("credentials") == "sp":
        sp = cfg["sp"]
        kw.update(
            tenant_id=sp["tenant_id"],
            client_id=sp["client_id"],
            client_secret=sp["client_secret"],
            authority=sp["authority"],
        )
    else:
        kw["api_key"] = cfg["api_key"]
    return kw


async def main_async(cfg: dict[str, Any]) -> None:
    variant = cfg["variant"]
    agent = cfg["agent"]
    kw = client_kwargs(cfg)
    mode = {"stream": "stream", "poll": "poll"}.get(variant, "auto")
    if "client_timeout" in cfg:  # e.g. None: no invocation deadline (an A/B of its cost)
        kw["timeout"] = cfg["client_timeout"]
    client = AsyncClient(cfg["endpoint"], pool_limit=cfg.get("pool_limit", 100), mode=mode, **kw)
    model = f"azure_ai/agents/{agent}"

    async def invoke(i: int, rec: dict[str, Any], thread_id: str | None) -> None:
        text = common.prompt(i, thread_id is not None)
        if variant == "stream":
            async with client.stream(agent, text, thread_id=thread_id) as events:
                async for ev in events:
                    if isinstance(ev, agentrun.TextDelta):
                        if rec["first_delta_ms"] is None:
                            rec["first_delta_ms"] = common.now_ms()
                    elif isinstance(ev, agentrun.RunFinished):
                        rec["done_ms"] = common.now_ms()
                        res = ev.result
                        rec.update(run_id=res.run_id, thread_id=res.thread_id, chars=len(res.text))
                        rec["requests"] = res.requests
        elif variant == "acompletion-stream":
            chunks = await agentrun.acompletion(
                model=model,
                messages=[{"role": "user", "content": text}],
                api_base=cfg["endpoint"],
                thread_id=thread_id,
                stream=True,
                **kw,
            )
            chars = 0
            async with chunks:
                async for chunk in chunks:
                    choice = chunk.choices[0] if chunk.choices else None
                    content = choice.delta.content if choice is not None else None
                    if content:
                        if rec["first_delta_ms"] is None:
                            rec["first_delta_ms"] = common.now_ms()
                        chars += len(content)
            rec["done_ms"] = common.now_ms()
            rec.update(run_id=chunks.result.run_id if chunks.result else None, chars=chars)
            rec["thread_id"] = chunks.thread_id
        elif variant == "acompletion":
            resp = await agentrun.acompletion(
                model=model,
                messages=[{"role": "user", "content": text}],
                api_base=cfg["endpoint"],
                thread_id=thread_id,
                **kw,
            )
            rec["done_ms"] = common.now_ms()
            content = resp.choices[0].message.content or ""
            hidden = getattr(resp, "_hidden_params", None) or {}
            rec.update(
                run_id=getattr(resp, "run_id", None) or hidden.get("run_id"),
                thread_id=getattr(resp, "thread_id", None) or hidden.get("thread_id"),
                chars=len(content),
            )
        else:
            chosen = None
            if variant == "auto-half":
                chosen = "stream" if i < client.pool_limit // 2 else "poll"
            elif variant == "auto-fit":
                chosen = "stream" if cfg["n"] <= client.pool_limit else "poll"
            res = await client.run(agent, text, thread_id=thread_id, mode=chosen)
            rec["done_ms"] = common.now_ms()
            rec.update(run_id=res.run_id, thread_id=res.thread_id, chars=len(res.text))
            rec["requests"] = res.requests
            rec["mode"] = res.mode

    try:
        if cfg.get("warmup", True):
            warm = common.new_record(-1)
            await invoke(-1, warm, None)
        probe = common.MemoryProbe(cfg["memprobe"]) if cfg.get("memprobe") else None
        if probe is not None:
            probe.before()
        phase = common.Phase(cfg.get("cprofile"))
        phase.ready(IMPORTED)
        watch = asyncio.ensure_future(probe.watch(cfg["n"])) if probe is not None else None
        records = await common.run_all(cfg["n"], invoke, cfg["thread_ids"], cfg["timeout"])
        phase.end()
        if watch is not None:
            watch.cancel()
            await asyncio.gather(watch, return_exceptions=True)
        stats = client.statistics()
        extra = {
            **IMPORTED,
            **({"memprobe": probe.report()} if probe is not None else {}),
            "client_stats": {
                "requests_sent": stats.requests_sent,
                "retries": stats.retries,
                "token_requests": stats.token_requests,
                "connections_opened": stats.connections_opened,
            },
        }
    finally:
        await client.aclose()
        if variant.startswith("acompletion"):
            from agentrun._openai import aclose_clients

            await aclose_clients()
    common.finish(cfg, phase, records, extra)


def main_sync(cfg: dict[str, Any]) -> None:
    agent = cfg["agent"]
    client = agentrun.Client(
        cfg["endpoint"], pool_limit=cfg.get("pool_limit", 100), **client_kwargs(cfg)
    )

    def invoke(i: int, thread_id: str | None) -> dict[str, Any]:
        rec = common.new_record(i)
        try:
            res = client.run(agent, common.prompt(i, thread_id is not None), thread_id=thread_id)
            rec["done_ms"] = common.now_ms()
            rec.update(run_id=res.run_id, thread_id=res.thread_id, chars=len(res.text), ok=True)
            rec["requests"] = res.requests
            rec["mode"] = res.mode
        except Exception as exc:
            rec["error"] = common.error_text(exc)
        return rec

    n, tids = cfg["n"], cfg["thread_ids"]
    with client:
        if cfg.get("warmup", True):
            invoke(-1, None)
        phase = common.Phase(cfg.get("cprofile"))
        phase.ready(IMPORTED)
        # One thread per invocation, as a threaded caller would do (capped: threads cost ~8 MB
        # of address space each, not of RSS, but 1,000 is plenty to show the behaviour).
        workers = min(n, 1000)
        with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(invoke, i, tids[i] if tids else None) for i in range(n)]
            records = [f.result(timeout=cfg["timeout"]) for f in futures]
        phase.end()
        stats = client.statistics()
        extra = {
            **IMPORTED,
            "workers": workers,
            "client_stats": {
                "requests_sent": stats.requests_sent,
                "retries": stats.retries,
                "token_requests": stats.token_requests,
                "connections_opened": stats.connections_opened,
            },
        }
    common.finish(cfg, phase, records, extra)


def main() -> None:
    cfg = common.load_config()
    if cfg["variant"] == "sync":
        try:
            agentrun.Client  # noqa: B018 - a lazy import; absent until the sync layer exists
        except (AttributeError, ImportError) as exc:
            raise SystemExit(f"agentrun.Client is not available: {exc}") from None
        main_sync(cfg)
    else:
        asyncio.run(main_async(cfg))


if __name__ == "__main__":
    main()
