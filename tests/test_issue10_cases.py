"""The issue-10 cases that the emulator can already produce, with their right values.

case15 (two messages in one second), case16 (text before a function call) and case17 (a
built-in code_interpreter step) need shapes the emulator does not send yet: they are tests in
`tests/replay/test_replay.py`, against the replay server's recorded shapes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator

import aiohttp
import openai
import pytest

import agentrun
from agentrun._openai import chat
from agentrun._proxy import ProxyServer
from agentrun._proxy_config import parse_config
from agentrun.emulator import Emulator, EmulatorSettings, FaultRule, Timing

FAST = Timing(queue_delay=0.01, run_duration=0.02, delta_interval=0.005, cancel_delay=0.01)
KEY = "sk-cases"
AGENT = "asst_abc123"


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(EmulatorSettings(timing=FAST)) as e:
        yield e


async def _chunks(stream: agentrun.CompletionStream) -> tuple[str, str | None]:
    text, finish = "", None
    async with stream:
        async for ch in stream:
            if ch.choices:
                text += ch.choices[0].delta.content or ""
                finish = ch.choices[0].finish_reason or finish
    return text, finish


@pytest.mark.anyio
async def test_case08_failed_run_rate_limit_reaches_openai_client_once(emu: Emulator) -> None:
    """case08: a run failing with rate_limit_exceeded ("Try again in 60 seconds") reaches an
    openai client (default retries) through the proxy as a 429 with Retry-After 60, not
    retried automatically (x-should-retry: false), so the user message of a continued thread
    is on the thread exactly once."""
    config = (
        "model_list:\n  - model_name: agent\n    litellm_params:\n"
        f"      model: azure_ai/agents/{AGENT}\n      api_base: {emu.endpoint}\n"
        f"      api_key: {emu.api_key}\ngeneral_settings:\n  master_key: {KEY}\n"
    )
    server = ProxyServer(parse_config(config, env={}), host="127.0.0.1", port=0)
    await server.start()
    oa = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key=KEY, timeout=30)
    try:
        first = await oa.chat.completions.create(
            model="agent", messages=[{"role": "user", "content": "hello"}]
        )
        thread = first.model_extra["thread_id"]  # type: ignore[index]
        ask = "once please [emulator:fail=rate_limit_exceeded]"
        with pytest.raises(openai.RateLimitError) as info:
            await oa.chat.completions.create(
                model="agent",
                messages=[{"role": "user", "content": ask}],
                extra_body={"thread_id": thread},
            )
        assert info.value.status_code == 429
        assert info.value.response.headers["retry-after"] == "60"
        assert info.value.response.headers["x-should-retry"] == "false"
        async with (
            aiohttp.ClientSession() as s,
            s.get(
                f"{emu.endpoint}/threads/{thread}/messages",
                params={"api-version": "v1", "limit": "100"},
                headers={"Authorization": f"Bearer {emu.api_key}"},
            ) as r,
        ):
            listed = (await r.json())["data"]
        texts = [p["text"]["value"] for m in listed for p in m["content"] if m["role"] == "user"]
        assert texts.count(ask) == 1
    finally:
        await oa.close()
        await server.stop()


@pytest.mark.anyio
async def test_r1_stream_cut_mid_run_yields_whole_reply(emu: Emulator) -> None:
    """r1: the stream is cut after 12 events and the run finished by polling: the chunks
    hold the whole reply, each part once, then finish_reason stop."""
    emu.inject(FaultRule(route="POST /threads/runs", kind="stream_cut", after_events=12))
    stream = await agentrun.acompletion(
        model=f"azure_ai/agents/{AGENT}",
        api_base=emu.endpoint,
        api_key=emu.api_key,
        messages=[{"role": "user", "content": "What is 7 * 6?"}],
        stream=True,
    )
    text, finish = await _chunks(stream)
    assert (text, finish) == ("7 * 6 = 42. The answer is 42.", "stop")
    assert stream.result is not None and stream.result.text == text
    await agentrun.aclose_clients()


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["poll", "auto"])
async def test_n2b_chat_stream_in_poll_mode_yields_text(emu: Emulator, mode: str) -> None:
    """n2b: chat(..., stream=True) in poll mode (and auto on a poll-mode client) yields the
    reply's text as chunks, equal to the result's text."""
    async with agentrun.AsyncClient(emu.endpoint, api_key=emu.api_key, mode="poll") as client:
        stream = await chat(
            client,
            model="azure_ai/agents/asst_def456",
            stream=True,
            mode=mode,
            messages=[{"role": "user", "content": "What is 2 * 3?"}],
        )
        text, finish = await _chunks(stream)  # type: ignore[arg-type]
    assert (text, finish) == ("Let's work it out step by step: 2 * 3 = 6. The answer is 6.", "stop")
    assert stream.result is not None and stream.result.text == text  # type: ignore[union-attr]


@pytest.fixture(scope="module")
def emu_thread() -> Iterator[Emulator]:
    with Emulator(EmulatorSettings(timing=FAST)).in_thread() as e:
        yield e


def test_cli_run_poll_mode_prints_reply(emu_thread: Emulator) -> None:
    """`agentrun run --mode poll` prints the reply (a poll-mode stream yields its text)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AZURE_")}
    env.update(AZURE_AI_API_BASE=emu_thread.endpoint, AZURE_AD_TOKEN=emu_thread.api_key)
    env.update(NO_PROXY="127.0.0.1,localhost")
    proc = subprocess.run(
        [sys.executable, "-m", "agentrun.cli", "run", "--mode", "poll", AGENT, "What is 2 * 3?"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "2 * 3 = 6. The answer is 6.\n"
