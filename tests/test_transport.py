"""The HTTP transport against servers started in the test on 127.0.0.1 (real sockets).

aiohttp.web apps play the Agent Service; a few raw TCP servers misbehave in ways aiohttp.web
will not (dropping a connection after reading the request, cutting a body short).
"""

from __future__ import annotations

import asyncio
import pathlib
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import anyio
import anyio.abc
import pytest
import trustme
from _web import Handler, serve
from aiohttp import web

from agentrun import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadGatewayError,
    BadRequestError,
    ClientStateError,
    ConfigurationError,
    ConflictError,
    InternalServerError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    RemoteProtocolError,
    ServiceUnavailableError,
    UnprocessableEntityError,
)
from agentrun._auth import AccessToken, StaticTokenSource, TokenCache
from agentrun._retry import RetryPolicy
from agentrun._transport import RequestProgress, StreamInterruptedError, Transport

TOKEN = "test-token-abc"
FAST = RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.02)


def static_cache(token: str = TOKEN) -> TokenCache:
    return TokenCache(StaticTokenSource(token))


async def read_request(stream: anyio.abc.ByteStream) -> bytes:
    """Read one HTTP/1.1 request (head and Content-Length body) from a raw stream."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += await stream.receive()
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        body += await stream.receive()
    return head


@asynccontextmanager
async def raw_server(
    on_connection: Callable[[anyio.abc.SocketStream], Awaitable[None]],
) -> AsyncIterator[str]:
    """A bare TCP server on 127.0.0.1 running `on_connection` per connection."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)

    async def handle(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            await on_connection(stream)

    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handle)
        try:
            yield f"http://127.0.0.1:{port}/api/projects/p"
        finally:
            tg.cancel_scope.cancel()


async def consume(
    stream: AbstractAsyncContextManager[AsyncIterator[bytes]], into: list[bytes] | None = None
) -> None:
    """Read a transport stream to its end, keeping the chunks in `into`."""
    async with stream as body:
        async for chunk in body:
            if into is not None:
                into.append(chunk)


def json_error(status: int, code: str, message: str, **headers: str) -> web.Response:
    return web.json_response(
        {"error": {"code": code, "message": message}}, status=status, headers=headers
    )


