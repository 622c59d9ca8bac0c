"""The emulator's Entra-style token endpoint (agentrun.emulator._tokens), on its own.

Driven over real sockets and TLS through a tiny app of our own (see conftest.py), with raw
aiohttp requests and with azure-identity's aio and sync ClientSecretCredential.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from azure.core.exceptions import ClientAuthenticationError

from agentrun.emulator._tokens import TOKEN_ROUTE, TokenIssuer

# Same values as the token_server fixture in conftest.py (test modules here do not import
# conftest: tests/ is not a package).
CLIENT_ID = "test-client"
CLIENT_SECRET = "test-secret"
TENANT = "test-tenant"
SCOPE = "https://ai.azure.com/.default"
TokenServer = Any  # conftest.TokenServer

GOOD_FORM = {
    "client_id": CLIENT_ID,
    "client_secret": CLIENT_SECRET,
    "grant_type": "client_credentials",
    "scope": SCOPE,
}


class FakeClock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _issuer(**kwargs: Any) -> TokenIssuer:
    kwargs.setdefault("tenant_id", TENANT)
    kwargs.setdefault("client_id", CLIENT_ID)
    kwargs.setdefault("client_secret", CLIENT_SECRET)
    kwargs.setdefault("lifetime", 3600)
    kwargs.setdefault("api_keys", ("static-key",))
    return TokenIssuer(**kwargs)


def _client_ssl(server: TokenServer) -> ssl.SSLContext:
    assert server.ca_path is not None
    return ssl.create_default_context(cafile=str(server.ca_path))


async def _post_token(
    server: TokenServer, form: dict[str, str], tenant: str = TENANT
) -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{server.url}/{tenant}/oauth2/v2.0/token", data=form, ssl=_client_ssl(server)
        ) as response,
    ):
        return response.status, await response.json()


async def _get_json(
    server: TokenServer, path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{server.url}{path}", headers=headers, ssl=_client_ssl(server)) as response,
    ):
        return response.status, await response.json()


# ---------------------------------------------------------------------------- raw HTTP


@pytest.mark.anyio
async def test_token_success_shape_and_bearer_roundtrip(token_server: TokenServer) -> None:
    """A good client-credentials form gets Entra's success body (no refresh_in below 2 h),
    and the token it returns opens a bearer-protected route."""
    status, body = await _post_token(token_server, GOOD_FORM)
    assert status == 200
    assert set(body) == {"token_type", "expires_in", "ext_expires_in", "access_token"}
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == body["ext_expires_in"] == 3600
    assert isinstance(body["access_token"], str)
    assert len(body["access_token"]) >= 32
    assert token_server.issuer.tokens_issued == 1

    auth = {"Authorization": f"Bearer {body['access_token']}"}
    assert await _get_json(token_server, "/protected", auth) == (200, {"ok": True})
    status, _ = await _get_json(token_server, "/protected", {"Authorization": "Bearer nope"})
    assert status == 401


@pytest.mark.anyio
async def test_long_lifetime_adds_refresh_in(
    make_token_server: Callable[..., TokenServer],
) -> None:
    """Like Entra, a lifetime of 2 h or more adds refresh_in = expires_in // 2, and a
    fractional lifetime is reported rounded down."""
    server = make_token_server(lifetime=86400.9)
    status, body = await _post_token(server, GOOD_FORM)
    assert status == 200
    assert body["expires_in"] == 86400
    assert body["refresh_in"] == 43200


@pytest.mark.anyio
async def test_each_request_gets_a_distinct_token(token_server: TokenServer) -> None:
    """Tokens are fresh random strings per request, and the counter counts each one."""
    tokens = {(await _post_token(token_server, GOOD_FORM))[1]["access_token"] for _ in range(5)}
    assert len(tokens) == 5
    assert token_server.issuer.tokens_issued == 5
    assert token_server.issuer.active_tokens == 5


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("change", "status", "error", "code"),
    [
        ({"client_secret": "wrong"}, 401, "invalid_client", 7000215),
        ({"client_secret": None}, 401, "invalid_client", 7000218),
        ({"client_id": "someone-else"}, 400, "unauthorized_client", 700016),
        ({"client_id": None}, 400, "invalid_request", 900144),
        ({"grant_type": "password"}, 400, "unsupported_grant_type", 70003),
        ({"grant_type": None}, 400, "invalid_request", 900144),
        ({"scope": None}, 400, "invalid_request", 900144),
        ({"scope": "https://ai.azure.com/user_impersonation"}, 400, "invalid_scope", 1002012),
    ],
)
async def test_token_errors_copy_entra(
    token_server: TokenServer,
    change: dict[str, str | None],
    status: int,
    error: str,
    code: int,
) -> None:
    """Each bad form gets Entra's status, error, AADSTS code and body keys, and no token."""
    form = {k: v for k, v in {**GOOD_FORM, **change}.items() if v is not None}
    got_status, body = await _post_token(token_server, form)
    assert got_status == status
    assert body["error"] == error
    assert body["error_codes"] == [code]
    assert body["error_description"].startswith(f"AADSTS{code}: ")
    assert {"timestamp", "trace_id", "correlation_id", "error_uri"} <= set(body)
    assert "access_token" not in body
    assert token_server.issuer.tokens_issued == 0


