"""The HTTP transport: one aiohttp session and connection pool per client, with retries.

This is the only module where aiohttp exceptions become agentrun exceptions (`_classify`), and
where HTTP error statuses become `APIStatusError` subclasses (`_status_error`). Every request
gets `api-version` (except the OpenAI-compatible ``/openai/v1/...`` routes of the Responses
API, which take none) and a bearer token from the shared `TokenCache`; failures are retried as
`agentrun._retry.decide` says, inside the caller's deadline.

The session is opened lazily, inside the running event loop, and the transport then belongs to
that loop: using it from another loop, or after `aclose()`, raises `ClientStateError`.

Why one module of ~750 lines: it is the one place where aiohttp meets agentrun (session and
pool, retries, the error mapping, streamed bodies); keeping every aiohttp detail here is what
lets the rest of the package ignore aiohttp.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import importlib.metadata
import json as jsonlib
import logging
import random
import ssl
import time
import urllib.parse
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from types import SimpleNamespace, TracebackType
from typing import Any, NoReturn

import aiohttp
import anyio
import attrs
import yarl

from agentrun import _otel
from agentrun._auth import TokenCache
from agentrun._errors import (
    AgentRunError,
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    CertificateVerificationError,
    ClientStateError,
    ConfigurationError,
    RemoteProtocolError,
    parse_error_body,
    status_error_class,
)
from agentrun._gate import PoolGate
from agentrun._retry import Failure, RetryPolicy, decide, request_id_of, retry_after_seconds

__all__ = [
    "BodyChunks",
    "RequestProgress",
    "StreamInterruptedError",
    "Transport",
    "TransportStatistics",
]

logger = logging.getLogger("agentrun.transport")

try:
    _VERSION = importlib.metadata.version("agentrun")
except importlib.metadata.PackageNotFoundError:  # pragma: no cover - running from a checkout
    _VERSION = "0+unknown"

DEFAULT_USER_AGENT = f"agentrun/{_VERSION}"


_NO_HEADERS: Mapping[str, str] = {}
# What a request can raise that is not an HTTP status: aiohttp's own errors, plus timeouts and
# OS errors that may surface unwrapped from the socket layer.
_TRANSPORT_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError, OSError)


class StreamInterruptedError(APIConnectionError):
    """The connection broke while a successful (2xx) response body was arriving.

    Unlike other connection errors this one means the service DID receive and act on the
    request (a run may exist and keep going); the caller should recover by polling, not resend.
    """


@attrs.define
class RequestProgress:
    """Whether a request may have reached the server, for a caller deciding how to give up.

    `sent` turns True once an attempt holds a connection (from then on the server may act on
    it) and back to False when the retry decision proves the attempt was not acted on (a 429
    or 503, or a connection that could not be made). While it is False, cancelling the request
    sends nothing: it is still waiting for a pooled connection, a token or a retry delay.
    """

    sent: bool = False


@attrs.frozen
class TransportStatistics:
    """Counters since the transport was made.

    `requests_sent` counts every attempt (retries included); `retries` counts the attempts that
    were repeats; `connections_opened` counts new TCP (and TLS) connections;
    `responses_by_status` counts HTTP responses by status; `token_requests` is the token
    cache's count of token fetches.
    """

    requests_sent: int
    retries: int
    connections_opened: int
    responses_by_status: Mapping[int, int]
    token_requests: int


class _State(enum.Enum):
    UNOPENED = "unopened"
    OPENED = "opened"
    CLOSED = "closed"


def _ssl_setting(verify: bool | str | ssl.SSLContext) -> ssl.SSLContext | bool:
    """Build the TLS setting once per transport (never per request)."""
    if isinstance(verify, ssl.SSLContext):
        return verify
    if verify is True:
        # Built here rather than using aiohttp's import-time default, so that SSL_CERT_FILE /
        # SSL_CERT_DIR set after aiohttp was imported are honoured.
        return ssl.create_default_context()
    if verify is False:
        return False  # no verification: only ever on explicit request
    if isinstance(verify, str):
        try:
            return ssl.create_default_context(cafile=verify)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigurationError(f"cannot load CA certificates from {verify!r}: {exc}") from exc
    raise ConfigurationError(
        f"verify must be True, False, a CA bundle path or an ssl.SSLContext, not {verify!r}"
    )


class Transport:
    """One aiohttp session (one connection pool) shared by every request of a client.

    `base_url` is the project endpoint (`https://<resource>.services.ai.azure.com/api/projects/
    <project>`); paths given to `request_json` and `stream` are relative to it. The token cache
    is not owned: closing the transport leaves it open.
    """

    def __init__(
        self,
        base_url: str,
        *,
        token_cache: TokenCache,
        api_version: str = "v1",
        limit: int = 100,
        verify: bool | str | ssl.SSLContext = True,
        retry_policy: RetryPolicy = RetryPolicy(),  # noqa: B008 - frozen, so sharing is safe
        user_agent: str = DEFAULT_USER_AGENT,
        connect_timeout: float = 10.0,
        read_timeout: float = 300.0,
    ) -> None:
        if not base_url.startswith(("https://", "http://")):
            raise ConfigurationError(
                f"base_url must start with https:// (or http:// for a local emulator): {base_url!r}"
            )
        if limit < 0:
            raise ConfigurationError(f"limit must be >= 0 (0 means no limit), got {limit}")
        self._base_url = base_url.rstrip("/")
        self._token_cache = token_cache
        self._api_version = api_version
        self._limit = limit
        self._gate = PoolGate(limit)
        self._ssl = _ssl_setting(verify)
        self._retry_policy = retry_policy
        self._base_headers = {"User-Agent": user_agent, "Accept": "application/json"}
        self._auth_headers: tuple[str, dict[str, str]] | None = None
        # No total timeout: the caller's deadline bounds the whole request. A pool wait is not
        # a connect timeout either (sock_connect counts only establishing the connection).
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=connect_timeout, sock_read=read_timeout
        )
        self._state = _State.UNOPENED
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._requests_sent = 0
        self._retries = 0
        self._connections_opened = 0
        self._by_status: dict[int, int] = {}

    def __repr__(self) -> str:
        return f"Transport({self._base_url!r}, state={self._state.value})"

    @property
    def base_url(self) -> str:
        return self._base_url

    @property
    def token_cache(self) -> TokenCache:
        return self._token_cache

    def statistics(self) -> TransportStatistics:
        return TransportStatistics(
            requests_sent=self._requests_sent,
            retries=self._retries,
            connections_opened=self._connections_opened,
            responses_by_status=dict(self._by_status),
            token_requests=self._token_cache.statistics().token_requests,
        )

    def connections_in_use(self) -> int:
        """Pooled connections now serving a request or a stream (0 before the first request)."""
        session = self._session
        if session is None or session.connector is None:
            return 0
        return len(getattr(session.connector, "_acquired", ()))

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> Transport:
        self._ensure_session()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool. Idempotent; the transport cannot be used afterwards."""
        if self._state is _State.CLOSED:
            return
        session = self._session
        if session is not None:
            self._check_loop()
        self._state = _State.CLOSED
        self._session = None
        if session is not None:
            await session.close()

    def _check_loop(self) -> asyncio.AbstractEventLoop:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise ClientStateError(
                "agentrun's transport runs on asyncio (aiohttp); no asyncio event loop is "
                "running here"
            ) from None
        if self._loop is not None and loop is not self._loop:
            raise ClientStateError(
                "this client was opened in a different event loop; a client (and its "
                "connection pool) belongs to the loop that first used it: create one client "
                "per event loop"
            )
        return loop

    def _ensure_session(self) -> aiohttp.ClientSession:
        if self._state is _State.CLOSED:
            raise ClientStateError("this client is closed; create a new one")
        loop = self._check_loop()
        session = self._session
        if session is not None:
            return session
        trace = aiohttp.TraceConfig()
        trace.on_connection_create_end.append(self._on_connection_created)
        trace.on_connection_create_end.append(_mark_sent)
        trace.on_connection_reuseconn.append(_mark_sent)
        session = aiohttp.ClientSession(
            # One connection more than the gate admits, kept for cancels (`PoolGate.RESERVE`).
            connector=aiohttp.TCPConnector(
                limit=self._limit + PoolGate.RESERVE if self._limit else 0, ssl=self._ssl
            ),
            timeout=self._timeout,
            auto_decompress=True,
            cookie_jar=aiohttp.DummyCookieJar(),
            trace_configs=[trace],
            raise_for_status=False,
        )
        self._session = session
        self._loop = loop
        self._state = _State.OPENED
        return session

    async def _on_connection_created(
        self,
        session: aiohttp.ClientSession,
        context: SimpleNamespace,
        params: aiohttp.TraceConnectionCreateEndParams,
    ) -> None:
        self._connections_opened += 1

    # -- requests ----------------------------------------------------------------------------

    async def request_json(
        self,
        method: str,
        path: str,
        *,
        params: Sequence[tuple[str, str]] = (),
        json: Mapping[str, Any] | None = None,
        deadline: float | None = None,
        thread_id: str | None = None,
        run_id: str | None = None,
        meta: dict[str, str] | None = None,
        progress: RequestProgress | None = None,
    ) -> Any:
        """Send a request (retrying as the policy allows) and return the parsed JSON body.

        With `meta`, the service's request id of the answer is stored under "request_id".
        With `progress`, whether the request may have reached the server is kept up to date.

        `deadline` is an `anyio.current_time()` value bounding everything, retries included;
        when it passes, `APITimeoutError` is raised. Error statuses raise the matching
        `APIStatusError` subclass; no response raises `APIConnectionError`.
        """
        method = method.upper()
        result: tuple[int, bytes] | aiohttp.ClientResponse = (0, b"")
        args = (method, path, params, json, deadline, thread_id, run_id)
        if deadline is None:
            result = await self._attempts(*args, read_body=True, meta=meta, progress=progress)
        else:
            with anyio.CancelScope(deadline=deadline) as scope:
                result = await self._attempts(*args, read_body=True, meta=meta, progress=progress)
            if scope.cancelled_caught:
                _raise_deadline(method, path, thread_id, run_id)
        assert isinstance(result, tuple)
        status, body = result
        if not body.strip():
            if status == 204:
                return None
            raise RemoteProtocolError(f"{method} {path}: status {status} with an empty body")
        try:
            return jsonlib.loads(body)
        except ValueError as exc:
            raise RemoteProtocolError(
                f"{method} {path}: status {status} with a body that is not JSON"
            ) from exc

    def stream(
        self,
        method: str,
        path: str,
        *,
        params: Sequence[tuple[str, str]] = (),
        json: Mapping[str, Any] | None = None,
        deadline: float | None = None,
        thread_id: str | None = None,
        run_id: str | None = None,
        progress: RequestProgress | None = None,
    ) -> AbstractAsyncContextManager[BodyChunks]:
        """Send a request and iterate over its body chunks as they arrive.

        The request is retried like `request_json` until a 2xx arrives; from then on nothing is
        resent: a broken connection raises `StreamInterruptedError`. Leaving the context
        releases (or, if the body was not read to the end, closes) the connection.
        """
        return _StreamContext(
            self, method.upper(), path, params, json, deadline, thread_id, run_id, progress
        )

    async def open_stream(
        self,
        method: str,
        path: str,
        *,
        params: Sequence[tuple[str, str]] = (),
        json: Mapping[str, Any] | None = None,
        deadline: float | None = None,
        thread_id: str | None = None,
        run_id: str | None = None,
        progress: RequestProgress | None = None,
    ) -> BodyChunks:
        """`stream` without the context manager: the open body, which the caller must
        `BodyChunks.finish` (the run driver's streamed create: one object and one coroutine
        fewer per invocation)."""
        method = method.upper()
        response = await self._open_stream(
            method, path, params, json, deadline, thread_id, run_id, progress
        )
        return BodyChunks(response, method, path, deadline, thread_id, run_id, self._gate)

    async def _open_stream(
        self,
        method: str,
        path: str,
        params: Sequence[tuple[str, str]],
        json: Mapping[str, Any] | None,
        deadline: float | None,
        thread_id: str | None,
        run_id: str | None,
        progress: RequestProgress | None = None,
    ) -> aiohttp.ClientResponse:
        response: aiohttp.ClientResponse | None = None
        with anyio.CancelScope(deadline=_scope_deadline(deadline)) as scope:
            result = await self._attempts(
                method,
                path,
                params,
                json,
                deadline,
                thread_id,
                run_id,
                read_body=False,
                progress=progress,
            )
            assert isinstance(result, aiohttp.ClientResponse)
            response = result
        if scope.cancelled_caught or response is None:
            if response is not None:
                response.close()
                self._gate.release()
            _raise_deadline(method, path, thread_id, run_id)
        return response

    async def _attempts(
        self,
        method: str,
        path: str,
        params: Sequence[tuple[str, str]],
        json: Mapping[str, Any] | None,
        deadline: float | None,
        thread_id: str | None,
        run_id: str | None,
        *,
        read_body: bool,
        meta: dict[str, str] | None = None,
        progress: RequestProgress | None = None,
    ) -> tuple[int, bytes] | aiohttp.ClientResponse:
        """The retry loop. With `read_body`, returns (status, body) of a 2xx response, already
        released; without it, returns the open 2xx response (the caller must release it)."""
        session = self._ensure_session()
        # The URL is built and encoded once here (paths come quoted from the wire layer), so
        # aiohttp does not parse and re-encode the query on every request.
        query = urllib.parse.urlencode(
            list(params) if _versionless(path) else [*params, ("api-version", self._api_version)]
        )
        sep = "?" if query else ""
        url = yarl.URL(f"{self._base_url}/{path.lstrip('/')}{sep}{query}", encoded=True)
        attempt = 0
        auth_retried = False
        gate = self._gate
        # Requests about a run that exists (polls, lists, cancels) are admitted to the pool
        # before requests that start new work (`PoolGate`).
        urgent = method != "POST" or path.endswith("/cancel")
        # A run's cancel may use the connection kept for cancels (`PoolGate.acquire_for_cancel`).
        cancel = method == "POST" and path.endswith("/cancel")
        # The lists that build a reply go before polls (`PoolGate`: finishing first).
        finishing = method == "GET" and path.endswith(("/messages", "/steps"))
        while True:
            attempt += 1
            token = await self._token_cache.get_token()
            status: int | None = None
            failure: Failure | None = None
            response_headers: Mapping[str, str] = _NO_HEADERS
            error: AgentRunError
            cause: BaseException | None = None
            retryable = True
            # Waiting here sends nothing: a create cancelled in line never reaches the service.
            reserved = False
            if cancel:
                reserved = await gate.acquire_for_cancel()
            else:
                await gate.acquire(urgent, finishing=finishing)
            holding = True
            self._requests_sent += 1
            started = time.monotonic()
            try:
                response = await session.request(
                    method,
                    url,
                    json=json,
                    headers=self._headers(token),
                    allow_redirects=False,
                    trace_request_ctx=progress,
                )
            except _TRANSPORT_ERRORS as exc:
                _otel.http_done(method, path, None, attempt, None, started, exc)
                failure, error, retryable, cause = self._classify(
                    exc, method, path, thread_id, run_id
                )
            else:
                status = response.status
                self._by_status[status] = self._by_status.get(status, 0) + 1
                if 200 <= status < 300 and not read_body:
                    _otel.http_done(method, path, status, attempt, response.headers, started)
                    holding = False  # the slot goes with the open body (`BodyChunks.finish`)
                    return response
                try:
                    body = await response.read()
                except _TRANSPORT_ERRORS as exc:
                    _otel.http_done(method, path, None, attempt, None, started, exc)
                    response.close()
                    status = None
                    failure, error, retryable, cause = self._classify(
                        exc, method, path, thread_id, run_id
                    )
                else:
                    _otel.http_done(method, path, status, attempt, response.headers, started)
                    if 200 <= status < 300:
                        if meta is not None:
                            rid = request_id_of(response.headers)
                            if rid:
                                meta["request_id"] = rid
                        return status, body
                    response_headers = response.headers
                    error = self._status_error(
                        method, path, status, response_headers, body, thread_id, run_id
                    )
                finally:
                    response.release()

                if status == 401 and not auth_retried:
                    # The token may have been revoked or rotated: fetch a fresh one and try
                    # once more, unless the source hands back the very same token.
                    auth_retried = True
                    self._token_cache.invalidate(token)
                    if await self._token_cache.get_token() != token:
                        self._retries += 1
                        attempt -= 1  # a re-authentication does not use up an attempt
                        _otel.retry(method, path, 401, "401: a fresh token", 0.0, attempt)
                        continue
            finally:
                if holding:
                    gate.release(reserved)

            if not retryable:
                raise error from cause
            decision = decide(
                self._retry_policy,
                method=method,
                status=status,
                failure=failure,
                headers=response_headers,
                attempt=attempt,
                now=anyio.current_time(),
                deadline=deadline,
                jitter=random.random(),
                now_epoch=time.time(),
            )
            if not decision.retry:
                logger.debug("%s %s: not retrying: %s", method, path, decision.reason)
                raise error from cause
            self._retries += 1
            if progress is not None:
                # A retry is decided only when the server did not act on the attempt (for a
                # POST: 429, 503, or no connection), so until the next one nothing is pending.
                progress.sent = False
            _otel.retry(method, path, status, decision.reason, decision.delay, attempt)
            await anyio.sleep(decision.delay)

    def _headers(self, token: str) -> dict[str, str]:
        # One dict per token, reused by every request (aiohttp copies it, never mutates it).
        cached = self._auth_headers
        if cached is not None and cached[0] == token:
            return cached[1]
        headers = {**self._base_headers, "Authorization": f"Bearer {token}"}
        self._auth_headers = (token, headers)
        return headers

    # -- the one place foreign errors become ours ----------------------------------------------

    @staticmethod
    def _classify(
        exc: BaseException,
        method: str,
        path: str,
        thread_id: str | None,
        run_id: str | None,
    ) -> tuple[Failure | None, AgentRunError, bool, BaseException | None]:
        """Map an aiohttp/socket exception to (failure kind, our error, retryable, cause)."""
        where = f"{method} {path}"
        ids: dict[str, Any] = {"thread_id": thread_id, "run_id": run_id}
        detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if isinstance(exc, aiohttp.ClientConnectorCertificateError):
            # Retrying cannot fix an untrusted certificate.
            return (
                None,
                CertificateVerificationError(
                    f"{where}: TLS certificate verification failed ({detail})", **ids
                ),
                False,
                exc,
            )
        if isinstance(exc, aiohttp.ConnectionTimeoutError):
            error: AgentRunError = APITimeoutError(
                f"{where}: timed out connecting ({detail})", **ids
            )
            return Failure.CONNECT, error, True, exc
        if isinstance(exc, aiohttp.ClientConnectorError):  # refused, DNS, TLS handshake
            error = APIConnectionError(f"{where}: could not connect ({detail})", **ids)
            return Failure.CONNECT, error, True, exc
        if isinstance(exc, aiohttp.ServerFingerprintMismatch):
            return None, APIConnectionError(f"{where}: {detail}", **ids), False, exc
        if isinstance(exc, aiohttp.InvalidURL):
            return None, ConfigurationError(f"{where}: invalid URL ({exc})"), False, exc
        if isinstance(exc, aiohttp.ClientResponseError):
            # A response aiohttp could not parse. Not chained: its request_info holds our
            # request headers, Authorization included.
            error = RemoteProtocolError(f"{where}: malformed response ({detail})")
            return None, error, False, None
        if isinstance(exc, asyncio.TimeoutError):  # aiohttp's sock_read timeout, among others
            error = APITimeoutError(f"{where}: timed out waiting for the response", **ids)
            return Failure.READ, error, True, exc
        # Disconnected, reset, broken pipe, truncated body: the request may have been acted on.
        error = APIConnectionError(f"{where}: connection failed ({detail})", **ids)
        return Failure.READ, error, True, exc

    def _status_error(
        self,
        method: str,
        path: str,
        status: int,
        headers: Mapping[str, str],
        body: bytes,
        thread_id: str | None,
        run_id: str | None,
    ) -> APIStatusError:
        """The most specific `APIStatusError` for an error response."""
        info = parse_error_body(body) if body.strip() else None
        code = info.code if info else None
        message = info.message if info and info.message != code else None
        parsed_body = info.data if info else None
        text = f"{method} {path}: HTTP {status}"
        if code and code != str(status):
            text += f" {code}"
        if message:
            text += f": {message}"
        if status == 404 and code in (None, "404") and "/api/projects/" not in self._base_url:
            # A likely copy-paste mistake: the resource URL without the project's path.
            text += " (is api_base the project endpoint, ending in /api/projects/<project>?)"
        request_id = request_id_of(headers)
        return status_error_class(status)(
            text,
            status_code=status,
            code=code,
            body=parsed_body,
            retry_after=retry_after_seconds(headers, time.time()),
            request_id=request_id,
            thread_id=thread_id,
            run_id=run_id,
        )


