"""The OpenAI-compatible proxy, end to end: the real `openai` client, real sockets, and the
emulator behind the proxy."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import pathlib
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import anyio
import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentrun import cli
from agentrun._errors import ConfigurationError
from agentrun._proxy import ProxyServer, is_loopback
from agentrun._proxy_config import ConfigError, ProxyConfig, parse_config
from agentrun.emulator import Emulator, EmulatorSettings, FaultRule, Timing

pytestmark = pytest.mark.anyio

FAST = Timing(queue_delay=0.005, run_duration=0.01, delta_interval=0.001, cancel_delay=0.01)
KEY = "sk-proxy-test"


def walkthrough_config(emu: Emulator, *, master_key: str | None = KEY, extra: str = "") -> str:
    """The seed document's config, pointed at the emulator (docs/proxy.md step 1)."""
    ca = f"      verify: {emu.ca_path}\n" if emu.ca_path else ""
    sp_trust = f"      authority: {emu.authority}\n" + ca if emu.ca_path else ""
    text = (
        "model_list:\n"
        "  - model_name: azure-agent-1\n"
        "    litellm_params:\n"
        "      model: azure_ai/agents/asst_abc123\n"
        f"      api_base: {emu.endpoint}\n"
        "      # Service Principal auth (recommended)\n"
        "      tenant_id: os.environ/AZURE_TENANT_ID\n"
        "      client_id: os.environ/AZURE_CLIENT_ID\n"
        "      client_secret: os.environ/AZURE_CLIENT_SECRET\n"
        f"{sp_trust}"
        f"{extra}"
        "\n"
        "  - model_name: azure-agent-math-tutor\n"
        "    litellm_params:\n"
        "      model: azure_ai/agents/asst_def456\n"
        f"      api_base: {emu.endpoint}\n"
        "      # Or pass Azure AD token directly\n"
        "      api_key: os.environ/AZURE_AD_TOKEN\n"
        f"{ca}"
        f"{extra}"
    )
    if master_key is not None:
        text += f"general_settings:\n  master_key: {master_key}\n"
    return text


def emulator_env(emu: Emulator) -> dict[str, str]:
    return {
        "AZURE_TENANT_ID": emu.tenant_id,
        "AZURE_CLIENT_ID": emu.client_id,
        "AZURE_CLIENT_SECRET": emu.client_secret,
        "AZURE_AD_TOKEN": emu.api_key,
    }


def load(emu: Emulator, **kwargs: Any) -> ProxyConfig:
    return parse_config(walkthrough_config(emu, **kwargs), env=emulator_env(emu))


@contextlib.asynccontextmanager
async def serving(config: ProxyConfig, **kwargs: Any) -> AsyncIterator[ProxyServer]:
    server = ProxyServer(config, host="127.0.0.1", port=0, **kwargs)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def openai_client(server: ProxyServer, key: str = KEY, **kwargs: Any) -> openai.AsyncOpenAI:
    kwargs.setdefault("timeout", 30)
    return openai.AsyncOpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0, **kwargs)


@pytest.fixture
def emu(emulator_factory: Callable[..., Emulator]) -> Emulator:
    """A dedicated fast emulator over TLS (service principal auth needs https)."""
    return emulator_factory(EmulatorSettings(timing=FAST), tls=True)


@pytest.fixture
def plain_emu(emulator_factory: Callable[..., Emulator]) -> Emulator:
    """A dedicated fast emulator over plain HTTP (static token only)."""
    return emulator_factory(EmulatorSettings(timing=FAST))


@pytest.fixture
async def proxy(emu: Emulator) -> AsyncIterator[ProxyServer]:
    async with serving(load(emu)) as server:
        yield server


def plain_config(emu: Emulator, *, master_key: str | None = KEY, params: str = "") -> ProxyConfig:
    text = (
        "model_list:\n"
        "  - model_name: agent\n"
        "    litellm_params:\n"
        "      model: azure_ai/agents/asst_abc123\n"
        f"      api_base: {emu.endpoint}\n"
        "      api_key: os.environ/AZURE_AD_TOKEN\n"
        f"{params}"
    )
    if master_key:
        text += f"general_settings:\n  master_key: {master_key}\n"
    return parse_config(text, env={"AZURE_AD_TOKEN": emu.api_key})