# -- the basics ------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_request_json_sends_api_version_bearer_and_body() -> None:
    """A request goes to base_url + path with api-version appended to the caller's params,
    carries the bearer token, User-Agent and JSON body, and returns the parsed JSON."""
    seen: list[tuple[str, str, list[tuple[str, str]], dict[str, str], Any]] = []

    async def handler(request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else None
        seen.append(
            (request.method, request.path, list(request.query.items()), dict(request.headers), body)
        )
        return web.json_response({"id": "thread_1", "object": "thread"})

    async with serve(handler) as url, Transport(url, token_cache=static_cache()) as transport:
        result = await transport.request_json(
            "post", "/threads", params=[("limit", "5")], json={"metadata": {"k": "v"}}
        )
    assert result == {"id": "thread_1", "object": "thread"}
    method, path, query, headers, body = seen[0]
    assert (method, path) == ("POST", "/api/projects/p/threads")
    assert query == [("limit", "5"), ("api-version", "v1")]
    assert headers["Authorization"] == f"Bearer {TOKEN}"
    assert headers["Accept"] == "application/json"
    assert headers["User-Agent"].startswith("agentrun/")
    assert body == {"metadata": {"k": "v"}}


@pytest.mark.anyio
async def test_openai_v1_routes_get_no_api_version() -> None:
    """Requests on the Responses API's `/openai/v1/...` data plane carry no api-version (the
    route takes none); the caller's own params are kept, and other routes still get it."""
    seen: list[tuple[str, list[tuple[str, str]]]] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append((request.path, list(request.query.items())))
        return web.json_response({"id": "resp_1", "object": "response", "status": "queued"})

    async with serve(handler) as url, Transport(url, token_cache=static_cache()) as transport:
        await transport.request_json("post", "/openai/v1/responses", json={"input": "hi"})
        await transport.request_json("get", "/openai/v1/responses/resp_1", params=[("a", "b")])
        await transport.request_json("get", "/agents/my-agent")
    assert seen == [
        ("/api/projects/p/openai/v1/responses", []),
        ("/api/projects/p/openai/v1/responses/resp_1", [("a", "b")]),
        ("/api/projects/p/agents/my-agent", [("api-version", "v1")]),
    ]


@pytest.mark.anyio
async def test_connections_are_kept_alive() -> None:
    """Sequential requests reuse one pooled connection; statistics count it all."""

    async def handler(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async with (
        serve(handler) as url,
        Transport(url, token_cache=static_cache(), api_version="2025-05-01") as t,
    ):
        for _ in range(10):
            assert await t.request_json("GET", "threads/x") == {"ok": True}
        stats = t.statistics()
    assert stats.connections_opened == 1
    assert stats.requests_sent == 10
    assert stats.retries == 0
    assert stats.responses_by_status == {200: 1 * 10}
    assert stats.token_requests == 1


@pytest.mark.anyio
async def test_bad_json_is_remote_protocol_error() -> None:
    """A 200 whose body is not JSON raises RemoteProtocolError (and is not retried)."""
    hits = 0

    async def handler(request: web.Request) -> web.Response:
        nonlocal hits
        hits += 1
        return web.Response(text="<html>oops</html>", content_type="text/html")

    async with serve(handler) as url, Transport(url, token_cache=static_cache()) as transport:
        with pytest.raises(RemoteProtocolError, match="not JSON"):
            await transport.request_json("GET", "threads/x")
    assert hits == 1


# -- error statuses --------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, BadRequestError),
        (401, AuthenticationError),
        (403, PermissionDeniedError),
        (404, NotFoundError),
        (409, ConflictError),
        (422, UnprocessableEntityError),
        (429, RateLimitError),
        (500, InternalServerError),
        (502, BadGatewayError),
        (503, ServiceUnavailableError),
        (504, InternalServerError),
        (418, APIStatusError),
    ],
)
async def test_error_status_maps_to_specific_class(status: int, cls: type[APIStatusError]) -> None:
    """Each error status raises its most specific class, carrying the JSON error code and
    message, Retry-After, the request id and the thread/run ids; the token is never shown."""

    async def handler(request: web.Request) -> web.Response:
        return json_error(
            status, "some_code", "Something precise.", **{"Retry-After": "7", "x-request-id": "r1"}
        )

    once = RetryPolicy(max_attempts=1)
    async with (
        serve(handler) as url,
        Transport(url, token_cache=static_cache(), retry_policy=once) as transport,
    ):
        with pytest.raises(cls) as info:
            await transport.request_json("GET", "threads/t1/runs/r1", thread_id="t1", run_id="r1")
    error = info.value
    assert type(error) is cls
    assert error.status_code == status
    assert error.code == "some_code"
    assert "Something precise." in error.message
    assert error.body == {"error": {"code": "some_code", "message": "Something precise."}}
    assert error.retry_after == 7.0
    assert error.request_id == "r1"
    assert (error.thread_id, error.run_id) == ("t1", "r1")
    assert TOKEN not in str(error)


@pytest.mark.anyio
async def test_non_json_error_body_still_gives_a_status_error() -> None:
    """An error with a plain-text body keeps its text in the message; no code."""

    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=404, text="no such route")

    async with serve(handler) as url, Transport(url, token_cache=static_cache()) as transport:
        with pytest.raises(NotFoundError, match="no such route") as info:
            await transport.request_json("GET", "nowhere")
    assert info.value.code is None
    assert info.value.body is None


# -- retries ---------------------------------------------------------------------------------


def counting_handler(statuses: list[int], **headers: str) -> tuple[Handler, list[str]]:
    """Answer with `statuses` in order (then 200s); record each request's method."""
    calls: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        await request.read()
        calls.append(request.method)
        n = len(calls)
        if n <= len(statuses):
            return json_error(statuses[n - 1], "busy", "try later", **headers)
        return web.json_response({"n": n})

    return handler, calls


@pytest.mark.anyio
async def test_get_503_retried_then_ok() -> None:
    """A GET answered 503 is retried and the later 200 returned; statistics show the retry."""
    handler, calls = counting_handler([503])
    async with (
        serve(handler) as url,
        Transport(url, token_cache=static_cache(), retry_policy=FAST) as transport,
    ):
        assert await transport.request_json("GET", "threads/x") == {"n": 2}
        stats = transport.statistics()
    assert calls == ["GET", "GET"]
    assert (stats.requests_sent, stats.retries) == (2, 1)
    assert stats.responses_by_status == {503: 1, 200: 1}


