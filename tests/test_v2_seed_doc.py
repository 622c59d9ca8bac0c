"""The seed document's examples (LiteLLM's Azure AI Foundry Agents page) with a v2 agent name
instead of `asst_abc123`: sync, async streaming, thread continuity, agent-specific parameters,
the proxy with its config.yaml and the `openai` client, and function tools through
`acompletion`, all against the emulator's Responses API."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import openai
import pytest

import agentrun as litellm
from agentrun import _openai
from agentrun._proxy import ProxyServer
from agentrun._proxy_config import parse_config
from agentrun.emulator import Emulator, EmulatorSettings, Timing

FAST = Timing(queue_delay=0.01, run_duration=0.02, delta_interval=0.001, cancel_delay=0.01)
_ENV = ("AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET", "AZURE_AD_TOKEN")
MODEL = "azure_ai/agents/general-assistant"
KEY = "sk-proxy-v2"


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (*_ENV, "AZURE_AI_API_BASE", "AZURE_AUTHORITY_HOST"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
async def sp_emu(clean_env: None, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Emulator]:
    """A TLS emulator whose service principal is in the environment, as the doc has it."""
    async with Emulator(EmulatorSettings(timing=FAST), tls=True) as emu:
        monkeypatch.setenv("AZURE_TENANT_ID", emu.tenant_id)
        monkeypatch.setenv("AZURE_CLIENT_ID", emu.client_id)
        monkeypatch.setenv("AZURE_CLIENT_SECRET", emu.client_secret)
        monkeypatch.setenv("AZURE_AUTHORITY_HOST", emu.authority)
        monkeypatch.setenv("SSL_CERT_FILE", str(emu.ca_path))
        yield emu
        await _openai.aclose_clients()


def v2_requests(emu: Emulator) -> dict[str, int]:
    return {
        route: sum(by.values())
        for route, by in emu.stats()["requests"].items()
        if "/openai/v1/" in route
    }


@pytest.mark.anyio
async def test_basic_agent_completion(sp_emu: Emulator) -> None:
    """ "Basic Agent Completion" with a v2 agent name: the answer, real usage, the conversation
    as thread_id, and only v2 routes used."""
    response = await litellm.acompletion(
        model=MODEL,
        messages=[{"role": "user", "content": "Explain machine learning in simple terms"}],
        api_base=sp_emu.endpoint,
    )
    print(response.choices[0].message.content)
    print(f"Usage: {response.usage}")
    assert response.choices[0].message.content
    assert response.usage.total_tokens > 0
    assert response.choices[0].finish_reason == "stop"
    assert response._hidden_params["thread_id"].startswith("conv_")
    assert sp_emu.stats()["runs_created"] == 0
    assert sp_emu.stats()["responses_created"] == 1


@pytest.mark.anyio
async def test_streaming_agent_responses(
    sp_emu: Emulator, capsys: pytest.CaptureFixture[str]
) -> None:
    """ "Streaming Agent Responses": the doc's `async for` loop prints the streamed reply; a
    continued conversation costs exactly one streamed POST /openai/v1/responses."""
    first = await litellm.acompletion(
        model=MODEL, messages=[{"role": "user", "content": "Hi"}], api_base=sp_emu.endpoint
    )
    before = v2_requests(sp_emu)
    response = await litellm.acompletion(
        model=MODEL,
        messages=[
            {"role": "user", "content": "What are the key principles of software architecture?"}
        ],
        api_base=sp_emu.endpoint,
        stream=True,
        thread_id=first.thread_id,
    )

    async for chunk in response:
        if chunk.choices[0].delta.content:
            print(chunk.choices[0].delta.content, end="")
    out = capsys.readouterr().out
    assert out and out == response.result.text
    after = v2_requests(sp_emu)
    assert sum(after.values()) - sum(before.values()) == 1
    assert after["POST /openai/v1/responses"] == before["POST /openai/v1/responses"] + 1


@pytest.mark.anyio
async def test_conversation_continuity(sp_emu: Emulator) -> None:
    """ "Continuing a Conversation": thread_id (the conversation) from _hidden_params; the
    reply mentions Alice."""
    response1 = await litellm.acompletion(
        model=MODEL,
        messages=[{"role": "user", "content": "My name is Alice"}],
        api_base=sp_emu.endpoint,
    )

    thread_id = response1._hidden_params.get("thread_id")

    response2 = await litellm.acompletion(
        model=MODEL,
        messages=[{"role": "user", "content": "What's my name?"}],
        api_base=sp_emu.endpoint,
        thread_id=thread_id,
    )

    print(response2.choices[0].message.content)
    assert "Alice" in response2.choices[0].message.content
    assert response2._hidden_params["thread_id"] == thread_id


@pytest.mark.anyio
async def test_agent_specific_parameters(sp_emu: Emulator) -> None:
    """ "Using Agent-specific parameters": with a v2 agent, `instructions` is the agent's and
    is refused before sending (BadRequestError, invalid_payload); a system message is the
    documented way to add per-call context."""
    first = await litellm.acompletion(
        model=MODEL,
        messages=[{"role": "user", "content": "Here is the data: 3, 5, 8, 13"}],
        api_base=sp_emu.endpoint,
    )
    created = sp_emu.stats()["responses_created"]
    with pytest.raises(litellm.BadRequestError) as info:
        await litellm.acompletion(
            model=MODEL,
            messages=[{"role": "user", "content": "Analyze this data and provide insights"}],
            api_base=sp_emu.endpoint,
            thread_id=first.thread_id,
            instructions="Be concise and focus on key insights",
        )
    assert info.value.code == "invalid_payload" and "instructions" in str(info.value)
    assert sp_emu.stats()["responses_created"] == created
    response = await litellm.acompletion(
        model=MODEL,
        messages=[
            {"role": "system", "content": "Be concise and focus on key insights"},
            {"role": "user", "content": "Analyze this data and provide insights"},
        ],
        api_base=sp_emu.endpoint,
        thread_id=first.thread_id,
    )
    assert response.thread_id == first.thread_id
    assert response.choices[0].message.content


@pytest.fixture
def sync_sp_emu(clean_env: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[Emulator]:
    with Emulator(EmulatorSettings(timing=FAST), tls=True).in_thread() as emu:
        monkeypatch.setenv("AZURE_TENANT_ID", emu.tenant_id)
        monkeypatch.setenv("AZURE_CLIENT_ID", emu.client_id)
        monkeypatch.setenv("AZURE_CLIENT_SECRET", emu.client_secret)
        monkeypatch.setenv("AZURE_AUTHORITY_HOST", emu.authority)
        monkeypatch.setenv("SSL_CERT_FILE", str(emu.ca_path))
        yield emu


def test_sync_basic_agent_completion(sync_sp_emu: Emulator) -> None:
    """The doc's sync `litellm.completion(...)` with a pinned v2 agent version."""
    response = litellm.completion(
        model="azure_ai/agents/general-assistant:1",
        messages=[{"role": "user", "content": "Explain machine learning in simple terms"}],
        api_base=sync_sp_emu.endpoint,
    )

    print(response.choices[0].message.content)
    print(f"Usage: {response.usage}")
    assert response.choices[0].message.content
    assert response.usage.total_tokens > 0
    assert sync_sp_emu.responses()[0]["agent"] == {"name": "general-assistant", "version": "1"}