async def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.02)


# -- the happy paths -------------------------------------------------------------------------


async def test_completion_both_deployments(proxy: ProxyServer, emu: Emulator) -> None:
    """A chat completion through the openai client reaches each configured agent (service
    principal and static token), and carries thread_id in the body and the header."""
    async with openai_client(proxy) as client:
        raw = await client.chat.completions.with_raw_response.create(
            model="azure-agent-1",
            messages=[{"role": "user", "content": "Summarize the main benefits of cloud"}],
        )
        resp = raw.parse()
        assert resp.object == "chat.completion"
        assert resp.model == "azure-agent-1"
        assert "deterministic reply" in (resp.choices[0].message.content or "")
        assert resp.choices[0].finish_reason == "stop"
        assert resp.usage is not None and resp.usage.total_tokens > 0
        thread_id = (resp.model_extra or {})["thread_id"]
        assert thread_id.startswith("thread_")
        assert raw.headers["x-agentrun-thread-id"] == thread_id

        math = await client.chat.completions.create(
            model="azure-agent-math-tutor",
            messages=[{"role": "user", "content": "What is 25 * 4?"}],
        )
        assert "100" in (math.choices[0].message.content or "")
    runs = emu.runs()
    assert sorted(r["assistant_id"] for r in runs) == ["asst_abc123", "asst_def456"]
    assert emu.stats()["tokens_issued"] == 1  # the service principal's one token