@pytest.mark.anyio
async def test_post_503_retried() -> None:
    """A POST answered 503 (not acted on) is retried."""
    handler, calls = counting_handler([503, 503])
    async with (
        serve(handler) as url,
        Transport(url, token_cache=static_cache(), retry_policy=FAST) as transport,
    ):
        assert await transport.request_json("POST", "threads/runs", json={}) == {"n": 3}
    assert calls == ["POST"] * 3


@pytest.mark.anyio
async def test_post_429_honours_retry_after() -> None:
    """A POST 429 with Retry-After is retried after (at least) the delay the server asked."""
    handler, calls = counting_handler([429], **{"Retry-After": "0.3"})
    async with (
        serve(handler) as url,
        Transport(url, token_cache=static_cache(), retry_policy=FAST) as transport,
    ):
        started = time.monotonic()
        assert await transport.request_json("POST", "threads/runs", json={}) == {"n": 2}
        elapsed = time.monotonic() - started
    assert calls == ["POST", "POST"]
    assert elapsed >= 0.29


@pytest.mark.anyio
async def test_post_500_not_retried() -> None:
    """A POST answered 500 may have created something: it is not retried."""
    handler, calls = counting_handler([500])
    async with (
        serve(handler) as url,
        Transport(url, token_cache=static_cache(), retry_policy=FAST) as transport,
    ):
        with pytest.raises(InternalServerError):
            await transport.request_json("POST", "threads/runs", json={})
    assert calls == ["POST"]


@pytest.mark.anyio
async def test_retries_stop_when_attempts_exhausted() -> None:
    """A GET that keeps failing stops after max_attempts and raises the last error."""
    handler, calls = counting_handler([502] * 10)
    async with (
        serve(handler) as url,
        Transport(url, token_cache=static_cache(), retry_policy=FAST) as transport,
    ):
        with pytest.raises(InternalServerError) as info:
            await transport.request_json("GET", "x")
    assert info.value.status_code == 502
    assert len(calls) == 3


@pytest.mark.anyio
async def test_retry_after_beyond_deadline_fails_fast() -> None:
    """If the server's Retry-After would pass the deadline, the error is raised at once."""
    handler, calls = counting_handler([429], **{"Retry-After": "30"})
    async with (
        serve(handler) as url,
        Transport(url, token_cache=static_cache(), retry_policy=FAST) as transport,
    ):
        started = time.monotonic()
        with pytest.raises(RateLimitError) as info:
            await transport.request_json("GET", "x", deadline=anyio.current_time() + 5)
        assert time.monotonic() - started < 2
    assert info.value.retry_after == 30.0
    assert calls == ["GET"]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.mark.anyio
async def test_connection_refused_is_retried_even_for_post() -> None:
    """A refused connection (request never sent) is retried for POST, then APIConnectionError."""
    url = f"http://127.0.0.1:{closed_port()}/api/projects/p"
    async with Transport(url, token_cache=static_cache(), retry_policy=FAST) as transport:
        with pytest.raises(APIConnectionError, match="could not connect") as info:
            await transport.request_json("POST", "threads/runs", json={})
        stats = transport.statistics()
    assert not isinstance(info.value, StreamInterruptedError)
    assert info.value.__cause__ is not None
    assert (stats.requests_sent, stats.retries) == (3, 2)
    assert stats.responses_by_status == {}


@pytest.mark.anyio
@pytest.mark.parametrize("method", ["POST", "GET"])
async def test_drop_after_request_read(method: str) -> None:
    """A server that reads the request and then drops the connection may have acted on it:
    a POST is sent exactly once, a GET is retried (by our policy: 3 attempts; aiohttp may
    also resend an idempotent request once per attempt on a dropped connection)."""
    received: list[bytes] = []

    async def drop(stream: anyio.abc.SocketStream) -> None:
        received.append(await read_request(stream))

    async with (
        raw_server(drop) as url,
        Transport(url, token_cache=static_cache(), retry_policy=FAST) as transport,
    ):
        with pytest.raises(APIConnectionError, match="connection failed") as info:
            await transport.request_json(method, "threads/runs", json={})
        stats = transport.statistics()
    assert all(head.startswith(method.encode()) for head in received)
    assert info.value.__cause__ is not None
    if method == "POST":
        assert len(received) == 1
        assert (stats.requests_sent, stats.retries) == (1, 0)
    else:
        assert len(received) >= 3
        assert (stats.requests_sent, stats.retries) == (3, 2)