async def _mark_sent(
    session: aiohttp.ClientSession, context: SimpleNamespace, params: object
) -> None:
    """Trace hook: the request holds a connection now, so the server may receive it."""
    progress = getattr(context, "trace_request_ctx", None)
    if isinstance(progress, RequestProgress):
        progress.sent = True


def _scope_deadline(deadline: float | None) -> float:
    return float("inf") if deadline is None else deadline


def _raise_deadline(method: str, path: str, thread_id: str | None, run_id: str | None) -> NoReturn:
    raise APITimeoutError(
        f"{method} {path}: the deadline passed", thread_id=thread_id, run_id=run_id
    )


class _BodyDeadline(Exception):
    """Internal: a streamed body's deadline passed (set on its reader by the body's timer)."""


def _expire_body(content: aiohttp.StreamReader) -> None:
    # Wakes a pending `readany()` with the error; later reads raise it too (aiohttp checks
    # the reader's exception before its buffer).
    content.set_exception(_BodyDeadline())


class _StreamContext(AbstractAsyncContextManager["BodyChunks"]):
    __slots__ = ("_args", "_chunks", "_progress", "_transport")

    def __init__(
        self,
        transport: Transport,
        method: str,
        path: str,
        params: Sequence[tuple[str, str]],
        json: Mapping[str, Any] | None,
        deadline: float | None,
        thread_id: str | None,
        run_id: str | None,
        progress: RequestProgress | None = None,
    ) -> None:
        self._transport = transport
        self._args = (method, path, params, json, deadline, thread_id, run_id)
        self._progress = progress
        self._chunks: BodyChunks | None = None

    async def __aenter__(self) -> BodyChunks:
        if self._chunks is not None:
            raise ClientStateError("a stream context can be entered only once")
        method, path, params, json, deadline, thread_id, run_id = self._args
        response = await self._transport._open_stream(
            method, path, params, json, deadline, thread_id, run_id, self._progress
        )
        self._chunks = BodyChunks(
            response, method, path, deadline, thread_id, run_id, self._transport._gate
        )
        return self._chunks

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._chunks is not None:
            self._chunks.finish()


