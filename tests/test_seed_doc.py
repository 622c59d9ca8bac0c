"""The seed document's examples (LiteLLM's Azure AI Foundry Agents page), written as in the
document with only `import agentrun as litellm` and `api_base` pointing at the emulator."""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncIterator, Iterator

import pytest

import agentrun as litellm
from agentrun import _openai
from agentrun.emulator import Emulator, EmulatorSettings, Timing

FAST = Timing(queue_delay=0.01, run_duration=0.02, delta_interval=0.001)
_ENV = ("AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET", "AZURE_AD_TOKEN")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (*_ENV, "AZURE_AI_API_BASE", "AZURE_AUTHORITY_HOST"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
async def sp_emu(clean_env: None, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Emulator]:
    """A TLS emulator whose service principal is in the environment, as the doc has it; its CA
    is trusted through SSL_CERT_FILE, the standard variable (no agentrun argument)."""
    async with Emulator(EmulatorSettings(timing=FAST), tls=True) as emu:
        monkeypatch.setenv("AZURE_TENANT_ID", emu.tenant_id)
        monkeypatch.setenv("AZURE_CLIENT_ID", emu.client_id)
        monkeypatch.setenv("AZURE_CLIENT_SECRET", emu.client_secret)
        monkeypatch.setenv("AZURE_AUTHORITY_HOST", emu.authority)
        monkeypatch.setenv("SSL_CERT_FILE", str(emu.ca_path))
        yield emu
        await _openai.aclose_clients()


@pytest.mark.anyio
async def test_basic_agent_completion(sp_emu: Emulator) -> None:
    """ "Basic Agent Completion" with the Service Principal env vars: answer and real usage."""
    api_base = sp_emu.endpoint
    response = await litellm.acompletion(
        model="azure_ai/agents/asst_abc123",
        messages=[{"role": "user", "content": "Explain machine learning in simple terms"}],
        api_base=api_base,
    )
    print(response.choices[0].message.content)
    print(f"Usage: {response.usage}")
    assert response.choices[0].message.content
    assert response.usage.total_tokens > 0
    assert sp_emu.stats()["tokens_issued"] == 1


@pytest.mark.anyio
async def test_streaming_agent_responses(
    sp_emu: Emulator, capsys: pytest.CaptureFixture[str]
) -> None:
    """ "Streaming Agent Responses": the doc's `async for` loop prints the streamed reply."""
    response = await litellm.acompletion(
        model="azure_ai/agents/asst_abc123",
        messages=[
            {"role": "user", "content": "What are the key principles of software architecture?"}
        ],
        api_base=sp_emu.endpoint,
        stream=True,
    )

    async for chunk in response:
        if chunk.choices[0].delta.content:
            print(chunk.choices[0].delta.content, end="")
    out = capsys.readouterr().out
    assert out and out == response.result.text
    assert sp_emu.stats()["requests"]["POST /threads/runs"]["200"] == 1


@pytest.mark.anyio
async def test_conversation_continuity(sp_emu: Emulator) -> None:
    """ "Continuing a Conversation": thread_id from _hidden_params; the reply mentions Alice."""
    response1 = await litellm.acompletion(
        model="azure_ai/agents/asst_abc123",
        messages=[{"role": "user", "content": "My name is Alice"}],
        api_base=sp_emu.endpoint,
    )

    thread_id = response1._hidden_params.get("thread_id")

    response2 = await litellm.acompletion(
        model="azure_ai/agents/asst_abc123",
        messages=[{"role": "user", "content": "What's my name?"}],
        api_base=sp_emu.endpoint,
        thread_id=thread_id,
    )

    print(response2.choices[0].message.content)
    assert "Alice" in response2.choices[0].message.content
    assert response2._hidden_params["thread_id"] == thread_id


@pytest.mark.anyio
async def test_agent_specific_parameters(sp_emu: Emulator) -> None:
    """ "Using Agent-specific parameters": thread_id plus instructions on an existing thread."""
    first = await litellm.acompletion(
        model="azure_ai/agents/asst_abc123",
        messages=[{"role": "user", "content": "Here is the data: 3, 5, 8, 13"}],
        api_base=sp_emu.endpoint,
    )
    response = await litellm.acompletion(
        model="azure_ai/agents/asst_abc123",
        messages=[{"role": "user", "content": "Analyze this data and provide insights"}],
        api_base=sp_emu.endpoint,
        thread_id=first.thread_id,
        instructions="Be concise and focus on key insights",
    )
    verbose = await litellm.acompletion(
        model="azure_ai/agents/asst_abc123",
        messages=[{"role": "user", "content": "Analyze this data and provide insights"}],
        api_base=sp_emu.endpoint,
        thread_id=first.thread_id,
    )
    assert response.thread_id == first.thread_id
    assert len(response.choices[0].message.content) < len(verbose.choices[0].message.content)


@pytest.mark.anyio
async def test_static_ad_token_via_api_key(clean_env: None) -> None:
    """ "Option 2: Azure AD Token (Manual)": a token passed as api_key, no token request."""
    async with Emulator(EmulatorSettings(timing=FAST)) as emu:
        token = emu.api_key  # what `az account get-access-token` would print
        response = await litellm.acompletion(
            model="azure_ai/agents/asst_def456",
            messages=[{"role": "user", "content": "What is 25 * 4?"}],
            api_base=emu.endpoint,
            api_key=token,
        )
        assert "100" in response.choices[0].message.content
        assert emu.stats()["tokens_issued"] == 0
        await _openai.aclose_clients()


@pytest.fixture
def sync_sp_emu(clean_env: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[Emulator]:
    with Emulator(EmulatorSettings(timing=FAST), tls=True).in_thread() as emu:
        monkeypatch.setenv("AZURE_TENANT_ID", emu.tenant_id)
        monkeypatch.setenv("AZURE_CLIENT_ID", emu.client_id)
        monkeypatch.setenv("AZURE_CLIENT_SECRET", emu.client_secret)
        monkeypatch.setenv("AZURE_AUTHORITY_HOST", emu.authority)
        monkeypatch.setenv("SSL_CERT_FILE", str(emu.ca_path))
        yield emu


@pytest.mark.skipif(
    importlib.util.find_spec("agentrun._sync") is None,
    reason="agentrun._sync (sync completion) is not written yet",
)
def test_sync_basic_agent_completion(sync_sp_emu: Emulator) -> None:
    """The doc's sync `litellm.completion(...)`, with the Service Principal env vars."""
    response = litellm.completion(
        model="azure_ai/agents/asst_abc123",
        messages=[{"role": "user", "content": "Explain machine learning in simple terms"}],
        api_base=sync_sp_emu.endpoint,
    )

    print(response.choices[0].message.content)
    print(f"Usage: {response.usage}")
    assert response.choices[0].message.content
    assert response.usage.total_tokens > 0