async def test_stream(proxy: ProxyServer) -> None:
    """A stream arrives as chunks that all carry the thread id (also in the response header),
    joining to the reply, ending with finish_reason and, when asked, usage."""
    async with openai_client(proxy) as client:
        stream = await client.chat.completions.create(
            model="azure-agent-math-tutor",
            messages=[{"role": "user", "content": "What is 25 * 4?"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        header = stream.response.headers["x-agentrun-thread-id"]
        assert stream.response.headers["content-type"].startswith("text/event-stream")
        chunks = [chunk async for chunk in stream]
    assert {(c.model_extra or {})["thread_id"] for c in chunks} == {header}
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "25 * 4 = 100" in text
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


async def test_raw_stream_framing(proxy: ProxyServer) -> None:
    """On the wire a stream is `data: {json}` frames separated by blank lines, ending with
    `data: [DONE]`, as text/event-stream without caching."""
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            proxy.url + "/chat/completions",
            json={
                "model": "azure-agent-1",
                "messages": [{"role": "user", "content": "Hello"}],
                "stream": True,
            },
            headers={"Authorization": f"Bearer {KEY}"},
        ) as resp,
    ):
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "text/event-stream; charset=utf-8"
        assert resp.headers["Cache-Control"] == "no-cache"
        body = (await resp.read()).decode()
    frames = body.split("\n\n")
    assert frames[-1] == ""
    assert frames[-2] == "data: [DONE]"
    for frame in frames[:-2]:
        assert frame.startswith("data: {")
        assert json.loads(frame[len("data: ") :])["object"] == "chat.completion.chunk"


async def test_thread_continued_through_extra_body(proxy: ProxyServer) -> None:
    """The seed document's name-memory example, through the proxy: the second call continues
    the first one's thread via extra_body={"thread_id": ...}, and via the header too."""
    async with openai_client(proxy) as client:
        first = await client.chat.completions.create(
            model="azure-agent-1", messages=[{"role": "user", "content": "My name is Alice"}]
        )
        thread_id = (first.model_extra or {})["thread_id"]
        second = await client.chat.completions.create(
            model="azure-agent-1",
            messages=[{"role": "user", "content": "What's my name?"}],
            extra_body={"thread_id": thread_id},
        )
        assert "Alice" in (second.choices[0].message.content or "")
        assert (second.model_extra or {})["thread_id"] == thread_id

        third = await client.chat.completions.create(
            model="azure-agent-1",
            messages=[{"role": "user", "content": "What's my name?"}],
            extra_headers={"x-agentrun-thread-id": thread_id},
        )
        assert "Alice" in (third.choices[0].message.content or "")

        fresh = await client.chat.completions.create(
            model="azure-agent-1", messages=[{"role": "user", "content": "What's my name?"}]
        )
        assert "Alice" not in (fresh.choices[0].message.content or "")

        stream = await client.chat.completions.create(
            model="azure-agent-1",
            messages=[{"role": "user", "content": "What's my name?"}],
            extra_body={"thread_id": thread_id},
            stream=True,
        )
        chunks = [c async for c in stream]
        assert "Alice" in "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert all((c.model_extra or {})["thread_id"] == thread_id for c in chunks)

        with pytest.raises(openai.BadRequestError, match="differ"):
            await client.chat.completions.create(
                model="azure-agent-1",
                messages=[{"role": "user", "content": "hi"}],
                extra_body={"thread_id": thread_id},
                extra_headers={"x-agentrun-thread-id": "thread_other"},
            )


async def test_models_and_health(proxy: ProxyServer, emu: Emulator) -> None:
    """/v1/models and /models list the configured names (key required); the health probes
    answer without a key and without calling an agent."""
    async with openai_client(proxy) as client:
        models = await client.models.list()
        assert [m.id for m in models.data] == ["azure-agent-1", "azure-agent-math-tutor"]
        one = await client.models.retrieve("azure-agent-1")
        assert one.id == "azure-agent-1"
        with pytest.raises(openai.NotFoundError):
            await client.models.retrieve("nope")
    async with aiohttp.ClientSession() as session:
        async with session.get(proxy.url + "/models") as resp:
            assert resp.status == 401
        async with session.get(
            proxy.url + "/models", headers={"Authorization": f"Bearer {KEY}"}
        ) as resp:
            assert resp.status == 200
            assert len((await resp.json())["data"]) == 2
        async with session.get(proxy.url + "/health/liveliness") as resp:
            assert resp.status == 200
            assert await resp.json() == "I'm alive!"
        async with session.get(proxy.url + "/health/readiness") as resp:
            assert resp.status == 200
            assert (await resp.json())["status"] == "healthy"
    assert emu.stats()["runs_created"] == 0


async def test_one_client_per_deployment(emu: Emulator) -> None:
    """Each deployment gets one AsyncClient for the server's life (deployments with identical
    endpoint and credentials share one); they are closed when the server stops."""
    text = walkthrough_config(emu) + (
        "  - model_name: math-again\n"
        "    litellm_params:\n"
        "      model: azure_ai/agents/asst_def456\n"
        f"      api_base: {emu.endpoint}\n"
        "      api_key: os.environ/AZURE_AD_TOKEN\n"
        f"      verify: {emu.ca_path}\n"
    ).replace("general_settings:\n  master_key: " + KEY + "\n", "")
    text = text.replace("general_settings:\n  master_key: " + KEY + "\n", "")
    config = parse_config(text, env=emulator_env(emu))
    async with serving(config) as server:
        first = server.client_for("azure-agent-1")
        math = server.client_for("azure-agent-math-tutor")
        assert first is not None and math is not None and first is not math
        assert server.client_for("math-again") is math
        async with openai_client(server) as client:
            for _ in range(3):
                await client.chat.completions.create(
                    model="azure-agent-1", messages=[{"role": "user", "content": "hi"}]
                )
        assert first.statistics().token_requests == 1
    assert server.client_for("azure-agent-1") is None


async def test_request_log_line(proxy: ProxyServer, caplog: pytest.LogCaptureFixture) -> None:
    """Each request is logged as one line with method, path, status, duration, model and
    thread."""
    async with openai_client(proxy) as client:
        with caplog.at_level(logging.INFO, logger="agentrun.proxy"):
            resp = await client.chat.completions.create(
                model="azure-agent-1", messages=[{"role": "user", "content": "hi"}]
            )
            with pytest.raises(openai.NotFoundError):
                await client.chat.completions.create(
                    model="nope", messages=[{"role": "user", "content": "hi"}]
                )
    lines = [r.getMessage() for r in caplog.records if r.name == "agentrun.proxy"]
    assert len(lines) == 2
    thread = (resp.model_extra or {})["thread_id"]
    assert "POST /v1/chat/completions 200" in lines[0]
    assert f"model=azure-agent-1 thread_id={thread}" in lines[0]
    assert "POST /v1/chat/completions 404" in lines[1]
    assert "error=model_not_found" in lines[1]


# -- errors ----------------------------------------------------------------------------------


async def test_auth_errors(proxy: ProxyServer) -> None:
    """A wrong or missing key is a 401 in OpenAI's error shape: AuthenticationError."""
    async with openai_client(proxy, key="sk-wrong") as client:
        with pytest.raises(openai.AuthenticationError) as info:
            await client.chat.completions.create(
                model="azure-agent-1", messages=[{"role": "user", "content": "hi"}]
            )
    assert info.value.code == "invalid_api_key"
    async with aiohttp.ClientSession() as session:
        for headers in ({}, {"Authorization": "Basic abc"}, {"Authorization": "Bearer"}):
            async with session.post(
                proxy.url + "/v1/chat/completions", data=b"{}", headers=headers
            ) as resp:
                assert resp.status == 401
                error = (await resp.json())["error"]
                assert set(error) == {"message", "type", "param", "code"}
                assert error["type"] == "authentication_error"
        async with session.post(
            proxy.url + "/v1/chat/completions",
            json={"model": "azure-agent-1", "messages": [{"role": "user", "content": "hi"}]},
            headers={"api-key": KEY},
        ) as resp:
            assert resp.status == 200


async def test_request_errors(proxy: ProxyServer, emu: Emulator) -> None:
    """Unknown model 404, bad parameters and fields that would change the endpoint,
    credentials or agent 400: all as the openai client's own exception classes, and none of
    them reaches the service."""
    async with openai_client(proxy) as client:
        with pytest.raises(openai.NotFoundError) as nf:
            await client.chat.completions.create(
                model="azure_ai/agents/asst_def456", messages=[{"role": "user", "content": "x"}]
            )
        assert nf.value.code == "model_not_found"
        for extra in (
            {"api_base": "https://evil.example/api/projects/p"},
            {"api_key": "stolen"},
            {"assistant_id": "asst_def456"},
            {"tenant_id": "t"},
            {"mode": "poll"},
            {"timeout": 5},
            {"extra_body": {"thread_id": "../../threads"}},
        ):
            with pytest.raises(openai.BadRequestError) as br:
                await client.chat.completions.create(
                    model="azure-agent-1",
                    messages=[{"role": "user", "content": "x"}],
                    extra_body=extra,
                )
            assert br.value.param == next(iter(extra))
        with pytest.raises(openai.BadRequestError, match="'n'"):
            await client.chat.completions.create(
                model="azure-agent-1", messages=[{"role": "user", "content": "x"}], n=2
            )
        with pytest.raises(openai.BadRequestError, match="role"):
            await client.chat.completions.create(
                model="azure-agent-1",
                messages=[{"role": "wizard", "content": "x"}],  # type: ignore[misc,list-item]
            )
        with pytest.raises(openai.BadRequestError, match="thread_id"):
            await client.chat.completions.create(
                model="azure-agent-1",
                messages=[{"role": "user", "content": "x"}],
                extra_body={"thread_id": "../../assistants"},
            )
    assert emu.stats()["requests_total"] == 0

    async with aiohttp.ClientSession() as session:
        auth = {"Authorization": f"Bearer {KEY}"}
        for body in (b"{not json", b"", b'{"model": NaN}', b"\xff\xfe", b"[1, 2]", b"1e999"):
            async with session.post(
                proxy.url + "/v1/chat/completions", data=body, headers=auth
            ) as resp:
                assert resp.status == 400, body
                error = (await resp.json())["error"]
                assert error["type"] == "invalid_request_error"
        async with session.get(proxy.url + "/v1/nope", headers=auth) as resp:
            assert resp.status == 404
            assert (await resp.json())["error"]["type"] == "not_found_error"
        async with session.get(proxy.url + "/v1/chat/completions", headers=auth) as resp:
            assert resp.status == 405
            assert "error" in await resp.json()


async def test_unknown_thread_is_404(proxy: ProxyServer) -> None:
    """A thread the service does not know is the service's 404, as NotFoundError."""
    async with openai_client(proxy) as client:
        with pytest.raises(openai.NotFoundError):
            await client.chat.completions.create(
                model="azure-agent-1",
                messages=[{"role": "user", "content": "x"}],
                extra_body={"thread_id": "thread_doesnotexist"},
            )


async def test_body_too_large_is_413(plain_emu: Emulator) -> None:
    """A body over general_settings.max_request_size_mb is a 413 in OpenAI's shape."""
    text = (
        "model_list:\n  - model_name: agent\n    litellm_params:\n"
        f"      model: azure_ai/agents/asst_abc123\n      api_base: {plain_emu.endpoint}\n"
        "      api_key: os.environ/AZURE_AD_TOKEN\n"
        "general_settings:\n  max_request_size_mb: 0.01\n"
    )
    config = parse_config(text, env={"AZURE_AD_TOKEN": plain_emu.api_key})
    async with serving(config) as server, openai_client(server) as client:
        with pytest.raises(openai.APIStatusError) as info:
            await client.chat.completions.create(
                model="agent", messages=[{"role": "user", "content": "x" * 20_000}]
            )
        assert info.value.status_code == 413
        assert info.value.code == "request_too_large"
        ok = await client.chat.completions.create(
            model="agent", messages=[{"role": "user", "content": "short"}]
        )
        assert ok.choices[0].message.content


async def test_upstream_throttling_passes_retry_after(plain_emu: Emulator) -> None:
    """A 429 from the service (retries off with max_retries: 0) is a 429 with the service's
    Retry-After passed on: RateLimitError, for plain and streamed requests."""
    config = plain_config(plain_emu, params="      max_retries: 0\n")
    async with serving(config) as server, openai_client(server) as client:
        for stream in (False, True):
            plain_emu.inject(
                FaultRule(route="POST /threads/runs", kind="status", status=429, retry_after=7)
            )
            with pytest.raises(openai.RateLimitError) as info:
                await client.chat.completions.create(
                    model="agent", messages=[{"role": "user", "content": "hi"}], stream=stream
                )
            assert info.value.response.headers["retry-after"] == "7"
            assert info.value.response.headers["retry-after-ms"] == "7000"


async def test_failed_runs_map_to_status(proxy: ProxyServer) -> None:
    """A run that fails with server_error is a 500 (InternalServerError), one that fails with
    rate_limit_exceeded a 429 (RateLimitError); the error carries the run's code and thread."""
    async with openai_client(proxy) as client:
        with pytest.raises(openai.InternalServerError) as ise:
            await client.chat.completions.create(
                model="azure-agent-1",
                messages=[{"role": "user", "content": "[emulator:fail=server_error] hi"}],
            )
        assert ise.value.status_code == 500
        assert ise.value.code == "server_error"
        body = ise.value.body
        assert isinstance(body, dict) and str(body["thread_id"]).startswith("thread_")
        with pytest.raises(openai.RateLimitError) as rle:
            await client.chat.completions.create(
                model="azure-agent-1",
                messages=[{"role": "user", "content": "[emulator:fail=rate_limit_exceeded] hi"}],
            )
        assert rle.value.code == "rate_limit_exceeded"


async def test_mid_stream_failure_sends_error_frame(proxy: ProxyServer) -> None:
    """A run that fails after its stream started ends with a `data: {"error": ...}` frame and
    no [DONE]; the openai client raises it as APIError."""
    content = "[emulator:fail=server_error] hi"
    async with openai_client(proxy) as client:
        stream = await client.chat.completions.create(
            model="azure-agent-1", messages=[{"role": "user", "content": content}], stream=True
        )
        with pytest.raises(openai.APIError, match="ended failed"):
            async for _chunk in stream:
                pass
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            proxy.url + "/v1/chat/completions",
            json={
                "model": "azure-agent-1",
                "messages": [{"role": "user", "content": content}],
                "stream": True,
            },
            headers={"Authorization": f"Bearer {KEY}"},
        ) as resp,
    ):
        assert resp.status == 200
        frames = [f for f in (await resp.read()).decode().split("\n\n") if f]
    assert "[DONE]" not in frames[-1]
    error = json.loads(frames[-1][len("data: ") :])["error"]
    assert error["code"] == "server_error"
    assert error["type"] == "server_error"
    assert error["thread_id"].startswith("thread_")