#: aiohttp's socket read timeout error (3.10+), a `ServerTimeoutError`.
_SocketTimeout: type[Exception] = getattr(aiohttp, "SocketTimeoutError", aiohttp.ServerTimeoutError)


class _IdleWatch:
    """The `sock_read` bound (`Transport(read_timeout=...)`) of a streamed body, kept with one
    timer per eighth of it rather than aiohttp's one per packet received.

    aiohttp re-arms an asyncio timer for every packet (cancelling the last), and a streamed
    body is one packet per event. This takes the bound over from aiohttp for one response:
    every `limit / 8` seconds it looks whether bytes arrived since it last looked, and after
    8 looks without any it fails the body as aiohttp would (a `SocketTimeoutError` on the
    reader), so a body silent for `limit` seconds fails after between `limit` and `9/8 limit`.
    While aiohttp has stopped reading the socket (its buffer full: the consumer is behind),
    the server is not counted silent, as aiohttp's own timer does not run then either.
    """

    __slots__ = ("_content", "_handle", "_loop", "_seen", "_silent", "_tick_s")

    TICKS = 8

    def __init__(
        self, content: aiohttp.StreamReader, limit: float, loop: asyncio.AbstractEventLoop
    ) -> None:
        self._content = content
        self._loop = loop
        self._tick_s = limit / self.TICKS
        self._seen = content.total_bytes
        self._silent = 0
        self._handle = loop.call_later(self._tick_s, self._tick)

    @classmethod
    def take_over(cls, response: aiohttp.ClientResponse) -> _IdleWatch | None:
        """Take the read bound of `response` over from aiohttp (None: it has none, or the
        response holds no connection any more)."""
        conn = response.connection
        protocol = conn.protocol if conn is not None else None
        limit = getattr(protocol, "read_timeout", None)
        if protocol is None or not limit:
            return None
        # For this response only: aiohttp sets it again for every request on the connection.
        # The timer aiohttp armed last goes at the next packet (or fires, as before).
        protocol.read_timeout = None
        return cls(response.content, limit, asyncio.get_running_loop())

    def _tick(self) -> None:
        content = self._content
        if content.is_eof() or content.exception() is not None:
            return
        total = content.total_bytes
        # aiohttp stops reading the socket while its buffer is full (the consumer is busy) and
        # stops its own read timer then: the server is not silent, nothing is read from it.
        paused = getattr(getattr(content, "_protocol", None), "_reading_paused", False)
        if total != self._seen or paused:
            self._seen = total
            self._silent = 0
        else:
            self._silent += 1
            if self._silent >= self.TICKS:
                content.set_exception(_SocketTimeout("Timeout on reading data from socket"))
                return
        self._handle = self._loop.call_later(self._tick_s, self._tick)

    def cancel(self) -> None:
        self._handle.cancel()


