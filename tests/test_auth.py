"""The token cache: single flight, refresh ahead of expiry, stale on error, error propagation.

Most tests use fake async credentials defined here (stand-ins for azure-identity, not for
agentrun); one test uses a real `azure.identity.aio.ClientSecretCredential` over TLS against a
token endpoint served in the test.
"""

from __future__ import annotations

import json
import pathlib
import socket
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
import trustme
from aiohttp import web
from azure.core.credentials import AccessToken as AzureAccessToken
from azure.core.credentials import AccessTokenInfo
from azure.core.exceptions import ClientAuthenticationError

from agentrun import (
    APIConnectionError,
    AsyncClient,
    AuthenticationError,
    CertificateVerificationError,
    ClientStateError,
)
from agentrun._auth import (
    AccessToken,
    CredentialTokenSource,
    StaticTokenSource,
    TokenCache,
    TokenSource,
    is_certificate_failure,
)
from agentrun.emulator import Emulator, EmulatorSettings, FaultRule

SCOPE = "https://ai.azure.com/.default"
T0 = 1_700_000_000.0


class FakeClock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class FakeInfoCredential:
    """Shaped like an azure-identity async credential with get_token_info."""

    def __init__(
        self,
        clock: FakeClock,
        *,
        lifetime: float = 3600.0,
        refresh_in: float | None = None,
        delay: float = 0.0,
    ) -> None:
        self.clock = clock
        self.lifetime = lifetime
        self.refresh_in = refresh_in
        self.delay = delay
        self.calls: list[str] = []
        self.fail_with: BaseException | None = None
        self.gate: anyio.Event | None = None
        self.closed = False
        self.options: list[Any] = []

    async def get_token_info(self, *scopes: str, options: Any = None) -> AccessTokenInfo:
        self.calls.append(scopes[0])
        self.options.append(options)
        n = len(self.calls)
        if self.gate is not None:
            await self.gate.wait()
        if self.delay:
            await anyio.sleep(self.delay)
        if self.fail_with is not None:
            raise self.fail_with
        now = self.clock()
        return AccessTokenInfo(
            f"tok-{n}",
            int(now + self.lifetime),
            refresh_on=None if self.refresh_in is None else int(now + self.refresh_in),
        )

    async def close(self) -> None:
        self.closed = True


class FakeLegacyCredential:
    """An older credential shape: only get_token, no get_token_info."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.calls: list[str] = []

    async def get_token(self, *scopes: str, **kwargs: Any) -> AzureAccessToken:
        self.calls.append(scopes[0])
        return AzureAccessToken(f"legacy-{len(self.calls)}", int(self.clock() + 3600))


def make_cache(cred: Any, clock: FakeClock, *, refresh_margin: float = 300.0) -> TokenCache:
    return TokenCache(
        CredentialTokenSource(cred, SCOPE, owns_credential=False),
        clock=clock,
        refresh_margin=refresh_margin,
    )


@pytest.mark.anyio
async def test_single_flight_on_cold_cache() -> None:
    """1,000 concurrent get_token calls on a cold cache cause exactly one fetch, one token."""
    clock = FakeClock()
    cred = FakeInfoCredential(clock, delay=0.05)
    cache = make_cache(cred, clock)
    results: list[str] = []

    async def one() -> None:
        results.append(await cache.get_token())

    async with anyio.create_task_group() as tg:
        for _ in range(1000):
            tg.start_soon(one)
    assert cred.calls == [SCOPE]
    assert set(results) == {"tok-1"}
    assert len(results) == 1000
    stats = cache.statistics()
    assert (stats.token_requests, stats.failures, stats.refreshes) == (1, 0, 0)


@pytest.mark.anyio
async def test_warm_cache_does_not_fetch() -> None:
    """A valid token outside its refresh window is returned without touching the credential."""
    clock = FakeClock()
    cred = FakeInfoCredential(clock)
    cache = make_cache(cred, clock)
    assert await cache.get_token() == "tok-1"
    clock.now += 3000  # 600 s left, margin is 300
    assert await cache.get_token() == "tok-1"
    assert len(cred.calls) == 1


@pytest.mark.anyio
async def test_refresh_ahead_keeps_serving_current_token() -> None:
    """Past the refresh margin, one caller refreshes while all others get the current token at
    once; afterwards everyone gets the new one, and only one refresh was made."""
    clock = FakeClock()
    cred = FakeInfoCredential(clock)
    cache = make_cache(cred, clock)
    assert await cache.get_token() == "tok-1"

    clock.now += 3600 - 299  # inside the 300 s margin, still valid
    cred.gate = anyio.Event()
    refreshed: list[str] = []

    async with anyio.create_task_group() as tg:

        async def refresher() -> None:
            refreshed.append(await cache.get_token())

        tg.start_soon(refresher)
        await anyio.wait_all_tasks_blocked()
        assert len(cred.calls) == 2  # the refresh is in flight, blocked on the gate
        # Everybody else is answered immediately with the still-valid token.
        with anyio.fail_after(2):  # would hang if callers queued behind the refresh
            others = [await cache.get_token() for _ in range(100)]
        assert set(others) == {"tok-1"}
        assert len(cred.calls) == 2
        cred.gate.set()

    assert refreshed == ["tok-2"]
    assert await cache.get_token() == "tok-2"
    stats = cache.statistics()
    assert (stats.token_requests, stats.refreshes, stats.served_stale) == (2, 1, 0)


@pytest.mark.anyio
async def test_refresh_on_is_honoured() -> None:
    """A token's refresh_on (from get_token_info) sets the refresh time, not the margin."""
    clock = FakeClock()
    cred = FakeInfoCredential(clock, lifetime=86400, refresh_in=43200)
    cache = make_cache(cred, clock)
    assert await cache.get_token() == "tok-1"
    clock.now += 43199
    assert await cache.get_token() == "tok-1"
    assert len(cred.calls) == 1
    clock.now += 2
    assert await cache.get_token() == "tok-2"
    assert cache.statistics().refreshes == 1