# -- authentication --------------------------------------------------------------------------


class RotatingSource:
    """A token source handing out tok-1, tok-2, ... (a credential that rotates its token)."""

    def __init__(self) -> None:
        self.fetches = 0

    async def fetch(self) -> AccessToken:
        self.fetches += 1
        return AccessToken(f"tok-{self.fetches}", expires_on=time.time() + 3600)

    async def aclose(self) -> None:
        return None


@pytest.mark.anyio
async def test_401_invalidates_token_and_retries_once() -> None:
    """A 401 drops the token from the cache and retries once with a fresh one (even a POST)."""
    seen: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request.headers["Authorization"])
        if request.headers["Authorization"] == "Bearer tok-1":
            return json_error(401, "invalid_token", "expired")
        return web.json_response({"ok": True})

    source = RotatingSource()
    async with serve(handler) as url, Transport(url, token_cache=TokenCache(source)) as transport:
        assert await transport.request_json("POST", "threads", json={}) == {"ok": True}
        assert transport.statistics().token_requests == 2
    assert seen == ["Bearer tok-1", "Bearer tok-2"]


@pytest.mark.anyio
async def test_401_twice_raises_authentication_error() -> None:
    """A second 401 with the fresh token is final: AuthenticationError after two requests."""
    seen: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request.headers["Authorization"])
        return json_error(401, "invalid_token", "no")

    async with (
        serve(handler) as url,
        Transport(url, token_cache=TokenCache(RotatingSource())) as transport,
    ):
        with pytest.raises(AuthenticationError) as info:
            await transport.request_json("GET", "threads")
    assert seen == ["Bearer tok-1", "Bearer tok-2"]
    assert "tok-" not in str(info.value)


@pytest.mark.anyio
async def test_401_with_static_token_is_not_repeated() -> None:
    """With a static token a fresh fetch gives the same token, so the 401 is raised at once."""
    handler, calls = counting_handler([401])
    async with serve(handler) as url, Transport(url, token_cache=static_cache()) as transport:
        with pytest.raises(AuthenticationError):
            await transport.request_json("GET", "threads")
    assert calls == ["GET"]


# -- deadlines -------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_deadline_raises_api_timeout_error() -> None:
    """A response slower than the deadline raises APITimeoutError, promptly."""

    async def slow(request: web.Request) -> web.Response:
        await anyio.sleep(10)
        return web.json_response({})

    async with serve(slow) as url, Transport(url, token_cache=static_cache()) as transport:
        started = time.monotonic()
        with pytest.raises(APITimeoutError, match="deadline"):
            await transport.request_json(
                "GET", "x", deadline=anyio.current_time() + 0.2, thread_id="t9"
            )
        assert time.monotonic() - started < 2
    assert isinstance(APITimeoutError("x"), APIConnectionError)


@pytest.mark.anyio
async def test_read_timeout_is_api_timeout_error() -> None:
    """aiohttp's socket read timeout surfaces as APITimeoutError (not a raw asyncio error)."""

    async def slow(request: web.Request) -> web.Response:
        await anyio.sleep(10)
        return web.json_response({})

    async with (
        serve(slow) as url,
        Transport(
            url,
            token_cache=static_cache(),
            read_timeout=0.1,
            retry_policy=RetryPolicy(max_attempts=1),
        ) as transport,
    ):
        with pytest.raises(APITimeoutError, match="timed out") as info:
            await transport.request_json("POST", "x", json={})
    assert isinstance(info.value.__cause__, asyncio.TimeoutError)


