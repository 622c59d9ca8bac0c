"""Benchmark runner for the official azure-ai-agents aio client (.bench-venv).

Variants, each what the SDK's documentation shows for getting a reply:
  poll    new thread: `create_thread_and_process_run` (1 s polling) then `messages.list` for
          the reply; continued: `runs.create_and_process(additional_messages=...)` then
          `messages.list`
  stream  new thread: `threads.create(messages=...)` then `runs.stream` (1.1.0 has no streaming
          create-thread-and-run); continued: `runs.stream(additional_messages=...)`
Authentication: a static bearer token (the emulator's key) through a minimal async
credential, over TLS (the SDK refuses bearer tokens on plain HTTP). The emulator's CA comes
through SSL_CERT_FILE (set by the harness), not `connection_verify=<path>`: with a path,
azure-core builds a new SSL context for every request and aiohttp then opens a new TLS
connection for every request, which would not be the SDK's usual (default-trust) behaviour.
"""

from __future__ import annotations

import time

import common  # the runner's own directory is on sys.path

T0, CPU0 = time.perf_counter(), common.cpu_seconds()

import asyncio  # noqa: E402
from typing import Any  # noqa: E402

from azure.ai.agents.aio import AgentsClient  # noqa: E402
from azure.ai.agents.models import (  # noqa: E402
    AgentThreadCreationOptions,
    ListSortOrder,
    MessageDeltaChunk,
    ThreadMessageOptions,
    ThreadRun,
)
from azure.core.credentials import AccessToken, AccessTokenInfo  # noqa: E402

IMPORTED = common.import_figures(T0, CPU0)


class StaticToken:
    """An async credential that hands out one fixed bearer token."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.calls = 0

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.calls += 1
        return AccessToken(self.token, int(time.time()) + 3600)

    async def get_token_info(self, *scopes: str, options: Any = None) -> AccessTokenInfo:
        self.calls += 1
        return AccessTokenInfo(self.token, int(time.time()) + 3600)

    async def close(self) -> None:
        pass

    async def __aenter__(self) -> StaticToken:
        return self

    async def __aexit__(self, *exc: object) -> None:
        pass


async def reply_text(client: AgentsClient, thread_id: str, run_id: str) -> str:
    parts = []
    async for msg in client.messages.list(
        thread_id=thread_id, run_id=run_id, order=ListSortOrder.ASCENDING
    ):
        if msg.role == "assistant" or str(msg.role).endswith("AGENT"):
            parts.extend(t.text.value for t in msg.text_messages)
    return "".join(parts)


async def main_async(cfg: dict[str, Any]) -> None:
    variant = cfg["variant"]
    agent = cfg["agent"]
    cred = StaticToken(cfg["api_key"])
    client = AgentsClient(endpoint=cfg["endpoint"], credential=cred)

    async def invoke(i: int, rec: dict[str, Any], thread_id: str | None) -> None:
        msg = ThreadMessageOptions(role="user", content=common.prompt(i, thread_id is not None))
        if variant == "stream":
            if thread_id is None:
                thread = await client.threads.create(messages=[msg])
                thread_id, extra = thread.id, None
            else:
                extra = [msg]
            rec["thread_id"] = thread_id
            chars = 0
            stream = await client.runs.stream(
                thread_id=thread_id, agent_id=agent, additional_messages=extra
            )
            async with stream as events:
                async for _kind, data, _ in events:
                    if isinstance(data, MessageDeltaChunk):
                        if rec["first_delta_ms"] is None:
                            rec["first_delta_ms"] = common.now_ms()
                        chars += len(data.text)
                    elif isinstance(data, ThreadRun):
                        rec["run_id"] = data.id
                        status = str(data.status).lower()
                        if status.endswith(("failed", "cancelled", "expired", "incomplete")):
                            raise RuntimeError(f"run {data.id} ended {data.status}")
            rec["done_ms"] = common.now_ms()
            rec["chars"] = chars
            return
        if thread_id is None:
            run = await client.create_thread_and_process_run(
                agent_id=agent, thread=AgentThreadCreationOptions(messages=[msg])
            )
        else:
            run = await client.runs.create_and_process(
                thread_id=thread_id, agent_id=agent, additional_messages=[msg]
            )
        rec.update(run_id=run.id, thread_id=run.thread_id)
        if not str(run.status).lower().endswith("completed"):
            raise RuntimeError(f"run {run.id} ended {run.status}")
        text = await reply_text(client, run.thread_id, run.id)
        rec["done_ms"] = common.now_ms()
        rec["chars"] = len(text)

    try:
        if cfg.get("warmup", True):
            await invoke(-1, common.new_record(-1), None)
        phase = common.Phase()
        phase.ready(IMPORTED)
        records = await common.run_all(cfg["n"], invoke, cfg["thread_ids"], cfg["timeout"])
        phase.end()
    finally:
        await client.close()
    common.finish(cfg, phase, records, {**IMPORTED, "credential_calls": cred.calls})


def main() -> None:
    asyncio.run(main_async(common.load_config()))


if __name__ == "__main__":
    main()