@pytest.mark.anyio
async def test_wrong_tenant_is_rejected_and_any_tenant_when_none(
    make_token_server: Callable[..., TokenServer],
) -> None:
    """A configured tenant_id rejects other tenants (AADSTS90002) on the token route and the
    metadata route; tenant_id=None accepts any tenant."""
    strict = make_token_server()
    status, body = await _post_token(strict, GOOD_FORM, tenant="other")
    assert (status, body["error"], body["error_codes"]) == (400, "invalid_request", [90002])
    status, body = await _get_json(strict, "/other/v2.0/.well-known/openid-configuration")
    assert (status, body["error_codes"]) == (400, [90002])

    lenient = make_token_server(tenant_id=None)
    status, body = await _post_token(lenient, GOOD_FORM, tenant="whatever-tenant")
    assert status == 200
    assert "access_token" in body


@pytest.mark.anyio
@pytest.mark.parametrize(
    "path",
    [
        f"/{TENANT}/v2.0/.well-known/openid-configuration",
        f"/{TENANT}/.well-known/openid-configuration",
    ],
)
async def test_openid_metadata_points_back_at_the_server(
    token_server: TokenServer, path: str
) -> None:
    """The OpenID document MSAL reads names this server's token endpoint for the tenant."""
    status, body = await _get_json(token_server, path)
    assert status == 200
    root = f"{token_server.url}/{TENANT}"
    assert body["token_endpoint"] == f"{root}/oauth2/v2.0/token"
    assert body["authorization_endpoint"] == f"{root}/oauth2/v2.0/authorize"
    assert body["issuer"] == f"{root}/v2.0"
    assert body["device_authorization_endpoint"].startswith(root)


# ---------------------------------------------------------------------------- unit level


def test_check_bearer_accepts_static_keys_and_live_tokens_only() -> None:
    """check_bearer: static keys and unexpired issued tokens pass; anything else fails."""
    clock = FakeClock()
    issuer = _issuer(lifetime=10, clock=clock)
    token, expires_at = issuer.issue()
    assert expires_at == clock.now + 10
    assert issuer.check_bearer("Bearer static-key")
    assert issuer.check_bearer(f"Bearer {token}")
    assert issuer.check_bearer(f"bearer {token}")  # the scheme is case-insensitive
    assert not issuer.check_bearer(None)
    assert not issuer.check_bearer("")
    assert not issuer.check_bearer(token)  # no scheme
    assert not issuer.check_bearer(f"Basic {token}")
    assert not issuer.check_bearer("Bearer ")
    assert not issuer.check_bearer("Bearer unknown")
    clock.now += 9.99
    assert issuer.check_bearer(f"Bearer {token}")
    clock.now += 0.01
    assert not issuer.check_bearer(f"Bearer {token}")
    assert issuer.check_bearer("Bearer static-key")  # static keys never expire


def test_memory_is_bounded() -> None:
    """Expired tokens are forgotten as new ones are issued, and at most max_tokens live
    tokens are kept (the oldest is evicted first)."""
    clock = FakeClock()
    issuer = _issuer(lifetime=5, clock=clock, max_tokens=3)
    first = [issuer.issue()[0] for _ in range(3)]
    fourth, _ = issuer.issue()
    assert issuer.active_tokens == 3
    assert not issuer.check_bearer(f"Bearer {first[0]}")  # evicted
    assert issuer.check_bearer(f"Bearer {first[1]}")
    assert issuer.check_bearer(f"Bearer {fourth}")

    clock.now += 6
    issuer.issue()
    assert issuer.active_tokens == 1
    assert issuer.tokens_issued == 5
    assert len(issuer._tokens) == 1  # the expired ones are gone, not just hidden