# -- streaming -------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_stream_yields_chunks_as_they_arrive() -> None:
    """Body chunks reach the caller while the server is still sending (the server waits for
    the client to have seen the first chunk before sending the second)."""
    first_seen = anyio.Event()

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b"event: a\ndata: 1\n\n")
        await first_seen.wait()
        await response.write(b"event: b\ndata: 2\n\n")
        await response.write_eof()
        return response

    async with serve(handler) as url, Transport(url, token_cache=static_cache()) as transport:
        chunks: list[bytes] = []
        with anyio.fail_after(5):
            for _ in range(2):  # twice: the connection goes back to the pool in between
                async with transport.stream("POST", "threads/runs", json={"stream": True}) as body:
                    async for chunk in body:
                        chunks.append(chunk)
                        first_seen.set()
                first_seen = anyio.Event()
        stats = transport.statistics()
    assert b"".join(chunks) == b"event: a\ndata: 1\n\nevent: b\ndata: 2\n\n" * 2
    assert chunks[0] == b"event: a\ndata: 1\n\n"
    assert stats.connections_opened == 1


@pytest.mark.anyio
async def test_stream_retries_before_200_and_raises_status_errors() -> None:
    """stream() retries a 503 like request_json, and raises the status error for a 404."""
    handler, calls = counting_handler([503, 404])
    async with (
        serve(handler) as url,
        Transport(url, token_cache=static_cache(), retry_policy=FAST) as transport,
    ):
        with pytest.raises(NotFoundError):
            async with transport.stream("POST", "threads/runs", json={}):
                pass
    assert calls == ["POST", "POST"]


@pytest.mark.anyio
async def test_stream_cut_mid_body_raises_stream_interrupted() -> None:
    """A connection dropped after a 200 started raises StreamInterruptedError (an
    APIConnectionError: the server DID act), after the chunks that did arrive."""

    async def cut(stream: anyio.abc.SocketStream) -> None:
        await read_request(stream)
        await stream.send(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
        )
        await anyio.sleep(0.05)

    received: list[bytes] = []
    async with (
        raw_server(cut) as url,
        Transport(url, token_cache=static_cache(), retry_policy=FAST) as transport,
    ):
        with pytest.raises(StreamInterruptedError, match="did receive") as info:
            await consume(
                transport.stream("POST", "threads/runs", json={}, thread_id="t1"), received
            )
        assert transport.statistics().requests_sent == 1
    assert received == [b"hello"]
    assert isinstance(info.value, APIConnectionError)
    assert info.value.thread_id == "t1"


@pytest.mark.anyio
async def test_stream_deadline_mid_body() -> None:
    """A stream whose body stalls past the deadline raises APITimeoutError."""

    async def stall(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b"x")
        await anyio.sleep(10)
        return response

    async with serve(stall) as url, Transport(url, token_cache=static_cache()) as transport:
        with pytest.raises(APITimeoutError):
            await consume(transport.stream("GET", "s", deadline=anyio.current_time() + 0.3))


@pytest.mark.anyio
async def test_stream_left_early_closes_connection() -> None:
    """Leaving a stream before its end closes that connection (it cannot be reused), and the
    next request opens a new one."""
    release = anyio.Event()

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b"part")
        with anyio.move_on_after(5):
            await release.wait()
        return response

    async with serve(handler) as url, Transport(url, token_cache=static_cache()) as transport:
        async with transport.stream("GET", "s") as body:
            async for chunk in body:
                assert chunk == b"part"
                break
        release.set()
        async with transport.stream("GET", "s") as body:
            assert [c async for c in body] == [b"part"]
        assert transport.statistics().connections_opened == 2


# -- the pool --------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_pool_limit_respected() -> None:
    """limit=5 with 50 concurrent requests to a slow handler: at most 5 connections at the
    server at any time, and exactly 5 opened."""
    active = 0
    peak = 0
    peers: set[Any] = set()

    async def slow(request: web.Request) -> web.Response:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        assert request.transport is not None
        peers.add(request.transport.get_extra_info("peername"))
        await anyio.sleep(0.05)
        active -= 1
        return web.json_response({})

    async with serve(slow) as url, Transport(url, token_cache=static_cache(), limit=5) as t:
        async with anyio.create_task_group() as tg:
            for _ in range(50):
                tg.start_soon(t.request_json, "GET", "x")
        stats = t.statistics()
    assert peak == 5
    assert len(peers) == 5
    assert stats.connections_opened == 5
    assert stats.responses_by_status == {200: 50}