async def test_disconnect_mid_stream_cancels_run(proxy: ProxyServer, emu: Emulator) -> None:
    """A client that disconnects mid-stream gets its run cancelled on the service."""
    async with aiohttp.ClientSession() as session:
        resp = await session.post(
            proxy.url + "/v1/chat/completions",
            json={
                "model": "azure-agent-1",
                "messages": [{"role": "user", "content": "[emulator:sleep=30] hi"}],
                "stream": True,
            },
            headers={"Authorization": f"Bearer {KEY}"},
        )
        assert resp.status == 200
        line = await resp.content.readline()
        run_id = json.loads(line[len(b"data: ") :])["run_id"]
        assert run_id.startswith("run_")
        resp.close()  # drop the connection mid-stream

    def status() -> str:
        return str(next(r["status"] for r in emu.runs() if r["id"] == run_id))

    await wait_for(lambda: status() == "cancelled")


async def test_disconnect_while_waiting_cancels_run(proxy: ProxyServer, emu: Emulator) -> None:
    """A client that gives up on a non-streamed request gets its run cancelled too."""
    async with aiohttp.ClientSession() as session:
        with pytest.raises(asyncio.TimeoutError):
            await session.post(
                proxy.url + "/v1/chat/completions",
                json={
                    "model": "azure-agent-1",
                    "messages": [{"role": "user", "content": "[emulator:sleep=30] hi"}],
                },
                headers={"Authorization": f"Bearer {KEY}"},
                timeout=aiohttp.ClientTimeout(total=0.5),
            )
    await wait_for(lambda: [r["status"] for r in emu.runs()] == ["cancelled"])


