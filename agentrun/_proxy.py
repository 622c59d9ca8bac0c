"""The OpenAI-compatible proxy: `agentrun serve --config config.yaml`, on aiohttp.web.

Routes (every path with and without the `/v1` prefix where OpenAI clients use both):

| route | does |
|---|---|
| `POST /v1/chat/completions`, `/chat/completions` | one agent invocation, streamed or not |
| `GET /v1/models`, `/models`, `/v1/models/{model}` | the configured model names |
| `GET /health/liveliness`, `/health/readiness` | probes; no agent call, no key needed |

A request reaches only the deployments the config names: the model name picks the deployment,
and the endpoint, credentials and agent come from the config alone. Fields that would change
them (`api_base`, `api_key`, ...) are refused with a 400.

Errors are OpenAI's JSON shape, `{"error": {"message", "type", "param", "code"}}`, with the
status an OpenAI client maps to its own exception classes (see `error_for`). A stream that fails
after its first chunk sends `data: {"error": {...}}` and ends without `data: [DONE]`.

One `AsyncClient` per distinct endpoint and credentials, created when the server starts and
closed when it stops, so concurrent requests share its connection pool and token cache. A
client that disconnects gets its run cancelled on the service (aiohttp cancels the handler,
and the run's stream cancels the run). `stop()` stops listening, lets in-flight requests
finish for `grace` seconds, then cancels the rest (their runs are cancelled on the service).
"""

from __future__ import annotations

import asyncio
import contextvars
import hmac
import ipaddress
import json
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import anyio
import attrs
from aiohttp import web

from agentrun import _otel
from agentrun._client import AsyncClient
from agentrun._errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    CertificateVerificationError,
    ConfigurationError,
    RateLimitError,
    RemoteProtocolError,
    RunCancelledError,
    RunError,
    RunExpiredError,
)
from agentrun._openai import ChatCompletion, CompletionStream, chat
from agentrun._proxy_config import ConfigError, Deployment, ProxyConfig
from agentrun._retry import RetryPolicy
from agentrun._settings import ConnectionSettings

__all__ = ["THREAD_HEADER", "ErrorInfo", "ProxyServer", "error_for", "is_loopback"]

logger = logging.getLogger("agentrun.proxy")

THREAD_HEADER = "x-agentrun-thread-id"
RUN_HEADER = "x-agentrun-run-id"
_THREAD_ID = re.compile(r"[A-Za-z0-9_\-]{1,128}")  # checked with fullmatch
#: Request fields that would pick another endpoint, credential or agent: never honoured.
FORBIDDEN_FIELDS = frozenset(
    {
        "api_base",
        "base_url",
        "api_key",
        "api_version",
        "azure_ad_token",
        "azure_ad_token_provider",
        "tenant_id",
        "client_id",
        "client_secret",
        "credential",
        "authority",
        "verify",
        "agent_id",
        "assistant_id",
        "litellm_params",
        # chat()'s own keyword arguments, which a request must not set either
        "client",
        "mode",
        "response_model",
        # OpenAI clients merge extra_body into the top level; a literal one would slip past
        # the checks on thread_id and instructions above.
        "extra_body",
    }
)
_HANDLED_FIELDS = frozenset(
    {
        "model",
        "messages",
        "stream",
        "stream_options",
        "thread_id",
        "instructions",
        "drop_params",
    }
)
_OPEN_PATHS = frozenset(
    {"/health/liveliness", "/health/liveness", "/health/readiness", "/health/readyz"}
)
#: How long `stop()` waits for cancelled requests to cancel their runs on the service.
CANCEL_WAIT = 15.0
#: Defaults of the limits that keep idle or slow clients from exhausting the server.
DEFAULT_HEADER_TIMEOUT = 10.0
DEFAULT_BODY_TIMEOUT = 60.0
DEFAULT_MAX_CONNECTIONS = 1024
#: A valid id in a response header (thread and run ids), checked against the whole string.
_HEADER_ID = re.compile(r"[A-Za-z0-9_\-.:]{1,256}")


def _raw_error(status: int, reason: str, message: str, code: str, extra: str = "") -> bytes:
    """A complete HTTP/1.1 error response that closes the connection, for answers written
    before aiohttp has a request to answer (a connection over the cap, headers too slow)."""
    body = json.dumps(
        {"error": {"message": message, "type": "server_error", "param": None, "code": code}},
        separators=(",", ":"),
    ).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n{extra}\r\n"
    )
    return head.encode("ascii") + body


_TOO_MANY_CONNECTIONS = _raw_error(
    503,
    "Service Unavailable",
    "the proxy has too many open connections; try again shortly",
    "too_many_connections",
    "Retry-After: 1\r\n",
)
_HEADERS_TOO_SLOW = _raw_error(
    408,
    "Request Timeout",
    "the request headers did not arrive in time",
    "request_timeout",
)