# -- lifecycle -------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_use_after_close_is_refused() -> None:
    """After aclose() every use raises ClientStateError naming the closed state; aclose is
    idempotent."""

    async def handler(request: web.Request) -> web.Response:
        return web.json_response({})

    async with serve(handler) as url:
        transport = Transport(url, token_cache=static_cache())
        await transport.request_json("GET", "x")
        await transport.aclose()
        await transport.aclose()
        with pytest.raises(ClientStateError, match="closed"):
            await transport.request_json("GET", "x")
        with pytest.raises(ClientStateError, match="closed"):
            async with transport.stream("GET", "x"):
                pass


@pytest.mark.anyio
async def test_use_from_another_loop_is_refused() -> None:
    """A transport opened in one event loop refuses requests and close from another loop."""

    async def handler(request: web.Request) -> web.Response:
        return web.json_response({})

    async with serve(handler) as url, Transport(url, token_cache=static_cache()) as transport:
        await transport.request_json("GET", "x")

        def elsewhere(coro: Callable[[], Awaitable[Any]]) -> BaseException | None:
            async def main() -> None:
                await coro()

            try:
                asyncio.run(main())
            except BaseException as exc:
                return exc
            return None

        error = await anyio.to_thread.run_sync(
            elsewhere, lambda: transport.request_json("GET", "x")
        )
        assert isinstance(error, ClientStateError)
        assert "different event loop" in str(error)
        error = await anyio.to_thread.run_sync(elsewhere, transport.aclose)
        assert isinstance(error, ClientStateError)
        assert await transport.request_json("GET", "x") == {}  # still fine in its own loop


def test_bad_configuration_rejected() -> None:
    """A base URL without a scheme and an unreadable CA path are configuration errors."""
    with pytest.raises(ConfigurationError, match="https://"):
        Transport("example.com/api", token_cache=static_cache())
    with pytest.raises(ConfigurationError, match="CA certificates"):
        Transport("https://x", token_cache=static_cache(), verify="/nonexistent/ca.pem")


# -- TLS -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[ssl.SSLContext, str]:
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server_ctx)
    ca_path = pathlib.Path(tmp_path_factory.mktemp("tls")) / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    return server_ctx, str(ca_path)


async def _ok(request: web.Request) -> web.Response:
    return web.json_response({"tls": request.secure})


@pytest.mark.anyio
async def test_tls_verified_by_default(tls: tuple[ssl.SSLContext, str]) -> None:
    """With default settings an untrusted (test-CA) certificate is refused with
    APIConnectionError, without retrying a failure retries cannot fix."""
    server_ctx, _ = tls
    async with (
        serve(_ok, ssl_context=server_ctx) as url,
        Transport(url, token_cache=static_cache(), retry_policy=FAST) as transport,
    ):
        with pytest.raises(APIConnectionError, match="certificate") as info:
            await transport.request_json("GET", "x")
        assert transport.statistics().requests_sent == 1
    assert isinstance(info.value.__cause__, ssl.SSLError | OSError)


@pytest.mark.anyio
async def test_tls_with_ca_path(tls: tuple[ssl.SSLContext, str]) -> None:
    """verify=<CA path> trusts that CA, and the request goes over TLS."""
    server_ctx, ca_path = tls
    async with (
        serve(_ok, ssl_context=server_ctx) as url,
        Transport(url, token_cache=static_cache(), verify=ca_path) as transport,
    ):
        assert await transport.request_json("GET", "x") == {"tls": True}


# -- the deadline and the progress of a request ------------------------------------------------


@pytest.mark.anyio
async def test_a_retry_that_would_outlive_the_deadline_is_not_waited_for() -> None:
    """A POST throttled with `429 Retry-After: 30` and 2 s left before its deadline raises
    `RateLimitError` (with `retry_after`) after one attempt: the retry decision gets the
    deadline, and waiting would outlive it."""
    sent = 0

    async def handler(request: web.Request) -> web.Response:
        nonlocal sent
        sent += 1
        return json_error(429, "too_many_requests", "slow down", **{"Retry-After": "30"})

    async with serve(handler) as url, Transport(url, token_cache=static_cache()) as t:
        with anyio.fail_after(10):
            with pytest.raises(RateLimitError) as info:
                await t.request_json(
                    "POST", "threads/runs", json={}, deadline=anyio.current_time() + 2
                )
    assert info.value.retry_after == 30
    assert sent == 1