@pytest.mark.anyio
async def test_function_tools_round_trip_through_acompletion(sp_emu: Emulator) -> None:
    """A v2 agent's function call comes back as OpenAI `tool_calls` (finish_reason
    tool_calls); the `tool` message answering it, sent with the whole history and no thread_id,
    completes the loop on the same conversation."""
    messages: list[dict[str, Any]] = [{"role": "user", "content": "Please get weather in Paris."}]
    first = await litellm.acompletion(
        model="azure_ai/agents/weather-assistant", messages=messages, api_base=sp_emu.endpoint
    )
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"location": "Paris"}
    messages.append(choice.message.to_dict())
    messages.append({"role": "tool", "tool_call_id": call.id, "content": "18 C"})
    second = await litellm.acompletion(
        model="azure_ai/agents/weather-assistant", messages=messages, api_base=sp_emu.endpoint
    )
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content == ("Here is what I found: get_weather returned 18 C.")
    assert second.thread_id == first.thread_id


# -- the proxy ---------------------------------------------------------------------------------


def v2_config(emu: Emulator) -> str:
    """The seed document's config.yaml with v2 agent names in place of the asst_ ids."""
    ca = f"      verify: {emu.ca_path}\n" if emu.ca_path else ""
    return (
        "model_list:\n"
        "  - model_name: azure-agent-1\n"
        "    litellm_params:\n"
        "      model: azure_ai/agents/general-assistant\n"
        f"      api_base: {emu.endpoint}\n"
        "      # Service Principal auth (recommended)\n"
        "      tenant_id: os.environ/AZURE_TENANT_ID\n"
        "      client_id: os.environ/AZURE_CLIENT_ID\n"
        "      client_secret: os.environ/AZURE_CLIENT_SECRET\n"
        f"      authority: {emu.authority}\n"
        f"{ca}"
        "\n"
        "  - model_name: azure-agent-math-tutor\n"
        "    litellm_params:\n"
        "      model: azure_ai/agents/math-tutor:1\n"
        f"      api_base: {emu.endpoint}\n"
        "      # Or pass Azure AD token directly\n"
        "      api_key: os.environ/AZURE_AD_TOKEN\n"
        f"{ca}"
        f"general_settings:\n  master_key: {KEY}\n"
    )


