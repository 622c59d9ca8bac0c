"""`import agentrun as litellm`: LiteLLM's extra parameters and module switches, against the
real emulator (docs/openai-format.md, "LiteLLM compatibility")."""

from __future__ import annotations

import inspect
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

import agentrun
from agentrun import _openai
from agentrun.emulator import Emulator, EmulatorSettings, FaultRule, Timing

pytestmark = pytest.mark.anyio

FAST = Timing(queue_delay=0.01, run_duration=0.02, delta_interval=0.001)
MODEL = "azure_ai/agents/asst_abc123"
ASK = [{"role": "user", "content": "What is 6 * 7?"}]


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(EmulatorSettings(timing=FAST)) as e:
        yield e
        await _openai.aclose_clients()


@pytest.fixture
def global_drop_params() -> Iterator[None]:
    agentrun.drop_params = True
    try:
        yield
    finally:
        agentrun.drop_params = False


def kw(emu: Emulator) -> dict[str, Any]:
    return {"api_base": emu.endpoint, "api_key": emu.api_key}


async def test_module_drop_params_drops_unsupported(
    emu: Emulator, global_drop_params: None
) -> None:
    """`agentrun.drop_params = True` (LiteLLM's global switch) leaves out `seed` instead of
    raising; the run is made without it."""
    resp = await agentrun.acompletion(MODEL, ASK, seed=1, **kw(emu))
    assert "42" in resp.choices[0].message.content
    assert emu.stats()["runs_created"] == 1


async def test_without_drop_params_unsupported_is_unsupported_params_error(
    emu: Emulator,
) -> None:
    """Without the switch, `seed` is refused before any request, as LiteLLM's
    UnsupportedParamsError (a BadRequestError); the keyword `drop_params=False` wins over a
    True module switch."""
    with pytest.raises(agentrun.exceptions.UnsupportedParamsError, match="seed"):
        await agentrun.acompletion(MODEL, ASK, seed=1, **kw(emu))
    agentrun.drop_params = True
    try:
        with pytest.raises(agentrun.BadRequestError, match="seed"):
            await agentrun.acompletion(MODEL, ASK, seed=1, drop_params=False, **kw(emu))
    finally:
        agentrun.drop_params = False
    assert emu.stats()["requests_total"] == 0


async def test_max_retries_zero_fails_on_first_503_default_retries(emu: Emulator) -> None:
    """`max_retries=0` (and LiteLLM's `num_retries=0`) means one attempt: a 503 on the create
    is raised as ServiceUnavailableError (LiteLLM's name); without it the transport retries
    and the call succeeds."""
    emu.inject(FaultRule(route="POST /threads/runs", kind="status", status=503, times=1))
    with pytest.raises(agentrun.ServiceUnavailableError):
        await agentrun.acompletion(MODEL, ASK, max_retries=0, **kw(emu))
    emu.inject(FaultRule(route="POST /threads/runs", kind="status", status=503, times=1))
    with pytest.raises(agentrun.exceptions.ServiceUnavailableError):
        await agentrun.acompletion(MODEL, ASK, num_retries=0, **kw(emu))
    emu.inject(FaultRule(route="POST /threads/runs", kind="status", status=503, times=1))
    resp = await agentrun.acompletion(MODEL, ASK, num_retries=2, **kw(emu))
    assert "42" in resp.choices[0].message.content
    with pytest.raises(agentrun.ConfigurationError, match="max_retries"):
        await agentrun.acompletion(MODEL, ASK, max_retries=-1, **kw(emu))


async def test_extra_headers_accepted_and_checked(emu: Emulator) -> None:
    """`extra_headers` is accepted (not forwarded: the Agents API takes no caller headers),
    but a header with a line break is refused before anything is sent."""
    resp = await agentrun.acompletion(MODEL, ASK, extra_headers={"x-trace": "abc"}, **kw(emu))
    assert "42" in resp.choices[0].message.content
    with pytest.raises(agentrun.ConfigurationError, match="extra_headers"):
        await agentrun.acompletion(MODEL, ASK, extra_headers={"x-a": "b\r\nx-b: c"}, **kw(emu))
    with pytest.raises(agentrun.ConfigurationError, match="extra_headers"):
        await agentrun.acompletion(MODEL, ASK, extra_headers={"bad name\n": "v"}, **kw(emu))
    assert emu.stats()["runs_created"] == 1


