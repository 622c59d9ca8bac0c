"""The proxy under abuse: idle and slow connections (with no key), too many connections, and
ids that must not reach a header. Real sockets on 127.0.0.1, the emulator behind the proxy."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import openai
import pytest

from agentrun._errors import ConfigurationError
from agentrun._proxy import ProxyServer, _header_id
from agentrun._proxy_config import ConfigError, ProxyConfig, parse_config
from agentrun.emulator import Emulator, EmulatorSettings, Timing

pytestmark = pytest.mark.anyio

FAST = Timing(queue_delay=0.005, run_duration=0.01, delta_interval=0.001, cancel_delay=0.01)
KEY = "sk-proxy-limits"


def config_for(emu: Emulator, model_name: str = "agent") -> ProxyConfig:
    text = (
        "model_list:\n"
        f"  - model_name: {json.dumps(model_name)}\n"
        "    litellm_params:\n"
        "      model: azure_ai/agents/asst_abc123\n"
        f"      api_base: {emu.endpoint}\n"
        "      api_key: os.environ/AZURE_AD_TOKEN\n"
        f"general_settings:\n  master_key: {KEY}\n"
    )
    return parse_config(text, env={"AZURE_AD_TOKEN": emu.api_key})


@pytest.fixture
def emu(emulator_factory: Callable[..., Emulator]) -> Emulator:
    return emulator_factory(EmulatorSettings(timing=FAST))


@contextlib.asynccontextmanager
async def serving(emu: Emulator, **kwargs: Any) -> AsyncIterator[ProxyServer]:
    server = ProxyServer(config_for(emu), host="127.0.0.1", port=0, **kwargs)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def read_all(stream: anyio.abc.ByteStream) -> bytes:
    """Everything the server sends until it closes the connection."""
    data = b""
    with anyio.fail_after(30):
        while True:
            try:
                data += await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                return data


async def send_and_read(port: int, data: bytes) -> bytes:
    """Send raw bytes on a new connection; everything the server answers until it closes."""
    async with await anyio.connect_tcp("127.0.0.1", port) as conn:
        await conn.send(data)
        return await read_all(conn)


async def completion_ok(server: ProxyServer) -> bool:
    async with openai.AsyncOpenAI(
        base_url=server.url + "/v1", api_key=KEY, max_retries=0, timeout=30
    ) as client:
        resp = await client.chat.completions.create(
            model="agent", messages=[{"role": "user", "content": "What is 2 + 2?"}]
        )
    return "4" in (resp.choices[0].message.content or "")


async def test_idle_connection_without_key_gets_408_and_is_closed(emu: Emulator) -> None:
    """Slowloris: a client that opens a connection and sends half a request line (no key, no
    end of headers) gets 408 after the header timeout and the connection is closed; the
    proxy still serves others meanwhile."""
    async with serving(emu, header_timeout=0.5) as server:
        async with await anyio.connect_tcp("127.0.0.1", server.port) as slow:
            await slow.send(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
            assert await completion_ok(server)
            answer = await read_all(slow)
        assert answer.startswith(b"HTTP/1.1 408 ")
        assert b'"code":"request_timeout"' in answer
        assert server.timed_out_connections == 1
        async with await anyio.connect_tcp("127.0.0.1", server.port) as silent:
            answer = await read_all(silent)  # nothing sent at all
        assert answer.startswith(b"HTTP/1.1 408 ")
        assert server.timed_out_connections == 2


async def test_many_idle_connections_do_not_exhaust_the_proxy(emu: Emulator) -> None:
    """With the cap at 4 connections, 4 idle ones fill it: the 5th connection is answered
    503 with Retry-After and closed at once; once the idle ones time out (408), a real
    request is served again."""
    async with serving(emu, header_timeout=1.0, max_connections=4) as server:
        idle = [await anyio.connect_tcp("127.0.0.1", server.port) for _ in range(4)]
        try:
            await anyio.sleep(0.1)
            async with await anyio.connect_tcp("127.0.0.1", server.port) as extra:
                answer = await read_all(extra)
            assert answer.startswith(b"HTTP/1.1 503 ")
            assert b"Retry-After: 1" in answer
            assert b"too_many_connections" in answer
            assert server.refused_connections == 1
            for conn in idle:
                assert (await read_all(conn)).startswith(b"HTTP/1.1 408 ")
        finally:
            for conn in idle:
                await conn.aclose()
        with anyio.fail_after(10):
            while server._conns:
                await anyio.sleep(0.05)
        assert await completion_ok(server)


async def test_slow_body_gets_408(emu: Emulator) -> None:
    """A client (with the key) that sends headers promising a body and then stalls gets 408
    after the body timeout, and the connection is closed."""
    async with serving(emu, header_timeout=5.0, body_timeout=0.5) as server:
        answer = await send_and_read(
            server.port,
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
            + f"Authorization: Bearer {KEY}\r\n".encode()
            + b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{",
        )
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert b"request_timeout" in answer


async def test_request_without_key_is_answered_401_at_once(emu: Emulator) -> None:
    """A complete request without a key is answered 401 at once (never waits for a body)."""
    async with serving(emu) as server:
        answer = await send_and_read(
            server.port,
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n"
            b"Connection: close\r\n\r\n",
        )
    assert answer.startswith(b"HTTP/1.1 401 ")


def test_limits_are_validated() -> None:
    """Bad limits are a ConfigurationError when the server is built."""
    cfg = parse_config(
        "model_list:\n  - model_name: a\n    litellm_params:\n"
        "      model: azure_ai/agents/a\n      api_base: https://h\n      api_key: k\n"
    )
    for kwargs in (
        {"header_timeout": 0},
        {"body_timeout": -1},
        {"max_connections": 0},
        {"max_connections": 1.5},
    ):
        with pytest.raises(ConfigurationError):
            ProxyServer(cfg, **kwargs)


def test_ids_in_headers_are_whole_string_checked() -> None:
    """Only a whole valid id goes into a response header: a trailing newline or a space is
    left out instead of being sent."""
    assert _header_id("thread_abc-1") == "thread_abc-1"
    for bad in ("thread_1\n", "thread 1", "a\r\nSet-Cookie: x", "", None, 5, "x" * 257):
        assert _header_id(bad) is None


@pytest.mark.parametrize("name", ["agent\n", "a\rb", "a\x00", "x" * 257])
def test_model_names_are_whole_string_checked(name: str) -> None:
    """A model name with a line break or control character (even a trailing one) or over 256
    characters is a configuration error naming the key."""
    text = (
        f"model_list:\n  - model_name: {json.dumps(name)}\n    litellm_params:\n"
        "      model: azure_ai/agents/a\n      api_base: https://h\n      api_key: k\n"
    )
    with pytest.raises(ConfigError, match="model_name"):
        parse_config(text)


@pytest.mark.parametrize("thread_id", ["thread_1\n", "thread 1", "thread/1"])
async def test_thread_ids_are_whole_string_checked(emu: Emulator, thread_id: str) -> None:
    """A thread id with a trailing newline (or a space, a slash) is a 400 naming thread_id,
    and no request reaches the service."""
    async with (
        serving(emu) as server,
        openai.AsyncOpenAI(
            base_url=server.url + "/v1", api_key=KEY, max_retries=0, timeout=30
        ) as client,
    ):
        with pytest.raises(openai.BadRequestError) as info:
            await client.chat.completions.create(
                model="agent",
                messages=[{"role": "user", "content": "hi"}],
                extra_body={"thread_id": thread_id},
            )
    assert "thread_id" in str(info.value)
    assert emu.stats()["requests_total"] == 0


async def test_token_endpoint_certificate_failure_is_named(
    emulator_factory: Callable[..., Emulator],
) -> None:
    """A deployment whose service principal's token endpoint has an untrusted certificate:
    the client gets a 502 whose code and message name the token endpoint's certificate (not
    a generic 'service could not be reached' or an authentication error)."""
    tls = emulator_factory(EmulatorSettings(timing=FAST), tls=True)
    text = (
        "model_list:\n"
        "  - model_name: agent\n"
        "    litellm_params:\n"
        "      model: azure_ai/agents/asst_abc123\n"
        f"      api_base: {tls.endpoint}\n"
        f"      tenant_id: {tls.tenant_id}\n"
        f"      client_id: {tls.client_id}\n"
        f"      client_secret: {tls.client_secret}\n"
        f"      authority: {tls.authority}\n"
        f"general_settings:\n  master_key: {KEY}\n"
    )
    server = ProxyServer(parse_config(text, env={}), host="127.0.0.1", port=0)
    await server.start()
    try:
        async with openai.AsyncOpenAI(
            base_url=server.url + "/v1", api_key=KEY, max_retries=0, timeout=60
        ) as client:
            with pytest.raises(openai.APIStatusError) as info:
                await client.chat.completions.create(
                    model="agent", messages=[{"role": "user", "content": "hi"}]
                )
    finally:
        await server.stop()
    assert info.value.status_code == 502
    body = info.value.body
    assert isinstance(body, dict)
    assert body.get("code") == "token_endpoint_certificate_error", body
    assert "token endpoint" in str(body.get("message"))
    assert tls.stats()["runs_created"] == 0