@contextlib.asynccontextmanager
async def proxy_for(emu: Emulator) -> AsyncIterator[ProxyServer]:
    env = {
        "AZURE_TENANT_ID": emu.tenant_id,
        "AZURE_CLIENT_ID": emu.client_id,
        "AZURE_CLIENT_SECRET": emu.client_secret,
        "AZURE_AD_TOKEN": emu.api_key,
    }
    server = ProxyServer(parse_config(v2_config(emu), env=env), host="127.0.0.1", port=0)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.mark.anyio
async def test_proxy_config_yaml_with_v2_agents_and_the_openai_client(sp_emu: Emulator) -> None:
    """The proxy serves v2 agents from config.yaml to the unmodified `openai` client: a
    completion, a continued conversation through the thread header, and a stream."""
    async with (
        proxy_for(sp_emu) as server,
        openai.AsyncOpenAI(
            base_url=server.url + "/v1", api_key=KEY, max_retries=0, timeout=30
        ) as client,
    ):
        raw = await client.chat.completions.with_raw_response.create(
            model="azure-agent-1", messages=[{"role": "user", "content": "My name is Ada."}]
        )
        first = raw.parse()
        thread = raw.headers["x-agentrun-thread-id"]
        assert thread.startswith("conv_")
        assert first.choices[0].message.content
        second = await client.chat.completions.create(
            model="azure-agent-1",
            messages=[{"role": "user", "content": "What is my name?"}],
            extra_body={"thread_id": thread},
        )
        assert second.choices[0].message.content == "Your name is Ada."
        stream = await client.chat.completions.create(
            model="azure-agent-math-tutor",
            messages=[{"role": "user", "content": "What is 25 * 4?"}],
            stream=True,
        )
        text = ""
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                text += chunk.choices[0].delta.content
        assert "100" in text
    listed = sp_emu.responses()
    assert {r["agent"]["name"] for r in listed} == {"general-assistant", "math-tutor"}
    assert sp_emu.stats()["runs_created"] == 0


