"""The `Emulator`: the server as an async context manager, or in a daemon thread.

`async with Emulator(settings) as emu:` serves on the current event loop;
`with Emulator(settings).in_thread() as emu:` serves on a private loop in a daemon thread,
for sync code and for tests whose own loop must not carry the server. The methods `stats`,
`runs`, `reset` and `inject` are safe to call from any thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import pathlib
import ssl
import tempfile
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from aiohttp import web

from ._app import EmulatorState, build_app
from ._settings import EmulatorSettings, FaultRule

__all__ = ["Emulator"]

T = TypeVar("T")
_SHUTDOWN_TIMEOUT = 10.0


class Emulator:
    """A local Azure AI Foundry Agent Service."""

    def __init__(
        self,
        settings: EmulatorSettings | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        tls: bool = False,
        ca_out: str | pathlib.Path | None = None,
    ) -> None:
        self.settings = settings if settings is not None else EmulatorSettings()
        self.host = host
        self.port = port
        self.tls = tls
        self._ca_out = pathlib.Path(ca_out) if ca_out is not None else None
        self.ca_path: pathlib.Path | None = None
        self.ca_pem: bytes | None = None
        self._state: EmulatorState | None = None
        self._runner: web.AppRunner | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._tmpdir: tempfile.TemporaryDirectory[str] | None = None

    # -- addresses and credentials -----------------------------------------------------------

    @property
    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        host = self.host if ":" not in self.host else f"[{self.host}]"
        if host in ("0.0.0.0", "[::]", ""):
            host = "127.0.0.1"
        return f"{scheme}://{host}:{self.port}"

    @property
    def endpoint(self) -> str:
        return self.url + "/api/projects/emulator"

    @property
    def authority(self) -> str:
        return self.url

    @property
    def api_key(self) -> str:
        return self.settings.api_keys[0] if self.settings.api_keys else ""

    @property
    def tenant_id(self) -> str:
        return self.settings.tenant_id

    @property
    def client_id(self) -> str:
        return self.settings.client_id

    @property
    def client_secret(self) -> str:
        return self.settings.client_secret

    @property
    def state(self) -> EmulatorState:
        if self._state is None:
            raise RuntimeError("the emulator is not running")
        return self._state

    # -- async lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError("the emulator is already running")
        self._loop = asyncio.get_running_loop()
        ssl_context: ssl.SSLContext | None = None
        if self.tls:
            from ._tls import make_server_ssl_context

            ca_out = self._ca_out
            if ca_out is None:
                self._tmpdir = tempfile.TemporaryDirectory(prefix="agentrun-emulator-")
                ca_out = pathlib.Path(self._tmpdir.name) / "ca.pem"
            ssl_context, self.ca_pem = make_server_ssl_context(ca_out)
            self.ca_path = ca_out
        state = EmulatorState(self.settings, lambda: self.url)
        runner = web.AppRunner(build_app(state), access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        self._hook_connections(runner, state)
        site = web.TCPSite(runner, self.host, self.port, ssl_context=ssl_context)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self.port = runner.addresses[0][1]
        state.start()
        self._state, self._runner = state, runner

    @staticmethod
    def _hook_connections(runner: web.AppRunner, state: EmulatorState) -> None:
        server = runner.server
        assert server is not None
        made, lost = server.connection_made, server.connection_lost

        def connection_made(handler: Any, transport: asyncio.Transport) -> None:
            state.stats.connection_opened()
            made(handler, transport)

        def connection_lost(handler: Any, exc: BaseException | None = None) -> None:
            state.stats.connection_closed()
            lost(handler, exc)

        server.connection_made = connection_made  # type: ignore[method-assign]
        server.connection_lost = connection_lost  # type: ignore[method-assign]

    async def stop(self) -> None:
        state, runner = self._state, self._runner
        self._state = self._runner = None
        if state is not None:
            await state.shutdown()
        if runner is not None:
            await asyncio.sleep(0)
            server = runner.server
            if server is not None:
                for handler in list(server.connections):
                    if handler.transport is not None:
                        handler.transport.abort()
            await asyncio.sleep(0)
            await runner.cleanup()
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
            self._tmpdir = None

    async def __aenter__(self) -> Emulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- in a thread -------------------------------------------------------------------------

    @contextlib.contextmanager
    def in_thread(self) -> Iterator[Emulator]:
        """Run the server on its own event loop in a daemon thread for the block's duration."""
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="agentrun-emulator", daemon=True)
        thread.start()
        self._thread = thread
        try:
            asyncio.run_coroutine_threadsafe(self.start(), loop).result(_SHUTDOWN_TIMEOUT)
            yield self
        finally:
            try:
                asyncio.run_coroutine_threadsafe(self.stop(), loop).result(_SHUTDOWN_TIMEOUT)
            finally:
                loop.call_soon_threadsafe(loop.stop)
                thread.join(_SHUTDOWN_TIMEOUT)
                loop.close()
                self._thread = None
                self._loop = None

    def _call(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the server's loop (directly when already on it)."""
        loop = self._loop
        if loop is None or not loop.is_running():
            return fn()
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            return fn()

        async def call() -> T:
            return fn()

        return asyncio.run_coroutine_threadsafe(call(), loop).result(_SHUTDOWN_TIMEOUT)

    # -- inspection and control --------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """The same JSON as `GET /_emulator/stats`."""
        return self._call(lambda: self.state.stats_json())

    def runs(self) -> list[dict[str, Any]]:
        """The same list as `GET /_emulator/runs` "data"."""
        return self._call(lambda: self.state.runs_json())

    def responses(self) -> list[dict[str, Any]]:
        """The Foundry Agents v2 responses the emulator keeps, oldest first: `id`, `status`,
        `agent` (`name`, `version`), `conversation_id`, `previous_response_id`,
        `background`, `stream`, `metadata`."""
        return self._call(lambda: self.state.v2.responses_json())

    def reset(self) -> None:
        """Forget threads, runs, statistics and scripted faults (as `POST /_emulator/reset`)."""
        self._call(lambda: self.state.reset())

    def inject(self, rule: FaultRule) -> None:
        """Arm a one-shot scripted fault (as `POST /_emulator/faults`)."""
        self._call(lambda: self.state.inject(rule))