@pytest.mark.anyio
async def test_stale_on_error_then_backoff_then_retry() -> None:
    """A failed refresh while the token is valid serves the old token, waits a backoff before
    trying again (no hammering), and a later successful refresh replaces the token."""
    clock = FakeClock()
    cred = FakeInfoCredential(clock)
    cache = make_cache(cred, clock)
    assert await cache.get_token() == "tok-1"

    clock.now += 3600 - 200
    cred.fail_with = ClientAuthenticationError("endpoint down")
    assert await cache.get_token() == "tok-1"  # refresh failed, old token served
    assert len(cred.calls) == 2
    for _ in range(20):
        assert await cache.get_token() == "tok-1"
    assert len(cred.calls) == 2  # backoff: the broken endpoint is not hit again yet
    stats = cache.statistics()
    assert (stats.failures, stats.served_stale) == (1, 21)

    clock.now += 6  # past the first backoff (5 s)
    cred.fail_with = None
    assert await cache.get_token() == "tok-3"
    assert len(cred.calls) == 3


@pytest.mark.anyio
async def test_expired_token_with_failing_fetch_raises() -> None:
    """Once the old token has expired, a failing fetch is an AuthenticationError, not stale."""
    clock = FakeClock()
    cred = FakeInfoCredential(clock)
    cache = make_cache(cred, clock)
    await cache.get_token()
    clock.now += 3601
    cred.fail_with = ClientAuthenticationError("nope")
    with pytest.raises(AuthenticationError):
        await cache.get_token()


@pytest.mark.anyio
async def test_error_reaches_all_waiters_and_next_call_retries() -> None:
    """With no valid token, one failing fetch fails every concurrent waiter with
    AuthenticationError (chained, no secret); the next call starts a new fetch."""
    clock = FakeClock()
    cred = FakeInfoCredential(clock, delay=0.02)
    cred.fail_with = ClientAuthenticationError(
        "Microsoft Entra ID error '(invalid_client) AADSTS7000215: Invalid client secret.'"
    )
    cache = make_cache(cred, clock)
    errors: list[BaseException] = []

    async def one() -> None:
        try:
            await cache.get_token()
        except AuthenticationError as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        for _ in range(50):
            tg.start_soon(one)
    assert len(errors) == 50
    assert len(cred.calls) == 1
    first = errors[0]
    assert isinstance(first.__cause__, ClientAuthenticationError)
    assert "invalid_client" in str(first)
    assert isinstance(first, AuthenticationError)
    assert first.status_code == 401
    assert first.code == "token_acquisition_failed"

    cred.fail_with = None
    assert await cache.get_token() == "tok-2"
    assert cache.statistics().failures == 1


@pytest.mark.anyio
async def test_foreign_error_text_is_not_copied() -> None:
    """A non-azure exception's text (which might hold anything) is not put in our message."""
    clock = FakeClock()
    cred = FakeInfoCredential(clock)
    cred.fail_with = RuntimeError("secret=hunter2")
    cache = make_cache(cred, clock)
    with pytest.raises(AuthenticationError) as info:
        await cache.get_token()
    assert "hunter2" not in str(info.value)
    assert "RuntimeError" in str(info.value)
    assert isinstance(info.value.__cause__, RuntimeError)