async def test_500_concurrent_requests(plain_emu: Emulator) -> None:
    """500 concurrent requests through one proxy are all answered, over one shared client."""
    config = plain_config(plain_emu, params="      pool_limit: 200\n")
    async with serving(config) as server, openai_client(server, timeout=120) as client:

        async def one(i: int) -> str:
            resp = await client.chat.completions.create(
                model="agent", messages=[{"role": "user", "content": f"What is {i} + 1?"}]
            )
            return str(resp.choices[0].message.content or "")

        with anyio.fail_after(60):
            answers = await asyncio.gather(*(one(i) for i in range(500)))
    assert all(str(i + 1) in answer for i, answer in enumerate(answers))
    assert plain_emu.stats()["runs_by_status"]["completed"] == 500


# -- listening and shutdown ------------------------------------------------------------------


async def test_no_master_key_only_on_loopback(plain_emu: Emulator) -> None:
    """Without a master key the proxy refuses a non-loopback address unless told explicitly,
    and serves loopback without a key."""
    config = plain_config(plain_emu, master_key=None)
    with pytest.raises(ConfigurationError, match=r"refusing to listen on 0\.0\.0\.0"):
        await ProxyServer(config, host="0.0.0.0", port=0).start()
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("") and not is_loopback("10.0.0.1")
    async with serving(config) as server, openai_client(server, key="anything") as client:
        resp = await client.chat.completions.create(
            model="agent", messages=[{"role": "user", "content": "hi"}]
        )
        assert resp.choices[0].message.content
    async with serving(config, allow_unauthenticated=True) as server:
        assert server.port > 0