async def test_mock_response_sends_nothing(emu: Emulator) -> None:
    """`mock_response="..."` returns that text as a chat.completion (and as chunks when
    streaming) without any request; an exception instance is raised instead."""
    resp = await agentrun.acompletion(MODEL, ASK, mock_response="mocked!", **kw(emu))
    assert resp.choices[0].message.content == "mocked!"
    assert resp.choices[0].finish_reason == "stop"
    assert resp.object == "chat.completion"
    stream = await agentrun.acompletion(
        MODEL,
        ASK,
        mock_response="streamed",
        stream=True,
        stream_options={"include_usage": True},
        **kw(emu),
    )
    chunks = [c async for c in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "streamed"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None
    with pytest.raises(agentrun.RateLimitError):
        await agentrun.acompletion(
            MODEL, ASK, mock_response=agentrun.RateLimitError("slow down"), **kw(emu)
        )
    assert emu.stats()["requests_total"] == 0


async def test_metadata_and_user_accepted(emu: Emulator) -> None:
    """`metadata` becomes the run's metadata (the service's field of that name); `user` is
    accepted and not sent (the service has no such field)."""
    await agentrun.acompletion(MODEL, ASK, metadata={"job": "7"}, user="u-1", **kw(emu))
    run = emu.runs()[-1]
    assert run["metadata"] == {"job": "7"}


def test_sync_completion_accepts_litellm_params() -> None:
    """The sync `completion` takes the same LiteLLM parameters (n7): drop_params via the
    module switch, num_retries, max_retries, extra_headers, mock_response."""
    with Emulator(EmulatorSettings(timing=FAST)).in_thread() as emu:
        base = {"api_base": emu.endpoint, "api_key": emu.api_key}
        agentrun.drop_params = True
        try:
            for extra in (
                {"seed": 1},
                {"num_retries": 2},
                {"max_retries": 2},
                {"extra_headers": {"x-a": "b"}},
            ):
                resp = agentrun.completion(MODEL, ASK, **base, **extra)
                assert "42" in resp.choices[0].message.content, extra
        finally:
            agentrun.drop_params = False
        assert (
            agentrun.completion(MODEL, ASK, mock_response="hi", **base).choices[0].message.content
            == "hi"
        )
        with agentrun.completion(MODEL, ASK, mock_response="yo", stream=True, **base) as chunks:
            assert "".join(c.choices[0].delta.content or "" for c in chunks) == "yo"
        assert emu.stats()["runs_created"] == 4


EXPECTED_PARAMS = (
    "temperature",
    "top_p",
    "max_tokens",
    "tools",
    "tool_choice",
    "metadata",
    "user",
    "stream",
    "stream_options",
    "thread_id",
    "instructions",
    "timeout",
    "api_base",
    "api_key",
    "tenant_id",
    "client_id",
    "client_secret",
    "drop_params",
    "num_retries",
    "max_retries",
    "extra_headers",
    "mock_response",
    "allow_insecure_http",
)


@pytest.mark.parametrize("fn", [agentrun.completion, agentrun.acompletion])
def test_signatures_show_parameters(fn: Any) -> None:
    """`completion` / `acompletion` name their parameters (IDEs and help() show them), as
    keyword-only parameters after model and messages, and still take other OpenAI ones."""
    sig = inspect.signature(fn)
    names = list(sig.parameters)
    assert names[:2] == ["model", "messages"]
    for name in EXPECTED_PARAMS:
        assert name in sig.parameters, name
        assert sig.parameters[name].kind is inspect.Parameter.KEYWORD_ONLY, name
    assert sig.parameters["drop_params"].default is None  # None: the module switch decides
    assert any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values())
    assert fn.__doc__