@pytest.mark.anyio
async def test_previous_response_id_through_acompletion(sp_emu: Emulator) -> None:
    """`previous_response_id` (a keyword, or in extra_body) continues a v2 response without a
    conversation; a classic agent refuses it with ConfigurationError."""
    first = await litellm.acompletion(
        model=MODEL,
        messages=[{"role": "user", "content": "My name is Alan."}],
        api_base=sp_emu.endpoint,
    )
    second = await litellm.acompletion(
        model=MODEL,
        messages=[{"role": "user", "content": "What is my name?"}],
        api_base=sp_emu.endpoint,
        extra_body={"previous_response_id": first.run_id},
    )
    assert second.choices[0].message.content == "Your name is Alan."
    last = sp_emu.responses()[-1]
    assert (last["previous_response_id"], last["conversation_id"]) == (first.run_id, None)
    with pytest.raises(litellm.ConfigurationError, match="previous_response_id"):
        await litellm.acompletion(
            model="azure_ai/agents/asst_abc123",
            messages=[{"role": "user", "content": "Hi"}],
            api_base=sp_emu.endpoint,
            previous_response_id=first.run_id,
        )


def test_sync_client_run_stream_and_map(sync_sp_emu: Emulator) -> None:
    """The sync `Client` runs, streams and maps v2 agents like classic ones."""
    with litellm.Client(sync_sp_emu.endpoint, api_key=sync_sp_emu.api_key) as client:
        first = client.run("general-assistant", "My name is Ada.")
        assert first.thread_id.startswith("conv_")
        with client.stream(
            "general-assistant", "What is my name?", thread_id=first.thread_id
        ) as ev:
            text = "".join(e.text for e in ev if isinstance(e, litellm.TextDelta))
        assert text == "Your name is Ada."
        with client.map(
            [{"agent": "math-tutor:1", "input": f"What is {i} * 2?"} for i in range(5)]
        ) as results:
            answers = sorted(item.result.text for item in results if item.result is not None)
        assert len(answers) == 5


@pytest.mark.anyio
async def test_finish_reasons_and_citations_through_acompletion(sp_emu: Emulator) -> None:
    """An `incomplete` response gives finish_reason `length` (max_output_tokens) or
    `content_filter` with its partial text, like classic; a `url_citation` becomes OpenAI's
    `message.annotations` entry."""
    auth = {"api_base": sp_emu.endpoint}
    cut = await litellm.acompletion(
        model=MODEL, messages=[{"role": "user", "content": "A story [emulator:incomplete]"}], **auth
    )
    assert cut.choices[0].finish_reason == "length" and cut.choices[0].message.content
    filtered = await litellm.acompletion(
        model=MODEL,
        messages=[{"role": "user", "content": "A story [emulator:content_filter]"}],
        **auth,
    )
    assert filtered.choices[0].finish_reason == "content_filter"
    cited = await litellm.acompletion(
        model=MODEL,
        messages=[{"role": "user", "content": "Oslo? [emulator:cite=https://oslo.example]"}],
        **auth,
    )
    [annotation] = cited.choices[0].message.annotations
    assert annotation["type"] == "url_citation"
    assert annotation["url_citation"]["url"] == "https://oslo.example"


@pytest.mark.anyio
async def test_streamed_tool_calls_through_acompletion(sp_emu: Emulator) -> None:
    """A streamed v2 function call arrives as OpenAI tool_call chunks (index 0, id and name
    first, arguments in pieces) and ends with finish_reason tool_calls."""
    stream = await litellm.acompletion(
        model="azure_ai/agents/weather-assistant",
        messages=[{"role": "user", "content": "Please get weather in Oslo."}],
        api_base=sp_emu.endpoint,
        stream=True,
    )
    pieces: list[Any] = []
    finish = None
    async for chunk in stream:
        choice = chunk.choices[0]
        pieces.extend(choice.delta.tool_calls or [])
        finish = choice.finish_reason or finish
    assert finish == "tool_calls"
    assert {p.index for p in pieces} == {0}
    assert pieces[0].id and pieces[0].function.name == "get_weather"
    arguments = "".join(p.function.arguments or "" for p in pieces)
    assert json.loads(arguments) == {"location": "Oslo"}
