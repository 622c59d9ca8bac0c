"""The issue-10 cases with their right values, against the emulator.

case15 (two messages in one second), case16 (text before a function call) and case17 (a
built-in code_interpreter step) run on the emulator's scripted agents here, and on recorded
shapes in `tests/replay/test_replay.py`.
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


# -- cases 15, 16, 17 against the emulator's scripted agents (Azure's shapes) ---------------


def _proxy_config(emu: Emulator) -> str:
    return (
        "model_list:\n  - model_name: agent\n    litellm_params:\n"
        f"      model: azure_ai/agents/{AGENT}\n      api_base: {emu.endpoint}\n"
        f"      api_key: {emu.api_key}\ngeneral_settings:\n  master_key: {KEY}\n"
    )


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["stream", "poll", "auto"])
async def test_case15_two_messages_in_one_second_in_order(emu: Emulator, mode: str) -> None:
    """case15 on the emulator's `two_messages` script (two assistant messages in the same
    second, ids in the reverse of creation order): the reply is "Part one.\\n\\nPart two." in
    every mode, in RunResult.text, the non-streamed and streamed OpenAI formats."""
    want = "Part one.\n\nPart two."
    prompt = [{"role": "user", "content": "[emulator:script=two_messages] Two things"}]
    async with agentrun.AsyncClient(emu.endpoint, api_key=emu.api_key) as client:
        result = await client.run(AGENT, prompt, mode=mode)  # type: ignore[arg-type]
        assert result.text == want
        resp = await chat(client, model=f"azure_ai/agents/{AGENT}", messages=prompt, mode=mode)
        assert resp.choices[0].message.content == want
        text, finish = await _chunks(
            await chat(
                client, model=f"azure_ai/agents/{AGENT}", messages=prompt, stream=True, mode=mode
            )
        )
        assert (text, finish) == (want, "stop")


@pytest.mark.anyio
async def test_case15_two_messages_through_the_proxy(emu: Emulator) -> None:
    """case15 through the proxy: the openai client gets both messages in order, streamed and
    not."""
    server = ProxyServer(parse_config(_proxy_config(emu), env={}), host="127.0.0.1", port=0)
    await server.start()
    oa = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key=KEY, timeout=30)
    msgs: list[dict[str, str]] = [
        {"role": "user", "content": "[emulator:script=two_messages] Two things"}
    ]
    try:
        resp = await oa.chat.completions.create(model="agent", messages=msgs)  # type: ignore[arg-type]
        assert resp.choices[0].message.content == "Part one.\n\nPart two."
        stream = await oa.chat.completions.create(
            model="agent",
            messages=msgs,  # type: ignore[arg-type]
            stream=True,
        )
        text = ""
        async for ch in stream:
            if ch.choices:
                text += ch.choices[0].delta.content or ""
        assert text == "Part one.\n\nPart two."
    finally:
        await oa.close()
        await server.stop()


@pytest.mark.anyio
@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("mode", ["stream", "poll"])
async def test_case16_text_before_function_call(emu: Emulator, mode: str, stream: bool) -> None:
    """case16 on the `text_then_function` script: the tool_calls response carries the text
    written before the call, and the response after the tool outputs carries only the new
    text — the same in stream and poll mode, streamed and not."""
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather for a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    messages: list[dict[str, object]] = [
        {"role": "user", "content": "[emulator:script=text_then_function] Weather in Paris?"}
    ]
    model = f"azure_ai/agents/{AGENT}"
    async with agentrun.AsyncClient(emu.endpoint, api_key=emu.api_key) as client:

        async def turn(msgs: list[dict[str, object]], **kw: object) -> tuple[str, list[object]]:
            if not stream:
                r = await chat(client, model=model, messages=msgs, mode=mode, **kw)  # type: ignore[arg-type]
                m = r.choices[0].message
                return m.content or "", list(m.tool_calls or [])
            s = await chat(client, model=model, messages=msgs, stream=True, mode=mode, **kw)  # type: ignore[arg-type]
            text, calls = "", []
            async with s:
                async for ch in s:
                    if ch.choices:
                        d = ch.choices[0].delta
                        text += d.content or ""
                        calls.extend(d.tool_calls or [])
            return text, calls

        first_text, calls = await turn(messages, tools=tools)
        assert first_text == "Let me look that up first."
        assert calls, "the function call is reported"
        call_id = calls[0]["id"] if isinstance(calls[0], dict) else calls[0].id
        assert call_id
        thread = [
            *messages,
            {
                "role": "assistant",
                "content": first_text,
                "tool_calls": [
                    {
                        "id": call_id,
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": "{}"},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": call_id, "content": "sunny, 21 C"},
        ]
        second_text, more = await turn(thread, tools=tools)
        assert second_text and "Let me look that up first." not in second_text
        assert more == []


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["stream", "poll"])
async def test_case17_builtin_step_is_not_a_tool_call(emu: Emulator, mode: str) -> None:
    """case17 on the `code_then_text` script: the code_interpreter step run by the service is
    no OpenAI tool call (streamed or not), finish_reason is stop, and the step is reported in
    the documented extra field `agent_steps`."""
    # asst_coder01 has the code_interpreter tool and runs the `code_then_text` script.
    prompt = [{"role": "user", "content": "Compute it"}]
    model = "azure_ai/agents/asst_coder01"
    async with agentrun.AsyncClient(emu.endpoint, api_key=emu.api_key) as client:
        resp = await chat(client, model=model, messages=prompt, mode=mode)
        choice = resp.choices[0]
        assert choice.finish_reason == "stop"
        assert not choice.message.get("tool_calls")
        steps = choice.message["agent_steps"]
        assert [s["type"] for s in steps] == ["code_interpreter"]
        s = await chat(client, model=model, messages=prompt, stream=True, mode=mode)
        finish, calls = None, []
        async with s:
            async for ch in s:
                if ch.choices:
                    calls.extend(ch.choices[0].delta.tool_calls or [])
                    finish = ch.choices[0].finish_reason or finish
        assert (calls, finish) == ([], "stop")