@pytest.mark.anyio
async def test_cancelled_fetcher_does_not_strand_waiters() -> None:
    """If the caller doing the fetch is cancelled, waiters start a fresh fetch instead of
    hanging or failing."""
    clock = FakeClock()
    cred = FakeInfoCredential(clock)
    cred.gate = anyio.Event()
    cache = make_cache(cred, clock)
    got: list[str] = []

    leader_scope = anyio.CancelScope()

    async def leader() -> None:
        with leader_scope:
            await cache.get_token()

    async def waiter() -> None:
        got.append(await cache.get_token())

    async with anyio.create_task_group() as tg:
        tg.start_soon(leader)
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(waiter)
        await anyio.wait_all_tasks_blocked()
        assert len(cred.calls) == 1
        leader_scope.cancel()
        await anyio.wait_all_tasks_blocked()
        assert len(cred.calls) == 2  # the waiter took over the fetch
        cred.gate.set()
    assert got == ["tok-2"]


@pytest.mark.anyio
async def test_invalidate_forces_a_fresh_fetch() -> None:
    """invalidate(token) drops that token; invalidating an old token does nothing."""
    clock = FakeClock()
    cred = FakeInfoCredential(clock)
    cache = make_cache(cred, clock)
    assert await cache.get_token() == "tok-1"
    cache.invalidate("tok-1")
    assert await cache.get_token() == "tok-2"
    cache.invalidate("tok-1")  # stale report about a token we no longer hold
    assert await cache.get_token() == "tok-2"
    assert len(cred.calls) == 2


@pytest.mark.anyio
async def test_static_token_never_refetched() -> None:
    """A static token is fetched once and never expires from the cache's side."""
    clock = FakeClock()
    cache = TokenCache(StaticTokenSource("static-abc"), clock=clock)
    assert await cache.get_token() == "static-abc"
    clock.now += 10 * 365 * 86400
    assert await cache.get_token() == "static-abc"
    assert cache.statistics().token_requests == 1
    with pytest.raises(ValueError, match="empty"):
        StaticTokenSource("")


@pytest.mark.anyio
async def test_get_token_info_preferred_get_token_fallback() -> None:
    """get_token_info is used when present (refresh_on carried); else get_token."""
    clock = FakeClock()
    info_cred = FakeInfoCredential(clock, lifetime=86400, refresh_in=100)
    info_token = await CredentialTokenSource(info_cred, SCOPE, owns_credential=False).fetch()
    assert info_token.refresh_on == pytest.approx(T0 + 100)
    assert info_token.expires_on == pytest.approx(T0 + 86400)

    legacy = FakeLegacyCredential(clock)
    legacy_token = await CredentialTokenSource(legacy, SCOPE, owns_credential=False).fetch()
    assert legacy_token.token == "legacy-1"
    assert legacy_token.refresh_on is None
    assert legacy.calls == [SCOPE]

    with pytest.raises(TypeError, match="not a credential"):
        CredentialTokenSource(object(), owns_credential=False)


@pytest.mark.anyio
async def test_credential_closed_only_when_owned() -> None:
    """aclose() closes the credential only if the source owns it; the cache refuses use after."""
    clock = FakeClock()
    borrowed = FakeInfoCredential(clock)
    owned = FakeInfoCredential(clock)
    cache_borrowed = make_cache(borrowed, clock)
    cache_owned = TokenCache(CredentialTokenSource(owned, owns_credential=True), clock=clock)
    await cache_borrowed.aclose()
    await cache_owned.aclose()
    await cache_owned.aclose()  # idempotent
    assert not borrowed.closed
    assert owned.closed
    with pytest.raises(ClientStateError, match="closed"):
        await cache_owned.get_token()


def test_reprs_hide_tokens() -> None:
    """No repr shows a token."""
    token = AccessToken("very-secret-token", expires_on=T0 + 10, refresh_on=T0 + 5)
    assert "very-secret-token" not in repr(token)
    assert "expires_on" in repr(token)
    source = StaticTokenSource("very-secret-token")
    assert "very-secret-token" not in repr(source)
    assert "very-secret-token" not in repr(TokenCache(source))
    assert isinstance(source, TokenSource)