async def test_deployment_without_credentials_fails_at_startup(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A deployment with no credentials (none in the config, none in the environment) stops
    the server from starting, with an error naming the deployment and its line."""
    for name in ("AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET", "AZURE_AD_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    config = parse_config(
        "model_list:\n  - model_name: ok\n    litellm_params:\n"
        "      model: azure_ai/agents/a\n      api_base: http://127.0.0.1:9\n      api_key: k\n"
        "  - model_name: bare\n    litellm_params:\n"
        "      model: azure_ai/agents/b\n      api_base: http://127.0.0.1:9\n",
        source="config.yaml",
        env={},
    )
    server = ProxyServer(config, port=0)
    with pytest.raises(ConfigError, match=r"config.yaml, line 7: model_list entry 'bare'.*no cred"):
        await server.start()
    assert server.client_for("ok") is None


def test_cli_refuses_non_loopback_without_key(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`agentrun serve --host 0.0.0.0` without a master key exits 2 with the reason."""
    path = tmp_path / "config.yaml"
    path.write_text(
        "model_list:\n  - model_name: a\n    litellm_params:\n"
        "      model: azure_ai/agents/x\n      api_base: http://127.0.0.1:9\n      api_key: k\n"
    )
    code = cli.main(["serve", "--config", str(path), "--host", "0.0.0.0", "--port", "0"])
    assert code == 2
    assert "--allow-unauthenticated" in capsys.readouterr().err


async def test_sigterm_graceful_shutdown(plain_emu: Emulator, tmp_path: pathlib.Path) -> None:
    """On SIGTERM the proxy stops accepting, lets an in-flight request finish within the grace
    period, cancels a longer one on the service (its stream ends with a shutting_down error
    frame) and exits 0."""
    path = tmp_path / "config.yaml"
    path.write_text(
        "model_list:\n  - model_name: agent\n    litellm_params:\n"
        "      model: azure_ai/agents/asst_abc123\n"
        f"      api_base: {plain_emu.endpoint}\n      api_key: os.environ/AZURE_AD_TOKEN\n"
    )
    env = {**os.environ, "AZURE_AD_TOKEN": plain_emu.api_key}
    command = [sys.executable, "-m", "agentrun.cli", "serve", "--config", str(path)]
    proc = await anyio.to_thread.run_sync(
        lambda: subprocess.Popen(
            [*command, "--port", "0", "--grace", "1.5"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        with anyio.fail_after(20):
            line = await anyio.to_thread.run_sync(proc.stdout.readline)
        assert line.startswith("ready: "), line
        url = line.split()[1]
        body = {"model": "agent", "messages": [{"role": "user", "content": ""}]}
        async with aiohttp.ClientSession() as session:

            async def short() -> tuple[int, Any]:
                msg = {**body, "messages": [{"role": "user", "content": "[emulator:sleep=0.7] hi"}]}
                async with session.post(url + "/v1/chat/completions", json=msg) as resp:
                    return resp.status, await resp.json()

            short_task = asyncio.ensure_future(short())
            long_msg = {
                **body,
                "messages": [{"role": "user", "content": "[emulator:sleep=30] hi"}],
                "stream": True,
            }
            long_resp = await session.post(url + "/v1/chat/completions", json=long_msg)
            first = await long_resp.content.readline()
            long_run = json.loads(first[len(b"data: ") :])["run_id"]
            await wait_for(lambda: len(plain_emu.runs()) == 2)

            proc.send_signal(signal.SIGTERM)
            started = time.monotonic()
            await anyio.sleep(0.3)
            with pytest.raises(aiohttp.ClientConnectionError):
                async with aiohttp.ClientSession() as fresh:
                    await fresh.get(url + "/health/liveliness")

            status, reply = await short_task
            assert status == 200
            assert reply["choices"][0]["message"]["content"]

            rest = (await long_resp.read()).decode()
            elapsed = time.monotonic() - started
            long_resp.close()
        frames = [f for f in rest.split("\n\n") if f]
        assert json.loads(frames[-1][len("data: ") :])["error"]["code"] == "shutting_down"
        assert 1.2 < elapsed < 10
        with anyio.fail_after(15):
            code = await anyio.to_thread.run_sync(proc.wait)
        assert code == 0
        stderr = proc.stderr.read()
        assert "signal received" in stderr
        assert "stopped" in stderr
        statuses = {r["id"]: r["status"] for r in plain_emu.runs()}
        assert statuses[long_run] == "cancelled"
        assert sorted(statuses.values()) == ["cancelled", "completed"]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


# -- fuzzing ---------------------------------------------------------------------------------

_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
_content = st.one_of(
    st.text(max_size=30),
    st.lists(
        st.fixed_dictionaries({"type": st.sampled_from(["text", "image_url", "x"]), "text": _json}),
        max_size=3,
    ),
    _json,
)
_message = st.fixed_dictionaries(
    {},
    optional={
        "role": st.sampled_from(["user", "assistant", "system", "developer", "tool", "x"]) | _json,
        "content": _content,
        "tool_call_id": st.text(max_size=10) | _json,
        "name": _json,
    },
)
_good_message = st.fixed_dictionaries(
    {
        "role": st.sampled_from(["user", "user", "system", "assistant"]),
        "content": st.text(min_size=1, max_size=30),
    }
)
_PARAMS: dict[str, st.SearchStrategy[Any]] = {
    "stream": st.booleans(),
    "stream_options": st.fixed_dictionaries({"include_usage": st.booleans() | _json}),
    "thread_id": st.from_regex(r"\Athread_[a-z0-9]{1,12}\Z"),
    "instructions": st.text(max_size=20),
    "temperature": st.floats(min_value=-1, max_value=3),
    "top_p": st.floats(min_value=-1, max_value=2),
    "max_tokens": st.integers(min_value=-5, max_value=5000),
    "tools": st.lists(_json, max_size=2),
    "tool_choice": st.sampled_from(["auto", "none", "required"]),
    "response_format": st.sampled_from([{"type": "text"}, {"type": "json_object"}]),
    "metadata": st.dictionaries(st.text(max_size=5), _json, max_size=2),
    "n": st.integers(),
    "user": st.text(max_size=5),
    "drop_params": st.booleans(),
    "parallel_tool_calls": st.booleans(),
}
_param = st.sampled_from(sorted(_PARAMS)).flatmap(
    lambda name: st.tuples(st.just(name), _PARAMS[name] | _PARAMS[name] | _json)
)
_chat_body = st.builds(
    lambda model, messages, params: {"model": model, "messages": messages, **dict(params)},
    st.one_of(st.just("agent"), st.just("nope"), _json),
    st.one_of(st.lists(_good_message, min_size=1, max_size=3), st.lists(_message), _json),
    st.lists(_param, max_size=3),
)
_junk = st.one_of(
    st.binary(max_size=200),
    _json.map(lambda v: json.dumps(v).encode()),
    _chat_body.map(lambda v: json.dumps(v).encode()),
)
#: Requests a client could plausibly send: the right model, mostly well-formed messages, and
#: up to three parameters (mostly of the right type); many of these run on the emulator.
_plausible = st.builds(
    lambda messages, params: json.dumps(
        {"model": "agent", "messages": messages, **dict(params)}
    ).encode(),
    st.one_of(*[st.lists(_good_message, min_size=1, max_size=3)] * 3, st.lists(_message)),
    st.lists(_param, max_size=3),
)


@pytest.fixture
async def fuzz_proxy(
    plain_emu: Emulator,
) -> AsyncIterator[tuple[ProxyServer, aiohttp.ClientSession]]:
    config = plain_config(plain_emu, params="      timeout: 20\n")
    async with serving(config) as server, aiohttp.ClientSession() as session:
        yield server, session


async def _check_answer(
    fuzz_proxy: tuple[ProxyServer, aiohttp.ClientSession], body: bytes, path: str
) -> int:
    server, session = fuzz_proxy
    async with session.post(
        server.url + path, data=body, headers={"Authorization": f"Bearer {KEY}"}
    ) as resp:
        raw = await resp.read()
        assert resp.status < 500, (resp.status, raw[:500])
        if resp.status >= 400:
            error = json.loads(raw)["error"]
            assert isinstance(error["message"], str) and error["message"]
            assert isinstance(error["type"], str)
            assert "param" in error and "code" in error
        elif resp.content_type == "text/event-stream":
            assert raw.endswith(b"data: [DONE]\n\n"), raw[-300:]
        else:
            assert json.loads(raw)["object"] == "chat.completion"
        return resp.status


_FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@_FUZZ
@given(body=_junk, path=st.sampled_from(["/v1/chat/completions", "/chat/completions"]))
async def test_malformed_bodies_get_4xx_json(
    fuzz_proxy: tuple[ProxyServer, aiohttp.ClientSession], body: bytes, path: str
) -> None:
    """Random bytes, random JSON and randomly shaped chat objects get a 4xx error in OpenAI's
    JSON shape (or, by chance, an answer): never a 5xx, a dropped connection or a crash."""
    await _check_answer(fuzz_proxy, body, path)


@_FUZZ
@given(body=_plausible)
async def test_plausible_requests_never_5xx(
    fuzz_proxy: tuple[ProxyServer, aiohttp.ClientSession], body: bytes
) -> None:
    """Chat requests with random parameters (right and wrong types, values out of range,
    unknown threads) are answered, streamed, or refused with a 4xx JSON error: never a 5xx."""
    await _check_answer(fuzz_proxy, body, "/v1/chat/completions")
