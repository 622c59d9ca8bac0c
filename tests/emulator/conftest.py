"""Fixtures for the emulator tests.

The plugin's fixtures (``emulator``, ``emulator_tls``, ``emulator_factory``) come from
``agentrun.emulator.pytest_plugin``, registered by ``pytest_configure`` below unless the
``pytest11`` entry point ``agentrun`` already did (``pytest_plugins`` is not allowed in a
non-root conftest).

``token_server`` runs a tiny aiohttp app of our own (not the emulator) that carries only the
``TokenIssuer`` routes and one bearer-protected route, over TLS, on its own event loop in a
daemon thread, so sync credentials (MSAL + requests) and async ones can both talk to it.
It lets the token endpoint be tested independently of the emulator's core server.
"""

from __future__ import annotations

import asyncio
import pathlib
import ssl
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
from aiohttp import web

from agentrun.emulator import pytest_plugin
from agentrun.emulator._tls import make_server_ssl_context
from agentrun.emulator._tokens import TokenIssuer

CLIENT_ID = "test-client"
CLIENT_SECRET = "test-secret"
TENANT = "test-tenant"
SCOPE = "https://ai.azure.com/.default"


def pytest_configure(config: pytest.Config) -> None:
    manager = config.pluginmanager
    if not manager.is_registered(pytest_plugin) and not manager.has_plugin("agentrun"):
        manager.register(pytest_plugin, "agentrun")


@pytest.fixture(autouse=True)
def _no_proxy_for_loopback(_agentrun_no_proxy: None) -> None:
    """Keep proxy environment variables from hijacking requests to 127.0.0.1 (every test)."""


class TokenServer:
    """A threaded HTTPS server exposing one TokenIssuer; see the module docstring."""

    def __init__(self, issuer: TokenIssuer, ca_dir: pathlib.Path, *, tls: bool = True) -> None:
        self.issuer = issuer
        self.ca_path = ca_dir / "ca.pem" if tls else None
        self.tls = tls
        self.requests: list[tuple[str, str]] = []
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def _build_app(self) -> web.Application:
        @web.middleware
        async def record(
            request: web.Request, handler: Callable[[web.Request], Any]
        ) -> web.StreamResponse:
            self.requests.append((request.method, request.path))
            response: web.StreamResponse = await handler(request)
            return response

        async def protected(request: web.Request) -> web.Response:
            if not self.issuer.check_bearer(request.headers.get("Authorization")):
                return web.json_response(
                    {"error": {"code": "unauthorized", "message": "bad token"}}, status=401
                )
            return web.json_response({"ok": True})

        app = web.Application(middlewares=[record])
        app.router.add_get("/protected", protected)
        self.issuer.add_routes(app, lambda: self.url)
        return app

    async def _start(self) -> None:
        ssl_context: ssl.SSLContext | None = None
        if self.ca_path is not None:
            ssl_context, _ = make_server_ssl_context(self.ca_path)
        self._runner = web.AppRunner(self._build_app(), shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=ssl_context)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def _stop(self) -> None:
        assert self._runner is not None
        # Abort keep-alive connections first: a plain close() of a TLS transport waits for
        # the peer's close_notify, and the raw socket would outlive the loop (ResourceWarning).
        server = self._runner.server
        if server is not None:
            for handler in list(server.connections):
                if handler.transport is not None:
                    handler.transport.abort()
        await asyncio.sleep(0)
        await self._runner.cleanup()

    def __enter__(self) -> TokenServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


@pytest.fixture
def make_token_server(
    tmp_path: pathlib.Path,
) -> Iterator[Callable[..., TokenServer]]:
    """Factory: ``make_token_server(lifetime=..., tenant_id=..., clock=..., tls=True)``."""
    servers: list[TokenServer] = []

    def make(tls: bool = True, **kwargs: Any) -> TokenServer:
        kwargs.setdefault("tenant_id", TENANT)
        kwargs.setdefault("client_id", CLIENT_ID)
        kwargs.setdefault("client_secret", CLIENT_SECRET)
        kwargs.setdefault("lifetime", 3600)
        kwargs.setdefault("api_keys", ("static-key",))
        directory = tmp_path / f"server{len(servers)}"
        server = TokenServer(TokenIssuer(**kwargs), directory, tls=tls).__enter__()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.__exit__(None, None, None)


@pytest.fixture
def token_server(make_token_server: Callable[..., TokenServer]) -> TokenServer:
    """A TLS token server with the default test client id/secret and a one-hour lifetime."""
    return make_token_server()


# ---------------------------------------------------------------------------- official SDK


class StaticTokenCredential:
    """A sync TokenCredential that hands out a fixed bearer token (a static API key, or junk)."""

    def __init__(self, token: str) -> None:
        self.token = token

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        from azure.core.credentials import AccessToken

        return AccessToken(self.token, int(time.time()) + 3600)


@pytest.fixture
def static_credential() -> type[StaticTokenCredential]:
    """The StaticTokenCredential class (test modules cannot import conftest)."""
    return StaticTokenCredential


@pytest.fixture
def make_sync_client() -> Iterator[Callable[..., Any]]:
    """Factory for sync ``azure.ai.agents.AgentsClient`` objects pointed at an emulator.

    ``make_sync_client(emu, secret=None, credential=None, **client_kwargs)`` authenticates with
    azure-identity's sync ``ClientSecretCredential`` against the emulator's token endpoint
    (``secret`` defaults to the emulator's); every client and credential is closed at teardown.
    """
    from azure.ai.agents import AgentsClient
    from azure.identity import ClientSecretCredential

    closers: list[Callable[[], object]] = []

    def make(emu: Any, secret: str | None = None, credential: Any = None, **kwargs: Any) -> Any:
        if credential is None:
            credential = ClientSecretCredential(
                emu.tenant_id,
                emu.client_id,
                secret if secret is not None else emu.client_secret,
                authority=emu.authority,
                connection_verify=str(emu.ca_path),
                disable_instance_discovery=True,
                retry_total=0,
            )
            closers.append(credential.close)
        kwargs.setdefault("connection_verify", str(emu.ca_path))
        client = AgentsClient(endpoint=emu.endpoint, credential=credential, **kwargs)
        closers.append(client.close)
        return client

    yield make
    for close in reversed(closers):
        close()


@pytest.fixture
async def make_aio_client() -> AsyncIterator[Callable[..., Any]]:
    """Factory for aio ``azure.ai.agents.aio.AgentsClient`` objects pointed at an emulator,
    with azure-identity's aio ``ClientSecretCredential``; all closed at teardown."""
    from azure.ai.agents.aio import AgentsClient
    from azure.identity.aio import ClientSecretCredential

    closers: list[Callable[[], Awaitable[object]]] = []

    def make(emu: Any, secret: str | None = None, credential: Any = None, **kwargs: Any) -> Any:
        if credential is None:
            credential = ClientSecretCredential(
                emu.tenant_id,
                emu.client_id,
                secret if secret is not None else emu.client_secret,
                authority=emu.authority,
                connection_verify=str(emu.ca_path),
                retry_total=0,
            )
            closers.append(credential.close)
        kwargs.setdefault("connection_verify", str(emu.ca_path))
        client = AgentsClient(endpoint=emu.endpoint, credential=credential, **kwargs)
        closers.append(client.close)
        return client

    yield make
    for close in reversed(closers):
        await close()