def test_cache_built_outside_a_running_loop() -> None:
    """A TokenCache can be built with no event loop running and used in one later."""
    cache = TokenCache(StaticTokenSource("abc"))

    async def use() -> str:
        return await cache.get_token()

    assert anyio.run(use) == "abc"


# -- a real azure-identity credential over TLS ---------------------------------------------------


@asynccontextmanager
async def entra_endpoint(
    tmp_path: pathlib.Path,
) -> AsyncIterator[tuple[str, str, list[dict[str, str]]]]:
    """A tiny Entra-style token endpoint over TLS on 127.0.0.1: yields (authority, ca_path,
    received forms)."""
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server_ctx)
    ca_path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    forms: list[dict[str, str]] = []

    async def token(request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        forms.append(form)
        await anyio.sleep(0.05)
        if form.get("client_secret") != "s3cret":
            return web.json_response(
                {"error": "invalid_client", "error_description": "AADSTS7000215: bad secret."},
                status=401,
            )
        return web.json_response(
            {"token_type": "Bearer", "expires_in": 3600, "access_token": f"tok-{len(forms)}"}
        )

    app = web.Application()
    app.router.add_post("/{tenant}/oauth2/v2.0/token", token)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ctx)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"https://127.0.0.1:{port}", str(ca_path), forms
    finally:
        await runner.cleanup()