@pytest.mark.anyio
async def test_progress_says_whether_a_request_may_have_been_sent() -> None:
    """`RequestProgress.sent` stays False while a request waits for a pooled connection and
    turns True once it holds one (from then on the server may act on it)."""
    release = anyio.Event()

    async def handler(request: web.Request) -> web.Response:
        await release.wait()
        return web.json_response({"ok": True})

    async with serve(handler) as url, Transport(url, token_cache=static_cache(), limit=1) as t:
        first, second = RequestProgress(), RequestProgress()
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: t.request_json("GET", "a", progress=first))
            with anyio.fail_after(10):
                while not first.sent:
                    await anyio.sleep(0.01)
            tg.start_soon(lambda: t.request_json("GET", "b", progress=second))
            await anyio.sleep(0.2)
            assert first.sent and not second.sent  # the second waits for the only connection
            release.set()
        assert second.sent


def _pool_holder(
    seen: list[str], release_stream: anyio.Event, name: Callable[[str], str]
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """A handler for the pool-admission tests: `.../stream` answers one event and holds its
    connection until `release_stream` is set; any other request is noted in `seen` as
    "METHOD name(path)" in the order it reaches the server."""

    async def handler(request: web.Request) -> web.StreamResponse:
        if request.path.endswith("/stream"):
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            await response.write(b"data: 1\n\n")
            await release_stream.wait()
            await response.write_eof()
            return response
        seen.append(f"{request.method} {name(request.path)}")
        return web.json_response({})

    return handler


@pytest.mark.anyio
async def test_requests_about_existing_runs_are_admitted_before_creates() -> None:
    """With the pool full, queued polls (GET) reach the server before creates (POST) queued
    earlier, each kind in its order; a stream holds its slot until it ends; a run's cancel does
    not wait at all (it uses the connection kept for cancels)."""
    seen: list[str] = []
    release_stream = anyio.Event()

    handler = _pool_holder(seen, release_stream, lambda path: path.rsplit("/", 1)[-1])

    async with serve(handler) as url, Transport(url, token_cache=static_cache(), limit=1) as t:
        with anyio.fail_after(10):
            async with t.stream("POST", "threads/runs/stream", json={}) as body:
                await body.__anext__()  # the only slot is held by this stream
                async with anyio.create_task_group() as tg:
                    for name in ("create1", "create2"):
                        tg.start_soon(lambda n=name: t.request_json("POST", f"threads/{n}"))
                        await anyio.sleep(0.01)
                    for name in ("poll1", "poll2"):
                        tg.start_soon(lambda n=name: t.request_json("GET", f"runs/{n}"))
                        await anyio.sleep(0.01)
                    tg.start_soon(lambda: t.request_json("POST", "runs/r1/cancel"))
                    await anyio.sleep(0.05)
                    assert seen == ["POST cancel"]  # only the cancel got past the full pool
                    release_stream.set()
                    async for _ in body:
                        pass
    assert seen == ["POST cancel", "GET poll1", "GET poll2", "POST create1", "POST create2"]


@pytest.mark.anyio
async def test_a_replys_lists_are_admitted_before_polls() -> None:
    """With the pool full, a queued list of a run's messages or steps (the requests that build
    the reply of a run seen ended) reaches the server before polls queued earlier, and polls
    before creates, each kind in its order."""
    seen: list[str] = []
    release_stream = anyio.Event()

    handler = _pool_holder(seen, release_stream, lambda path: path.split("/threads/", 1)[-1])

    async with serve(handler) as url, Transport(url, token_cache=static_cache(), limit=1) as t:
        with anyio.fail_after(10):
            async with t.stream("POST", "threads/runs/stream", json={}) as body:
                await body.__anext__()  # the only slot is held by this stream
                async with anyio.create_task_group() as tg:
                    for path in (
                        "threads/create1",
                        "threads/t1/runs/poll1",
                        "threads/t1/messages",
                        "threads/t2/runs/poll2",
                        "threads/t2/runs/r2/steps",
                    ):
                        method = "POST" if "create" in path else "GET"
                        tg.start_soon(lambda m=method, p=path: t.request_json(m, p))
                        await anyio.sleep(0.01)
                    await anyio.sleep(0.05)
                    assert seen == []
                    release_stream.set()
                    async for _ in body:
                        pass
    assert seen == [
        "GET t1/messages",
        "GET t2/runs/r2/steps",
        "GET t1/runs/poll1",
        "GET t2/runs/poll2",
        "POST create1",
    ]