async def test_insecure_http_api_base_refused_unless_allowed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An http:// api_base on a host that is not the loopback is refused before anything is
    sent (the token would travel in clear text); allow_insecure_http=True or
    AGENTRUN_ALLOW_INSECURE_HTTP=1 lets it through to the connection attempt."""
    monkeypatch.delenv("AGENTRUN_ALLOW_INSECURE_HTTP", raising=False)
    remote = "http://agents.example.invalid/api/projects/p"
    with pytest.raises(agentrun.ConfigurationError, match="clear text"):
        await agentrun.acompletion(MODEL, ASK, api_base=remote, api_key="k")
    # Allowed: the call proceeds to connect (the .invalid host then fails to resolve).
    with pytest.raises(agentrun.APIConnectionError):
        await agentrun.acompletion(
            MODEL, ASK, api_base=remote, api_key="k", allow_insecure_http=True, max_retries=0
        )
    monkeypatch.setenv("AGENTRUN_ALLOW_INSECURE_HTTP", "1")
    with pytest.raises(agentrun.APIConnectionError):
        await agentrun.acompletion(MODEL, ASK, api_base=remote, api_key="k", max_retries=0)
    await _openai.aclose_clients()


def test_check_api_base_rules() -> None:
    """Loopback http is fine (the emulator), https always; other schemes, a missing host or a
    query are refused."""
    from agentrun._credentials import check_api_base

    env: dict[str, str] = {}
    assert check_api_base("http://127.0.0.1:8080/api/projects/p/", env=env).endswith("/p")
    assert check_api_base("http://localhost:1/x", env=env)
    assert check_api_base("http://[::1]:1/x", env=env)
    assert check_api_base("https://a.services.ai.azure.com/api/projects/p", env=env)
    for bad in ("http://10.0.0.5/x", "ftp://a/x", "https:///x", "https://a/x?y=1", "http://a/x"):
        with pytest.raises(agentrun.ConfigurationError):
            check_api_base(bad, env=env)
    assert check_api_base("http://10.0.0.5/x", allow_insecure_http=True, env=env)
    assert check_api_base("http://10.0.0.5/x", env={"AGENTRUN_ALLOW_INSECURE_HTTP": "true"})


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


async def test_stream_chunk_builder_rebuilds_the_completion(emu: Emulator) -> None:
    """`stream_chunk_builder(chunks)` (LiteLLM's) turns a streamed reply into the same
    message the non-streamed call gives: text, finish_reason, thread, usage; and a streamed
    tool call into one tool_calls entry with its whole arguments."""
    whole = await agentrun.acompletion(MODEL, ASK, **kw(emu))
    stream = await agentrun.acompletion(
        MODEL, ASK, stream=True, stream_options={"include_usage": True}, **kw(emu)
    )
    chunks = [c async for c in stream]
    built = agentrun.stream_chunk_builder(chunks, messages=ASK)
    assert built is not None
    assert built.object == "chat.completion"
    assert built.choices[0].message.content == whole.choices[0].message.content
    assert built.choices[0].finish_reason == "stop"
    assert built.thread_id == chunks[0].thread_id
    assert built.usage is not None and built.usage.total_tokens > 0

    ask = [{"role": "user", "content": "What is the weather in Paris? Use get_weather"}]
    stream = await agentrun.acompletion(MODEL, ask, tools=[WEATHER_TOOL], stream=True, **kw(emu))
    built = agentrun.stream_chunk_builder([c async for c in stream])
    assert built is not None
    calls = built.choices[0].message.tool_calls
    assert len(calls) == 1
    assert calls[0].function.name == "get_weather"
    assert json.loads(calls[0].function.arguments) == {"city": "Paris"}
    assert built.choices[0].finish_reason == "tool_calls"
    assert agentrun.stream_chunk_builder([]) is None
    with pytest.raises(agentrun.ConfigurationError):
        agentrun.stream_chunk_builder(["not a chunk"])