def test_reset_zeroes_the_counter_but_keeps_tokens_valid() -> None:
    """reset() forgets tokens_issued; tokens already held by clients keep working."""
    issuer = _issuer()
    token, _ = issuer.issue()
    assert issuer.tokens_issued == 1
    issuer.reset()
    assert issuer.tokens_issued == 0
    assert issuer.check_bearer(f"Bearer {token}")


@pytest.mark.parametrize(
    "kwargs",
    [{"lifetime": 0}, {"lifetime": -1}, {"max_tokens": 0}],
)
def test_bad_settings_are_rejected(kwargs: dict[str, Any]) -> None:
    """A non-positive lifetime or token cap is a ValueError at construction."""
    with pytest.raises(ValueError, match="must be"):
        _issuer(**kwargs)


def test_routes_use_the_documented_template() -> None:
    """The token route's template is the one stats keys and FaultRule.route use."""
    app = web.Application()
    _issuer().add_routes(app, lambda: "https://127.0.0.1:1")
    templates = {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None
    }
    assert ("POST", TOKEN_ROUTE) in templates
    assert TOKEN_ROUTE == "/{tenant}/oauth2/v2.0/token"
    assert ("GET", "/{tenant}/v2.0/.well-known/openid-configuration") in templates


# ---------------------------------------------------------------------------- azure-identity


@pytest.mark.anyio
async def test_aio_client_secret_credential(token_server: TokenServer) -> None:
    """azure-identity's aio credential gets a token (one POST, no metadata GET) that the
    bearer check accepts, and caches it for the next call."""
    from azure.identity.aio import ClientSecretCredential

    async with ClientSecretCredential(
        TENANT,
        CLIENT_ID,
        CLIENT_SECRET,
        authority=token_server.url,
        connection_verify=str(token_server.ca_path),
        retry_total=0,
    ) as credential:
        info = await credential.get_token_info(SCOPE)
        again = await credential.get_token_info(SCOPE)
    assert again.token == info.token
    assert info.token_type == "Bearer"
    assert token_server.issuer.check_bearer(f"Bearer {info.token}")
    assert token_server.requests == [("POST", f"/{TENANT}/oauth2/v2.0/token")]


@pytest.mark.anyio
async def test_aio_credential_bad_secret(token_server: TokenServer) -> None:
    """A wrong secret fails azure-identity's aio credential with ClientAuthenticationError
    naming invalid_client, at once (4xx is not retried)."""
    from azure.identity.aio import ClientSecretCredential

    async with ClientSecretCredential(
        TENANT,
        CLIENT_ID,
        "wrong",
        authority=token_server.url,
        connection_verify=str(token_server.ca_path),
        retry_total=0,
    ) as credential:
        with pytest.raises(ClientAuthenticationError, match="invalid_client"):
            await credential.get_token(SCOPE)
    assert token_server.issuer.tokens_issued == 0


def test_sync_client_secret_credential(token_server: TokenServer) -> None:
    """The sync (MSAL) credential reads the OpenID metadata, then posts to the token endpoint
    it names, and gets a token the bearer check accepts."""
    from azure.identity import ClientSecretCredential

    credential = ClientSecretCredential(
        TENANT,
        CLIENT_ID,
        CLIENT_SECRET,
        authority=token_server.url,
        connection_verify=str(token_server.ca_path),
        disable_instance_discovery=True,
        retry_total=0,
    )
    with credential:
        token = credential.get_token(SCOPE)
    assert token_server.issuer.check_bearer(f"Bearer {token.token}")
    assert token_server.requests == [
        ("GET", f"/{TENANT}/v2.0/.well-known/openid-configuration"),
        ("POST", f"/{TENANT}/oauth2/v2.0/token"),
    ]


def test_sync_credential_bad_secret(token_server: TokenServer) -> None:
    """A wrong secret fails the sync credential with ClientAuthenticationError."""
    from azure.identity import ClientSecretCredential

    credential = ClientSecretCredential(
        TENANT,
        CLIENT_ID,
        "wrong",
        authority=token_server.url,
        connection_verify=str(token_server.ca_path),
        disable_instance_discovery=True,
        retry_total=0,
    )
    with credential, pytest.raises(ClientAuthenticationError, match="AADSTS7000215"):
        credential.get_token(SCOPE)