def _header_id(value: Any) -> str | None:
    """`value` if it may go into a response header as an id; None (left out) otherwise."""
    if isinstance(value, str) and _HEADER_ID.fullmatch(value):
        return value
    if value:
        logger.warning("not sending an id that is not a valid id in a header: %r", value)
    return None


class _Conn:
    """One accepted connection: its transport and the timer for its first request's headers."""

    __slots__ = ("served", "timer", "transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.timer: asyncio.TimerHandle | None = None
        self.served = False


def is_loopback(host: str) -> bool:
    """Whether `host` is a loopback address (only those are safe without a master key)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


# -- errors ----------------------------------------------------------------------------------


@attrs.frozen
class ErrorInfo:
    """An error response: status, OpenAI error fields and extra headers."""

    status: int
    message: str
    type: str
    code: str | None = None
    param: str | None = None
    retry_after: float | None = None
    thread_id: str | None = None
    run_id: str | None = None
    #: False: tell OpenAI clients not to retry by themselves (``x-should-retry: false``).
    retryable: bool | None = None

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {
            "message": self.message,
            "type": self.type,
            "param": self.param,
            "code": self.code,
        }
        if self.thread_id:
            error["thread_id"] = self.thread_id
        if self.run_id:
            error["run_id"] = self.run_id
        return {"error": error}

    def headers(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        if self.retry_after is not None:
            delay = max(0.0, self.retry_after)
            headers["Retry-After"] = str(math.ceil(delay))
            headers["retry-after-ms"] = str(round(delay * 1000))
        thread_id = _header_id(self.thread_id)
        if thread_id:
            headers[THREAD_HEADER] = thread_id
        if self.status == 401:
            headers["WWW-Authenticate"] = "Bearer"
        if self.retryable is not None:
            headers["x-should-retry"] = "true" if self.retryable else "false"
        return headers

    def response(self) -> web.Response:
        return web.json_response(self.body(), status=self.status, headers=self.headers())


def _bad_request(message: str, *, param: str | None = None, code: str | None = None) -> ErrorInfo:
    return ErrorInfo(400, message, "invalid_request_error", code=code, param=param)


_UPSTREAM_TYPES = {
    400: "invalid_request_error",
    404: "not_found_error",
    409: "invalid_request_error",
    422: "invalid_request_error",
}


def error_for(exc: BaseException) -> ErrorInfo:
    """The HTTP error a proxy client gets for an exception from an invocation.

    | exception | status |
    |---|---|
    | `ConfigurationError` (bad messages or parameters) | 400 |
    | service 400, 404 (e.g. unknown thread), 409, 422 | the same |
    | service 401 or 403 (the proxy's own credentials refused) | 502 |
    | service 429 | 429, with its `Retry-After` |
    | service 503 | 503, with its `Retry-After` |
    | other service errors, no response, malformed response | 502 |
    | token endpoint unreachable / its certificate not trusted | 502 (`token_endpoint_...`) |
    | `APITimeoutError` (the deployment's `timeout` passed; the run is cancelled) | 504 |
    | run failed with `rate_limit_exceeded` | 429, `Retry-After` from "Try again in N seconds" |
    | run failed with a permanent code (`invalid_prompt`, `invalid_request_error`, ...) | 400 |
    | run failed with `invalid_engine_error` (the agent's model does not resolve) | 404 |
    | run failed with another code (`server_error`, none, unknown) | 500 |
    | run expired | 504 |
    | run cancelled (by someone else) | 500 |

    A run that ended failed, expired or cancelled already took the request's input: its user
    message is on the thread. Every such error carries ``x-should-retry: false``, which the
    openai SDKs obey, so that a client's automatic retry does not post the message to a
    continued thread a second time; retry yourself (the error has ``thread_id``) after
    ``Retry-After``.
    """
    thread = getattr(exc, "thread_id", None)
    run = getattr(exc, "run_id", None)
    ids: dict[str, Any] = {"thread_id": thread, "run_id": run}
    if isinstance(exc, ConfigurationError):
        return ErrorInfo(400, str(exc), "invalid_request_error", code="invalid_request", **ids)
    if isinstance(exc, RunError):
        return _run_error_info(exc, ids)
    if isinstance(exc, APITimeoutError):
        return ErrorInfo(504, exc.message, "server_error", code="timeout", **ids)
    if isinstance(exc, CertificateVerificationError):
        if exc.token_endpoint:
            message = (
                "the proxy could not get an access token: the token endpoint's TLS certificate "
                f"is not trusted: {exc.message}"
            )
            return ErrorInfo(
                502, message, "server_error", code="token_endpoint_certificate_error", **ids
            )
        message = f"the Agent Service's TLS certificate is not trusted: {exc.message}"
        return ErrorInfo(502, message, "server_error", code="upstream_certificate_error", **ids)
    if isinstance(exc, APIConnectionError) and exc.token_endpoint:
        message = f"the proxy could not reach the token endpoint: {exc.message}"
        return ErrorInfo(502, message, "server_error", code="token_endpoint_unreachable", **ids)
    if isinstance(exc, APIConnectionError):
        message = f"the Agent Service could not be reached: {exc.message}"
        return ErrorInfo(502, message, "server_error", code="upstream_connection_error", **ids)
    if isinstance(exc, RateLimitError):
        return ErrorInfo(
            429,
            exc.message,
            "rate_limit_error",
            code=exc.code or "rate_limit_exceeded",
            retry_after=exc.retry_after,
            **ids,
        )
    if isinstance(exc, APIStatusError):
        status = exc.status_code
        if status in _UPSTREAM_TYPES:
            return ErrorInfo(status, exc.message, _UPSTREAM_TYPES[status], code=exc.code, **ids)
        if status in (401, 403):
            message = f"the Agent Service refused the proxy's credentials: {exc.message}"
            return ErrorInfo(
                502, message, "server_error", code="upstream_authentication_error", **ids
            )
        if status == 503:
            return ErrorInfo(
                503,
                exc.message,
                "server_error",
                code=exc.code or "service_unavailable",
                retry_after=exc.retry_after,
                **ids,
            )
        message = f"the Agent Service answered {status}: {exc.message}"
        return ErrorInfo(502, message, "server_error", code=exc.code or "upstream_error", **ids)
    if isinstance(exc, RemoteProtocolError):
        message = f"the Agent Service sent a malformed response: {exc}"
        return ErrorInfo(502, message, "server_error", code="upstream_protocol_error", **ids)
    logger.error("internal error", exc_info=exc)
    return ErrorInfo(500, "internal error in the proxy", "server_error", code="internal_error")


#: Run failure codes that the same request would meet again: never worth a retry.
_PERMANENT_RUN_CODES = {
    "invalid_prompt": (400, "invalid_request_error"),
    "invalid_request_error": (400, "invalid_request_error"),
    "invalid_value": (400, "invalid_request_error"),
    "content_filter": (400, "invalid_request_error"),
    "invalid_engine_error": (404, "not_found_error"),
    "model_not_found": (404, "not_found_error"),
}
_TRY_AGAIN = re.compile(r"try again in (\d+(?:\.\d+)?) ?(ms|milliseconds?|s|sec|seconds?)\b", re.I)


def retry_after_from_message(message: str | None) -> float | None:
    """Seconds from the service's "Try again in N seconds" (or "N ms"), else None."""
    found = _TRY_AGAIN.search(message or "")
    if found is None:
        return None
    value = float(found.group(1))
    return value / 1000 if found.group(2).lower().startswith("m") else value


def _run_error_info(exc: RunError, ids: dict[str, Any]) -> ErrorInfo:
    """The one mapping of a run that ended failed, expired or cancelled to an HTTP error."""
    code = exc.code
    if code == "rate_limit_exceeded":
        delay = retry_after_from_message(exc.error_message) or retry_after_from_message(exc.message)
        return ErrorInfo(
            429,
            exc.message,
            "rate_limit_error",
            code=code,
            retry_after=delay,
            retryable=False,
            **ids,
        )
    if isinstance(exc, RunExpiredError):
        return ErrorInfo(
            504, exc.message, "server_error", code=code or "run_expired", retryable=False, **ids
        )
    if isinstance(exc, RunCancelledError):
        return ErrorInfo(
            500, exc.message, "server_error", code=code or "run_cancelled", retryable=False, **ids
        )
    if code in _PERMANENT_RUN_CODES:
        status, kind = _PERMANENT_RUN_CODES[code]
        return ErrorInfo(status, exc.message, kind, code=code, retryable=False, **ids)
    return ErrorInfo(
        500, exc.message, "server_error", code=code or "run_failed", retryable=False, **ids
    )


_SHUTTING_DOWN = ErrorInfo(
    503,
    "the proxy is shutting down; the run was cancelled",
    "server_error",
    code="shutting_down",
    retry_after=1.0,
)


# -- request parsing -------------------------------------------------------------------------


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number out of range: {text}")
    return value


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_body(raw: bytes) -> Any:
    """The JSON value of a request body; raises ValueError for anything that is not JSON."""
    if not raw.strip():
        raise ValueError("the request body is empty")
    try:
        return json.loads(raw, parse_float=_finite, parse_constant=_reject_constant)
    except RecursionError:
        raise ValueError("the JSON is nested too deeply") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(str(exc)) from None


@attrs.define
class _ChatArgs:
    deployment: Deployment
    messages: Any
    stream: bool
    stream_options: Any
    thread_id: str | None
    instructions: str | None
    drop_params: bool
    timeout: float | None
    params: dict[str, Any]


def _opt(body: Mapping[str, Any], name: str, kind: type | tuple[type, ...], what: str) -> Any:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise _Reject(_bad_request(f"{name} must be {what}", param=name))
    if not isinstance(value, kind):
        raise _Reject(_bad_request(f"{name} must be {what}", param=name))
    return value


class _Reject(Exception):
    def __init__(self, info: ErrorInfo) -> None:
        super().__init__(info.message)
        self.info = info


# -- the server ------------------------------------------------------------------------------

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ProxyServer:
    """The proxy as an object: `start()`, `url`, `stop()` (or `async with`).

    `grace` is how long `stop()` lets in-flight requests run before cancelling them.
    Without a master key the server listens only on loopback addresses, unless
    `allow_unauthenticated=True`. `tracer_provider` / `meter_provider` go to the clients
    (default: OpenTelemetry's global ones); an incoming W3C `traceparent` becomes the parent
    of a request's spans (docs/observability.md).

    Limits against idle or slow clients (with or without a key): a connection whose request
    headers are not complete within `header_timeout` seconds is answered 408 and closed (an
    idle keep-alive connection is closed after the same time); a request body not read within
    `body_timeout` seconds is answered 408; a connection beyond `max_connections` open ones
    is answered 503 (`Retry-After: 1`) and closed at once. `refused_connections` and
    `timed_out_connections` count them.
    """

    def __init__(
        self,
        config: ProxyConfig,
        *,
        host: str = "127.0.0.1",
        port: int = 4000,
        grace: float = 30.0,
        allow_unauthenticated: bool = False,
        backlog: int = 1024,
        tracer_provider: Any = None,
        meter_provider: Any = None,
        header_timeout: float = DEFAULT_HEADER_TIMEOUT,
        body_timeout: float = DEFAULT_BODY_TIMEOUT,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
    ) -> None:
        if grace < 0 or not math.isfinite(grace):
            raise ConfigurationError(f"grace must be a non-negative number, got {grace!r}")
        for name, value in (("header_timeout", header_timeout), ("body_timeout", body_timeout)):
            if not isinstance(value, (int, float)) or not (0 < value < math.inf):
                raise ConfigurationError(f"{name} must be a positive number, got {value!r}")
        if isinstance(max_connections, bool) or not isinstance(max_connections, int):
            raise ConfigurationError(
                f"max_connections must be a whole number, got {max_connections!r}"
            )
        if max_connections < 1:
            raise ConfigurationError(f"max_connections must be at least 1, got {max_connections!r}")
        self.header_timeout = float(header_timeout)
        self.body_timeout = float(body_timeout)
        self.max_connections = max_connections
        self.refused_connections = 0
        self.timed_out_connections = 0
        self._conns: dict[Any, _Conn] = {}
        self.config = config
        self.host = host
        self.port = port
        self.grace = grace
        self.allow_unauthenticated = allow_unauthenticated
        self.backlog = backlog
        # OpenTelemetry providers for the clients (None: the global ones; docs/observability.md)
        self._telemetry = {"tracer_provider": tracer_provider, "meter_provider": meter_provider}
        self.draining = False
        self.created = int(time.time())
        self._clients: dict[ConnectionSettings, AsyncClient] = {}
        self._by_name: dict[str, tuple[Deployment, AsyncClient]] = {}
        self._runner: web.AppRunner | None = None
        self._active = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._scopes: set[anyio.CancelScope] = set()
        self._master_key = (
            config.master_key.encode("utf-8", "surrogatepass") if config.master_key else None
        )

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        host = self.host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    async def __aenter__(self) -> ProxyServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def client_for(self, model_name: str) -> AsyncClient | None:
        """The `AsyncClient` that serves a model name (shared by deployments with the same
        endpoint and credentials)."""
        entry = self._by_name.get(model_name)
        return entry[1] if entry else None

    async def start(self) -> None:
        """Create the clients, then listen. Raises ConfigurationError (a refused host, or a
        deployment whose client cannot be built) or OSError (the port is taken)."""
        open_to_all = self._master_key is None and not self.allow_unauthenticated
        if open_to_all and not is_loopback(self.host):
            raise ConfigurationError(
                f"refusing to listen on {self.host or 'all interfaces'} without a master "
                "key: anyone who can reach it could run your agents with your credentials. "
                "Set general_settings.master_key, listen on 127.0.0.1, or pass "
                "--allow-unauthenticated"
            )
        try:
            self._make_clients()
        except BaseException:
            await self._close_clients()
            raise
        app = web.Application(
            client_max_size=self.config.max_request_bytes,
            middlewares=[
                self._limits_middleware,
                self._log_middleware,
                self._error_middleware,
                self._auth_middleware,
            ],
        )
        chat_handler = self._chat_completions
        for prefix in ("/v1", ""):
            app.router.add_post(prefix + "/chat/completions", chat_handler)
            app.router.add_get(prefix + "/models", self._models)
            app.router.add_get(prefix + "/models/{model:.+}", self._model)
        for path in ("/health/liveliness", "/health/liveness"):
            app.router.add_get(path, self._liveliness)
        for path in ("/health/readiness", "/health/readyz"):
            app.router.add_get(path, self._readiness)
        runner = web.AppRunner(
            app,
            handler_cancellation=True,
            access_log=None,
            shutdown_timeout=1.0,
            keepalive_timeout=self.header_timeout,
            # After an early answer (401, 408, 413), unread body bytes are drained for at most
            # this long before the connection is closed.
            lingering_time=min(2.0, self.header_timeout),
        )
        try:
            await runner.setup()
            self._hook_connections(runner)
            site = web.TCPSite(runner, self.host, self.port, backlog=self.backlog)
            await site.start()
        except BaseException:
            await runner.cleanup()
            await self._close_clients()
            raise
        self._runner = runner
        address = runner.addresses[0]
        if isinstance(address, tuple):
            self.port = int(address[1])

    def _hook_connections(self, runner: web.AppRunner) -> None:
        """Count connections, refuse those over the cap, time the first request's headers."""
        server = runner.server
        assert server is not None
        made, lost = server.connection_made, server.connection_lost
        loop = asyncio.get_running_loop()

        def connection_made(handler: Any, transport: asyncio.Transport) -> None:
            made(handler, transport)
            if len(self._conns) >= self.max_connections:
                self.refused_connections += 1
                _note_refused(transport, "too many connections")
                transport.write(_TOO_MANY_CONNECTIONS)
                transport.close()
                return
            conn = _Conn(transport)
            conn.timer = loop.call_later(self.header_timeout, self._headers_too_slow, handler)
            self._conns[handler] = conn

        def connection_lost(handler: Any, exc: BaseException | None = None) -> None:
            conn = self._conns.pop(handler, None)
            if conn is not None and conn.timer is not None:
                conn.timer.cancel()
            lost(handler, exc)

        server.connection_made = connection_made  # type: ignore[method-assign]
        server.connection_lost = connection_lost  # type: ignore[method-assign]

    def _headers_too_slow(self, handler: Any) -> None:
        conn = self._conns.get(handler)
        if conn is None or conn.served:
            return
        conn.timer = None
        self.timed_out_connections += 1
        _note_refused(conn.transport, "request headers too slow")
        if not conn.transport.is_closing():
            conn.transport.write(_HEADERS_TOO_SLOW)
            conn.transport.close()

    def _make_clients(self) -> None:
        # Deployments with equal connection settings share one client (pool, token cache).
        for d in self.config.deployments:
            try:
                settings = ConnectionSettings(
                    api_base=d.api_base,
                    api_key=d.api_key,
                    tenant_id=d.tenant_id,
                    client_id=d.client_id,
                    client_secret=d.client_secret,
                    authority=d.authority,
                    api_version=d.api_version or "v1",
                    verify=d.verify,
                    pool_limit=100 if d.pool_limit is None else d.pool_limit,
                    retry_policy=None
                    if d.max_retries is None
                    else RetryPolicy(max_attempts=d.max_retries + 1),
                    allow_insecure_http=d.allow_insecure_http,
                )
                client = self._clients.get(settings)
                if client is None:
                    client = self._clients[settings] = AsyncClient(
                        settings=settings, **self._telemetry
                    )
            except ConfigurationError as exc:
                raise ConfigError(f"{d.where()}: {exc}") from None
            self._by_name[d.model_name] = (d, client)

    async def _close_clients(self) -> None:
        clients = list(self._clients.values())
        self._clients.clear()
        self._by_name.clear()
        for client in clients:
            try:
                await client.aclose()
            except Exception as exc:  # pragma: no cover - best effort at shutdown
                logger.warning("closing a client failed: %s", exc)

    async def stop(self, grace: float | None = None) -> None:
        """Stop listening, let in-flight requests finish within `grace` seconds (default:
        the server's), cancel the rest (their runs are cancelled on the service), close."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        grace = self.grace if grace is None else grace
        self.draining = True
        for site in list(runner.sites):
            await site.stop()
        if self._active:
            logger.info("shutting down: waiting up to %gs for %d request(s)", grace, self._active)
            with anyio.move_on_after(grace):
                await self._idle.wait()
        if self._active:
            logger.info("grace period over: cancelling %d request(s)", self._active)
            for scope in list(self._scopes):
                scope.cancel()
            with anyio.move_on_after(CANCEL_WAIT):
                await self._idle.wait()
        await runner.cleanup()
        await self._close_clients()

    # -- middlewares -----------------------------------------------------------------------

    @web.middleware
    async def _limits_middleware(
        self, request: web.Request, handler: _Handler
    ) -> web.StreamResponse:
        conn = self._conns.get(request.protocol)
        if conn is not None and not conn.served:
            # The headers are in: from here on the body timeout and keep-alive apply.
            conn.served = True
            if conn.timer is not None:
                conn.timer.cancel()
                conn.timer = None
        return await handler(request)

    @web.middleware
    async def _log_middleware(self, request: web.Request, handler: _Handler) -> web.StreamResponse:
        start = time.perf_counter()
        status = 500
        notes: dict[str, Any] = {}
        _NOTES.set(notes)
        self._active += 1
        self._idle.clear()
        try:
            # An incoming W3C `traceparent` becomes the parent of this request's spans.
            with _otel.extracted(request.headers):
                response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:  # pragma: no cover - the error middleware answers
            status = exc.status
            raise
        except asyncio.CancelledError:
            status = 499  # the client closed the connection
            raise
        finally:
            self._active -= 1
            if not self._active:
                self._idle.set()
            extra = ""
            for key, value in notes.items():
                if value is not None:
                    extra += f" {key}={value}"
            logger.info(
                "%s %s %s %d %.3fs%s",
                request.remote,
                request.method,
                request.path,
                status,
                time.perf_counter() - start,
                extra,
            )

    @web.middleware
    async def _error_middleware(
        self, request: web.Request, handler: _Handler
    ) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            kind = {404: "not_found_error", 405: "invalid_request_error"}.get(
                exc.status, "invalid_request_error" if exc.status < 500 else "server_error"
            )
            message = exc.reason
            if exc.status == 404:
                message = f"no route {request.method} {request.path}"
            elif exc.status == 405:
                message = f"method {request.method} is not allowed on {request.path}"
            info = ErrorInfo(exc.status, message, kind, code=str(exc.status))
            return info.response()

    @web.middleware
    async def _auth_middleware(self, request: web.Request, handler: _Handler) -> web.StreamResponse:
        if self._master_key is None or request.path in _OPEN_PATHS:
            return await handler(request)
        token = _presented_key(request)
        if token is None:
            _note(error="missing_api_key")
            return ErrorInfo(
                401,
                "Authentication Error, no api key passed in: send 'Authorization: Bearer <key>'",
                "authentication_error",
                code="missing_api_key",
            ).response()
        if not hmac.compare_digest(token.encode("utf-8", "surrogatepass"), self._master_key):
            _note(error="invalid_api_key")
            return ErrorInfo(
                401,
                "Authentication Error, invalid api key",
                "authentication_error",
                code="invalid_api_key",
            ).response()
        return await handler(request)

    # -- simple routes ---------------------------------------------------------------------

    async def _liveliness(self, request: web.Request) -> web.Response:
        return web.json_response("I'm alive!")

    async def _readiness(self, request: web.Request) -> web.Response:
        if self.draining:
            return web.json_response({"status": "shutting_down"}, status=503)
        return web.json_response({"status": "healthy", "models": len(self._by_name)})

    def _model_json(self, name: str) -> dict[str, Any]:
        return {"id": name, "object": "model", "created": self.created, "owned_by": "agentrun"}

    async def _models(self, request: web.Request) -> web.Response:
        data = [self._model_json(d.model_name) for d in self.config.deployments]
        return web.json_response({"object": "list", "data": data})

    async def _model(self, request: web.Request) -> web.Response:
        name = request.match_info["model"]
        if name not in self._by_name:
            return self._unknown_model(name).response()
        return web.json_response(self._model_json(name))

    def _unknown_model(self, name: str) -> ErrorInfo:
        names = ", ".join(repr(d.model_name) for d in self.config.deployments)
        return ErrorInfo(
            404,
            f"The model {name!r} does not exist on this proxy; it serves {names}",
            "not_found_error",
            code="model_not_found",
            param="model",
        )

    # -- chat completions ------------------------------------------------------------------

    async def _chat_completions(self, request: web.Request) -> web.StreamResponse:
        if self.draining:
            return _SHUTTING_DOWN.response()
        try:
            args = await self._read_chat(request)
        except _Reject as rej:
            _note(error=rej.info.code or rej.info.status)
            response = rej.info.response()
            if rej.info.status == 408:
                response.force_close()  # the rest of a late body must not be read as a request
            return response
        _note(model=args.deployment.model_name)
        _note(stream=args.stream or None)
        if args.thread_id:
            _note(thread_id=args.thread_id)
        if args.stream:
            return await self._stream(request, args)
        return await self._complete(request, args)

    async def _read_chat(self, request: web.Request) -> _ChatArgs:
        try:
            raw = b""
            with anyio.move_on_after(self.body_timeout) as body_scope:
                raw = await request.read()
            if body_scope.cancelled_caught:
                raise _Reject(
                    ErrorInfo(
                        408,
                        f"the request body did not arrive within {self.body_timeout:g} seconds",
                        "invalid_request_error",
                        code="request_timeout",
                    )
                )
        except web.HTTPRequestEntityTooLarge:
            raise _Reject(
                ErrorInfo(
                    413,
                    f"the request body is larger than {self.config.max_request_bytes} bytes",
                    "invalid_request_error",
                    code="request_too_large",
                )
            ) from None
        try:
            body = parse_body(raw)
        except ValueError as exc:
            raise _Reject(
                _bad_request(f"the request body is not valid JSON: {exc}", code="invalid_json")
            ) from None
        if not isinstance(body, dict):
            raise _Reject(_bad_request("the request body must be a JSON object"))
        model = body.get("model")
        if model is None:
            raise _Reject(
                _bad_request("model is required", param="model", code="missing_required_parameter")
            )
        if not isinstance(model, str):
            raise _Reject(_bad_request("model must be a string", param="model"))
        entry = self._by_name.get(model)
        if entry is None:
            raise _Reject(self._unknown_model(model))
        deployment = entry[0]
        if "timeout" in body:
            raise _Reject(
                _bad_request(
                    "timeout cannot be set per request: the proxy's config bounds each run "
                    "(litellm_params.timeout); set your client's own HTTP timeout instead",
                    param="timeout",
                    code="unsupported_parameter",
                )
            )
        for name in body:
            if name in FORBIDDEN_FIELDS:
                raise _Reject(
                    _bad_request(
                        f"{name!r} cannot be set through the proxy: the endpoint, credentials "
                        "and agent of each model come from the proxy's config",
                        param=name,
                        code="forbidden_parameter",
                    )
                )
        if "messages" not in body:
            raise _Reject(
                _bad_request(
                    "messages is required", param="messages", code="missing_required_parameter"
                )
            )
        stream = bool(_opt(body, "stream", bool, "true or false"))
        stream_options = _opt(body, "stream_options", dict, "an object")
        thread_id = _opt(body, "thread_id", str, "a string")
        header_thread = request.headers.get(THREAD_HEADER)
        if header_thread is not None:
            header_thread = header_thread.strip() or None
        if header_thread and thread_id and header_thread != thread_id:
            raise _Reject(
                _bad_request(
                    f"thread_id in the body ({thread_id!r}) and the {THREAD_HEADER} header "
                    f"({header_thread!r}) differ",
                    param="thread_id",
                )
            )
        thread_id = thread_id or header_thread
        if thread_id is not None and not _THREAD_ID.fullmatch(thread_id):
            raise _Reject(
                _bad_request(
                    "thread_id must be a thread id like 'thread_abc123' (letters, digits, '_', "
                    "'-')",
                    param="thread_id",
                )
            )
        instructions = _opt(body, "instructions", str, "a string")
        if instructions is None:
            instructions = deployment.instructions
        drop = _opt(body, "drop_params", bool, "true or false")
        if drop is None:
            drop = (
                deployment.drop_params
                if deployment.drop_params is not None
                else self.config.drop_params
            )
        params = {k: v for k, v in body.items() if k not in _HANDLED_FIELDS}
        return _ChatArgs(
            deployment=deployment,
            messages=body["messages"],
            stream=stream,
            stream_options=stream_options,
            thread_id=thread_id,
            instructions=instructions,
            drop_params=bool(drop),
            timeout=deployment.timeout,
            params=params,
        )

    async def _call(self, args: _ChatArgs) -> ChatCompletion | CompletionStream:
        client = self._by_name[args.deployment.model_name][1]
        return await chat(
            client,
            model=args.deployment.model,
            messages=args.messages,
            thread_id=args.thread_id,
            instructions=args.instructions,
            stream=args.stream,
            stream_options=args.stream_options,
            timeout=args.timeout,
            drop_params=args.drop_params,
            response_model=args.deployment.model_name,
            **args.params,
        )

    def _fail(self, request: web.Request, info: ErrorInfo) -> web.Response:
        _note(error=info.code or info.status)
        if info.thread_id:
            _note(thread_id=info.thread_id)
        return info.response()

    async def _complete(self, request: web.Request, args: _ChatArgs) -> web.StreamResponse:
        result: ChatCompletion | CompletionStream | None = None
        error: Exception | None = None
        with anyio.CancelScope() as scope:
            self._scopes.add(scope)
            try:
                result = await self._call(args)
            except Exception as exc:
                error = exc
            finally:
                self._scopes.discard(scope)
        if scope.cancelled_caught:
            return self._fail(request, _SHUTTING_DOWN)
        if error is not None:
            return self._fail(request, error_for(error))
        assert isinstance(result, ChatCompletion)
        thread_id = _header_id(result.get("thread_id"))
        headers = {}
        if thread_id:
            headers[THREAD_HEADER] = thread_id
            _note(thread_id=thread_id)
        run_id = _header_id(result.get("run_id"))
        if run_id:
            headers[RUN_HEADER] = run_id
        return web.Response(
            text=result.to_json(separators=(",", ":")),
            content_type="application/json",
            headers=headers,
        )

    async def _stream(self, request: web.Request, args: _ChatArgs) -> web.StreamResponse:
        try:
            stream = await self._call(args)
        except Exception as exc:
            return self._fail(request, error_for(exc))
        assert isinstance(stream, CompletionStream)
        try:
            return await self._relay(request, stream)
        finally:
            # A no-op when the run finished; otherwise it cancels the run on the service.
            await stream.aclose()

    async def _relay(self, request: web.Request, stream: CompletionStream) -> web.StreamResponse:
        relay = _Relay()
        # One cancel scope from the first chunk to the last, so that `stop()` can cancel the
        # request at any point of it.
        with anyio.CancelScope() as scope:
            self._scopes.add(scope)
            try:
                await self._relay_chunks(request, stream, relay)
            finally:
                self._scopes.discard(scope)
        response = relay.response
        if response is None:
            # Nothing sent yet: a proper HTTP error status is still possible.
            info = _SHUTTING_DOWN if scope.cancelled_caught else relay.failure
            assert info is not None
            return self._fail(request, info)
        if relay.disconnected:
            # The client went away; the finally in _stream cancels the run.
            _note(error="client_disconnected")
            return response
        failure = _SHUTTING_DOWN if scope.cancelled_caught else relay.failure
        try:
            if failure is not None:
                _note(error=failure.code or failure.status)
                await response.write(_frame(json.dumps(failure.body(), separators=(",", ":"))))
            else:
                await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
        except ConnectionError:
            _note(error="client_disconnected")
        return response

    async def _relay_chunks(
        self, request: web.Request, stream: CompletionStream, relay: _Relay
    ) -> None:
        # The first chunk comes before the response starts, so that a request that fails at
        # once (throttled, unknown thread, ...) gets its proper HTTP status, and the response
        # headers can carry the thread id.
        try:
            first: Any = await stream.__anext__()
        except StopAsyncIteration:
            first = None
        except Exception as exc:
            relay.failure = error_for(exc)
            return
        response = web.StreamResponse(
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )
        response.content_type = "text/event-stream"
        response.charset = "utf-8"
        stream_thread = _header_id(stream.thread_id)
        if stream_thread:
            response.headers[THREAD_HEADER] = stream_thread
            _note(thread_id=stream_thread)
        relay.response = response
        try:
            await response.prepare(request)
            if first is not None:
                await response.write(_frame(first.to_json(separators=(",", ":"))))
            async for chunk in stream:
                await response.write(_frame(chunk.to_json(separators=(",", ":"))))
        except ConnectionError:
            relay.disconnected = True
        except Exception as exc:
            relay.failure = error_for(exc)


@attrs.define
class _Relay:
    """How a stream relay ended: the response (once started), a failure, a disconnect."""

    response: web.StreamResponse | None = None
    failure: ErrorInfo | None = None
    disconnected: bool = False


_NOTES: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("agentrun_proxy_notes")


def _note_refused(transport: asyncio.Transport, why: str) -> None:
    peer = transport.get_extra_info("peername")
    logger.warning("%s: closing connection from %s", why, peer[0] if peer else "?")


def _note(**fields: Any) -> None:
    """Add fields to the current request's log line."""
    notes = _NOTES.get(None)
    if notes is not None:
        notes.update(fields)


def _frame(data: str) -> bytes:
    return b"data: " + data.encode() + b"\n\n"


def _presented_key(request: web.Request) -> str | None:
    auth = request.headers.get("Authorization")
    if auth is not None:
        scheme, _, token = auth.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
        return ""
    key = request.headers.get("api-key")
    if key is not None:
        return key.strip()
    return None