@pytest.mark.anyio
async def test_real_client_secret_credential_single_flight(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """200 concurrent get_token through a real aio ClientSecretCredential over TLS: exactly one
    POST reaches the token endpoint, with the client-credentials form and our scope."""
    from azure.identity.aio import ClientSecretCredential

    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    async with entra_endpoint(tmp_path) as (authority, ca_path, forms):
        credential = ClientSecretCredential(
            "tenant1",
            "client1",
            "s3cret",
            authority=authority,
            connection_verify=ca_path,
            retry_total=0,
        )
        cache = TokenCache(CredentialTokenSource(credential, SCOPE, owns_credential=True))
        try:
            tokens: list[str] = []

            async def one() -> None:
                tokens.append(await cache.get_token())

            async with anyio.create_task_group() as tg:
                for _ in range(200):
                    tg.start_soon(one)
        finally:
            await cache.aclose()
    assert len(forms) == 1
    assert forms[0]["grant_type"] == "client_credentials"
    assert forms[0]["scope"] == SCOPE
    assert set(tokens) == {"tok-1"}
    assert len(tokens) == 200


@pytest.mark.anyio
async def test_real_credential_bad_secret_is_authentication_error(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rejected client secret becomes AuthenticationError naming the Entra error, never the
    secret itself."""
    from azure.identity.aio import ClientSecretCredential

    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    async with entra_endpoint(tmp_path) as (authority, ca_path, forms):
        credential = ClientSecretCredential(
            "tenant1",
            "client1",
            "wrong-secret-xyz",
            authority=authority,
            connection_verify=ca_path,
            retry_total=0,
        )
        cache = TokenCache(CredentialTokenSource(credential, SCOPE, owns_credential=True))
        try:
            with pytest.raises(AuthenticationError) as info:
                await cache.get_token()
        finally:
            await cache.aclose()
    assert "invalid_client" in str(info.value)
    assert "wrong-secret-xyz" not in str(info.value)
    assert isinstance(info.value.__cause__, ClientAuthenticationError)
    assert len(forms) == 1


# -- forced fresh token after a 401; token endpoint failures typed -------------------------------


@pytest.mark.anyio
async def test_fetch_after_invalidate_asks_for_a_fresh_token() -> None:
    """After invalidate(), the next fetch carries an nbf claims request (which azure-identity
    never answers from its cache); ordinary fetches carry none, and only one fetch is forced."""
    clock = FakeClock()
    cred = FakeInfoCredential(clock)
    cache = make_cache(cred, clock)
    assert await cache.get_token() == "tok-1"
    cache.invalidate("tok-1")
    assert await cache.get_token() == "tok-2"
    clock.now += 3600
    assert await cache.get_token() == "tok-3"
    assert cred.options[0] is None
    claims = json.loads(cred.options[1]["claims"])
    nbf = claims["access_token"]["nbf"]
    assert nbf["essential"] is True and nbf["value"].isdigit()
    assert cred.options[2] is None


@pytest.mark.anyio
async def test_legacy_credential_gets_claims_keyword_when_forced() -> None:
    """A credential with only get_token(*scopes, claims=...) gets the claims as a keyword."""
    seen: list[dict[str, Any]] = []

    class Legacy:
        async def get_token(self, *scopes: str, **kwargs: Any) -> AzureAccessToken:
            seen.append(kwargs)
            return AzureAccessToken(f"legacy-{len(seen)}", int(T0 + 3600))

    cache = make_cache(Legacy(), FakeClock())
    assert await cache.get_token() == "legacy-1"
    cache.invalidate("legacy-1")
    assert await cache.get_token() == "legacy-2"
    assert seen[0] == {}
    assert "nbf" in json.loads(seen[1]["claims"])["access_token"]


def _free_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.mark.anyio
async def test_unreachable_token_endpoint_is_connection_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A token endpoint that refuses connections is APIConnectionError (token_endpoint=True),
    not AuthenticationError/401, through a real client call: nothing was refused, nothing
    reached the service."""
    from azure.identity.aio import ClientSecretCredential

    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    port = _free_port()
    async with Emulator(EmulatorSettings()) as emu:
        credential = ClientSecretCredential(
            "t", "c", "s", authority=f"https://127.0.0.1:{port}", retry_total=0
        )
        try:
            async with AsyncClient(emu.endpoint, credential=credential) as client:
                with pytest.raises(APIConnectionError) as info:
                    await client.run("asst_abc123", "hi", timeout=30)
        finally:
            await credential.close()
        assert emu.stats()["requests_total"] == 0  # no request reached the service
    assert not isinstance(info.value, AuthenticationError)
    assert not isinstance(info.value, CertificateVerificationError)
    assert info.value.token_endpoint is True
    assert "token endpoint" in str(info.value)


@pytest.mark.anyio
async def test_untrusted_token_endpoint_certificate_is_certificate_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The emulator's TLS token endpoint, not trusted by the credential agentrun builds: a
    CertificateVerificationError naming the token endpoint, never a 401."""
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    async with Emulator(EmulatorSettings(), tls=True) as emu:
        assert emu.ca_path is not None
        from azure.identity.aio import ClientSecretCredential

        credential = ClientSecretCredential(
            emu.tenant_id,
            emu.client_id,
            emu.client_secret,
            authority=emu.authority,
            retry_total=0,
        )
        try:
            async with AsyncClient(
                emu.endpoint, credential=credential, verify=str(emu.ca_path)
            ) as client:
                with pytest.raises(CertificateVerificationError) as info:
                    await client.run("asst_abc123", "hi", timeout=30)
        finally:
            await credential.close()
    assert info.value.token_endpoint is True
    assert is_certificate_failure(info.value)
    assert "certificate" in str(info.value)


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["stream", "poll"])
async def test_untrusted_service_certificate_is_certificate_error(mode: str) -> None:
    """The service's TLS certificate not trusted (no `verify=` for the emulator's private CA):
    a CertificateVerificationError (not retried, not a plain connection error) that does not
    blame the token endpoint; nothing reached the service."""
    async with Emulator(EmulatorSettings(), tls=True) as emu:
        async with AsyncClient(emu.endpoint, api_key=emu.api_key) as client:
            with pytest.raises(CertificateVerificationError) as info:
                await client.run("asst_abc123", "hi", mode=mode, timeout=30)  # type: ignore[arg-type]
        assert emu.runs() == []
    assert info.value.token_endpoint is False
    assert "certificate" in str(info.value)


@pytest.mark.anyio
async def test_401_gets_a_new_token_from_a_service_principal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The emulator answers one create with 401: the client asks the token endpoint for a NEW
    token (azure-identity would hand back its cached one) and the retried create succeeds.
    Two tokens are issued in all, and the call returns the reply."""
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    async with Emulator(EmulatorSettings(), tls=True) as emu:
        assert emu.ca_path is not None
        async with AsyncClient(
            emu.endpoint,
            tenant_id=emu.tenant_id,
            client_id=emu.client_id,
            client_secret=emu.client_secret,
            authority=emu.authority,
            verify=str(emu.ca_path),
        ) as client:
            first = await client.run("asst_abc123", "What is 2 + 3?", timeout=60)
            assert emu.stats()["tokens_issued"] == 1
            emu.inject(FaultRule(route="*", kind="status", status=401, times=1))
            second = await client.run("asst_abc123", "What is 2 + 3?", timeout=60)
            assert emu.stats()["tokens_issued"] == 2
            third = await client.run("asst_abc123", "What is 2 + 3?", timeout=60)
            assert emu.stats()["tokens_issued"] == 2  # the fresh token is cached again
    assert first.text == second.text == third.text
    assert "5" in second.text