class BodyChunks(AsyncIterator[bytes]):
    """The body of a streamed 2xx response, chunk by chunk as the bytes arrive."""

    __slots__ = (
        "_broken",
        "_deadline",
        "_done",
        "_gate",
        "_ids",
        "_method",
        "_path",
        "_response",
        "_timer",
        "_watch",
    )

    def __init__(
        self,
        response: aiohttp.ClientResponse,
        method: str,
        path: str,
        deadline: float | None,
        thread_id: str | None,
        run_id: str | None,
        gate: PoolGate | None = None,
    ) -> None:
        self._response = response
        # The pool slot the response holds (`PoolGate`), given back once by `finish`.
        self._gate = gate
        self._method = method
        self._path = path
        self._deadline = deadline
        self._ids = (thread_id, run_id)
        self._done = False
        self._broken: BaseException | None = None
        # One timer for the whole body (armed at the first read), not a timed cancel scope
        # per chunk: at the deadline it fails the pending (or next) read.
        self._timer: asyncio.TimerHandle | None = None
        self._watch = _IdleWatch.take_over(response)

    @property
    def status(self) -> int:
        return self._response.status

    @property
    def headers(self) -> Mapping[str, str]:
        return self._response.headers

    def finish(self) -> None:
        """Give the connection back to the pool if the body was read to the end, else close it."""
        self._done = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        if self._response.content.at_eof():
            self._response.release()
        else:
            self._response.close()
        gate, self._gate = self._gate, None
        if gate is not None:
            gate.release()

    def __del__(self) -> None:
        # Dropped unfinished (nothing should do that): aiohttp frees the connection when the
        # response goes; give its pool slot back too, on the loop's thread.
        gate = getattr(self, "_gate", None)
        loop = getattr(getattr(self, "_response", None), "_loop", None)
        if gate is not None and loop is not None:
            self._gate = None
            with contextlib.suppress(RuntimeError):  # the loop is closed: nothing waits
                loop.call_soon_threadsafe(gate.release)

    @property
    def reader(self) -> aiohttp.StreamReader:
        """The body's reader, for a caller that reads it itself (`readany()`, the hot path of
        the driver's streaming phase) and hands what a read raised to `failed`."""
        return self._response.content

    async def __anext__(self) -> bytes:
        if self._done:
            raise StopAsyncIteration
        try:
            if self._broken is not None:
                raise self._broken
            if self._timer is None and self._deadline is not None:
                self._arm(self._deadline)
            chunk = await self._response.content.readany()
        except (_BodyDeadline, *_TRANSPORT_ERRORS) as exc:
            return self.failed(exc)
        if not chunk:
            self.finish()
            raise StopAsyncIteration
        return chunk

    def failed(self, exc: BaseException) -> bytes:
        """What a read that raised `exc` means: the bytes that arrived before a break (the break
        is then reported by the next read), else the agentrun error it maps to (raised, the
        body finished). An exception that is not the body's own (a cancellation, say) is
        raised again as it is."""
        if self._broken is not None and exc is not self._broken:
            exc = self._broken  # the break reported after the salvaged bytes
        thread_id, run_id = self._ids
        if isinstance(exc, _BodyDeadline):
            self.finish()
            _raise_deadline(self._method, self._path, thread_id, run_id)
        if not isinstance(exc, _TRANSPORT_ERRORS):
            raise exc
        salvaged = b"" if self._broken is not None else self._salvage()
        if salvaged:
            # Bytes that arrived before the break still count (they may name the run):
            # deliver them, and report the break on the next read.
            self._broken = exc
            return salvaged
        self.finish()
        raise StreamInterruptedError(
            f"{self._method} {self._path}: the connection broke while the response was "
            f"arriving ({type(exc).__name__}); the service did receive the request",
            thread_id=thread_id,
            run_id=run_id,
        ) from exc

    def interrupt(self, exc: BaseException) -> bool:
        """Fail the read under way, if one waits, with `exc`, leaving the body readable after
        it (a cleanup may read on for the run id). Returns whether a read was waiting.

        aiohttp's `StreamReader` (3.x) parks a reader on the future `_waiter`; without it
        (another aiohttp), `exc` is set on the reader, and later reads raise it too.
        """
        content = self._response.content
        if not hasattr(content, "_waiter"):  # pragma: no cover - a reader that changed shape
            content.set_exception(exc)
            return True
        waiter: asyncio.Future[None] | None = content._waiter
        if waiter is None or waiter.done():
            return False
        waiter.set_exception(exc)
        return True

    def _arm(self, deadline: float) -> None:
        """Arm the body's deadline: from then on a read waiting past it raises `_BodyDeadline`."""
        content = self._response.content
        loop = asyncio.get_running_loop()
        if loop.time() >= deadline:
            _expire_body(content)
        # The handle holds the reader, not this object, so dropping an unfinished body still
        # frees it; `finish()` cancels the handle.
        self._timer = loop.call_at(deadline, _expire_body, content)

    def _salvage(self) -> bytes:
        """What the connection delivered before it broke and nobody read yet.

        aiohttp's `StreamReader.readany()` raises a connection error as soon as it is set,
        even while received bytes wait in its buffer; a burst of events followed by a cut
        would lose them. `_read_nowait` (aiohttp 3.x) returns the buffer without checking the
        error; without it (another aiohttp), nothing is salvaged.
        """
        content = self._response.content
        read_nowait = getattr(content, "_read_nowait", None)
        if read_nowait is None or not getattr(content, "_buffer", None):
            return b""
        try:
            data = read_nowait(-1)
        except Exception:  # pragma: no cover - a reader that changed shape
            return b""
        return data if isinstance(data, bytes) else b""


def _versionless(path: str) -> bool:
    """Whether `path` is on the OpenAI-compatible v1 data plane (``/openai/v1/...``, the
    Responses API of Foundry Agents v2), which takes no ``api-version`` query (the ``openai``
    client sends none; reference/agents-v2-api.md)."""
    return path.lstrip("/").startswith("openai/v1/")
